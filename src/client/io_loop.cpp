// The client's I/O thread: takes the packets the API queued and writes them
// (many per write()), reads and dispatches the broker's packets, answers
// QoS 1/2 flows and keeps the connection alive.
#include <poll.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "client/client_impl.hpp"

namespace mqttools {

using client_detail::ByteBuffer;
using Clock = std::chrono::steady_clock;

namespace {

std::optional<std::string> copy(const std::optional<std::string_view>& s) {
    if (!s) return std::nullopt;
    return std::string(*s);
}

}  // namespace

template <class P>
void Client::Impl::put(ByteBuffer& buffer, const P& packet) {
    const std::size_t size = encoded_size(packet, version);
    auto room = buffer.prepare(size);
    (void)encode(packet, version, room);
    buffer.commit(size);
    if (options.packet_trace) options.packet_trace(true, Packet(packet));
}

void Client::Impl::refused_locked(const client_detail::OutboundMessage& m, ReasonCode reason) {
    spdlog::debug("publish to '{}' refused: {}", m.topic, reason_code_name(reason));
    ++refusals.count;
    refusals.last_reason = reason;
    refusals.last_topic = m.topic;
}

void Client::Impl::fail(const std::string& why, std::optional<ReasonCode> send_disconnect) {
    if (send_disconnect) {
        // Tell the broker why before closing [MQTT-4.13.1-1]; best effort.
        put(ctrl, DisconnectPacket{*send_disconnect, {}});
        transport->queue(ctrl);
        (void)transport->flush();
    }
    bool push_lost = false;
    {
        std::lock_guard lock(mutex);
        if (!lost) {
            push_lost = state == State::connected && !stop_io;
            lost = true;
            io_error = why;
        }
    }
    cv.notify_all();
    if (push_lost) {
        spdlog::debug("broker connection lost: {}", why);
        Message m;
        m.connection_lost = true;
        messages.push(std::move(m));
    }
}

void Client::Impl::io_main() {
    client_detail::Transport& t = *transport;
    last_write = Clock::now();
    written_marker = t.bytes_written();
    Clock::time_point stop_deadline{};
    for (;;) {
        bool stopping;
        {
            std::lock_guard lock(mutex);
            // Take the API's queue only once the previous one has left, so
            // that max_queued_output really bounds what is buffered.
            if (!out.empty() && !t.pending()) {
                t.queue(out);
                if (out_waiters > 0) cv.notify_all();
            }
            if (out.empty()) wake_pending = false;
            stopping = stop_io;
        }
        t.queue(ctrl);
        if (!t.flush()) {
            fail(t.error());
            return;
        }
        {
            // The socket took everything and publishers queued more while
            // it was busy: take that now rather than sleep in poll().
            std::lock_guard lock(mutex);
            if (!out.empty() && !t.pending()) continue;
        }
        const Clock::time_point now = Clock::now();
        if (t.bytes_written() != written_marker) {
            written_marker = t.bytes_written();
            last_write = now;
        }
        if (stopping) {
            if (stop_deadline == Clock::time_point{}) {
                stop_deadline = now + options.response_timeout;
            }
            bool drained;
            {
                std::lock_guard lock(mutex);
                drained = out.empty() && !t.pending();
            }
            if (drained || now >= stop_deadline) {
                t.shutdown();
                (void)t.flush();
                std::lock_guard lock(mutex);
                lost = true;
                cv.notify_all();
                return;
            }
        }

        // The application made room: handle what was read before pausing,
        // then read again.
        if (input_paused && !messages.full_or_notify()) {
            input_paused = false;
            {
                std::lock_guard lock(mutex);
                if (pings_sent > pingresps) ping_wait_start = now;
            }
            if (!process_input()) return;
            if (!input_paused && read_ended) {
                fail(read_error);
                return;
            }
            continue;  // acks to write
        }

        // Keep alive (spec 3.1.2.10): a PINGREQ when nothing was sent for
        // keep_alive seconds; no PINGRESP within that long again ends it.
        int timeout_ms = -1;
        if (keep_alive_s > 0) {
            const auto period = std::chrono::seconds(keep_alive_s);
            bool ping_overdue = false;
            {
                std::lock_guard lock(mutex);
                // While input is paused the PINGRESP may be waiting behind
                // unread messages: the wait restarts when reading resumes.
                if (!input_paused && pings_sent > pingresps &&
                    now - ping_wait_start > period + options.response_timeout) {
                    ping_overdue = true;
                } else if (now - last_write >= period) {
                    put(ctrl, PingreqPacket{});
                    if (pings_sent == pingresps) ping_wait_start = now;
                    ++pings_sent;
                    last_write = now;
                    continue;
                }
            }
            if (ping_overdue) {
                fail("no PINGRESP from the broker", ReasonCode::keep_alive_timeout);
                return;
            }
            const auto due = std::chrono::duration_cast<std::chrono::milliseconds>(last_write + period - now);
            timeout_ms = static_cast<int>(std::max<std::int64_t>(due.count(), 0)) + 1;
        }
        if (stopping) timeout_ms = 10;

        // Not reading while paused is what pushes back on the broker. A
        // socket that ended is not polled at all (POLLHUP would spin).
        const bool want_read = !input_paused && !read_ended;
        const short events = static_cast<short>((want_read ? POLLIN : 0) | (t.pending() ? POLLOUT : 0));
        pollfd fds[2] = {{read_ended && !t.pending() ? -1 : t.fd(), events, 0}, {wake_fd.get(), POLLIN, 0}};
        const int n = ::poll(fds, 2, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("poll failed");
            return;
        }
        if (fds[1].revents & POLLIN) {
            std::uint64_t counter;
            (void)!::read(wake_fd.get(), &counter, sizeof counter);
        }
        if (!read_ended && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            // Paused, this is a hang-up or error: take what the socket still
            // has (at most its buffer) so that it is handled after the pause.
            const auto status = t.read(rbuf);
            // Packets that arrived before a close are still handled.
            if (!input_paused && !process_input()) return;
            if (status != client_detail::Transport::ReadStatus::ok) {
                if (!input_paused) {
                    fail(t.error());
                    return;
                }
                read_ended = true;
                read_error = t.error();
            }
        }
    }
}

namespace {

// What a server that is not an MQTT broker sent instead of CONNACK, said in
// words: a TLS record (the port wants TLS), or text such as "HTTP/1.1 400".
std::string not_mqtt(Bytes data) {
    const auto first = std::to_integer<unsigned>(data[0]);
    if ((first == 0x15 || first == 0x16) && data.size() >= 2 && std::to_integer<unsigned>(data[1]) == 0x03) {
        return "the server answered with TLS: this port expects TLS (use --cafile, --capath or an mqtts:// URL)";
    }
    std::string text;
    for (std::size_t i = 0; i < data.size() && i < 40; ++i) {
        const auto b = std::to_integer<unsigned char>(data[i]);
        if (b == '\r' || b == '\n') break;
        text += b >= 0x20 && b < 0x7f ? static_cast<char>(b) : '?';
    }
    return "the server's answer is not MQTT ('" + text + "'): is this an MQTT port?";
}

}  // namespace

bool Client::Impl::process_input() {
    const std::uint32_t max_in = options.maximum_packet_size ? options.maximum_packet_size : max_packet_size_limit;
    if (!got_connack && !rbuf.empty()) {
        // The first packet must be CONNACK [MQTT-3.2.0-1]: its first byte is
        // 0x20. Anything else is not a broker speaking MQTT; say what it is
        // rather than "Malformed Packet".
        if (std::to_integer<unsigned>(rbuf.view()[0]) != 0x20) {
            fail(not_mqtt(rbuf.view()));
            return false;
        }
        got_connack = true;
    }
    for (;;) {
        const Frame frame = read_frame(rbuf.view(), max_in);
        if (frame.status == FrameStatus::need_more) return true;
        if (frame.status == FrameStatus::error) {
            fail(std::string("bad packet from the broker: ") + std::string(reason_code_name(frame.error)),
                 frame.error);
            return false;
        }
        // A full queue stops here, before the PUBLISH is acknowledged: a
        // QoS 1/2 message is acked only once queued. The rest stays in rbuf.
        if (frame.header.type == PacketType::publish && messages.full_or_notify()) {
            input_paused = true;
            return true;
        }
        const Bytes body = rbuf.view().subspan(frame.header.header_size, frame.header.remaining_length);
        const Result<Packet> packet = decode_packet(frame.header, body, version, Sender::server);
        if (!packet) {
            fail(std::string("bad ") + std::string(packet_type_name(frame.header.type)) +
                     " from the broker: " + std::string(reason_code_name(packet.error())),
                 packet.error());
            return false;
        }
        if (options.packet_trace) options.packet_trace(false, *packet);
        if (!handle(*packet)) return false;
        rbuf.consume(frame.header.packet_size());
    }
}

bool Client::Impl::handle(const Packet& packet) {
    if (const auto* p = std::get_if<PublishPacket>(&packet)) return handle_publish(*p);
    if (const auto* a = std::get_if<AckPacket>(&packet)) {
        switch (a->type) {
            case PacketType::puback:
            case PacketType::pubcomp: {
                std::lock_guard lock(mutex);
                if (auto it = inflight_by_id.find(a->packet_id); it != inflight_by_id.end()) {
                    if (is_error(a->reason)) refused_locked(*it->second, a->reason);
                    inflight.erase(it->second);
                    inflight_by_id.erase(it);
                    cv.notify_all();
                }
                return true;
            }
            case PacketType::pubrec: {
                bool known = false;
                {
                    std::lock_guard lock(mutex);
                    if (auto it = inflight_by_id.find(a->packet_id); it != inflight_by_id.end()) {
                        known = true;
                        if (is_error(a->reason)) {
                            // An error PUBREC ends the flow [MQTT-4.3.3-4 note]: no PUBREL.
                            refused_locked(*it->second, a->reason);
                            inflight.erase(it->second);
                            inflight_by_id.erase(it);
                            cv.notify_all();
                            return true;
                        }
                        it->second->released = true;
                    }
                }
                put(ctrl, AckPacket{PacketType::pubrel, a->packet_id,
                        known ? ReasonCode::success : ReasonCode::packet_identifier_not_found, {}});
                return true;
            }
            case PacketType::pubrel: {
                const bool known = inbound_qos2.erase(a->packet_id) > 0;
                put(ctrl, AckPacket{PacketType::pubcomp, a->packet_id,
                        known ? ReasonCode::success : ReasonCode::packet_identifier_not_found, {}});
                return true;
            }
            default:
                return true;
        }
    }
    if (const auto* c = std::get_if<ConnackPacket>(&packet)) {
        client_detail::ConnackInfo info;
        info.reason = c->reason;
        const Properties& pr = c->properties;
        BrokerLimits& l = info.limits;
        l.session_present = c->session_present;
        l.receive_maximum = pr.receive_maximum.value_or(65535);
        l.maximum_packet_size = pr.maximum_packet_size.value_or(0);
        l.topic_alias_maximum = pr.topic_alias_maximum.value_or(0);
        l.server_keep_alive = pr.server_keep_alive;
        l.maximum_qos = static_cast<QoS>(pr.maximum_qos.value_or(2));
        l.retain_available = pr.retain_available.value_or(1) != 0;
        info.assigned_client_id = copy(pr.assigned_client_identifier);
        // Server Keep Alive replaces ours [MQTT-3.2.2-21].
        if (pr.server_keep_alive) keep_alive_s = *pr.server_keep_alive;
        if (!c->session_present) inbound_qos2.clear();
        {
            std::lock_guard lock(mutex);
            connack = std::move(info);
        }
        cv.notify_all();
        return true;
    }
    if (const auto* s = std::get_if<SubackPacket>(&packet)) {
        std::lock_guard lock(mutex);
        if (auto it = requests.find(s->packet_id); it != requests.end()) {
            for (std::byte b : s->reason_codes) it->second.reasons.push_back(static_cast<ReasonCode>(b));
            it->second.done = true;
            cv.notify_all();
        }
        return true;
    }
    if (const auto* u = std::get_if<UnsubackPacket>(&packet)) {
        std::lock_guard lock(mutex);
        if (auto it = requests.find(u->packet_id); it != requests.end()) {
            for (std::byte b : u->reason_codes) it->second.reasons.push_back(static_cast<ReasonCode>(b));
            it->second.done = true;
            cv.notify_all();
        }
        return true;
    }
    if (std::holds_alternative<PingrespPacket>(packet)) {
        {
            std::lock_guard lock(mutex);
            ++pingresps;
            if (pingresps < pings_sent) ping_wait_start = Clock::now();
        }
        cv.notify_all();
        return true;
    }
    if (const auto* d = std::get_if<DisconnectPacket>(&packet)) {
        {
            std::lock_guard lock(mutex);
            disconnect_reason = d->reason;
        }
        std::string why = "disconnected by the broker: " + std::string(reason_code_name(d->reason));
        if (d->properties.reason_string) why += " (" + std::string(*d->properties.reason_string) + ")";
        fail(why);
        return false;
    }
    // AUTH: we never start enhanced authentication [MQTT-4.12.0-6].
    fail("unexpected AUTH from the broker", ReasonCode::protocol_error);
    return false;
}

bool Client::Impl::handle_publish(const PublishPacket& p) {
    std::string topic;
    if (p.properties.topic_alias) {
        const std::uint16_t alias = *p.properties.topic_alias;
        // [MQTT-3.3.2-9]: 0 and aliases above our maximum are errors.
        if (alias == 0 || alias > options.topic_alias_maximum) {
            fail("invalid topic alias from the broker", ReasonCode::topic_alias_invalid);
            return false;
        }
        if (p.topic.empty()) {
            auto it = in_aliases.find(alias);
            if (it == in_aliases.end()) {
                fail("unknown topic alias from the broker", ReasonCode::protocol_error);
                return false;
            }
            topic = it->second;
        } else {
            topic = std::string(p.topic);
            in_aliases[alias] = topic;
        }
    } else {
        topic = std::string(p.topic);
    }

    bool deliver = true;
    if (p.qos == QoS::at_least_once) {
        put(ctrl, AckPacket{PacketType::puback, p.packet_id, ReasonCode::success, {}});
    } else if (p.qos == QoS::exactly_once) {
        // Deliver once per packet identifier until its PUBREL (method B of
        // spec 4.3.3): a DUP resend of an unreleased id is acknowledged only.
        deliver = inbound_qos2.insert(p.packet_id).second;
        if (inbound_qos2.size() > options.receive_maximum) {
            fail("the broker exceeded our Receive Maximum", ReasonCode::receive_maximum_exceeded);
            return false;
        }
        put(ctrl, AckPacket{PacketType::pubrec, p.packet_id, ReasonCode::success, {}});
    }
    if (!deliver) return true;

    Message m;
    m.topic = std::move(topic);
    m.payload = std::string(as_string(p.payload));
    m.retain = p.retain;
    m.qos = p.qos;
    m.packet_id = p.packet_id;
    const Properties& pr = p.properties;
    m.response_topic = copy(pr.response_topic);
    if (pr.correlation_data) m.correlation_data = std::string(as_string(*pr.correlation_data));
    m.content_type = copy(pr.content_type);
    m.payload_format_indicator = pr.payload_format_indicator;
    m.message_expiry_interval = pr.message_expiry_interval;
    if (pr.user_property_count > 0) {
        PropertyReader reader(pr.raw);
        Property prop;
        while (reader.next(prop)) {
            if (prop.id == PropertyId::user_property) m.user_properties.emplace_back(prop.string, prop.value);
        }
    }
    messages.push(std::move(m));
    return true;
}

}  // namespace mqttools
