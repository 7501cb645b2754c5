// Packet encoders for MQTT 5.0 and 3.1.1. Each computes the Remaining Length
// first, so encoded_size() and encode() agree and nothing is written when the
// packet does not fit the caller's buffer.
#include "codec/wire.hpp"

namespace mqttools {
namespace {

using detail::string_size;
using detail::too_big;
using detail::Writer;

constexpr bool is_v5(ProtocolVersion v) noexcept { return v == ProtocolVersion::v5; }

// A property block with its length prefix (v5 only), from its content size.
std::size_t block_size_of(std::size_t n) noexcept {
    if (n > max_remaining_length) return too_big;
    return varint_size(static_cast<std::uint32_t>(n)) + n;
}
std::size_t block_size(const Properties& p) noexcept { return block_size_of(properties_size(p)); }
void write_block(const Properties& p, std::size_t n, Writer& w) noexcept {
    w.varint(static_cast<std::uint32_t>(n));
    if (n != 0) detail::write_properties(p, w);
}
void write_block(const Properties& p, Writer& w) noexcept { write_block(p, properties_size(p), w); }

// The whole packet's size for a body size; 0 when it cannot be encoded.
std::size_t total_size(std::size_t body) noexcept {
    if (body > max_remaining_length) return 0;
    return 1 + varint_size(static_cast<std::uint32_t>(body)) + body;
}

// Writes the fixed header when `out` can take the whole packet.
bool start(MutableBytes out, std::size_t body, std::uint8_t first, Writer& w) noexcept {
    std::size_t total = total_size(body);
    if (total == 0 || out.size() < total) return false;
    w.pos = out.data();
    w.u8(first);
    w.varint(static_cast<std::uint32_t>(body));
    return true;
}

std::size_t written(MutableBytes out, const Writer& w) noexcept {
    return static_cast<std::size_t>(w.pos - out.data());
}

constexpr std::uint8_t first_byte(PacketType t, std::uint8_t flags = 0) noexcept {
    return static_cast<std::uint8_t>((static_cast<unsigned>(t) << 4) | flags);
}

std::uint8_t suback_to_v311(std::byte c) noexcept {
    auto v = static_cast<std::uint8_t>(c);
    return v <= 2 ? v : 0x80;
}

// ---------------------------------------------------------------- bodies

std::size_t body_size(const ConnectPacket& p) noexcept {
    const bool v5 = is_v5(p.version);
    std::size_t n = 6 + 1 + 1 + 2;  // "MQTT", level, flags, keep alive
    if (v5) n += block_size(p.properties);
    n += string_size(p.client_id);
    if (p.will) {
        if (v5) n += block_size(p.will->properties);
        n += string_size(p.will->topic) + string_size(p.will->payload);
    }
    if (p.username) n += string_size(*p.username);
    if (p.password) n += string_size(*p.password);
    return n;
}

std::size_t body_size(const ConnackPacket& p, ProtocolVersion v) noexcept {
    return 2 + (is_v5(v) ? block_size(p.properties) : 0);
}

// `props` is the property content size, computed once per encoding.
std::size_t body_size(const PublishPacket& p, ProtocolVersion v, std::size_t props) noexcept {
    std::size_t n = string_size(p.topic) + p.payload.size();
    if (p.qos != QoS::at_most_once) n += 2;
    if (is_v5(v)) n += block_size_of(props);
    return n;
}

// v5 acks, DISCONNECT and AUTH: the reason code and the property length are
// left out when they are Success and empty (spec 3.4.2.1, 3.14.2.1, 3.15.2.1).
std::size_t reason_tail_size(ReasonCode reason, const Properties& props, bool omit_success) noexcept {
    std::size_t n = properties_size(props);
    if (n == 0) return (omit_success && reason == ReasonCode::success) ? 0 : 1;
    if (n > max_remaining_length) return too_big;
    return 1 + varint_size(static_cast<std::uint32_t>(n)) + n;
}
void write_reason_tail(std::size_t size, ReasonCode reason, const Properties& props, Writer& w) noexcept {
    if (size == 0) return;
    w.u8(static_cast<std::uint8_t>(reason));
    if (size == 1) return;
    write_block(props, w);
}

std::size_t body_size(const AckPacket& p, ProtocolVersion v) noexcept {
    return 2 + (is_v5(v) ? reason_tail_size(p.reason, p.properties, true) : 0);
}

std::uint8_t options_byte(const Subscription& s, ProtocolVersion v) noexcept {
    auto o = static_cast<std::uint8_t>(s.qos);
    if (is_v5(v)) {
        if (s.no_local) o |= 0x04;
        if (s.retain_as_published) o |= 0x08;
        o = static_cast<std::uint8_t>(o | ((s.retain_handling & 0x03) << 4));
    }
    return o;
}

std::size_t body_size(const SubscribePacket& p, ProtocolVersion v) noexcept {
    std::size_t n = 2 + (is_v5(v) ? block_size(p.properties) : 0);
    std::size_t cursor = 0;
    Subscription s;
    while (p.subscriptions.next(cursor, s)) n += string_size(s.filter) + 1;
    return n;
}

std::size_t body_size(const SubackPacket& p, ProtocolVersion v) noexcept {
    return 2 + (is_v5(v) ? block_size(p.properties) : 0) + p.reason_codes.size();
}

std::size_t body_size(const UnsubscribePacket& p, ProtocolVersion v) noexcept {
    std::size_t n = 2 + (is_v5(v) ? block_size(p.properties) : 0);
    std::size_t cursor = 0;
    std::string_view f;
    while (p.filters.next(cursor, f)) n += string_size(f);
    return n;
}

std::size_t body_size(const UnsubackPacket& p, ProtocolVersion v) noexcept {
    if (!is_v5(v)) return 2;
    return 2 + block_size(p.properties) + p.reason_codes.size();
}

}  // namespace

// v5 reason codes back to 3.1.1 CONNACK return codes (see packets.hpp).
std::uint8_t connack_to_v311(ReasonCode c) noexcept {
    switch (c) {
        case ReasonCode::success: return 0;
        case ReasonCode::unsupported_protocol_version: return 1;
        case ReasonCode::client_identifier_not_valid: return 2;
        case ReasonCode::server_unavailable: return 3;
        case ReasonCode::bad_user_name_or_password: return 4;
        case ReasonCode::not_authorized: return 5;
        default: return 3;
    }
}

// ---------------------------------------------------------------- CONNECT

std::size_t encoded_size(const ConnectPacket& p) noexcept { return total_size(body_size(p)); }

std::size_t encode(const ConnectPacket& p, MutableBytes out) noexcept {
    const std::size_t body = body_size(p);
    Writer w{nullptr};
    if (!start(out, body, first_byte(PacketType::connect), w)) return 0;
    const bool v5 = is_v5(p.version);
    w.string("MQTT");
    const auto level = static_cast<std::uint8_t>(p.version);
    w.u8(p.bridge && !v5 ? static_cast<std::uint8_t>(level | 0x80) : level);
    std::uint8_t flags = 0;
    if (p.clean_start) flags |= 0x02;
    if (p.will) {
        flags |= 0x04;
        flags = static_cast<std::uint8_t>(flags | (static_cast<unsigned>(p.will->qos) << 3));
        if (p.will->retain) flags |= 0x20;
    }
    if (p.password) flags |= 0x40;
    if (p.username) flags |= 0x80;
    w.u8(flags);
    w.u16(p.keep_alive);
    if (v5) write_block(p.properties, w);
    w.string(p.client_id);
    if (p.will) {
        if (v5) write_block(p.will->properties, w);
        w.string(p.will->topic);
        w.binary(p.will->payload);
    }
    if (p.username) w.string(*p.username);
    if (p.password) w.binary(*p.password);
    return written(out, w);
}

// ---------------------------------------------------------------- CONNACK

std::size_t encoded_size(const ConnackPacket& p, ProtocolVersion v) noexcept { return total_size(body_size(p, v)); }

std::size_t encode(const ConnackPacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    Writer w{nullptr};
    if (!start(out, body_size(p, v), first_byte(PacketType::connack), w)) return 0;
    w.u8(p.session_present ? 1 : 0);
    if (is_v5(v)) {
        w.u8(static_cast<std::uint8_t>(p.reason));
        write_block(p.properties, w);
    } else {
        w.u8(connack_to_v311(p.reason));
    }
    return written(out, w);
}

// ---------------------------------------------------------------- PUBLISH

std::size_t encoded_size(const PublishPacket& p, ProtocolVersion v) noexcept {
    return total_size(body_size(p, v, is_v5(v) ? properties_size(p.properties) : 0));
}

namespace {

std::uint8_t publish_flags(const PublishPacket& p) noexcept {
    std::uint8_t flags = static_cast<std::uint8_t>(static_cast<unsigned>(p.qos) << 1);
    if (p.dup) flags |= 0x08;
    if (p.retain) flags |= 0x01;
    return flags;
}

// Fixed header, topic, packet id and properties: everything before the payload.
void write_publish_head(const PublishPacket& p, ProtocolVersion v, std::size_t props, Writer& w) noexcept {
    w.string(p.topic);
    if (p.qos != QoS::at_most_once) w.u16(p.packet_id);
    if (is_v5(v)) write_block(p.properties, props, w);
}

}  // namespace

std::size_t encode(const PublishPacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    const std::size_t props = is_v5(v) ? properties_size(p.properties) : 0;
    Writer w{nullptr};
    if (!start(out, body_size(p, v, props), first_byte(PacketType::publish, publish_flags(p)), w)) return 0;
    write_publish_head(p, v, props, w);
    w.bytes(p.payload.data(), p.payload.size());
    return written(out, w);
}

std::size_t encode_publish_head(const PublishPacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    const std::size_t props = is_v5(v) ? properties_size(p.properties) : 0;
    const std::size_t body = body_size(p, v, props);
    const std::size_t total = total_size(body);
    if (total == 0 || out.size() < total - p.payload.size()) return 0;
    Writer w{out.data()};
    w.u8(first_byte(PacketType::publish, publish_flags(p)));
    w.varint(static_cast<std::uint32_t>(body));
    write_publish_head(p, v, props, w);
    return written(out, w);
}

// ------------------------------------------------- PUBACK PUBREC PUBREL PUBCOMP

std::size_t encoded_size(const AckPacket& p, ProtocolVersion v) noexcept { return total_size(body_size(p, v)); }

std::size_t encode(const AckPacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    const std::uint8_t flags = p.type == PacketType::pubrel ? 0x02 : 0x00;
    const std::size_t body = body_size(p, v);
    Writer w{nullptr};
    if (!start(out, body, first_byte(p.type, flags), w)) return 0;
    w.u16(p.packet_id);
    if (is_v5(v)) write_reason_tail(body - 2, p.reason, p.properties, w);
    return written(out, w);
}

// ------------------------------------------------------- SUBSCRIBE SUBACK

std::size_t encoded_size(const SubscribePacket& p, ProtocolVersion v) noexcept { return total_size(body_size(p, v)); }

std::size_t encode(const SubscribePacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    Writer w{nullptr};
    if (!start(out, body_size(p, v), first_byte(PacketType::subscribe, 0x02), w)) return 0;
    w.u16(p.packet_id);
    if (is_v5(v)) write_block(p.properties, w);
    std::size_t cursor = 0;
    Subscription s;
    while (p.subscriptions.next(cursor, s)) {
        w.string(s.filter);
        w.u8(options_byte(s, v));
    }
    return written(out, w);
}

std::size_t encoded_size(const SubackPacket& p, ProtocolVersion v) noexcept { return total_size(body_size(p, v)); }

std::size_t encode(const SubackPacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    Writer w{nullptr};
    if (!start(out, body_size(p, v), first_byte(PacketType::suback), w)) return 0;
    w.u16(p.packet_id);
    if (is_v5(v)) {
        write_block(p.properties, w);
        w.bytes(p.reason_codes.data(), p.reason_codes.size());
    } else {
        for (auto c : p.reason_codes) w.u8(suback_to_v311(c));
    }
    return written(out, w);
}

// --------------------------------------------------- UNSUBSCRIBE UNSUBACK

std::size_t encoded_size(const UnsubscribePacket& p, ProtocolVersion v) noexcept {
    return total_size(body_size(p, v));
}

std::size_t encode(const UnsubscribePacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    Writer w{nullptr};
    if (!start(out, body_size(p, v), first_byte(PacketType::unsubscribe, 0x02), w)) return 0;
    w.u16(p.packet_id);
    if (is_v5(v)) write_block(p.properties, w);
    std::size_t cursor = 0;
    std::string_view f;
    while (p.filters.next(cursor, f)) w.string(f);
    return written(out, w);
}

std::size_t encoded_size(const UnsubackPacket& p, ProtocolVersion v) noexcept { return total_size(body_size(p, v)); }

std::size_t encode(const UnsubackPacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    Writer w{nullptr};
    if (!start(out, body_size(p, v), first_byte(PacketType::unsuback), w)) return 0;
    w.u16(p.packet_id);
    if (is_v5(v)) {
        write_block(p.properties, w);
        w.bytes(p.reason_codes.data(), p.reason_codes.size());
    }
    return written(out, w);
}

// ------------------------------------------------------- PINGREQ PINGRESP

std::size_t encoded_size(const PingreqPacket&, ProtocolVersion) noexcept { return 2; }

std::size_t encode(const PingreqPacket&, ProtocolVersion, MutableBytes out) noexcept {
    Writer w{nullptr};
    if (!start(out, 0, first_byte(PacketType::pingreq), w)) return 0;
    return 2;
}

std::size_t encoded_size(const PingrespPacket&, ProtocolVersion) noexcept { return 2; }

std::size_t encode(const PingrespPacket&, ProtocolVersion, MutableBytes out) noexcept {
    Writer w{nullptr};
    if (!start(out, 0, first_byte(PacketType::pingresp), w)) return 0;
    return 2;
}

// ------------------------------------------------------- DISCONNECT AUTH

std::size_t encoded_size(const DisconnectPacket& p, ProtocolVersion v) noexcept {
    return total_size(is_v5(v) ? reason_tail_size(p.reason, p.properties, true) : 0);
}

std::size_t encode(const DisconnectPacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    const std::size_t body = is_v5(v) ? reason_tail_size(p.reason, p.properties, true) : 0;
    Writer w{nullptr};
    if (!start(out, body, first_byte(PacketType::disconnect), w)) return 0;
    write_reason_tail(body, p.reason, p.properties, w);
    return written(out, w);
}

// AUTH does not exist in 3.1.1: it cannot be encoded there.
std::size_t encoded_size(const AuthPacket& p, ProtocolVersion v) noexcept {
    if (!is_v5(v)) return 0;
    return total_size(reason_tail_size(p.reason, p.properties, true));
}

std::size_t encode(const AuthPacket& p, ProtocolVersion v, MutableBytes out) noexcept {
    if (!is_v5(v)) return 0;
    const std::size_t body = reason_tail_size(p.reason, p.properties, true);
    Writer w{nullptr};
    if (!start(out, body, first_byte(PacketType::auth), w)) return 0;
    write_reason_tail(body, p.reason, p.properties, w);
    return written(out, w);
}

}  // namespace mqttools
