// The broker: listeners, connections, sessions, the router and the
// retained store, driven by one net::Reactor. The protocol logic is split
// by packet family over protocol_*.cpp; security_hooks.cpp holds the only
// places where clients are authenticated and authorized.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/auth/auth_chain.hpp"
#include "broker/auth/dynsec.hpp"
#include "broker/auth/memory_guard.hpp"
#include "broker/admin_link.hpp"
#include "broker/admin_view.hpp"
#include "broker/cluster_link.hpp"
#include "broker/connection.hpp"
#include "broker/deadline_wheel.hpp"
#include "broker/counters.hpp"
#include "broker/message.hpp"
#include "broker/persistence.hpp"
#include "broker/retained_store.hpp"
#include "broker/session_store.hpp"
#include "broker/string_hash.hpp"
#include "broker/subscription_trie.hpp"
#include "config/config.hpp"
#include "mqttools/codec.hpp"
#include "net/reactor.hpp"
#include "net/shared_buffer.hpp"
#include "net/tls.hpp"
#include "net/websocket.hpp"
#include "net/unique_fd.hpp"

namespace mqttools::broker {

class Bridge;
struct BridgeCounters;

class Broker {
public:
    Broker(net::Reactor& reactor, const config::Config& config);
    ~Broker();
    Broker(const Broker&) = delete;
    Broker& operator=(const Broker&) = delete;

    // Serves a bound, listening socket. `name` is for logs ("127.0.0.1:1883").
    // `settings` with certfile/keyfile makes it a TLS listener (false, and
    // logged, when the certificates cannot be loaded).
    bool add_listener(net::UniqueFd fd, std::string name, const config::Listener& settings = {});

    // security_hooks.cpp: (re)loads password_file, acl_file and the TLS
    // listeners' certificates from `config`. On an error the part that
    // failed keeps its previous state and the messages are returned (at
    // startup the broker then refuses everyone: fail closed).
    std::vector<std::string> reload_security(const config::Config& config);
    const std::vector<std::string>& startup_errors() const noexcept { return startup_errors_; }

    // Serves one accepted connection through any transport (plain TCP,
    // TLS, later WebSocket; a socketpair in tests and fuzzers). The broker
    // owns it from here on; null when it cannot be watched.
    Connection* adopt(std::unique_ptr<net::Transport> transport);

    // Graceful stop: stop accepting, DISCONNECT 0x8B to every MQTT 5 client,
    // publish wills, flush what can be flushed. Call once, then stop the reactor.
    void shutdown();

    // A snapshot of the counters with the gauges filled in.
    Counters counters() const;

    // A message from the broker itself (e.g. $SYS), QoS 0.
    void publish_internal(std::string_view topic, std::string_view payload, bool retain);

    // SIGHUP (daemon/deploy_hooks.cpp): limits of `config` apply from now on;
    // listeners stay as opened. Returns the problems found (each logged).
    std::vector<std::string> apply_config(const config::Config& config);
    std::uint64_t clients_connected() const noexcept { return clients_connected_; }
    struct ListenerCounters {
        std::string name;
        std::uint64_t connections_total;  // sockets accepted on it
    };
    std::vector<ListenerCounters> listener_counters() const;

    // Bridges (bridge.hpp): started from the config at construction (their
    // connections begin on the reactor's first turn) and synced by
    // apply_config: added, removed or restarted when their table changed.
    std::vector<BridgeCounters> bridge_counters() const;

    const config::Config& config() const noexcept { return config_; }

    // persistence_hooks.cpp: with a durable store, every change to durable
    // state is recorded there and acknowledgements wait for it. `loaded` is
    // what the store found at start-up (sessions come back disconnected;
    // wills and expiry follow the spec). Call once, before serving.
    void set_persistence(Persistence* store, LoadedState&& loaded);
    // Counters about the store, for the log, $SYS and /metrics.
    struct StoreCounters {
        bool enabled = false;
        bool healthy = true;
        std::uint64_t sessions_loaded = 0;
        std::uint64_t messages_loaded = 0;  // queued QoS 1/2 messages
        std::uint64_t retained_loaded = 0;
        std::uint64_t commit_failures = 0;  // batches that did not reach the disk
        std::uint64_t refused = 0;          // QoS 1/2 and retained refused while failing
        std::uint64_t database_bytes = 0;   // the file, and its WAL (issue 31)
        std::uint64_t wal_bytes = 0;
        std::uint64_t wal_checkpoints = 0;
    };
    const StoreCounters& store_counters() const noexcept { return store_stats_; }
    // The auth sources' numbers (auth requests, cache hits, failures, latency).
    std::vector<auth::SourceMetric> auth_metrics() const {
        return auth_chain_ ? auth_chain_->metrics() : std::vector<auth::SourceMetric>();
    }
    // ---- cluster (cluster_routing.cpp): with a link this broker is one
    // node of a cluster; without one it is exactly the single-node broker.
    // Subscriptions already held (sessions loaded from the store) become
    // the link's interest.
    void set_cluster(ClusterLink* link);
    ClusterLink* cluster() const noexcept { return cluster_; }
    // A PUBLISH (MQTT 5 encoding) from another node. `shared` empty: for
    // this node's non-shared subscribers; else the "$share/NAME/FILTER"
    // group NATS picked this node for (one member gets it). False when the
    // packet cannot be decoded or the group is gone (counted by the link).
    // `origin`, `seq`: its name on NATS (ClusterMessageId), 0 when unknown.
    // `packed`: one of several messages of one subject (a pack): its
    // targets are kept for the next one (cluster_route_).
    bool route_from_cluster(Bytes packet, std::string_view shared, std::uint64_t origin = 0, std::uint64_t seq = 0,
                            bool packed = false);
    // A retained update from the cluster's store, stored `age_seconds` ago.
    bool retained_from_cluster(Bytes packet, std::uint32_t age_seconds);
    // The link has in place every interest handed to it up to `ticket`
    // (ClusterLink::interest_ticket): the SUBACKs held for it go out
    // (cluster_holds.cpp).
    void interest_confirmed(std::uint64_t ticket);
    // NATS has every message published here up to `ticket`
    // (ClusterLink::publish_ticket): the PUBACKs/PUBRECs held for them go
    // out (cluster_holds.cpp).
    void publishes_confirmed(std::uint64_t ticket);
    // Another node (`node`) accepted a CONNECT with this client id: a local
    // connection is closed with 0x8E and the local session is let go; with
    // `wants_state` its state goes to that node (session_transfer.cpp). A
    // CONNECT parked here for that id lost the race: it is accepted, then
    // taken over. True when something here was let go.
    bool session_claimed_elsewhere(std::string_view client_id, std::string_view node, bool wants_state);
    // A session with this client id lives here (connected or not).
    bool has_session(std::string_view client_id) const { return sessions_.find(client_id) != nullptr; }
    // This node's claim for `client_id` is settled (this node owns it now).
    // What the CONNECT parked for it does next: go on; keep waiting for
    // session_arrived (another node held the session); or read the
    // cluster's record of the session first (nobody else owned the id, yet
    // a Clean Start 0 must not be told Session Present 0 while the record
    // bucket holds its session).
    enum class AfterClaim { go_on, wait_for_state, read_record };
    void claim_settled(std::string_view client_id, AfterClaim next);
    // session_transfer.cpp: the state of a session another node let go, for
    // a CONNECT parked here; applied and the CONNECT goes on (Session
    // Present 1). Ignored when no CONNECT waits for it any more.
    void session_arrived(std::string_view client_id, std::string_view state);
    // session_replica.cpp (sessions = "replicated"): a session's record read
    // from the cluster for a CONNECT no node answered, then the messages
    // replayed for it from the stream, then the end of the replay.
    void session_loaded(std::string_view client_id, const ReplicaRecord& record);
    // `shared`: replayed for one of its shared subscriptions (a message its
    // dead node had taken for it from the group, nats_groups.cpp).
    void replayed_message(std::string_view client_id, Bytes packet, std::uint64_t origin, std::uint64_t seq,
                          bool shared = false);
    void replay_done(std::string_view client_id);
    void replay_failed(std::string_view client_id);
    // The record could not be read (JetStream unreachable): the CONNECT is refused, 0x88.
    void session_unreadable(std::string_view client_id);
    // After replay_done, messages the stream stored late may still come
    // (replayed_message, deduplicated against what the session got), until this.
    void late_replay_done(std::string_view client_id);
    // session_replica.cpp (issue 25): the session of a node that died,
    // taken over here (the cluster won its ownership entry): held as a
    // disconnected session whose client lost its connection at `gone_ns`
    // (wall ns; 0 unknown: the record's time): its will after its delay,
    // its expiry, its messages replayed. adoptable: nothing of the id is
    // here (session, CONNECT, replay). abandon_adoption: a returning client
    // claimed it before the replay ended: dropped without a trace (the
    // claimer resumes it from the record); false when none was running.
    bool session_adoptable(std::string_view client_id) const;
    void adopt_orphan(std::string_view client_id, const ReplicaRecord& record, std::int64_t gone_ns);
    bool abandon_adoption(std::string_view client_id);
    // cluster_fence.cpp (issue 25): the node lost touch with the cluster.
    // cut: cut off from NATS for longer than [cluster] disconnect_after:
    // every client is disconnected (0x9C Use another server) so that it
    // fails over, and CONNECTs are refused (0x88) until NATS is back.
    void cluster_cut_off(bool cut);
    // on: other nodes may have taken sessions held here (the node was
    // frozen, or its link broke) and the link is checking which: meanwhile
    // no queued message goes out, no record is written, no will is sent.
    // off: the check is over; what was held goes on.
    void cluster_fence(bool on);
    bool cluster_fenced() const noexcept { return cluster_fenced_; }
    // A record write of `client_id`'s session was answered (stored or not;
    // session_replica.cpp): QoS 2 packets held for it go out.
    void session_record_stored(std::string_view client_id);
    // The check found another node owning `client_id`: the session here is
    // stale and goes without a trace (0x8E to a connection it still has,
    // no will, no record written or deleted).
    void session_owned_elsewhere(std::string_view client_id);
    net::Reactor& reactor() noexcept { return reactor_; }

    // ---- admin_hooks.cpp: the management API (src/admin) and client
    // lifecycle events. The API reads sessions and retained messages
    // directly, on the reactor's thread.
    const SessionStore& sessions() const noexcept { return sessions_; }
    RetainedStore& retained() noexcept { return retained_; }
    BanList& bans() noexcept { return bans_; }
    // A ban from the API (false: already banned) / lifted (false: none):
    // kept in the store, applied on every node of a cluster; clients it
    // matches are kicked (enforce_ban).
    bool add_ban(const Ban& ban);
    bool remove_ban(Ban::Kind as, std::string_view who);
    // Calls `done(true)` on the reactor's thread once every change recorded
    // so far is on disk, `done(false)` when its commit failed; at once
    // (true) without persistence. The API answers a ban only then.
    void when_durable(std::function<void(bool)> done);
    // Cluster-wide admin state (admin_link.hpp); null without a cluster.
    void set_admin_link(AdminLink* link) noexcept { admin_link_ = link; }
    AdminLink* admin_link() const noexcept { return admin_link_; }
    // Another node's ban / lifted ban, and dynamic security document with
    // the usernames its change disconnected (dynsec_hooks.cpp).
    void ban_from_cluster(const Ban& ban, bool removed);
    void dynsec_from_cluster(std::string_view document, const std::vector<std::string>& kick_usernames,
                             bool kick_anonymous);
    // This node's dynamic security file as text ("" without one).
    std::string dynsec_document() const;
    // Closes every connection the ban matches with DISCONNECT 0x98;
    // returns how many.
    std::size_t enforce_ban(const Ban& ban);
    // Closes the client's connection with DISCONNECT 0x98 (Administrative
    // action); false when it has none.
    bool kick(std::string_view client_id);
    // Deletes the retained message of `topic` (as an empty retained
    // PUBLISH would, also in the store); false when there was none.
    bool delete_retained(std::string_view topic);
    // A message from the management API: routed like a client's (retained,
    // persisted, to the cluster), with no publisher session. Returns how
    // many local sessions it went to.
    std::size_t publish_admin(MessageView& message);
    void set_client_observer(ClientObserver* observer) noexcept { observer_ = observer; }

    // ---- used by Connection
    MutableBytes read_scratch() noexcept { return {scratch_.data(), scratch_.size()}; }
    // Setting connections up (TLS handshake steps, WebSocket upgrades,
    // CONNECT packets) shares a budget of reactor time per turn: 500 TLS
    // handshakes arriving together would otherwise be worked through in one
    // turn, a quarter of a second in which no connected client is served,
    // and 10,000 plain CONNECTs at once fill every turn with 255 of them
    // and their CONNACKs (5-8 ms). A readable connection in set-up over the
    // budget (or behind others) waits in a FIFO queue with its EPOLLIN off,
    // so that thousands of them neither crowd the connected clients out of
    // epoll_wait's 256 events nor keep their events waiting behind
    // thousands in epoll's ready list; before_sleep resumes them within the
    // next budget (setup_queue.cpp).
    static constexpr net::Clock::duration setup_time_per_turn = std::chrono::milliseconds(2);
    void setup_readable(Connection& c);
    Counters& stats() noexcept { return stats_; }
    static constexpr std::size_t housekeeping_slice_size = 1024;
    // Slices of housekeeping run so far (tests: a pass over many
    // connections is spread over turns).
    std::uint64_t housekeeping_slices() const noexcept { return housekeeping_slices_; }
    std::uint32_t max_packet_size_in() const noexcept { return max_packet_in_; }
    void handle_packet(Connection& c, const FixedHeader& header, Bytes body);
    void dispatch_packet(Connection& c, const FixedHeader& header, Bytes body);
    // A framing error (malformed length, packet too large).
    void frame_error(Connection& c, ReasonCode reason);
    // The peer closed the socket or it failed.
    void connection_lost(Connection& c);
    // Closes a connection; with send_disconnect an MQTT 5 client first gets
    // DISCONNECT with `reason`. The Connection is destroyed after the turn.
    void close_connection(Connection& c, ReasonCode reason, bool send_disconnect);
    void mark_dirty(Connection& c);

private:
    struct Listener;
    friend struct Listener;
    friend class Bridge;

    // bridge_hooks.cpp
    void sync_bridges(const std::vector<config::Bridge>& wanted);
    // This broker's id in the bridge handshake (random per process, never 0).
    std::uint64_t broker_id();
    const std::string& broker_id_text();
    // CONNECT: a 3.1.1 bridge (try_private) or a remote mqttoolsd's bridge
    // announcing its broker id; the CONNACK then carries ours.
    void accept_bridge(Connection& c, const ConnectPacket& p, ConnackPacket& ack);
    // deliver(): true when this message must not go to `target` (a bridge,
    // target.peer_broker != 0) because it would loop.
    bool bridge_loop(const Session& target, std::string_view topic);
    // bridge_store.cpp, from set_persistence: the bridges take their stored
    // queues back from the sessions restored under their keys.
    void adopt_bridge_queues();

    // broker.cpp
    void accept_from(Listener& listener);
    void pause_accepting(Listener& listener);
    void before_sleep();
    void housekeeping();
    void housekeeping_slice();
    void log_close(const Connection& c, ReasonCode reason, bool by_peer);

    // protocol_connect.cpp
    void handle_connect(Connection& c, const FixedHeader& header, Bytes body);
    // The CONNECT after its credentials: `verified` is the AuthChain's
    // answer (null: a TLS identity, or a parked CONNECT going on, whose
    // answer is in c.extras). Sends CONNACK or refuses, or parks it
    // (session_transfer.cpp: the packet is `header` + `body`), or waits for
    // the ACL answer about its will (connect_pending.cpp).
    void accept_connect(Connection& c, const ConnectPacket& p, bool assigned, const auth::AuthResult* verified,
                        const FixedHeader& header, Bytes body);
    void refuse_connect(Connection& c, ProtocolVersion version, ReasonCode reason);
    bool attach_session(Connection& c, const ConnectPacket& connect, std::uint32_t session_expiry);
    void detach_session(Connection& c, bool publish_will);
    void end_session(Session& session);
    void expire_session(Session& session);
    void publish_will(Session& session);
    void send_will(const MessagePtr& message, std::optional<std::uint32_t> expiry, Session* from);
    void arm_keepalive(Connection& c);
    // Connection deadlines (CONNECT timeout, keep alive) on the wheel; one
    // reactor timer drives it, armed for the wheel's next occupied tick.
    void schedule_deadline(Connection& c, Clock::time_point when);
    void arm_wheel(Clock::time_point at);
    void release_idle_extras(Connection& c);
    void on_wheel_tick();
    void on_deadline(Connection& c);
    void handle_disconnect(Connection& c, const FixedHeader& header, Bytes body);
    std::string assign_client_id();

    // connect_pending.cpp: CONNECTs waiting for an answer of the AuthChain
    // (a password hash on the AuthPool, an HTTP auth service) or for the ACL
    // answer about their will. Answers are applied in arrival order per
    // client id, so a takeover between two pending CONNECTs ends as it
    // would have without the wait. PendingConnects is the AuthHost the
    // sources answer through.
    struct PendingConnects;
    void start_authentication(Connection& c, const ConnectPacket& p, const FixedHeader& header, Bytes body,
                              bool assigned);
    void wait_for_will_check(Connection& c, const auth::AuthResult& verified, const FixedHeader& header, Bytes body,
                             bool assigned, std::uint64_t waiter);
    void on_auth_results();
    void on_connect_answered(std::uint64_t ticket, auth::AuthResult result);
    void on_acl_answered(std::uint64_t waiter);
    void finish_pending_connects(const std::string& client_id);
    // A connect_pending connection closes: its answer is discarded.
    void abandon_pending_connect(Connection& c);

    // session_transfer.cpp: in a cluster a CONNECT waits ("parked",
    // reading paused, in State::connect_pending) until its claim on the
    // client id is settled and, with Clean Start 0, until the node that
    // held the session sent it; then, or after a bounded wait, it goes on
    // in accept_connect.
    struct Parked {
        std::string client_id;
        FixedHeader header;
        std::vector<std::byte> body;  // the CONNECT's body (wiped when dropped: password)
        bool assigned = false;
        bool settled = false;   // its claim is settled (claim_settled)
        bool loading = false;   // no node answered: reading the session's record (session_replica.cpp)
        std::uint64_t seq = 0;  // parking order
        net::Reactor::TimerId timer = {};
    };
    bool park_connect(Connection& c, const FixedHeader& header, Bytes body, bool assigned);
    // session_replica.cpp (issue 25): persistent sessions in JetStream.
    void replicate_session(Session& s);
    void replicate_changed_sessions();
    bool load_replica(Connection& c);
    void start_replay(const std::string& client_id);
    void replay_from_record(std::string_view client_id, const ReplicaRecord& record);
    void forget_replay(std::string_view client_id);
    void refuse_resume(Connection& c);
    bool refuse_unsettled(Connection& c);
    void route_to_session(Session& s, Bytes packet, std::uint64_t origin, std::uint64_t seq, bool shared = false);
    // A session ending here for good: its shared-subscription messages no
    // client completed go to another member of their group (cluster_routing.cpp),
    // once the session is gone (so it is not picked again).
    struct SharedHandback {
        std::string group;  // "$share/NAME/filter"
        MessagePtr message;
    };
    std::vector<SharedHandback> shared_unfinished(const Session& s) const;
    void hand_back_shared(std::vector<SharedHandback>& messages);
    void end_session_handing_back(Session& s);
    SharedGroup* local_group(std::string_view topic, std::string_view shared);
    void deliver_to_group(SharedGroup& group, std::string_view shared, MessageView& m);
    // The member `s` is done with `m` (QoS 1 acknowledged, QoS 2 sent).
    void note_shared_done(Session& s, const OutboundMessage& m) {
        if (m.from_shared && cluster_ && m.message && m.message->cluster_origin != 0) {
            cluster_->shared_done(s.client_id, {m.message->cluster_origin, m.message->cluster_seq});
        }
    }
    void note_shared_taken(std::string_view group, Session& s, const MessageView& m, QoS qos);
    struct Replay {
        Connection* connection = nullptr;
        std::vector<ClusterMessageId> watermarks;
        std::vector<ClusterMessageId> shared_watermarks;
        std::int64_t since_ns = 0;
        std::uint64_t ticket = 0;  // interest to wait for before the replay
        bool started = false;
        bool done = false;       // replay_done: late ones may still come
        int late_open = 0;       // replays whose late window is open
        int failures = 0;        // replays JetStream could not serve
        std::uint64_t seen_from = 0;  // late_seen_ entries from here on reached the session
        net::Reactor::TimerId timer = {};
        bool adopted = false;      // adopt_orphan's: no CONNECT waits
        std::int64_t gone_ns = 0;  // adopt_orphan's
    };
    void arm_adopted(Session& s, std::int64_t gone_ns);
    std::unordered_map<std::string, Replay> replays_;
    // While a replay is open: every QoS 1/2 message from the cluster routed
    // here since (ClusterMessageId -> its arrival number), so that a
    // message the stream stored late is not given twice to a session that
    // had it live (QoS 2: no duplicate; QoS 1: no needless redelivery).
    struct IdKeyHash {
        std::size_t operator()(const std::pair<std::uint64_t, std::uint64_t>& p) const noexcept {
            return std::hash<std::uint64_t>()(p.first * 0x9E3779B97F4A7C15ULL ^ p.second);
        }
    };
    std::unordered_map<std::pair<std::uint64_t, std::uint64_t>, std::uint64_t, IdKeyHash> late_seen_;
    std::uint64_t late_arrivals_ = 0;
    net::Reactor::TimerId replica_timer_ = {};
    // Sessions whose QoS 2 packets wait for a record write, written once
    // at the next turn (one write for all the packets of this turn).
    void hold_for_record(Session& s);
    void release_recorded(Session& s);
    std::vector<std::string> record_wanted_;
    net::Reactor::TimerId record_timer_ = {};
    void resume_parked(Connection& c);
    void drop_parked(Connection& c);
    std::string export_session(Session& s);
    bool import_session(std::string_view client_id, std::string_view state, std::string& from_node);
    // A session moving between nodes: its NATS interest reaches the
    // cluster some milliseconds after the node that let it go sent its
    // state, and what NATS delivered to that node meanwhile would be lost.
    // So that node keeps the session's subscriptions and collects what
    // arrives (sending); the node that took it holds the session's queue
    // (Session::handing_over stops pump) until its own interest is in place,
    // then asks for what was collected (the tail), merges it in before the
    // messages it got directly (dropping those it got both ways, by
    // ClusterMessageId) and releases the queue. Bounded by timers on both
    // sides (session_transfer.cpp).
    struct Handover {
        std::string node;           // the other node
        bool sending = false;       // this node let the session go
        bool tail_asked = false;    // taking: the tail was asked for
        std::uint64_t ticket = 0;   // taking: the interest ticket it waits for
        std::size_t held_from = 0;  // taking: queue entries before this came with the state
        net::Reactor::TimerId timer = {};
    };
    std::unordered_map<Session*, Handover> handovers_;
    void begin_sending_handover(Session& s, std::string_view node);
    void begin_taking_handover(Session& s, std::string_view node);
    void ask_for_tail(Session& s, Handover& h);
    void send_tail(std::string_view client_id, std::string_view node);
    void take_tail(std::string_view client_id, std::string_view state);
    void end_handover(Session& s);
    // In a cluster: hands a message published on this node to the other
    // nodes and names it as they receive it (ClusterLink::last_publish_id),
    // so that a Message made of it afterwards carries that name.
    void publish_to_cluster(MessageView& m) {
        cluster_->publish(m);
        const ClusterMessageId id = cluster_->last_publish_id();
        m.cluster_origin = id.origin;
        m.cluster_seq = id.seq;
        if (!replays_.empty() && m.qos != QoS::at_most_once && id.origin != 0) {
            late_seen_.insert_or_assign({id.origin, id.seq}, ++late_arrivals_);  // session_replica.cpp
        }
    }

    // A session's filter in the subscription tree and, in a cluster, in
    // this node's interest (reference-counted by the link). True when the
    // session did not hold the filter before / held it (protocol_subscribe.cpp).
    bool add_subscription(std::string_view filter, Session* s, const SubscriptionOptions& options);
    bool remove_subscription(std::string_view filter, Session* s);

    // protocol_publish.cpp
    void handle_publish(Connection& c, const FixedHeader& header, Bytes body);
    // Routes a message to every matching subscription; returns how many
    // sessions it went to.
    std::size_t route(Session* from, MessageView& message);
    // route() in two steps: the targets of a topic (kept in targets_), then
    // the delivery to them.
    std::size_t collect_targets(Session* from, std::string_view topic, RouteCache* cache = nullptr);
    // matches_/groups_ -> targets_/ids_: one target per session.
    void merge_matches(Session* from);
    void deliver(MessageView& message);
    void acknowledge_publish(Connection& c, const PublishPacket& p, ReasonCode rc, std::uint64_t ticket,
                             bool no_local_match = false);
    void deliver_qos0(Connection& c, const MessageView& message, bool retain, std::span<const std::uint32_t> ids);
    // Topic alias for an outbound PUBLISH: 0 = none; topic_included tells
    // whether the topic must be sent along.
    std::uint16_t outbound_alias(Connection& c, std::string_view topic, bool& topic_included);
    bool over_output_bound(Connection& c);

    // protocol_qos.cpp
    void handle_ack(Connection& c, const FixedHeader& header, Bytes body);
    void enqueue(Session& s, OutboundMessage&& m);
    void pump(Session& s);
    bool send_publish(Connection& c, OutboundMessage& m, bool dup);
    void resume_session(Connection& c, Session& s);
    std::uint16_t next_packet_id(Session& s);
    void drop_queued(Session& s, const char* why);

    // persistence_hooks.cpp: recording changes, holding output until durable.
    bool persisting() const noexcept { return store_ != nullptr; }
    void persist_session(Session& s);  // after CONNECT, DISCONNECT, a will sent
    void persist_session_end(Session& s);
    void persist_subscription(Session& s, std::string_view filter, const SubscriptionOptions* options);
    void persist_enqueued(Session& s, OutboundMessage& m);
    void persist_outbound_state(Session& s, const OutboundMessage& m);
    void persist_outbound_done(Session& s, const OutboundMessage& m);
    void persist_inbound(Session& s, std::uint16_t packet_id, bool insert);
    void persist_retained(std::string_view topic, const MessagePtr& message);
    void persist_message(const MessagePtr& message);
    void store_changed(Session* s, bool output_depends = true);
    void hold(Connection& c);
    void on_store_result(const CommitResult& result);
    void restore_session(LoadedSession& loaded, Clock::time_point now, WallTime wall);
    void release_held(Connection& c);

    // protocol_subscribe.cpp
    void handle_subscribe(Connection& c, const FixedHeader& header, Bytes body);
    void handle_unsubscribe(Connection& c, const FixedHeader& header, Bytes body);

    // retained_delivery.cpp: retained messages for a new subscription, a
    // slice per reactor turn (see retained_backlog.hpp).
    void deliver_retained(Connection& c, std::string_view filter, const SubscriptionOptions& options);
    // One retained message to a subscriber; false: not sent (output or queue full).
    void send_retained(Connection& c, const MessagePtr& msg, const SubscriptionOptions& options);
    // Sends slices of every backlog (from before_sleep); keeps the reactor
    // from sleeping while a backlog can make progress.
    void feed_retained();
    // Sends up to `budget` messages of c's backlog; returns how many were taken.
    std::size_t feed_retained(Connection& c, std::size_t budget);
    bool retained_blocked(Connection& c);
    void drop_retained_backlog(Connection& c);

    // security_hooks.cpp: the single points where the security work plugs in.
    // nullopt: the ACL answer about the will is pending (c.extras->authz
    // holds the rules that will answer).
    std::optional<ReasonCode> authenticate(Connection& c, const ConnectPacket& connect,
                                           const auth::AuthResult* verified);
    // allow, deny, or pending: then the packet being handled is held
    // (Connection::hold_packet) and handled again when the answer is in.
    auth::Verdict authorize_publish(Connection& c, std::string_view topic);
    auth::Verdict authorize_subscribe(Connection& c, std::string_view filter);
    auth::Verdict authorize_unsubscribe(Connection& c, std::string_view filter);
    auth::Verdict authorize_delivery(Session& s, std::string_view topic);
    // A delivery whose read-ACL answer is to come: it waits in the
    // session's read_held queue with every later one, in order.
    void hold_delivery(Session& s, MessagePtr message, QoS qos, bool retain, std::span<const std::uint32_t> ids);
    void release_held_deliveries(Session& s);
    void hold_for_acl(Connection& c);
    // After the session is attached at CONNECT: binds its ACL to this client.
    void bind_acl(Connection& c);
    // dynsec_hooks.cpp: dynamic security (dynamic_security_file).
    void reload_dynsec(const config::Config& config, std::vector<std::string>& errors);
    bool is_dynsec_control(std::string_view topic) const noexcept;
    void handle_dynsec_control(Connection& c, Bytes payload);
    void apply_dynsec_effects(const auth::dynsec::Effects& effects);
    std::unique_ptr<auth::ClientAuthz> bound_acl(std::string_view client_id, std::optional<std::string_view> username,
                                                 std::shared_ptr<const auth::ClientRules> credentials, bool superuser);
    void forget_acl_waiter(Session& s);
    void expire_credentials_at(Connection& c, std::chrono::system_clock::time_point when);
    // memory_limit: sampled at most every few ms; true = refuse new work (0x97).
    bool memory_exceeded();
    // broker.cpp (Listener lives there): fresh TLS contexts from re-read files.
    void reload_tls(const config::Config& config, std::vector<std::string>& errors);
    static std::shared_ptr<const net::ws::ServerSettings> websocket_settings(const config::Listener& l);
    void reload_websockets(const config::Config& config);

    net::Reactor& reactor_;
    config::Config config_;
    ClusterLink* cluster_ = nullptr;
    bool cluster_cut_ = false;     // cluster_cut_off
    bool cluster_fenced_ = false;  // cluster_fence
    std::uint32_t max_packet_in_;
    std::vector<std::unique_ptr<Listener>> listeners_;
    std::vector<std::unique_ptr<Connection>> connections_;
    std::vector<Connection*> dirty_;
    std::vector<Connection*> closing_;
    // Closed connections whose sockets are still to be closed, a budget of
    // close_time_per_turn at a time (destroy_closed in broker.cpp).
    std::deque<std::unique_ptr<Connection>> closed_;
    static constexpr net::Clock::duration close_time_per_turn = std::chrono::milliseconds(1);
    void destroy_closed();
    SessionStore sessions_;
    SubscriptionTrie trie_;
    RetainedStore retained_;
    Counters stats_;
    std::uint64_t clients_connected_ = 0;
    std::uint64_t websocket_clients_ = 0;  // of those, over WebSocket
    net::Reactor::TimerId housekeeping_timer_ = {};
    // The per-second look at every connection goes in slices of
    // housekeeping_slice_size, one per turn (at 18,000 connections a whole
    // pass held one turn for 3-5 ms, issue 26), as the reactor's deferred
    // work: after the turn's output went out.
    static constexpr std::size_t no_housekeeping = ~std::size_t{0};
    std::size_t housekeeping_next_ = no_housekeeping;  // the next connection's index in the pass
    std::uint64_t housekeeping_slices_ = 0;
    void deferred_work();
    DeadlineWheel deadlines_;
    net::Reactor::TimerId wheel_timer_ = {};
    bool shutting_down_ = false;
    std::size_t sessions_ended_since_trim_ = 0;

    // Security state (security_hooks.cpp).
    std::shared_ptr<const auth::AuthChain> auth_chain_;
    // Sources the broker itself owns (dynamic security), asked before the
    // configured ones; set before reload_security builds the chain.
    std::vector<std::shared_ptr<auth::AuthSource>> own_auth_sources_;
    std::shared_ptr<auth::dynsec::Dynsec> dynsec_;  // null without dynamic_security_file
    std::string dynsec_file_;
    // Clients whose held packet, CONNECT or deliveries wait for an ACL
    // answer, by ClientAuthz::waiter (one of the two set).
    struct AclWaiter {
        Session* session = nullptr;
        std::uint64_t connect_ticket = 0;
    };
    std::unordered_map<std::uint64_t, AclWaiter> acl_waiters_;
    std::uint64_t next_waiter_ = 1;
    auth::MemoryGuard memory_;
    Clock::time_point memory_sampled_{};
    std::vector<std::string> startup_errors_;
    std::unique_ptr<PendingConnects> pending_connects_;  // the AuthHost: made before the chain
    std::unordered_map<Connection*, Parked> parked_;     // session_transfer.cpp
    // parked_ by client id: claims settle and sessions arrive per id, and a
    // scan of every parked CONNECT for each cost O(parked) per CONNECT in a
    // storm of new ids (issue 26).
    std::unordered_multimap<std::string, Connection*, StringHash, std::equal_to<>> parked_ids_;
    std::vector<std::pair<Connection*, Parked*>> parked_with(std::string_view client_id);
    Connection* resuming_ = nullptr;  // a parked CONNECT going on (not parked again)
    std::uint64_t parked_seq_ = 0;
    // SUBACKs held until the cluster confirms the interest they added
    // (protocol_subscribe.cpp); the connection is not read meanwhile, so
    // its later packets keep their order.
    struct HeldSuback {
        std::uint64_t ticket = 0;
        std::uint16_t packet_id = 0;
        std::vector<std::byte> codes;
        std::vector<std::pair<std::string, SubscriptionOptions>> retained;  // sent after the SUBACK
    };
    std::unordered_map<Connection*, HeldSuback> held_subacks_;
    // PUBACKs/PUBRECs held until NATS has the message (cluster_holds.cpp),
    // in the order the PUBLISH packets came ([MQTT-4.6.0-2], [MQTT-4.6.0-3]).
    // While a connection has a SUBACK or an acknowledgement held, what else
    // is sent to it collects behind them (Connection::begin_deferral).
    struct HeldAck {
        Connection* connection;
        std::uint64_t ticket;
        AckPacket ack;
        bool no_local_match;  // 0x10 if no other node took it either
        bool pingresp = false;  // marks a PINGRESP collected behind the held acknowledgements
        bool own = true;        // `ticket` is its own message's (not borrowed from the one before)
    };
    std::deque<HeldAck> held_acks_;
    void hold_pingresp(Connection& c);
    // Sends an acknowledgement of a client's PUBLISH: at once, or behind
    // `ticket` (nonzero) or behind those already held for the connection.
    void send_publish_ack(Connection& c, const AckPacket& ack, std::uint64_t ticket, bool no_local_match = false);
    // Ends the connection's deferral when nothing is held for it any more
    // (else starts a fresh one), appending what collected meanwhile.
    void release_deferred(Connection& c);
    void release_suback(Connection& c);
    std::uint64_t interest_confirmed_ = 0;  // the highest interest_confirmed() ticket
    void drop_holds(Connection& c);

    // Reused per message so routing allocates nothing after warm-up.
    std::vector<std::byte> scratch_;
    net::Clock::duration setup_time_{};  // this turn's, see setup_readable()
    std::deque<Connection*> setup_queue_;
    // Parked CONNECTs whose claims settled (claim_settled), by parking
    // seq: a burst of claims must not resume hundreds at once.
    std::deque<std::pair<Connection*, std::uint64_t>> settled_queue_;
    void run_setup_step(Connection& c, bool settled = false);
    void resume_setups();
    std::vector<const Subscriber*> matches_;
    std::vector<SharedGroup*> groups_;
    using Target = RouteTarget;
    std::vector<Target> targets_;
    RouteCache cluster_route_;        // the last pack's topic and targets (route_from_cluster)
    std::vector<std::uint32_t> ids_;
    struct WireForm {
        ProtocolVersion version;
        bool retain;
        std::uint16_t alias;
        bool topic_included;
        std::uint32_t ids_begin;
        std::uint32_t ids_count;
        net::BufferRef buffer;
        std::uint32_t size;
    };
    std::vector<WireForm> forms_;
    std::uint64_t match_generation_ = 0;
    std::vector<MessagePtr> retained_scratch_;
    SharedRetainedMatch retained_shared_;  // retained_delivery.cpp

    // Durable store (persistence_hooks.cpp); null without persistence.
    Persistence* store_ = nullptr;
    std::uint64_t store_ops_ = 0;          // changes recorded so far
    std::uint64_t next_message_id_ = 1;    // Message::store_id
    std::uint64_t store_durable_ = 0;      // batches on disk
    bool store_degraded_ = false;          // the last commit failed
    std::vector<Connection*> held_;        // connections with held output
    // when_durable(): the batch each waits for.
    std::vector<std::pair<std::uint64_t, std::function<void(bool)>>> durable_waiters_;
    Clock::time_point next_sweep_{};
    StoreCounters store_stats_;
    std::vector<std::unique_ptr<Bridge>> bridges_;
    std::uint64_t broker_id_ = 0;     // broker_id()
    std::string broker_id_text_;
    StringPair bridge_ack_[1];        // the CONNACK's user property (accept_bridge)
    Session* route_from_ = nullptr;   // the publisher of the message being routed
    BanList bans_;                    // admin_hooks.cpp
    AdminLink* admin_link_ = nullptr;
    ClientObserver* observer_ = nullptr;
    // CONNECT of a banned client (admin_hooks.cpp): the ban's reason is logged.
    bool connect_banned(const Connection& c);
    std::vector<Connection*> retained_work_;  // connections with a RetainedBacklog
};

}  // namespace mqttools::broker
