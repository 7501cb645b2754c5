// The seam between the broker and its durable store (src/store, SQLite):
// the broker reports every change to durable state here as it happens on
// the reactor thread; the store collects one reactor turn's changes into a
// batch, commits it on its own thread and reports back which batches are on
// disk. The broker holds the output of every connection whose session the
// batch touched (PUBACK, PUBREC, PUBCOMP, SUBACK, CONNACK, and PUBLISH
// with its durable packet id) until then. Broker tests run without it:
// no Persistence, no batches, no holding.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "broker/admin_view.hpp"
#include "broker/message.hpp"
#include "broker/session.hpp"

namespace mqttools::broker {

// Milliseconds since the Unix epoch: deadlines on disk are wall-clock so
// expiry keeps counting while the broker is down. 0 = none.
using WallTime = std::int64_t;
WallTime wall_now() noexcept;
// A steady deadline of this process as wall-clock time and back.
WallTime to_wall(Clock::time_point t, Clock::time_point now, WallTime wall) noexcept;
Clock::time_point from_wall(WallTime t, Clock::time_point now, WallTime wall) noexcept;

// A session's own row: everything but its subscriptions, queue and inbound ids.
struct StoredSession {
    std::string client_id;
    std::optional<std::string> username;
    std::uint32_t expiry_interval = 0;
    bool connected = false;  // a client was connected when this was written
    WallTime expires_at = 0;  // disconnected: when the session ends (0: never)
    // The will of the current/last connection.
    MessagePtr will;
    std::optional<std::uint32_t> will_expiry;
    std::uint32_t will_delay = 0;
    WallTime will_at = 0;  // disconnected: when the delayed will is due
};

struct LoadedSession {
    StoredSession session;
    std::vector<std::pair<std::string, SubscriptionOptions>> subscriptions;
    // Its queue rows in seq order, as the broker keeps them (store_seq set;
    // message null once PUBREC'd): spliced into the session's lists, not
    // copied (a restart may load millions).
    std::list<OutboundMessage> outbound;
    std::vector<std::uint16_t> inbound_qos2;
};

// What the store found at start-up.
struct LoadedState {
    std::vector<LoadedSession> sessions;
    std::vector<MessagePtr> retained;
    std::uint64_t messages = 0;         // distinct message rows
    std::uint64_t queued = 0;           // queue rows
    std::uint64_t next_message_id = 1;  // above every stored id
    std::vector<Ban> bans;              // the management API's banned list
};

// The store's answer for the batches submitted so far.
struct CommitResult {
    std::uint64_t durable = 0;  // every batch up to this one is on disk
    std::uint64_t failed = 0;   // the last batch whose commit failed (0: none)
    bool healthy = true;        // the last attempt succeeded
    std::uint64_t failures = 0; // commits that failed since start
    // The files' sizes (issue 31), for $SYS and /metrics.
    std::uint64_t database_bytes = 0;
    std::uint64_t wal_bytes = 0;
    std::uint64_t checkpoints = 0;  // WAL checkpoints since start
};

class Persistence {
public:
    virtual ~Persistence() = default;

    // ---- changes for the current batch (reactor thread)
    virtual void put_session(const StoredSession& session) = 0;
    // The session with its subscriptions, queue and inbound ids.
    virtual void erase_session(std::string_view client_id) = 0;
    virtual void put_subscription(std::string_view client_id, std::string_view filter,
                                  const SubscriptionOptions& options) = 0;
    virtual void erase_subscription(std::string_view client_id, std::string_view filter) = 0;
    // Stores a message once (message->store_id set by the broker); queue
    // and retained rows refer to it; the store deletes it with its last
    // reference.
    virtual void put_message(const MessagePtr& message) = 0;
    virtual void put_outbound(std::string_view client_id, std::uint64_t seq, const OutboundMessage& m) = 0;
    // State and packet id; awaiting_pubcomp also drops the message reference.
    virtual void update_outbound(std::string_view client_id, std::uint64_t seq, OutboundMessage::State state,
                                 std::uint16_t packet_id) = 0;
    virtual void erase_outbound(std::string_view client_id, std::uint64_t seq) = 0;
    virtual void put_retained(const MessagePtr& message) = 0;
    virtual void erase_retained(std::string_view topic) = 0;
    virtual void put_inbound_qos2(std::string_view client_id, std::uint16_t packet_id) = 0;
    virtual void erase_inbound_qos2(std::string_view client_id, std::uint16_t packet_id) = 0;
    // Deletes retained and unreferenced messages whose Message Expiry passed.
    virtual void sweep_expired(WallTime now) = 0;
    // The banned list (admin_view.hpp): a ban added (or replaced) / lifted.
    virtual void put_ban(const Ban& ban) { (void)ban; }
    virtual void erase_ban(Ban::Kind as, std::string_view who) { (void)as, (void)who; }

    // The number the changes recorded from now on will be committed under.
    virtual std::uint64_t current_batch() const noexcept = 0;
    // Hands the current batch to the store thread; returns its number, 0
    // when it was empty. Called once per reactor turn.
    virtual std::uint64_t submit() = 0;
    // Results arrive on the reactor thread (an eventfd the store watches).
    virtual void on_result(std::function<void(const CommitResult&)> fn) = 0;
    // Blocks until every submitted batch was committed or failed once, and
    // delivers the result (shutdown).
    virtual void drain() = 0;
};

}  // namespace mqttools::broker
