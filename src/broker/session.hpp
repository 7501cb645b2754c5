// A client's session (spec 4.1): what outlives a network connection while
// the Session Expiry Interval runs: subscriptions, QoS 1/2 messages in
// flight in both directions, messages queued for the client, a delayed will.
#pragma once

#include <bitset>
#include <cstdint>
#include <list>
#include <functional>
#include <map>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "broker/auth/auth_chain.hpp"
#include "broker/message.hpp"
#include "broker/subscription_map.hpp"
#include "mqttools/packets.hpp"
#include "net/reactor.hpp"

namespace mqttools::broker {

// A set of packet ids as a bitset allocated on first use: O(1) per PUBLISH
// and PUBREL at any Receive Maximum (a vector scan made a 65,535 window
// quadratic), and nothing at all for sessions that never publish QoS 2.
class PacketIdSet {
public:
    bool contains(std::uint16_t id) const noexcept { return ids_ && ids_->bits.test(id); }
    void insert(std::uint16_t id) {
        if (!ids_) ids_ = std::make_unique<Ids>();
        if (!ids_->bits.test(id)) {
            ids_->bits.set(id);
            ++ids_->size;
        }
    }
    bool erase(std::uint16_t id) noexcept {
        if (!contains(id)) return false;
        ids_->bits.reset(id);
        --ids_->size;
        return true;
    }
    std::size_t size() const noexcept { return ids_ ? ids_->size : 0; }

private:
    // One pointer in the Session; the count lives with the bits.
    struct Ids {
        std::bitset<65536> bits;
        std::size_t size = 0;
    };
    std::unique_ptr<Ids> ids_;
};

class Connection;

// One outbound QoS 1/2 message, queued or in flight.
struct OutboundMessage {
    enum class State : std::uint8_t { queued, awaiting_puback, awaiting_pubrec, awaiting_pubcomp };
    MessagePtr message;  // released once PUBREC arrived (only PUBREL is left to send)
    QoS qos = QoS::at_least_once;
    bool retain = false;
    State state = State::queued;
    // Resumed from the cluster's record (session_replica.cpp): the node
    // that died may have sent it after the record was written, so its
    // first PUBLISH from here carries DUP ([MQTT-3.3.1-1]).
    bool maybe_sent = false;
    // QoS 2 in a replicated session: its PUBLISH (or PUBREL) waits until
    // the cluster's record holds its packet id and state (session_replica.cpp).
    bool held_for_record = false;
    // Picked for this session as a member of a shared subscription by the
    // cluster (cluster_routing.cpp): its completion is told to the cluster.
    bool from_shared = false;
    std::uint16_t packet_id = 0;
    std::vector<std::uint32_t> subscription_ids;
    std::uint64_t store_seq = 0;  // its queue row in the durable store; 0 = none
};

// A session's outbound QoS 1/2 messages ([MQTT-4.4.0-1]: resent in this
// order on resume). std::list, not std::deque: an empty list allocates
// nothing.
struct OutboundState {
    std::list<OutboundMessage> inflight;
    std::list<OutboundMessage> queue;  // beyond the window, or while away
    std::size_t queued_bytes = 0;
    std::size_t dropped_messages = 0;  // queue overflow and expiry
    std::uint16_t last_packet_id = 0;
    bool drop_logged = false;
    std::uint64_t next_store_seq = 1;  // queue rows of a stored session, in order
};

struct Will {
    MessagePtr message;  // expires_at unset: the expiry interval starts at publication
    std::optional<std::uint32_t> expiry_interval;
    std::uint32_t delay = 0;  // Will Delay Interval, seconds
};

class Session {
public:
    explicit Session(std::string id) : client_id(std::move(id)) {}
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    std::string client_id;
    Connection* connection = nullptr;  // null while the client is away

    // Topic filter (as subscribed, "$share/..." included) -> options; the
    // router's own copy is in the SubscriptionTrie.
    SubscriptionMap subscriptions;

    std::uint32_t expiry_interval = 0;  // seconds; 0xFFFFFFFF = never
    // The session has rows in the durable store (persistence on and an
    // expiry interval > 0): its changes are written there.
    bool stored = false;
    // A bridge's session (bridge.hpp: a BridgeSession), never in the
    // SessionStore. Sits in the padding after expiry_interval: free.
    bool bridge = false;
    // Expiry 0 with persistence: only the connected client's will is
    // stored (persistence_hooks.cpp), deleted when the session ends.
    bool will_stored = false;
    // Moving between cluster nodes (Broker::handovers_): on the node that
    // let it go, collecting the messages that still arrive there; on the
    // node that took it, holding its queue until those come.
    bool handing_over = false;
    // sessions = "replicated": its record is in the cluster's session
    // bucket (written by this node), deleted when the session ends here.
    bool replicated = false;
    // Its connection was lost while the cluster was fenced (Broker::
    // cluster_fence): its will waits for the end of the check.
    bool will_after_fence = false;
    std::uint64_t replica_signature = 0;  // what the record last written holds (session_replica.cpp)
    // Record writes asked for and answered (in order), and the write the
    // QoS 2 packets held for the record wait for.
    std::uint32_t records_requested = 0;
    std::uint32_t records_stored = 0;
    std::uint32_t record_hold_until = 0;
    net::Reactor::TimerId expiry_timer = {};
    // Unix milliseconds of its last accepted CONNECT (the management API's
    // connected_at), or of when it was restored from the store.
    std::int64_t connected_at_ms = 0;
    // The broker at the other end when this session is a bridge (ours to a
    // remote, or a remote mqttoolsd's bridge connected here): its id from
    // the bridge handshake (bridge.hpp), 0 otherwise. A message is never
    // routed back to the broker it came from.
    std::uint64_t peer_broker = 0;

    // Outbound QoS 1/2, allocated with the session's first QoS 1/2 message:
    // a session that only ever gets QoS 0 (or nothing) does not pay for it.
    std::unique_ptr<OutboundState> outbound;
    OutboundState& out() {
        if (!outbound) outbound = std::make_unique<OutboundState>();
        return *outbound;
    }

    // Inbound QoS 2 packet ids received and not yet released by PUBREL
    // (exactly-once: a re-sent PUBLISH with one of these is not routed again).
    PacketIdSet inbound_qos2;

    std::unique_ptr<Will> will;  // the will of the current/last connection
    net::Reactor::TimerId will_timer = {};

    // Routing scratch: lets one PUBLISH merge overlapping subscriptions of
    // this session without a map.
    std::uint64_t match_generation = 0;

    // What this client may do, bound at CONNECT (security_hooks.cpp);
    // null when it may do everything (no rules, or a superuser).
    std::unique_ptr<auth::ClientAuthz> acl;
    // Deliveries waiting, in order, for a read-ACL answer to come
    // (Broker::hold_delivery); null while none waits.
    std::unique_ptr<std::deque<OutboundMessage>> read_held;
};

}  // namespace mqttools::broker
