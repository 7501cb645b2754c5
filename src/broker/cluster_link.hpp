// The broker's narrow view of a cluster (src/cluster implements it over
// NATS). A broker without a [cluster] table has no link and routes exactly
// as a single node; with one, the router tells the link which filters its
// sessions hold, hands it every message a local client (or will) publishes,
// and announces session claims. What arrives from other nodes comes back
// through Broker::*_from_cluster (cluster_routing.cpp). All calls are on
// the reactor thread and never block.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "broker/message.hpp"
#include "mqttools/reason_code.hpp"

namespace mqttools::broker {

struct ClusterCounters {
    std::uint64_t nodes_connected = 0;   // 1 while this node's link to NATS is up
    std::uint64_t links_up = 0;          // NATS connections up (of links_total)
    std::uint64_t links_total = 0;
    std::uint64_t messages_out = 0;      // published to other nodes
    std::uint64_t messages_in = 0;       // received from other nodes
    std::uint64_t messages_lost_out = 0; // could not be handed to NATS (down, buffer full)
    std::uint64_t messages_lost_in = 0;  // dropped by NATS as a slow consumer
    std::uint64_t disconnects = 0;
    std::uint64_t reconnects = 0;
    std::uint64_t remote_interest = 0;   // NATS subscriptions held for local filters
    std::uint64_t retained_in = 0;       // retained updates applied from the cluster
    std::uint64_t retained_stored = 0;   // this node's retained updates acknowledged by the stream
    std::uint64_t takeovers_in = 0;      // local sessions taken over by another node
    std::uint64_t sessions_sent = 0;     // session states handed to the node that took them over
    std::uint64_t sessions_received = 0; // session states taken over from another node
    std::string status;                  // "connected", or why NATS is not reachable
};

// A message's name on NATS: the publishing node's instance and its
// sequence number there, unique cluster-wide; {0, 0} = none.
struct ClusterMessageId {
    std::uint64_t origin = 0;
    std::uint64_t seq = 0;
};

// A persistent session's record in the cluster (sessions = "replicated",
// issue 25): its state as export_session wrote it, when and by which node's
// view it was written. Every message from origin O with seq <= its
// watermark that matched the session had reached the session then (it is
// in `state` or was acknowledged); later ones are replayed from the stream.
struct ReplicaRecord {
    bool found = false;
    bool connected = false;      // written while its client was connected
    std::int64_t written_ns = 0; // wall clock
    std::vector<ClusterMessageId> watermarks;
    // The same for the messages shared subscriptions' queue groups gave the
    // node (another NATS connection: its own order).
    std::vector<ClusterMessageId> shared_watermarks;
    std::string_view state;
};

class ClusterLink {
public:
    virtual ~ClusterLink() = default;
    // A session on this node gained / lost `filter` (as subscribed,
    // "$share/NAME/..." included). Reference counting is the link's job.
    virtual void interest_added(std::string_view filter) = 0;
    virtual void interest_removed(std::string_view filter) = 0;
    // Interest reaches the cluster asynchronously. Nonzero: a ticket the
    // SUBACK of the subscriptions just added waits for, so a message
    // published on another node once the client has its SUBACK is not
    // missed; the link calls Broker::interest_confirmed(ticket) when every
    // interest handed to it before this call is in place and, with
    // `retained` (retained messages follow the SUBACK), when this node's
    // retained store holds what the cluster stored before the call. Zero:
    // nothing to wait for.
    virtual std::uint64_t interest_ticket(bool retained) {
        (void)retained;
        return 0;
    }
    // Before a client's PUBLISH is accepted: can the cluster carry a message
    // to `topic` whose PUBLISH is about `size` bytes? Success, or what the
    // publisher is told: 0x90 Topic Name invalid (its name on the cluster
    // would be longer than the cluster allows), 0x95 Packet too large (over
    // the cluster's largest message). A node never delivers locally what
    // the other nodes cannot get.
    virtual ReasonCode publish_refusal(std::string_view topic, std::size_t size) const {
        (void)topic;
        (void)size;
        return ReasonCode::success;
    }
    // Before a SUBSCRIBE is granted: can the cluster carry interest in
    // `filter` (false: its name on the cluster would be too long; 0x8F)?
    virtual bool accepts_filter(std::string_view filter) const {
        (void)filter;
        return true;
    }
    // A message published on this node (by a client or as a will), for the
    // other nodes; a retained one also updates the cluster's retained copy
    // (an empty payload deletes it).
    virtual void publish(const MessageView& message) = 0;
    // Right after publish() of a QoS 1/2 message: nonzero is a ticket that
    // the link confirms (Broker::publishes_confirmed) once NATS has the
    // message, i.e. every node with interest gets it unless NATS itself
    // fails; the publisher's PUBACK/PUBREC waits for it, so a node killed
    // before its messages left loses none that it acknowledged. Zero:
    // nothing to wait for.
    virtual std::uint64_t publish_ticket() const { return 0; }
    // Right after publish(): the name the other nodes receive it under
    // (Broker::route_from_cluster's origin and seq); {0, 0} when it did not
    // go out.
    virtual ClusterMessageId last_publish_id() const { return {}; }
    // Once `ticket` is confirmed, asked in ticket order: did NATS say that
    // no other node has interest in that message? Then a publisher with no
    // local subscriber either gets 0x10 No matching subscribers.
    virtual bool reached_no_node(std::uint64_t ticket) {
        (void)ticket;
        return false;
    }
    // Once `ticket` is confirmed, asked in ticket order: was the message
    // refused (not stored durably within the bound)? Then its publisher
    // gets this reason code instead of a false acknowledgement.
    virtual ReasonCode publish_refused(std::uint64_t ticket) {
        (void)ticket;
        return ReasonCode::success;
    }
    // A client connects here with `client_id`: other nodes holding it
    // close it (0x8E, Session taken over); with `want_state` (Clean Start
    // 0) the node that held the session sends it back through
    // send_session, and it arrives here as Broker::session_arrived.
    virtual void claim_session(std::string_view client_id, bool want_state) = 0;
    // The session of `client_id` ended on this node (Clean Start with
    // Session Expiry 0 at disconnect, expired, discarded, or moved): the
    // cluster forgets its ownership unless a newer claim holds it, so that
    // client ids seen once do not stay in the cluster's state forever.
    virtual void session_ended(std::string_view client_id) { (void)client_id; }
    // The state of a session this node let go (session_transfer.cpp's
    // format), for the node `node` that claimed it.
    virtual void send_session(std::string_view node, std::string_view client_id, std::string_view state) = 0;
    // sessions = "replicated" (issue 25): persistent sessions are kept in
    // JetStream so that any node can resume one whose node died.
    virtual bool replicates_sessions() const { return false; }
    // Writes (replaces) the session's record; drop_session deletes it.
    virtual void store_session(std::string_view client_id, bool connected, std::string_view state) {
        (void)client_id, (void)connected, (void)state;
    }
    virtual void drop_session(std::string_view client_id) { (void)client_id; }
    // Reads the record: Broker::session_loaded.
    virtual void load_session(std::string_view client_id) { (void)client_id; }
    // The QoS 1/2 messages stored since `since_ns` that match `filters`, in
    // stream order: Broker::replayed_message each, then Broker::replay_done;
    // then, while stores begun before the call may still land (the
    // cluster's hold_timeout), those too, then Broker::late_replay_done.
    virtual void replay_session(std::string_view client_id, const std::vector<std::string>& filters,
                                std::int64_t since_ns) {
        (void)client_id, (void)filters, (void)since_ns;
    }
    // Shared subscriptions across a node's death (issue 25; nats_groups.cpp):
    // this node took the QoS 1/2 message `id` from NATS for the member
    // `member` of `group` ("$share/NAME/filter"; `persistent`: the member's
    // session has a record), and the member is done with it (QoS 1
    // acknowledged, QoS 2 sent: from then on it is the member's, spec
    // 4.8.2). The survivors of a dead node redeliver, once, to the group
    // what it took and no member was done with.
    virtual void shared_taken(std::string_view group, std::string_view member, bool persistent, ClusterMessageId id) {
        (void)group, (void)member, (void)persistent, (void)id;
    }
    virtual void shared_done(std::string_view member, ClusterMessageId id) { (void)member, (void)id; }
    // A session that ends here for good had `message` from `group` and no
    // client will complete it: one other member of the group gets it.
    virtual void redispatch(std::string_view group, const MessageView& message) { (void)group, (void)message; }
    virtual ClusterCounters counters() const = 0;
    // Shared subscriptions are delivered by the cluster (a NATS queue group
    // picks one node), never by the local router alone.
    virtual bool owns_shared_delivery() const { return true; }
    virtual const std::string& node_id() const = 0;
};

}  // namespace mqttools::broker
