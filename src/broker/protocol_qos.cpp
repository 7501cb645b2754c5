// QoS 1 and 2 (spec 4.3, 4.4, 4.9): the outbound window (the smaller of the
// client's Receive Maximum and max_inflight_messages), the session queue
// behind it, acknowledgements in both directions, and redelivery on resume.
#include <algorithm>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

std::size_t queued_size(const OutboundMessage& m) {
    return m.message ? m.message->memory_size() : sizeof(OutboundMessage);
}

// From this size on a payload is not copied into each subscriber's output
// but referred to there (one small allocation per delivery instead of a
// copy): a 16 MB message to ten subscribers stays one 16 MB buffer, however
// slowly each of them reads it.
constexpr std::size_t shared_payload_min = 16 * 1024;

}  // namespace

std::uint16_t Broker::next_packet_id(Session& s) {
    // Skip ids still in flight ([MQTT-2.2.1-3]); the window is far smaller
    // than 65535, so this ends quickly.
    OutboundState& o = s.out();
    for (;;) {
        o.last_packet_id = static_cast<std::uint16_t>(o.last_packet_id + 1);
        if (o.last_packet_id == 0) continue;
        const auto id = o.last_packet_id;
        if (std::none_of(o.inflight.begin(), o.inflight.end(),
                         [id](const OutboundMessage& m) { return m.packet_id == id; }))
            return id;
    }
}

void Broker::drop_queued(Session& s, const char* why) {
    OutboundState& o = s.out();
    ++o.dropped_messages;
    ++stats_.publish_dropped;
    if (!o.drop_logged) {
        o.drop_logged = true;
        spdlog::warn("Client {}: dropping messages ({}).", s.client_id, why);
    }
}

void Broker::enqueue(Session& s, OutboundMessage&& m) {
    OutboundState& o = s.out();
    const std::size_t size = queued_size(m);
    if (config_.max_queued_messages != 0 && o.queue.size() >= config_.max_queued_messages) {
        drop_queued(s, "max_queued_messages reached");
        return;
    }
    if (config_.max_queued_bytes != 0 && o.queued_bytes + size > config_.max_queued_bytes) {
        drop_queued(s, "max_queued_bytes reached");
        return;
    }
    m.state = OutboundMessage::State::queued;
    o.queued_bytes += size;
    o.queue.push_back(std::move(m));
    if (s.stored) persist_enqueued(s, o.queue.back());
    if (s.connection && s.connection->state == Connection::State::connected) pump(s);
}

void Broker::pump(Session& s) {
    Connection* c = s.connection;
    // Moving between nodes: held until the tail from the old node is in.
    // The cluster is checking whether this node still owns its sessions
    // (cluster_fence.cpp): nothing goes out that another node may send too.
    if (!c || c->state != Connection::State::connected || !s.outbound || s.handing_over || cluster_fenced_) return;
    // Its output waits for a batch being committed: what would go out now
    // needs the next one; on_store_result() pumps again (persistence_hooks.cpp).
    if (c->held && store_ && c->held_batch != static_cast<std::uint32_t>(store_->current_batch())) return;
    OutboundState& o = *s.outbound;
    std::size_t window = c->receive_maximum_out;
    if (config_.max_inflight_messages != 0) window = std::min<std::size_t>(window, config_.max_inflight_messages);
    const auto now = reactor_.now();
    // sessions = "replicated": a QoS 2 PUBLISH goes out only once the
    // cluster's record has its packet id, so a node resuming the session
    // after this one died resends it with that id, which the receiver
    // still holds unreleased, instead of a new one it would take as a
    // second message (session_replica.cpp).
    const bool record_qos2 = s.replicated && cluster_ != nullptr;
    bool hold = false;
    while (!o.queue.empty() && o.inflight.size() < window) {
        OutboundMessage m = std::move(o.queue.front());
        o.queue.pop_front();
        o.queued_bytes -= std::min(o.queued_bytes, queued_size(m));
        if (m.message->expired(now)) {
            // Expired while queued: never delivered (spec 3.3.2.3.3).
            drop_queued(s, "message expired");
            if (m.store_seq) persist_outbound_done(s, m);
            continue;
        }
        m.packet_id = next_packet_id(s);
        m.state = m.qos == QoS::at_least_once ? OutboundMessage::State::awaiting_puback
                                               : OutboundMessage::State::awaiting_pubrec;
        if (record_qos2 && m.qos == QoS::exactly_once) {
            m.held_for_record = true;
            hold = true;
            if (m.store_seq) persist_outbound_state(s, m);
            o.inflight.push_back(std::move(m));
            continue;
        }
        // QoS 2: in process once sent, the member's alone (spec 4.8.2).
        if (m.qos == QoS::exactly_once) note_shared_done(s, m);
        if (!send_publish(*c, m, m.maybe_sent)) {  // too large for the client: dropped
            if (m.store_seq) persist_outbound_done(s, m);
            continue;
        }
        // The packet id is durable before the PUBLISH goes out (the output
        // is held): a QoS 2 redelivery after a crash must reuse it.
        if (m.store_seq) persist_outbound_state(s, m);
        o.inflight.push_back(std::move(m));
    }
    if (hold) hold_for_record(s);
}

bool Broker::send_publish(Connection& c, OutboundMessage& m, bool dup) {
    const Message& msg = *m.message;
    PublishPacket p;
    p.dup = dup;
    p.qos = m.qos;
    p.retain = m.retain;
    p.packet_id = m.packet_id;
    p.payload = msg.payload_bytes();
    bool topic_included = true;
    std::uint16_t alias = 0;
    if (c.version == ProtocolVersion::v5) {
        alias = outbound_alias(c, msg.topic, topic_included);
        p.properties.passthrough = msg.property_bytes();
        p.properties.passthrough_mask = forwarded_properties;
        p.properties.message_expiry_interval = msg.remaining_expiry(reactor_.now());
        if (alias != 0) p.properties.topic_alias = alias;
        p.properties.subscription_identifiers = m.subscription_ids;
    }
    p.topic = topic_included ? std::string_view(msg.topic) : std::string_view{};
    const bool queued = msg.payload.size() >= shared_payload_min
                            ? c.send_publish(p, net::BufferRef::external(m.message, msg.payload_bytes()))
                            : c.send(p);
    if (!queued) {
        // Larger than the client's Maximum Packet Size: discarded as if
        // delivered ([MQTT-3.1.2-25]).
        if (alias != 0 && topic_included) c.extras->aliases.out.forget(msg.topic);
        drop_queued(*c.session, "larger than the client's Maximum Packet Size");
        return false;
    }
    ++stats_.publish_sent;
    stats_.publish_bytes_sent += msg.payload.size();
    return true;
}

void Broker::resume_session(Connection& c, Session& s) {
    // Unacknowledged messages first, in their original order, with DUP
    // ([MQTT-4.4.0-1]); PUBREL for those already PUBREC'd.
    if (!s.outbound) return;
    for (OutboundMessage& m : s.outbound->inflight) {
        if (m.held_for_record) continue;  // goes out once recorded (release_recorded)
        if (m.state == OutboundMessage::State::awaiting_pubcomp) {
            c.send(AckPacket{PacketType::pubrel, m.packet_id, ReasonCode::success, {}});
        } else {
            send_publish(c, m, true);
        }
    }
    pump(s);
}

void Broker::handle_ack(Connection& c, const FixedHeader& header, Bytes body) {
    auto decoded = decode_ack(header, body, c.version);
    if (!decoded) {
        close_connection(c, decoded.error(), true);
        return;
    }
    const AckPacket& a = *decoded;
    Session& s = *c.session;
    if (a.type != PacketType::pubrel && !s.outbound) {
        // Nothing was ever sent at QoS 1/2: every id is unknown.
        if (a.type == PacketType::pubrec) {
            c.send(AckPacket{PacketType::pubrel, a.packet_id, ReasonCode::packet_identifier_not_found, {}});
        }
        return;
    }
    OutboundState* o = s.outbound.get();
    auto find = [&](OutboundMessage::State state) {
        return std::find_if(o->inflight.begin(), o->inflight.end(), [&](const OutboundMessage& m) {
            return m.packet_id == a.packet_id && m.state == state;
        });
    };
    switch (a.type) {
        case PacketType::puback: {
            auto it = find(OutboundMessage::State::awaiting_puback);
            if (it == o->inflight.end()) return;  // unknown id: nothing to do
            note_shared_done(s, *it);
            if (it->store_seq) persist_outbound_done(s, *it);
            o->inflight.erase(it);
            pump(s);
            return;
        }
        case PacketType::pubrec: {
            auto it = find(OutboundMessage::State::awaiting_pubrec);
            if (it == o->inflight.end()) {
                c.send(AckPacket{PacketType::pubrel, a.packet_id, ReasonCode::packet_identifier_not_found, {}});
                return;
            }
            if (is_error(a.reason)) {
                // The receiver refused it: the flow ends here (spec 4.3.3).
                if (it->store_seq) persist_outbound_done(s, *it);
                o->inflight.erase(it);
                pump(s);
                return;
            }
            it->state = OutboundMessage::State::awaiting_pubcomp;
            it->message.reset();
            it->subscription_ids.clear();
            // PUBREL pending must survive a crash, or the PUBLISH would be
            // sent again after the receiver released it (a duplicate).
            if (it->store_seq) persist_outbound_state(s, *it);
            if (s.replicated && cluster_) {
                // The receiver releases the id at PUBREL: the cluster's record
                // must say so first, or a node resuming the session would send
                // the PUBLISH again as a new message.
                it->held_for_record = true;
                hold_for_record(s);
                return;
            }
            c.send(AckPacket{PacketType::pubrel, a.packet_id, ReasonCode::success, {}});
            return;
        }
        case PacketType::pubcomp: {
            auto it = find(OutboundMessage::State::awaiting_pubcomp);
            if (it == o->inflight.end()) return;
            if (it->store_seq) persist_outbound_done(s, *it);
            o->inflight.erase(it);
            pump(s);
            return;
        }
        case PacketType::pubrel: {
            const bool known = s.inbound_qos2.erase(a.packet_id);
            if (known && s.stored) persist_inbound(s, a.packet_id, false);
            const ReasonCode rc = known ? ReasonCode::success : ReasonCode::packet_identifier_not_found;
            c.send(AckPacket{PacketType::pubcomp, a.packet_id, rc, {}});
            return;
        }
        default:
            return;
    }
}

}  // namespace mqttools::broker
