// Session takeover across cluster nodes (broker/cluster_link.hpp). In a
// cluster every CONNECT (but one with an assigned id) waits ("parked")
// until the link settled its claim on the client id. With Clean Start 0 and
// no session here, when another node held the id, it waits on: that node
// sends the session over — subscriptions, queued and in-flight QoS 1/2
// messages, inbound QoS 2 state — and the CONNECT then goes on as if the
// session had always been here (Session Present 1, [MQTT-3.2.2-2]). No
// answer within handover_wait: the node that had it is gone, and the
// CONNECT goes on with a new session (with sessions = "replicated", a
// Clean Start 0 CONNECT whose claim did not even settle is refused with
// 0x88 instead: session_replica.cpp, refuse_unsettled).
//
// Then the tail (Broker::Handover in broker.hpp): the old node keeps the
// session's subscriptions and collects what still reaches it until the new
// node's interest is in place; the new node asks for it ("ready") and
// merges it in before what it got directly. Message kinds on the session
// subject, by their first byte: 1/2 the state (2 names the sending node),
// 3 ready (names the asking node), 4 the tail; empty = nothing to hand over.
//
// The CONNECT parks after its credentials were checked (an unauthenticated
// client must not pull a session away from another node), in
// State::connect_pending with reading paused, like a CONNECT waiting for
// the AuthPool (connect_pending.cpp); nothing it sent after CONNECT is
// processed before its CONNACK ([MQTT-3.1.4-5]).
#include <algorithm>
#include <cstring>
#include <iterator>
#include <list>

#include <openssl/crypto.h>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

// The bound on a CONNECT's wait for its claim (a compare-and-set on the
// NATS KV bucket) and the session from the node that held it: long enough
// for both on a loaded host. Beyond it the CONNECT goes on unsettled (NATS
// down or slow; the claim still goes out) or with a new session (the node
// that held it is gone).
constexpr auto handover_wait = std::chrono::milliseconds(1500);
// A NATS message is at most 1 MiB by default (max_payload): the queued
// messages beyond this budget stay behind (counted as dropped, logged).
constexpr std::size_t state_budget = 900u << 10;
// How long the old node collects a session's tail for the new node, and
// how long the new node holds the session's queue for it.
constexpr auto tail_collect_wait = std::chrono::milliseconds(3000);
constexpr auto tail_hold_wait = std::chrono::milliseconds(2000);
constexpr std::uint8_t kind_state_v1 = 1, kind_state = 2, kind_ready = 3, kind_tail = 4;

class Writer {
public:
    void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u16(std::uint16_t v) { raw(&v, sizeof v); }
    void u32(std::uint32_t v) { raw(&v, sizeof v); }
    void u64(std::uint64_t v) { raw(&v, sizeof v); }
    void bytes(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        out_.append(s);
    }
    std::string take() { return std::move(out_); }
    std::size_t size() const noexcept { return out_.size(); }

private:
    void raw(const void* p, std::size_t n) { out_.append(static_cast<const char*>(p), n); }
    std::string out_;
};

class Reader {
public:
    explicit Reader(std::string_view in) : in_(in) {}
    bool ok() const { return ok_; }
    std::uint8_t u8() {
        std::uint8_t v = 0;
        raw(&v, 1);
        return v;
    }
    std::uint16_t u16() {
        std::uint16_t v = 0;
        raw(&v, sizeof v);
        return v;
    }
    std::uint32_t u32() {
        std::uint32_t v = 0;
        raw(&v, sizeof v);
        return v;
    }
    std::uint64_t u64() {
        std::uint64_t v = 0;
        raw(&v, sizeof v);
        return v;
    }
    std::string_view bytes() {
        const std::uint32_t n = u32();
        if (!ok_ || n > in_.size() - pos_) {
            ok_ = false;
            return {};
        }
        std::string_view s = in_.substr(pos_, n);
        pos_ += n;
        return s;
    }

private:
    void raw(void* p, std::size_t n) {
        if (!ok_ || n > in_.size() - pos_) {
            ok_ = false;
            return;
        }
        std::memcpy(p, in_.data() + pos_, n);
        pos_ += n;
    }
    std::string_view in_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

// `with_ids`: the message's ClusterMessageId too (the tail's messages).
void write_message(Writer& w, const OutboundMessage& m, Clock::time_point now, bool with_ids = false) {
    w.u8(static_cast<std::uint8_t>(m.state));
    w.u8(static_cast<std::uint8_t>(m.qos));
    w.u8(m.retain ? 1 : 0);
    w.u16(m.packet_id);
    w.u32(static_cast<std::uint32_t>(m.subscription_ids.size()));
    for (std::uint32_t id : m.subscription_ids) w.u32(id);
    w.u8(m.message ? 1 : 0);
    if (!m.message) return;
    const Message& msg = *m.message;
    w.bytes(msg.topic);
    w.bytes(msg.payload);
    w.bytes(msg.properties);
    w.u8(static_cast<std::uint8_t>(msg.qos));
    w.u8(msg.retain ? 1 : 0);
    const auto left = msg.remaining_expiry(now);
    w.u8(left ? 1 : 0);
    w.u32(left.value_or(0));
    if (with_ids) {
        w.u64(msg.cluster_origin);
        w.u64(msg.cluster_seq);
    }
}

// write_message's counterpart; false when the input ended early.
bool read_message(Reader& r, OutboundMessage& m, Clock::time_point now, bool with_ids = false) {
    m.state = static_cast<OutboundMessage::State>(r.u8() & 3);
    m.qos = static_cast<QoS>(r.u8() & 3);
    m.retain = r.u8() != 0;
    m.packet_id = r.u16();
    const std::uint32_t ids = r.u32();
    for (std::uint32_t k = 0; k < ids && r.ok(); ++k) {
        const std::uint32_t id = r.u32();
        if (k < 64) m.subscription_ids.push_back(id);
    }
    if (r.u8()) {
        MessageView v;
        v.topic = r.bytes();
        v.payload = as_bytes(r.bytes());
        v.properties = as_bytes(r.bytes());
        v.qos = static_cast<QoS>(r.u8() & 3);
        v.retain = r.u8() != 0;
        const bool has_expiry = r.u8() != 0;
        const std::uint32_t left = r.u32();
        if (has_expiry) v.expiry_interval = left;
        if (with_ids) {
            v.cluster_origin = r.u64();
            v.cluster_seq = r.u64();
        }
        if (!r.ok()) return false;
        m.message = make_message(v, now);
    }
    return r.ok();
}

}  // namespace

std::string Broker::export_session(Session& s) {
    const auto now = reactor_.now();
    Writer w;
    w.u8(kind_state);
    w.bytes(cluster_ ? std::string_view(cluster_->node_id()) : std::string_view{});
    w.u32(s.expiry_interval);
    w.u32(static_cast<std::uint32_t>(s.subscriptions.size()));
    for (const auto& [filter, o] : s.subscriptions) {
        w.bytes(filter);
        w.u8(static_cast<std::uint8_t>(o.qos));
        w.u8(static_cast<std::uint8_t>((o.no_local ? 1 : 0) | (o.retain_as_published ? 2 : 0) | (o.retain_handling << 2)));
        w.u32(o.identifier);
    }
    const OutboundState* out = s.outbound.get();
    w.u16(out ? out->last_packet_id : 0);
    // In flight first: those keep their packet ids and state (PUBREL
    // pending included) and are resent with DUP by the new node.
    w.u32(out ? static_cast<std::uint32_t>(out->inflight.size()) : 0);
    if (out) {
        for (const OutboundMessage& m : out->inflight) write_message(w, m, now);
    }
    std::uint32_t queued = 0;
    std::size_t left_behind = 0;
    if (out) {
        for (const OutboundMessage& m : out->queue) {
            if (w.size() + (m.message ? m.message->memory_size() : 0) > state_budget) {
                ++left_behind;
            } else {
                ++queued;
            }
        }
    }
    w.u32(queued);
    if (out) {
        std::uint32_t written = 0;
        for (const OutboundMessage& m : out->queue) {
            if (written == queued) break;
            if (w.size() + (m.message ? m.message->memory_size() : 0) > state_budget) continue;
            write_message(w, m, now);
            ++written;
        }
    }
    if (left_behind) {
        stats_.publish_dropped += left_behind;
        spdlog::warn("Client {}: {} queued message(s) did not fit in the session handed over and were dropped.",
                     s.client_id, left_behind);
    }
    std::vector<std::uint16_t> qos2;
    if (s.inbound_qos2.size() > 0) {
        for (std::uint32_t id = 1; id <= 0xFFFF; ++id) {
            if (s.inbound_qos2.contains(static_cast<std::uint16_t>(id))) qos2.push_back(static_cast<std::uint16_t>(id));
        }
    }
    w.u32(static_cast<std::uint32_t>(qos2.size()));
    for (std::uint16_t id : qos2) w.u16(id);
    return w.take();
}

bool Broker::import_session(std::string_view client_id, std::string_view state, std::string& from_node) {
    if (sessions_.find(client_id)) return false;  // one arrived here meanwhile: it wins
    Reader r(state);
    const std::uint8_t kind = r.u8();
    if (kind != kind_state && kind != kind_state_v1) return false;
    if (kind == kind_state) from_node = r.bytes();
    const auto now = reactor_.now();
    Session* s = sessions_.create(client_id);
    s->expiry_interval = r.u32();
    const std::uint32_t subs = r.u32();
    for (std::uint32_t i = 0; i < subs && r.ok(); ++i) {
        const std::string_view filter = r.bytes();
        SubscriptionOptions o;
        o.qos = static_cast<QoS>(r.u8() & 3);
        const std::uint8_t flags = r.u8();
        o.no_local = flags & 1;
        o.retain_as_published = (flags & 2) != 0;
        o.retain_handling = static_cast<std::uint8_t>((flags >> 2) & 3);
        o.identifier = r.u32();
        if (!r.ok() || check_topic_filter(filter) != ReasonCode::success) break;
        add_subscription(filter, s, o);
        s->subscriptions.emplace(filter, o);
    }
    const std::uint16_t last_id = r.u16();
    for (int list = 0; list < 2 && r.ok(); ++list) {
        const std::uint32_t n = r.u32();
        for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
            OutboundMessage m;
            if (!read_message(r, m, now)) break;
            if (!m.message && m.state != OutboundMessage::State::awaiting_pubcomp) continue;
            OutboundState& o = s->out();
            if (list == 0) {
                o.inflight.push_back(std::move(m));
            } else if (m.message) {
                m.state = OutboundMessage::State::queued;
                o.queued_bytes += m.message->memory_size();
                o.queue.push_back(std::move(m));
            }
        }
    }
    if (s->outbound) s->outbound->last_packet_id = last_id;
    const std::uint32_t qos2 = r.u32();
    for (std::uint32_t i = 0; i < qos2 && r.ok(); ++i) s->inbound_qos2.insert(r.u16());
    if (!r.ok()) spdlog::warn("Cluster: the session of {} arrived damaged; kept what was readable.", s->client_id);
    // The session arrives disconnected: its CONNECT attaches it next.
    // With persistence it becomes durable there (persist_session); the
    // queued messages it brought are kept in RAM only.
    return true;
}

bool Broker::park_connect(Connection& c, const FixedHeader& header, Bytes body, bool assigned) {
    if (!cluster_ || resuming_ == &c) return false;
    Parked p;
    p.client_id = c.client_id;
    p.header = header;
    p.body.assign(body.begin(), body.end());
    p.assigned = assigned;
    p.seq = ++parked_seq_;
    Connection* cp = &c;
    p.timer = reactor_.add_timer_after(handover_wait, [this, cp] {
        auto it = parked_.find(cp);
        if (it == parked_.end()) return;
        it->second.timer = {};
        // Its node is gone: the cluster's record of the session, if any.
        if (load_replica(*cp)) return;
        if (refuse_unsettled(*cp)) return;
        spdlog::debug("Client {}: no node handed a session over; starting a new one.", it->second.client_id);
        resume_parked(*cp);
    });
    if (auto it = parked_.find(&c); it != parked_.end()) drop_parked(c);
    parked_ids_.emplace(p.client_id, &c);
    parked_.emplace(&c, std::move(p));
    c.state = Connection::State::connect_pending;
    c.pause_reading();
    return true;
}

std::vector<std::pair<Connection*, Broker::Parked*>> Broker::parked_with(std::string_view client_id) {
    std::vector<std::pair<Connection*, Parked*>> out;
    auto [from, to] = parked_ids_.equal_range(client_id);
    for (; from != to; ++from) {
        if (auto it = parked_.find(from->second); it != parked_.end()) out.emplace_back(it->first, &it->second);
    }
    return out;
}

namespace {

template <class Index>
void unindex_parked(Index& index, const std::string& client_id, Connection* c) {
    auto [from, to] = index.equal_range(client_id);
    for (; from != to; ++from) {
        if (from->second == c) {
            index.erase(from);
            return;
        }
    }
}

}  // namespace

void Broker::drop_parked(Connection& c) {
    auto it = parked_.find(&c);
    if (it == parked_.end()) return;
    reactor_.cancel_timer(it->second.timer);
    if (!it->second.body.empty()) OPENSSL_cleanse(it->second.body.data(), it->second.body.size());
    unindex_parked(parked_ids_, it->second.client_id, &c);
    parked_.erase(it);
}

void Broker::claim_settled(std::string_view client_id, AfterClaim next) {
    // Claims settle in the order they were made: the oldest unsettled
    // CONNECT for this id is the one.
    Connection* first = nullptr;
    std::uint64_t oldest = ~std::uint64_t{0};
    for (auto [conn, p] : parked_with(client_id)) {
        if (!p->settled && p->seq < oldest) {
            first = conn;
            oldest = p->seq;
        }
    }
    if (!first) return;  // it stopped waiting
    Parked& p = parked_[first];
    p.settled = true;
    if (next == AfterClaim::wait_for_state) return;
    if (next == AfterClaim::read_record) {
        // Read at once: no node will hand the session over, so the wait
        // for one would only delay the resume (load_replica sets its own
        // deadline). A record that is not there starts a new session.
        reactor_.cancel_timer(p.timer);
        p.timer = {};
        if (load_replica(*first)) return;
    }
    // It goes on within the set-up budget of a turn (setup_queue.cpp): a
    // storm's claims settle hundreds at a time. No node is waited for
    // now: the wait's timer (a session from a node that is gone) goes.
    reactor_.cancel_timer(p.timer);
    p.timer = {};
    settled_queue_.emplace_back(first, p.seq);
}

void Broker::session_arrived(std::string_view client_id, std::string_view state) {
    if (!state.empty() && static_cast<std::uint8_t>(state[0]) == kind_ready) {
        Reader r(state.substr(1));
        const std::string_view node = r.bytes();
        if (r.ok()) send_tail(client_id, node);
        return;
    }
    if (!state.empty() && static_cast<std::uint8_t>(state[0]) == kind_tail) {
        take_tail(client_id, state.substr(1));
        return;
    }
    // The latest CONNECT parked for this id gets it (an earlier one would
    // be taken over by it at once anyway).
    Connection* waiting = nullptr;
    std::uint64_t latest = 0;
    for (auto [conn, p] : parked_with(client_id)) {
        if (p->seq > latest) {
            waiting = conn;
            latest = p->seq;
        }
    }
    if (!waiting) {
        // It gave up waiting (or left): the session is not kept.
        if (state.empty()) return;
        spdlog::warn("Cluster: the session of {} arrived after its CONNECT stopped waiting; dropped.",
                     std::string(client_id));
        return;
    }
    std::string from_node;
    const bool imported = import_session(client_id, state, from_node);
    if (imported) {
        spdlog::info("Client {}: session taken over from another node.", std::string(client_id));
        Session* s = sessions_.find(client_id);
        if (s && cluster_ && !from_node.empty()) begin_taking_handover(*s, from_node);
    }
    resume_parked(*waiting);
    if (!imported) return;
    // Refused after all (memory limit): the session has no connection and
    // no expiry timer; it is not kept.
    if (Session* s = sessions_.find(client_id); s && !s->connection) end_session(*s);
}

void Broker::resume_parked(Connection& c) {
    auto it = parked_.find(&c);
    if (it == parked_.end()) return;
    Parked p = std::move(it->second);
    reactor_.cancel_timer(p.timer);
    unindex_parked(parked_ids_, p.client_id, &c);
    parked_.erase(it);
    if (c.state != Connection::State::connect_pending) return;
    c.state = Connection::State::awaiting_connect;
    auto decoded = decode_connect(p.header, Bytes(p.body.data(), p.body.size()));
    if (decoded) {
        // Its credentials were checked before it parked (c.extras).
        resuming_ = &c;
        accept_connect(c, *decoded, p.assigned, nullptr, p.header, Bytes(p.body.data(), p.body.size()));
        resuming_ = nullptr;
    } else {
        close_connection(c, decoded.error(), false);  // cannot happen: it decoded before
    }
    OPENSSL_cleanse(p.body.data(), p.body.size());
    // Accepted: what the client sent behind its CONNECT is processed now.
    if (c.state == Connection::State::connected) c.resume_reading();
}

// ---- the tail (Broker::Handover in broker.hpp)

void Broker::begin_sending_handover(Session& s, std::string_view node) {
    // The state sent has the queue, the in-flight messages and the QoS 2
    // ids: from here on the session here holds only what arrives after.
    // It is the other node's now: no longer durable here (what it collects
    // meanwhile lives in RAM until the tail goes).
    if (s.stored || s.will_stored) persist_session_end(s);
    s.outbound.reset();
    s.inbound_qos2 = PacketIdSet{};
    s.handing_over = true;
    Handover& h = handovers_[&s];
    h.node = node;
    h.sending = true;
    Session* sp = &s;
    h.timer = reactor_.add_timer_after(tail_collect_wait, [this, sp] {
        // The new node never asked (gone, or NATS down): the tail is lost.
        auto it = handovers_.find(sp);
        if (it == handovers_.end()) return;
        it->second.timer = {};
        const std::size_t lost = sp->outbound ? sp->outbound->queue.size() : 0;
        if (lost) {
            stats_.publish_dropped += lost;
            spdlog::warn("Client {}: the node that took the session over did not ask for the {} message(s) "
                         "that arrived here meanwhile; dropped.", sp->client_id, lost);
        }
        end_session(*sp);
    });
}

void Broker::begin_taking_handover(Session& s, std::string_view node) {
    s.handing_over = true;
    Handover& h = handovers_[&s];
    h.node = node;
    h.held_from = s.outbound ? s.outbound->queue.size() : 0;
    // The tail is asked for once this node's interest in the session's
    // filters is in place at NATS: from then on every message reaches
    // this node directly, and the old node got every earlier one.
    h.ticket = cluster_->interest_ticket(false);
    Session* sp = &s;
    h.timer = reactor_.add_timer_after(tail_hold_wait, [this, sp] {
        auto it = handovers_.find(sp);
        if (it == handovers_.end()) return;
        it->second.timer = {};
        spdlog::warn("Client {}: no messages came from the node that held the session; going on without.",
                     sp->client_id);
        end_handover(*sp);
        pump(*sp);
    });
    if (h.ticket == 0 || h.ticket <= interest_confirmed_) ask_for_tail(s, h);
}

void Broker::ask_for_tail(Session& s, Handover& h) {
    h.tail_asked = true;
    Writer w;
    w.u8(kind_ready);
    w.bytes(cluster_->node_id());
    cluster_->send_session(h.node, s.client_id, w.take());
}

void Broker::send_tail(std::string_view client_id, std::string_view node) {
    Session* s = sessions_.find(client_id);
    auto it = s ? handovers_.find(s) : handovers_.end();
    Writer w;
    w.u8(kind_tail);
    if (it == handovers_.end() || !it->second.sending || it->second.node != node) {
        // Nothing collected for that node (it ended, or went elsewhere):
        // an empty tail, so that it need not wait.
        w.u32(0);
        cluster_->send_session(node, client_id, w.take());
        return;
    }
    const auto now = reactor_.now();
    std::uint32_t count = 0;
    std::size_t left_behind = 0;
    if (s->outbound) {
        for (const OutboundMessage& m : s->outbound->queue) {
            if (m.message && w.size() + m.message->memory_size() <= state_budget) {
                ++count;
            } else {
                ++left_behind;
            }
        }
    }
    w.u32(count);
    if (s->outbound) {
        std::uint32_t written = 0;
        for (const OutboundMessage& m : s->outbound->queue) {
            if (written == count) break;
            if (!m.message || w.size() + m.message->memory_size() > state_budget) continue;
            write_message(w, m, now, true);
            ++written;
        }
    }
    if (left_behind) {
        stats_.publish_dropped += left_behind;
        spdlog::warn("Client {}: {} message(s) that arrived during the hand-over did not fit and were dropped.",
                     s->client_id, left_behind);
    }
    cluster_->send_session(node, client_id, w.take());
    end_session(*s);
}

void Broker::take_tail(std::string_view client_id, std::string_view tail) {
    Session* s = sessions_.find(client_id);
    auto it = s ? handovers_.find(s) : handovers_.end();
    if (it == handovers_.end() || it->second.sending) return;  // stopped waiting
    const std::size_t held_from = it->second.held_from;
    end_handover(*s);
    Reader r(tail);
    const std::uint32_t n = r.u32();
    if (n > 0) {
        OutboundState& o = s->out();
        const auto from = std::next(o.queue.begin(), static_cast<std::ptrdiff_t>(std::min(held_from, o.queue.size())));
        // What came here directly since the state: the tail's copies of
        // those are dropped.
        std::vector<ClusterMessageId> direct;
        for (auto q = from; q != o.queue.end(); ++q) {
            const Message* msg = q->message.get();
            if (msg && msg->cluster_origin != 0) direct.push_back({msg->cluster_origin, msg->cluster_seq});
        }
        const auto now = reactor_.now();
        std::list<OutboundMessage> older;
        for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
            OutboundMessage m;
            if (!read_message(r, m, now, true) || !m.message) break;
            const Message& msg = *m.message;
            const bool twice = msg.cluster_origin != 0 &&
                               std::any_of(direct.begin(), direct.end(), [&](const ClusterMessageId& d) {
                                   return d.origin == msg.cluster_origin && d.seq == msg.cluster_seq;
                               });
            if (twice) continue;
            m.state = OutboundMessage::State::queued;
            m.packet_id = 0;
            o.queued_bytes += m.message->memory_size();
            older.push_back(std::move(m));
        }
        if (!r.ok()) spdlog::warn("Cluster: the tail of {}'s session arrived damaged; kept what was readable.",
                                  s->client_id);
        // Older than what came directly: in before it, after the state's.
        o.queue.splice(from, older);
    }
    pump(*s);
}

void Broker::end_handover(Session& s) {
    s.handing_over = false;
    auto it = handovers_.find(&s);
    if (it == handovers_.end()) return;
    reactor_.cancel_timer(it->second.timer);
    handovers_.erase(it);
}

}  // namespace mqttools::broker
