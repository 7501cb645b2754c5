// Session takeover across cluster nodes (broker/cluster_link.hpp): a
// CONNECT with Clean Start 0 for a client id this node does not hold waits
// ("parked") while the claim crosses; the node that held the session sends
// it over — subscriptions, queued and in-flight QoS 1/2 messages, inbound
// QoS 2 state — and the CONNECT then goes on as if the session had always
// been here (Session Present 1, [MQTT-3.2.2-2]). No answer within
// handover_wait: nobody had it, and the CONNECT goes on with a new session.
#include <cstring>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

constexpr auto handover_wait = std::chrono::milliseconds(300);

class Writer {
public:
    void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u16(std::uint16_t v) { raw(&v, sizeof v); }
    void u32(std::uint32_t v) { raw(&v, sizeof v); }
    void bytes(std::string_view s) {
        u32(static_cast<std::uint32_t>(s.size()));
        out_.append(s);
    }
    std::string take() { return std::move(out_); }

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

void write_message(Writer& w, const OutboundMessage& m, Clock::time_point now) {
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
}

}  // namespace

std::string Broker::export_session(std::string_view client_id) {
    Session* s = sessions_.find(client_id);
    // Session Expiry 0: the session ends with its connection, nothing to
    // hand over ([MQTT-3.1.2-23] as for a takeover on one node).
    if (!s || s->expiry_interval == 0) return {};
    const auto now = reactor_.now();
    Writer w;
    w.u8(1);  // format version
    w.u32(s->expiry_interval);
    w.u32(static_cast<std::uint32_t>(s->subscriptions.size()));
    for (const auto& [filter, o] : s->subscriptions) {
        w.bytes(filter);
        w.u8(static_cast<std::uint8_t>(o.qos));
        w.u8(static_cast<std::uint8_t>((o.no_local ? 1 : 0) | (o.retain_as_published ? 2 : 0) | (o.retain_handling << 2)));
        w.u32(o.identifier);
    }
    const OutboundState* out = s->outbound.get();
    w.u16(out ? out->last_packet_id : 0);
    w.u32(out ? static_cast<std::uint32_t>(out->inflight.size()) : 0);
    if (out) {
        for (const OutboundMessage& m : out->inflight) write_message(w, m, now);
    }
    w.u32(out ? static_cast<std::uint32_t>(out->queue.size()) : 0);
    if (out) {
        for (const OutboundMessage& m : out->queue) write_message(w, m, now);
    }
    std::vector<std::uint16_t> qos2;
    if (s->inbound_qos2.size() > 0) {
        for (std::uint32_t id = 1; id <= 0xFFFF; ++id) {
            if (s->inbound_qos2.contains(static_cast<std::uint16_t>(id))) qos2.push_back(static_cast<std::uint16_t>(id));
        }
    }
    w.u32(static_cast<std::uint32_t>(qos2.size()));
    for (std::uint16_t id : qos2) w.u16(id);
    return w.take();
}

bool Broker::import_session(std::string_view client_id, std::string_view state) {
    if (sessions_.find(client_id)) return false;  // one arrived here meanwhile: it wins
    Reader r(state);
    if (r.u8() != 1) return false;
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
        if (trie_.subscribe(filter, s, o) && cluster_) cluster_->interest_added(filter);
        s->subscriptions.emplace(std::string(filter), o);
    }
    const std::uint16_t last_id = r.u16();
    for (int list = 0; list < 2 && r.ok(); ++list) {
        const std::uint32_t n = r.u32();
        for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
            OutboundMessage m;
            m.state = static_cast<OutboundMessage::State>(r.u8() & 3);
            m.qos = static_cast<QoS>(r.u8() & 3);
            m.retain = r.u8() != 0;
            m.packet_id = r.u16();
            const std::uint32_t ids = r.u32();
            for (std::uint32_t k = 0; k < ids && k < 64 && r.ok(); ++k) m.subscription_ids.push_back(r.u32());
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
                if (!r.ok()) break;
                m.message = make_message(v, now);
            }
            if (!m.message && m.state != OutboundMessage::State::awaiting_pubcomp) continue;
            auto& o = s->out();
            (list == 0 ? o.inflight : o.queue).push_back(std::move(m));
        }
    }
    if (s->outbound) s->outbound->last_packet_id = last_id;
    const std::uint32_t qos2 = r.u32();
    for (std::uint32_t i = 0; i < qos2 && r.ok(); ++i) s->inbound_qos2.insert(r.u16());
    if (!r.ok()) spdlog::warn("Cluster: the session of {} arrived damaged; kept what was readable.", s->client_id);
    return true;
}

bool Broker::park_connect(Connection& c, const FixedHeader& header, Bytes body) {
    if (!cluster_ || resuming_ == &c || parked_.size() >= 100000) return false;
    Parked p;
    p.connection = &c;
    p.client_id = c.client_id;
    const std::size_t n = header.packet_size();
    p.connect.assign(body.data() - header.header_size, body.data() - header.header_size + n);
    Connection* cp = &c;
    p.timer = reactor_.add_timer_after(handover_wait, [this, cp] { resume_parked(*cp); });
    if (auto it = parked_.find(&c); it != parked_.end()) reactor_.cancel_timer(it->second.timer);
    parked_[&c] = std::move(p);
    return true;
}

bool Broker::park_more(Connection& c, const FixedHeader& header, Bytes body) {
    auto it = parked_.find(&c);
    if (it == parked_.end()) return false;
    // Packets sent right after CONNECT wait with it (a client need not
    // wait for CONNACK, spec 3.1.4); bounded like one client's input.
    const std::size_t n = header.packet_size();
    if (it->second.later_bytes + n > max_packet_in_ + 65536) {
        drop_parked(c);
        close_connection(c, ReasonCode::quota_exceeded, false);
        return true;
    }
    it->second.later.emplace_back(body.data() - header.header_size, body.data() - header.header_size + n);
    it->second.later_bytes += n;
    return true;
}

void Broker::drop_parked(Connection& c) {
    auto it = parked_.find(&c);
    if (it == parked_.end()) return;
    reactor_.cancel_timer(it->second.timer);
    parked_.erase(it);
}

void Broker::session_arrived(std::string_view client_id, std::string_view state) {
    Connection* waiting = nullptr;
    for (auto& [conn, p] : parked_) {
        if (p.client_id == client_id) waiting = conn;
    }
    if (!waiting) return;  // it gave up waiting (or left): the session is not kept
    if (import_session(client_id, state)) {
        spdlog::info("Client {}: session taken over from another node.", std::string(client_id));
    }
    resume_parked(*waiting);
}

void Broker::resume_parked(Connection& c) {
    auto it = parked_.find(&c);
    if (it == parked_.end()) return;
    Parked p = std::move(it->second);
    reactor_.cancel_timer(p.timer);
    parked_.erase(it);
    if (c.state != Connection::State::awaiting_connect) return;
    resuming_ = &c;
    const Frame f = read_frame(Bytes(p.connect.data(), p.connect.size()));
    dispatch_packet(c, f.header, Bytes(p.connect.data() + f.header.header_size, f.header.remaining_length));
    resuming_ = nullptr;
    for (const auto& packet : p.later) {
        if (c.state != Connection::State::connected) break;
        const Frame g = read_frame(Bytes(packet.data(), packet.size()));
        handle_packet(c, g.header, Bytes(packet.data() + g.header.header_size, g.header.remaining_length));
    }
    mark_dirty(c);
}

}  // namespace mqttools::broker
