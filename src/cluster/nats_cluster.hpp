// One node's link to the others over NATS (issue 13), behind
// broker::ClusterLink. The reactor thread never calls into libnats:
//
//   reactor --(out queue: publish / subscribe / unsubscribe)--> link thread --> libnats
//   libnats delivery thread --(in queue + eventfd)--> reactor --> Broker::*_from_cluster
//   JetStream setup (blocking requests) --> its own thread, retried until it works
//
// Two NATS connections: "data" publishes this node's messages and holds its
// non-shared interest with No Echo, so a node never gets its own message
// back (it delivered it locally already); "control" holds the queue
// subscriptions of shared subscriptions (our own messages must reach them:
// the queue group, not the publisher, picks the member), the retained
// consumer and the JetStream context.
//
// Subjects (subject_map.hpp), PREFIX = [cluster] subject_prefix:
//   PREFIX.m.{t|s}.LEVELS  live messages (the MQTT 5 PUBLISH as encoded by us)
//   PREFIX.b.ORIGIN        parts of a message over max_payload; its
//                          reference follows on PREFIX.m (publish_bulk)
//   PREFIX.r.{t|s}.LEVELS  retained updates, kept by the JetStream stream
//                          PREFIX_RETAINED (one message per subject: the latest)
//   PREFIX.claim           "STAMP NODE FLAG PREVIOUS CLIENT_ID": session
//                          ownership claims; FLAG "s": send me the session's
//                          state; PREVIOUS: the owner the bucket named ("-"
//                          none, "?" unknown)
//   KV bucket PREFIX_OWNERS (JetStream key/value): client id -> owning node,
//                          written by compare-and-set (claim_session)
//   PREFIX.session.NODE    CLIENT_ID NUL STATE: a session handed over to NODE
//                          (NODE as one subject token, subject_map.hpp)
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "broker/broker.hpp"
#include "broker/cluster_link.hpp"
#include "cluster/nats_wire.hpp"
#include "config/config.hpp"
#include "net/reactor.hpp"
#include "net/unique_fd.hpp"

namespace mqttools::cluster {

class StreamOut;  // nats_durable.hpp

class NatsCluster final : public broker::ClusterLink, public net::IoHandler, public NatsWire::Events {
public:
    // Starts the link; connecting happens in the background, so a node
    // whose NATS is down serves its local clients and keeps trying (with
    // back-off). Null with `error` set when the link cannot be set up at
    // all (bad credentials file, no eventfd...).
    static std::unique_ptr<NatsCluster> start(net::Reactor& reactor, broker::Broker& broker,
                                              const config::Cluster& config, std::string node_id,
                                              std::string& error);
    ~NatsCluster() override;
    NatsCluster(const NatsCluster&) = delete;
    NatsCluster& operator=(const NatsCluster&) = delete;

    // broker::ClusterLink
    void interest_added(std::string_view filter) override;
    void interest_removed(std::string_view filter) override;
    std::uint64_t interest_ticket(bool retained) override;
    std::uint64_t publish_ticket() const override {
        return last_publish_ticket_ > publishes_confirmed_ ? last_publish_ticket_ : 0;
    }
    bool reached_no_node(std::uint64_t ticket) override;
    ReasonCode publish_refused(std::uint64_t ticket) override;
    ReasonCode publish_refusal(std::string_view topic, std::size_t size) const override;
    bool accepts_filter(std::string_view filter) const override;
    broker::ClusterMessageId last_publish_id() const override { return last_publish_id_; }
    void publish(const broker::MessageView& message) override;
    void claim_session(std::string_view client_id, bool want_state) override;
    void send_session(std::string_view node, std::string_view client_id, std::string_view state) override;
    void session_ended(std::string_view client_id) override;
    broker::ClusterCounters counters() const override;
    // nats_sessions.cpp (sessions = "replicated")
    bool replicates_sessions() const override;
    void store_session(std::string_view client_id, bool connected, std::string_view state) override;
    void drop_session(std::string_view client_id) override;
    void load_session(std::string_view client_id) override;
    void replay_session(std::string_view client_id, const std::vector<std::string>& filters,
                        std::int64_t since_ns) override;
    // nats_groups.cpp: shared subscriptions across a node's death.
    void shared_taken(std::string_view group, std::string_view member, bool persistent,
                      broker::ClusterMessageId id) override;
    void shared_done(std::string_view member, broker::ClusterMessageId id) override;
    void redispatch(std::string_view group, const broker::MessageView& message) override;
    const std::string& node_id() const override { return node_id_; }

    // The in queue's eventfd.
    void on_io(std::uint32_t events) override;

    // NatsWire::Events: the data connection on the reactor (nats_live.cpp).
    void on_wire_message(const nats::ServerMessage& m) override;
    void on_wire_pong() override;
    void on_wire_up(bool again) override;
    void on_wire_down() override;

    struct Shared;  // state shared with the libnats and link threads

private:
    NatsCluster(net::Reactor& reactor, broker::Broker& broker, const config::Cluster& config, std::string node_id);
    void change_interest(std::string_view filter, bool add);
    void drain_inbound();
    void on_claim(std::string_view payload);
    void on_claimed(std::string_view client_id, std::uint64_t stamp, std::uint32_t flags);
    void on_session(std::string_view payload);
    // sessions = "replicated": the data link broke at `down_ns`; once it is
    // back, the stream is replayed for this node's interest from then on,
    // skipping what came live (nats_sessions.cpp).
    void on_link_state(bool up, std::uint64_t at_ns);
    void replay_link();
    bool recovering_ = false;
    std::uint64_t down_ns_ = 0;
    int link_replays_left_ = 0;
    int link_replays_running_ = 0;  // posted, their end not seen yet
    int link_replay_retries_ = 0;   // failed ones tried again since the break
    net::Reactor::TimerId link_replay_timer_ = {};
    std::unordered_map<std::uint64_t, std::uint64_t> marks_at_down_;
    struct IdHash {
        std::size_t operator()(const std::pair<std::uint64_t, std::uint64_t>& p) const noexcept {
            return std::hash<std::uint64_t>()(p.first * 0x9E3779B97F4A7C15ULL ^ p.second);
        }
    };
    std::unordered_set<std::pair<std::uint64_t, std::uint64_t>, IdHash> seen_live_;
    // subjects[shared_from..]: a shared subscription's, replayed only where
    // the group gave the message to `id` (nats_groups.cpp).
    void post_replay(std::string id, std::vector<std::string> subjects, std::int64_t since_ns,
                     std::size_t shared_from = static_cast<std::size_t>(-1));
    // nats_groups.cpp: who took which shared-subscription message, batched
    // per reactor turn into the message stream (PREFIX.q.k.ORIGIN).
    void add_mark(std::uint8_t kind, std::string_view group, std::string_view member, bool persistent,
                  broker::ClusterMessageId id);
    void flush_marks();
    std::string marks_;
    std::string marks_subject_;
    net::Reactor::TimerId marks_timer_ = {};
    // The PUBLISH other nodes receive for `m` (encoded_ holds it).
    Bytes encode_message(const broker::MessageView& m);
    // Another node took the session: this node's record writes still waiting for it are dropped.
    void forget_record(std::string_view client_id);
    void on_replica(std::uint32_t tag, std::uint32_t kind, std::string_view data, std::uint64_t origin,
                    std::uint64_t seq);
    // nats_fence.cpp (issue 25): a node out of touch with the cluster. Cut
    // off longer than [cluster] disconnect_after: its clients are sent
    // away; frozen, or its link back after a break: the owner of every
    // session held here is checked (the broker fenced meanwhile).
    void install_fence();
    void remove_fence();
    void fence_link_state(bool up);
    void start_audit();
    void on_audit(std::uint32_t kind, std::string_view data, std::uint64_t revision);
    net::Reactor::TimerId cut_timer_ = {};
    bool cut_off_ = false;
    bool auditing_ = false;
    bool audit_again_ = false;
    net::Clock::time_point audit_since_{};  // the fence's start (checks that failed are retried)
    net::Reactor::TimerId audit_timer_ = {};
    // A claim the owners bucket could not order (stamped by the wall
    // clock) on a session whose client is connected here: claimed again
    // until the bucket orders one (nats_fence.cpp).
    void reclaim_unordered(const std::string& client_id);
    bool connected_here(const std::string& client_id) const;
    struct Reclaim {
        int attempts = 0;
        net::Reactor::TimerId timer = {};
    };
    std::unordered_map<std::string, Reclaim> reclaims_;
    // nats_nodes.cpp (issue 25): sessions of a node that died (no
    // heartbeat for [cluster] net_ticktime), taken over here by a
    // compare-and-set on their ownership entries: client id -> when the
    // dead node was last seen alive (wall ns, 0 unknown), until the
    // record is read (then the broker holds the adoption).
    void on_orphan(std::uint32_t kind, std::string_view data, std::uint64_t origin, std::uint64_t seq);
    void orphan_loaded(std::string_view client_id, const broker::ReplicaRecord& record);
    void post_load(std::string_view client_id, bool orphan);
    std::unordered_map<std::string, std::int64_t> adopting_;

    // Issue 26: the data connection (live messages, their interest, claims,
    // hand-overs, parts of large messages) spoken on the reactor's own
    // socket (nats_live.cpp); null when libnats carries it (TLS, .creds:
    // nats_link.cpp), the control connection always.
    std::unique_ptr<NatsWire> wire_;
    std::unique_ptr<StreamOut> stream_out_;  // sessions = "replicated" on the wire: the stream's publishes
    void start_wire();
    // A live message (or a bulk reference) with its reply subject; false
    // only when libnats' queue is over its bound (wire: always taken, and
    // counted as lost when it cannot go).
    bool send_live(Bytes bytes, bool confirm);
    // A plain publish on the data connection: claims, hand-overs, bulk
    // parts (`bulk`: not counted against the queue's bound).
    bool send_plain(std::string_view subject, std::string_view a, std::string_view b, bool bulk);
    void send_barrier(bool retained);
    // A live message or a pack of them (pack_marker); one of them.
    void on_live(const char* data, std::size_t len, std::uint64_t origin, std::uint64_t seq);
    void on_live_one(const char* data, std::size_t len, std::uint64_t origin, std::uint64_t seq, bool packed);
    void flush_wire();
    void confirm_live_upto(std::uint64_t n);
    void sweep_wire();
    std::deque<std::pair<std::uint64_t, bool>> wire_barriers_;  // interest barriers waiting for their PONG
    std::deque<std::pair<std::uint64_t, net::Clock::time_point>> wire_sent_;  // QoS 1/2 batch barriers unanswered
    std::uint64_t wire_barrier_sent_ = 0;  // tickets covered by a batch barrier
    std::uint64_t wire_confirm_now_ = 0;   // tickets to confirm at once (NATS down)
    net::Reactor::TimerId wire_confirm_timer_{};
    net::Reactor::TimerId wire_sweep_timer_{};
    std::string nobody_subject_;
    std::string reply_prefix_o_;  // "_o.ORIGIN."
    std::string reply_prefix_p_;  // "_p.ORIGIN."
    std::string reply_;           // reused per message
    std::uint64_t join_next_ = 0;  // the live message that may join the last one's pack (0: none)
    std::uint64_t unsent_control_ = 0;
    std::uint64_t cached_origin_ = 0;
    std::uint64_t* cached_last_ = nullptr;  // &last_seq_[cached_origin_]

    net::Reactor& reactor_;
    broker::Broker& broker_;
    std::string node_id_;
    std::string prefix_;
    std::string live_root_;  // PREFIX.m (built once, not per message)
    std::unique_ptr<Shared> shared_;
    net::UniqueFd eventfd_;

    // Reactor-side interest: NATS subscription key (subject, queue) ->
    // how many local subscriptions need it and the id the link thread
    // knows it by.
    struct Interest {
        std::uint32_t count = 0;
        std::uint32_t id = 0;
    };
    std::unordered_map<std::string, Interest> interest_;
    std::uint32_t next_interest_id_ = 1;
    // NATS subscriptions handed to the link thread, and barriers behind
    // them: the link confirms a barrier once the server answered a PING
    // sent after those subscriptions (interest_ticket).
    std::uint64_t subscribes_pushed_ = 0;
    std::uint64_t subscribes_at_barrier_ = 0;
    std::uint64_t barrier_ = 0;
    std::uint64_t confirmed_ = 0;
    // QoS 1/2 messages handed to the link thread (tag 1), the one publish()
    // just pushed (0: none, or lost), and how many NATS has (tag_sent).
    std::uint64_t publishes_pushed_ = 0;
    std::uint64_t live_pushed_ = 0;  // publish_live ops pushed (the link thread's live_seq)
    broker::ClusterMessageId last_publish_id_;
    std::uint64_t last_publish_ticket_ = 0;
    std::uint64_t publishes_confirmed_ = 0;
    std::uint64_t live_sent_ = 0;  // NATS has the publishes up to this one (tag_sent)
    std::deque<std::uint64_t> retained_pending_;  // retained QoS 1/2 publishes the stream has not acknowledged
    void release_publishes();
    // sessions = "replicated": QoS 1/2 publishes the message stream has not
    // answered yet (ticket, answered), in ticket order, and those it did
    // not store in time (nats_durable.hpp).
    std::deque<std::pair<std::uint64_t, bool>> durable_pending_;
    std::vector<std::uint64_t> refused_;
    void durable_result(std::uint64_t ticket, bool stored);
    std::deque<std::uint64_t> unreceived_;  // tickets NATS said no other node wanted
    // Shared subscriptions: "$share/NAME/FILTER" <-> tag on NATS messages.
    std::unordered_map<std::string, std::uint32_t> shared_tags_;
    std::vector<std::string> shared_filters_;

    // Session claims made here recently: client id -> (stamp); a remote
    // claim older than ours loses (see claim_session).
    struct Claim {
        std::uint64_t stamp;
        net::Clock::time_point at;
    };
    std::unordered_map<std::string, Claim> claims_;
    // The claims settled here in the order they settled, to forget those
    // older than a minute a few at a time (a whole scan of claims_ per
    // 1,024 claims held a storm's turns ~1 ms each, issue 26).
    std::deque<std::pair<std::string, net::Clock::time_point>> claims_by_age_;
    void forget_old_claims(net::Clock::time_point now);
    // Claims whose compare-and-set is still running on the KV thread, and
    // the newest remote claim for the id that arrived meanwhile: it is
    // compared with ours once our stamp is known.
    struct PendingClaim {
        std::uint32_t count = 0;
        std::uint64_t remote_stamp = 0;
        std::string remote_node;
        bool remote_wants_state = false;
    };
    std::unordered_map<std::string, PendingClaim> pending_claims_;
    // Sessions that ended here, released (their ownership entries removed)
    // a moment later unless the id is in use here again by then: a CONNECT
    // that replaces a session ends the old one after its own claim settled.
    // At most release_batch per turn (~1 µs each: a fleet of 18,000
    // leaving held a turn for 3-6 ms, issue 26).
    std::deque<std::pair<std::string, net::Clock::time_point>> ended_;
    static constexpr std::size_t release_batch = 1024;
    net::Reactor::TimerId release_timer_{};
    bool release_armed_ = false;
    void release_ended();

    // Messages over max_payload (BulkHeader in nats_shared.hpp): parts
    // being reassembled and whole messages whose reference has not come
    // yet, by (origin, seq); references whose parts are still coming.
    // Bounded in bytes and age (bulk_wait): what is incomplete then is
    // dropped and counted as lost.
    struct Bulk {
        std::vector<std::byte> data;
        std::uint32_t next = 0;
        std::uint32_t count = 0;
        std::size_t counted = 0;  // in bulk_bytes_
        net::Clock::time_point at;
        std::vector<std::uint32_t> waiting_tags;  // references already here
    };
    std::map<std::pair<std::uint64_t, std::uint64_t>, Bulk> bulks_;
    std::size_t bulk_bytes_ = 0;
    bool publish_bulk(Bytes bytes, bool confirm);
    std::string bulk_subject_;
    void on_bulk_part(const char* data, std::size_t len);
    void on_bulk_reference(std::uint32_t tag, const char* data, std::size_t len, std::uint64_t origin,
                           std::uint64_t seq);
    void route_live(std::uint32_t tag, Bytes bytes, std::uint64_t origin, std::uint64_t seq);
    void expire_bulks();
    std::string subject_;             // reused per message
    // The live subjects of recent topics, direct-mapped by the topic's
    // hash: mapping a topic on every message was ~470 of a publishing
    // node's ~2,400 instructions per message (docs/profiling.md).
    struct SubjectSlot {
        std::string topic;
        std::string subject;
    };
    std::array<SubjectSlot, 1024> subject_cache_;
    void live_subject(std::string_view topic);  // into subject_
    std::vector<std::byte> encoded_;  // reused per message
    std::vector<char> inbound_;       // swapped with the in queue
    // origin -> last sequence seen; never erased (on_live keeps a pointer
    // to the last origin's entry).
    std::unordered_map<std::uint64_t, std::uint64_t> last_seq_;
    // The same for messages the queue groups gave this node (nats_groups.cpp).
    std::unordered_map<std::uint64_t, std::uint64_t> shared_last_;
    std::uint64_t retained_in_ = 0;
    std::uint64_t takeovers_in_ = 0;
    std::uint64_t sessions_sent_ = 0;
    std::uint64_t sessions_received_ = 0;
};

}  // namespace mqttools::cluster
