// Persistent sessions kept in the cluster (issue 25, `[cluster] sessions =
// "replicated"`): any node resumes a session whose node died.
//
// Shape (docs/cluster.md, "What survives what"): the node that holds a
// persistent session writes its record (session_transfer.cpp's state:
// subscriptions with options, expiry, in-flight and queued QoS 1/2
// messages, inbound QoS 2 ids) to a JetStream key/value bucket when the
// client connects, subscribes, unsubscribes or goes away, and every 500 ms
// while its messages move. Every QoS 1/2 message is in the message stream
// before anyone acknowledged it (nats_durable.hpp), so what the record
// lacks is replayed from the stream: the record names, per publishing node,
// the last message this node had routed when it was written (watermarks);
// later ones matching the session's filters are its missing tail.
//
// Resuming: a CONNECT with Clean Start 0 that no live node answered
// (session_transfer.cpp's hand-over wait) reads the record, imports it,
// waits until its interest is in place on NATS (so nothing published from
// then on is missed), replays the stream from the record's time, then goes
// on with Session Present 1: in-flight messages resent with DUP, then the
// queue ([MQTT-4.4.0-1]). At least once: messages the client acknowledged
// after the record was written come again (QoS 1 with DUP unset, as new).
#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

constexpr std::uint32_t never_expires = 0xFFFFFFFF;
// How long a CONNECT waits for the record and the replay; beyond, it goes
// on with what it has (a new session when nothing came).
constexpr auto replica_wait = std::chrono::milliseconds(5000);
// The replay starts this long before the record was written: messages on
// their way to the node then (NATS, its queues) are in it.
constexpr std::int64_t replay_margin_ns = 5'000'000'000;
constexpr auto replica_interval = std::chrono::milliseconds(500);

std::uint64_t signature(const Session& s) {
    std::uint64_t h = s.subscriptions.size();
    if (const OutboundState* o = s.outbound.get()) {
        h = h * 1000003 + o->inflight.size();
        h = h * 1000003 + o->queue.size();
        h = h * 1000003 + o->last_packet_id;
    }
    h = h * 1000003 + s.inbound_qos2.size();
    return h * 1000003 + s.expiry_interval + (s.connection ? 1 : 0);
}

// A record's state is the session's will, then session_transfer.cpp's
// state: a node that resumes (or ends) the session of a client whose node
// died sends that will, once (nobody else can: it died with its node).
// Will: 'W', has_will, then delay, QoS, retain, has_expiry, expiry (u32),
// topic, payload, properties (u32 length + bytes each).
constexpr char will_marker = 'W';

template <class T>
void put(std::string& out, T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_bytes(std::string& out, std::string_view b) {
    put(out, static_cast<std::uint32_t>(b.size()));
    out.append(b);
}

std::string will_prefix(const Session& s) {
    std::string out(1, will_marker);
    put<std::uint8_t>(out, s.will && s.will->message ? 1 : 0);
    if (!s.will || !s.will->message) return out;
    const Message& m = *s.will->message;
    put<std::uint32_t>(out, s.will->delay);
    put<std::uint8_t>(out, static_cast<std::uint8_t>(m.qos));
    put<std::uint8_t>(out, m.retain ? 1 : 0);
    put<std::uint8_t>(out, s.will->expiry_interval ? 1 : 0);
    put<std::uint32_t>(out, s.will->expiry_interval.value_or(0));
    put_bytes(out, m.topic);
    put_bytes(out, m.payload);
    put_bytes(out, m.properties);
    return out;
}

template <class T>
bool get(std::string_view& in, T& v) {
    if (in.size() < sizeof v) return false;
    std::memcpy(&v, in.data(), sizeof v);
    in.remove_prefix(sizeof v);
    return true;
}

bool get_bytes(std::string_view& in, std::string_view& b) {
    std::uint32_t n = 0;
    if (!get(in, n) || n > in.size()) return false;
    b = in.substr(0, n);
    in.remove_prefix(n);
    return true;
}

struct RecordedWill {
    bool present = false;
    std::uint32_t delay = 0;
    MessageView view;
    std::optional<std::uint32_t> expiry;
};

// Takes the will off the front of `state` (a record without one, from an
// older node, has none).
RecordedWill take_will(std::string_view& state) {
    RecordedWill w;
    if (state.empty() || state[0] != will_marker) return w;
    std::string_view in = state.substr(1);
    std::uint8_t has = 0;
    if (!get(in, has)) return w;
    if (has) {
        std::uint8_t qos = 0, retain = 0, has_expiry = 0;
        std::uint32_t expiry = 0;
        std::string_view topic, payload, properties;
        if (!get(in, w.delay) || !get(in, qos) || !get(in, retain) || !get(in, has_expiry) || !get(in, expiry) ||
            !get_bytes(in, topic) || !get_bytes(in, payload) || !get_bytes(in, properties)) {
            return w;
        }
        w.present = !topic.empty();
        w.view.topic = topic;
        w.view.payload = as_bytes(payload);
        w.view.properties = as_bytes(properties);
        w.view.qos = static_cast<QoS>(qos & 3);
        w.view.retain = retain != 0;
        if (has_expiry) w.expiry = expiry;
    }
    state = in;
    return w;
}

}  // namespace

void Broker::replicate_session(Session& s) {
    if (!cluster_ || !cluster_->replicates_sessions() || s.bridge) return;
    if (s.expiry_interval == 0) {
        if (s.replicated) cluster_->drop_session(s.client_id);
        s.replicated = false;
        return;
    }
    s.replicated = true;
    // Possibly another node's by now: written once the check is over
    // (cluster_fence.cpp), if it is still ours.
    if (cluster_fenced_) return;
    s.replica_signature = signature(s);
    ++s.records_requested;
    cluster_->store_session(s.client_id, s.connection != nullptr, will_prefix(s) + export_session(s));
    if (!replica_timer_) {
        replica_timer_ = reactor_.add_timer_after(replica_interval, [this] {
            replica_timer_ = {};
            replicate_changed_sessions();
        });
    }
}

void Broker::hold_for_record(Session& s) {
    // The write that will hold what is held now: one at the next turn
    // (after the fence, when fenced: cluster_fence writes then).
    s.record_hold_until = s.records_requested + 1;
    record_wanted_.push_back(s.client_id);
    if (record_timer_) return;
    record_timer_ = reactor_.add_timer_after(std::chrono::milliseconds(0), [this] {
        record_timer_ = {};
        std::vector<std::string> wanted;
        wanted.swap(record_wanted_);
        std::sort(wanted.begin(), wanted.end());
        wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
        for (const std::string& id : wanted) {
            Session* s = sessions_.find(id);
            if (!s || s->records_stored >= s->record_hold_until) continue;
            if (s->records_requested >= s->record_hold_until) continue;  // written since
            replicate_session(*s);
        }
    });
}

void Broker::session_record_stored(std::string_view client_id) {
    Session* s = sessions_.find(client_id);
    if (!s) return;
    ++s->records_stored;
    if (s->records_stored >= s->record_hold_until) release_recorded(*s);
}

void Broker::release_recorded(Session& s) {
    OutboundState* o = s.outbound.get();
    if (!o) return;
    Connection* c = s.connection;
    const bool live = c && c->state == Connection::State::connected;
    for (auto it = o->inflight.begin(); it != o->inflight.end();) {
        if (!it->held_for_record) {
            ++it;
            continue;
        }
        it->held_for_record = false;
        if (!live) {
            ++it;  // resent with DUP when the client is back (resume_session)
        } else if (it->state == OutboundMessage::State::awaiting_pubcomp) {
            c->send(AckPacket{PacketType::pubrel, it->packet_id, ReasonCode::success, {}});
            ++it;
        } else if (note_shared_done(s, *it), !send_publish(*c, *it, it->maybe_sent)) {  // too large: dropped
            if (it->store_seq) persist_outbound_done(s, *it);
            it = o->inflight.erase(it);
        } else {
            ++it;
        }
    }
    if (live) pump(s);
}

// Connected sessions whose messages moved since their record was written.
void Broker::replicate_changed_sessions() {
    bool any = false;
    sessions_.for_each([&](Session& s) {
        if (!s.replicated || !s.connection || s.handing_over) return;
        any = true;
        if (signature(s) != s.replica_signature) replicate_session(s);
    });
    if (any && !replica_timer_) {
        replica_timer_ = reactor_.add_timer_after(replica_interval, [this] {
            replica_timer_ = {};
            replicate_changed_sessions();
        });
    }
}

// The hand-over wait ended without a live node answering: read the
// record instead. False when there is nothing to read (local sessions,
// or its claim never settled: NATS is down, so is the bucket).
bool Broker::load_replica(Connection& c) {
    auto it = parked_.find(&c);
    if (it == parked_.end() || it->second.loading || !it->second.settled || !cluster_ ||
        !cluster_->replicates_sessions()) {
        return false;
    }
    it->second.loading = true;
    Connection* cp = &c;
    it->second.timer = reactor_.add_timer_after(replica_wait, [this, cp] {
        auto p = parked_.find(cp);
        if (p == parked_.end()) return;
        p->second.timer = {};
        spdlog::warn("Client {}: its session record and replay did not come within {} s (JetStream slow or "
                     "electing a leader); refused with Server unavailable so that it tries again.",
                     p->second.client_id, replica_wait.count() / 1000);
        refuse_resume(*cp);
    });
    cluster_->load_session(c.client_id);
    return true;
}

// A resume that cannot complete now (its record or replay late, JetStream
// unreachable): the CONNECT is refused with 0x88 Server unavailable (MQTT
// 3.1.1: 3) rather than answered with a new session, which would lose the
// session's messages for good (Session Present 0). The client connects
// again, as HiveMQ's and EMQX's users expect of a node that cannot serve
// them yet. What was under way goes on: a record imported meanwhile, and
// its replay, stay on this node (replay_done), where the next CONNECT finds
// them, here or through the hand-over from another node.
void Broker::refuse_resume(Connection& c) {
    auto it = parked_.find(&c);
    if (it == parked_.end()) return;
    const std::string client_id = it->second.client_id;
    drop_parked(c);
    if (auto r = replays_.find(client_id); r != replays_.end() && r->second.connection == &c) {
        r->second.connection = nullptr;
    }
    if (c.state != Connection::State::connect_pending) return;
    c.state = Connection::State::awaiting_connect;
    refuse_connect(c, c.version, ReasonCode::server_unavailable);
}

// The hand-over wait ran out before this CONNECT's ownership claim was
// even settled (the owners bucket unreachable: NATS frozen, JetStream
// electing a leader, the node's link down): nobody could say whether, or
// where, the cluster holds a session for the id, nor read its record. With
// Clean Start 0 and replicated sessions a new session (Session Present 0)
// would let the client believe the session gone while another node, or
// the record, still holds it with its queued messages, so the CONNECT is
// refused with 0x88 Server unavailable (MQTT 3.1.1: 3), as refuse_resume
// does; the client connects again and resumes once the claim settles.
// Clean Start 1 goes on with its new session (what it asked for): its
// claim still goes out and is ordered by the bucket once NATS answers, and
// the node that held the id then closes its connection with 0x8E
// (nats_cluster.cpp, reclaim_unordered). A session held here goes on.
bool Broker::refuse_unsettled(Connection& c) {
    auto it = parked_.find(&c);
    if (it == parked_.end() || it->second.settled || c.clean_start || !cluster_ ||
        !cluster_->replicates_sessions() || sessions_.find(it->second.client_id)) {
        return false;
    }
    spdlog::warn("Client {}: its claim on the client id did not settle within the hand-over wait (the cluster's "
                 "ownership bucket unreachable); Clean Start 0 refused with Server unavailable so that it tries again.",
                 it->second.client_id);
    refuse_resume(c);
    return true;
}

void Broker::session_unreadable(std::string_view client_id) {
    Connection* waiting = nullptr;
    for (auto [conn, p] : parked_with(client_id)) {
        if (p->loading) waiting = conn;
    }
    if (!waiting) return;
    spdlog::warn("Client {}: the cluster's session records cannot be read (JetStream unreachable); refused with "
                 "Server unavailable so that it tries again.",
                 client_id);
    refuse_resume(*waiting);
}

void Broker::session_loaded(std::string_view client_id, const ReplicaRecord& record) {
    Connection* waiting = nullptr;
    for (auto [conn, p] : parked_with(client_id)) {
        if (p->loading) waiting = conn;
    }
    if (!waiting) return;
    if (!record.found) {
        spdlog::debug("Client {}: the cluster holds no record of its session.", std::string(client_id));
        resume_parked(*waiting);
        return;
    }
    std::string from_node;
    std::string_view state = record.state;
    const RecordedWill will = take_will(state);
    if (!import_session(client_id, state, from_node)) {
        resume_parked(*waiting);
        return;
    }
    Session* s = sessions_.find(client_id);
    const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    // The will of the connection its node took down (or of one that went
    // away with a Will Delay the node did not live to see out): due unless
    // the client came back within the delay, counted from the record (no
    // later than the node's death). Sent here, once: the node is gone.
    if (will.present) {
        const std::int64_t since_ns = now_ns - record.written_ns;
        const bool expired = s->expiry_interval != never_expires &&
                             since_ns >= std::int64_t{s->expiry_interval} * 1'000'000'000;
        if (expired || since_ns >= std::int64_t{will.delay} * 1'000'000'000) {
            spdlog::info("Client {}: sending the will of its connection on {}, which is gone.", s->client_id,
                         from_node);
            send_will(make_message(will.view, reactor_.now()), will.expiry, nullptr);
        }
    }
    // Expired while nobody held it: the record was written when its client
    // went away, so its expiry counts from then.
    if (!record.connected && s->expiry_interval != never_expires &&
        record.written_ns + std::int64_t{s->expiry_interval} * 1'000'000'000 < now_ns) {
        spdlog::info("Client {}: its session expired while its node was gone.", s->client_id);
        cluster_->drop_session(s->client_id);
        end_session(*s);
        resume_parked(*waiting);
        return;
    }
    spdlog::info("Client {}: session resumed from the cluster's record (written by {}).", s->client_id, from_node);
    if (s->outbound) {
        for (OutboundMessage& m : s->outbound->queue) m.maybe_sent = true;
    }
    replays_[std::string(client_id)].connection = waiting;
    replay_from_record(client_id, record);
}

// The messages the record's session missed since it was written: read
// from the stream once its interest is on NATS.
void Broker::replay_from_record(std::string_view client_id, const ReplicaRecord& record) {
    Replay& r = replays_[std::string(client_id)];
    r.watermarks = record.watermarks;
    r.shared_watermarks = record.shared_watermarks;
    r.since_ns = record.written_ns - replay_margin_ns;
    r.done = false;
    // What comes live from now on reaches the session (its subscriptions
    // are in the tree): the replay's late part skips it.
    r.seen_from = late_arrivals_ + 1;
    // Its interest must be on NATS before the replay reads the stream:
    // a message published in between would be in neither.
    r.ticket = cluster_->interest_ticket(false);
    r.started = false;
    if (r.ticket == 0 || r.ticket <= interest_confirmed_) start_replay(std::string(client_id));
}

void Broker::start_replay(const std::string& client_id) {
    auto it = replays_.find(client_id);
    Session* s = sessions_.find(client_id);
    if (it == replays_.end() || it->second.started) return;
    it->second.started = true;
    std::vector<std::string> filters;
    if (s) {
        // Shared subscriptions too: the cluster replays only the messages
        // the group's queue gave this member (nats_groups.cpp).
        for (const auto& [filter, options] : s->subscriptions) filters.emplace_back(filter);
    }
    if (filters.empty()) {
        replay_done(client_id);
        return;
    }
    ++it->second.late_open;
    cluster_->replay_session(client_id, filters, it->second.since_ns);
}

void Broker::replayed_message(std::string_view client_id, Bytes packet, std::uint64_t origin, std::uint64_t seq,
                              bool shared) {
    auto it = replays_.find(std::string(client_id));
    Session* s = sessions_.find(client_id);
    if (it == replays_.end() || !s) return;
    for (const ClusterMessageId& w : shared ? it->second.shared_watermarks : it->second.watermarks) {
        if (w.origin == origin && seq <= w.seq) return;  // in the record, or acknowledged
    }
    if (origin != 0) {
        // Routed to it already: live since it was imported, or replayed.
        auto [seen, fresh] = late_seen_.try_emplace({origin, seq}, 0);
        if (!fresh && seen->second >= it->second.seen_from) return;
        seen->second = ++late_arrivals_;
    }
    if (const OutboundState* o = s->outbound.get()) {
        // Here already (came live since the session was imported).
        for (const auto* list : {&o->inflight, &o->queue}) {
            for (const OutboundMessage& m : *list) {
                if (m.message && m.message->cluster_origin == origin && m.message->cluster_seq == seq) return;
            }
        }
    }
    route_to_session(*s, packet, origin, seq, shared);
    // Past the record's watermarks, but the node that died may have sent
    // it before it died: DUP on its first PUBLISH from here.
    if (OutboundState* o = s->outbound.get(); o && !o->queue.empty()) {
        OutboundMessage& m = o->queue.back();
        if (m.message && m.message->cluster_origin == origin && m.message->cluster_seq == seq) m.maybe_sent = true;
    }
}

void Broker::replay_done(std::string_view client_id) {
    auto it = replays_.find(std::string(client_id));
    if (it == replays_.end() || it->second.done) return;
    Connection* c = it->second.connection;
    const bool adopted = it->second.adopted;
    const std::int64_t gone_ns = it->second.gone_ns;
    it->second.done = true;
    it->second.connection = nullptr;
    if (it->second.late_open == 0) forget_replay(client_id);
    if (adopted) {
        if (Session* s = sessions_.find(client_id)) arm_adopted(*s, gone_ns);
        return;
    }
    if (c && parked_.contains(c)) {
        resume_parked(*c);
        return;
    }
    // Its client left, or was refused (refuse_resume), meanwhile: the
    // session, with what the replay brought, lives on here as any offline
    // session (its record rewritten, its expiry counting), not lost.
    Session* s = sessions_.find(client_id);
    if (!s || s->connection) return;
    spdlog::info("Client {}: its session, resumed from the cluster's record, waits here for the client.",
                 s->client_id);
    if (s->expiry_interval != never_expires && !s->expiry_timer) {
        Session* sp = s;
        s->expiry_timer = reactor_.add_timer_after(std::chrono::seconds(s->expiry_interval), [this, sp] {
            sp->expiry_timer = {};
            expire_session(*sp);
        });
    }
    replicate_session(*s);
}

// JetStream could not serve the replay (nats_sessions.cpp tried for 4 s):
// it is tried again, a few times, while the CONNECT waits (or was refused).
void Broker::replay_failed(std::string_view client_id) {
    auto it = replays_.find(std::string(client_id));
    if (it == replays_.end() || it->second.done) return;
    if (++it->second.failures > 5) {
        spdlog::error("Client {}: its session's messages could not be replayed from the cluster's stream; going on "
                      "without them.",
                      client_id);
        replay_done(client_id);
        return;
    }
    it->second.started = false;
    const std::string id(client_id);
    reactor_.add_timer_after(std::chrono::seconds(1), [this, id] { start_replay(id); });
}

void Broker::late_replay_done(std::string_view client_id) {
    auto it = replays_.find(std::string(client_id));
    if (it == replays_.end()) return;
    if (--it->second.late_open <= 0 && it->second.done) forget_replay(client_id);
}

void Broker::forget_replay(std::string_view client_id) {
    replays_.erase(std::string(client_id));
    if (replays_.empty()) late_seen_.clear();
}

// ---- sessions of dead nodes (cluster/nats_nodes.cpp)

bool Broker::session_adoptable(std::string_view client_id) const {
    return !sessions_.find(client_id) && !replays_.contains(std::string(client_id)) &&
           parked_ids_.find(client_id) == parked_ids_.end();
}

void Broker::adopt_orphan(std::string_view client_id, const ReplicaRecord& record, std::int64_t gone_ns) {
    if (!cluster_) return;
    // A client of the id connected here meanwhile: ours already.
    if (!session_adoptable(client_id)) return;
    std::string from_node;
    std::string_view state = record.state;
    const RecordedWill will = record.found ? take_will(state) : RecordedWill{};
    if (!record.found || !import_session(client_id, state, from_node)) {
        // Nothing to hold (Session Expiry 0: no record): the entry goes.
        cluster_->session_ended(client_id);
        return;
    }
    Session* s = sessions_.find(client_id);
    // Its client lost its connection when its node died (last seen
    // alive), or when it went away if the record says so.
    const std::int64_t gone = record.connected ? std::max(record.written_ns, gone_ns) : record.written_ns;
    spdlog::info("Client {}: its node {} is down; this node holds its session now (from the cluster's record).",
                 s->client_id, from_node);
    s->replicated = true;
    if (will.present) {
        s->will = std::make_unique<Will>(Will{make_message(will.view, reactor_.now()), will.expiry, will.delay});
    }
    if (s->outbound) {
        for (OutboundMessage& m : s->outbound->queue) m.maybe_sent = true;
    }
    // Its messages since the record, as for a resume (session_loaded); the
    // will and the expiry are armed once they are in (replay_done), so
    // that a client returning meanwhile reads the record this node left
    // untouched (abandon_adoption).
    Replay& r = replays_[std::string(client_id)];
    r.adopted = true;
    r.gone_ns = gone;
    replay_from_record(client_id, record);
}

bool Broker::abandon_adoption(std::string_view client_id) {
    auto it = replays_.find(std::string(client_id));
    // Once replayed it is whole here: handed over as any session.
    if (it == replays_.end() || !it->second.adopted || it->second.done) return false;
    forget_replay(client_id);
    if (Session* s = sessions_.find(client_id)) {
        s->will.reset();
        s->replicated = false;  // the record is the claimer's to read
        end_session(*s);
    }
    return true;
}

// The adopted session's deadlines, counted from `gone_ns` ([MQTT-3.1.3-9]:
// the will after the shorter of its delay and the session's life; spec
// 3.1.2.11.2: the session ends when its expiry interval has passed since
// the connection closed).
void Broker::arm_adopted(Session& s, std::int64_t gone_ns) {
    const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    const std::int64_t elapsed = std::max<std::int64_t>(0, now_ns - gone_ns);
    const bool expires = s.expiry_interval != never_expires;
    const std::int64_t life = std::int64_t{s.expiry_interval} * 1'000'000'000;
    Session* sp = &s;
    if (s.will) {
        const std::int64_t due = std::int64_t{expires ? std::min(s.will->delay, s.expiry_interval) : s.will->delay} *
                                 1'000'000'000;
        if (elapsed >= due) {
            publish_will(s);
        } else {
            s.will_timer = reactor_.add_timer_after(std::chrono::nanoseconds(due - elapsed), [this, sp] {
                sp->will_timer = {};
                publish_will(*sp);
                replicate_session(*sp);  // the record without it: sent once
            });
        }
    }
    if (expires && elapsed >= life) {
        expire_session(s);  // its record and ownership entry go with it
        return;
    }
    if (expires) {
        s.expiry_timer = reactor_.add_timer_after(std::chrono::nanoseconds(life - elapsed), [this, sp] {
            sp->expiry_timer = {};
            expire_session(*sp);
        });
    }
    replicate_session(s);  // this node's record now (without the will once sent)
}

}  // namespace mqttools::broker
