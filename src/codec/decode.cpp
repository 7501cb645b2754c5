// Packet decoders for MQTT 5.0 and 3.1.1 (spec chapter 3 of each). Every
// decoded field is a view into the body; nothing is allocated.
#include "codec/wire.hpp"

namespace mqttools {
namespace {

using detail::Reader;
using detail::read_property_block;
constexpr auto malformed = ReasonCode::malformed_packet;
constexpr auto protocol = ReasonCode::protocol_error;

// The reason codes each packet may carry (spec 3.x.2.1 tables). A code the
// packet cannot carry is a Protocol Error.
bool valid_connack_reason(std::uint8_t c) noexcept {
    switch (c) {
        case 0x00: case 0x80: case 0x81: case 0x82: case 0x83: case 0x84: case 0x85: case 0x86: case 0x87:
        case 0x88: case 0x89: case 0x8A: case 0x8C: case 0x90: case 0x95: case 0x97: case 0x99: case 0x9A:
        case 0x9B: case 0x9C: case 0x9D: case 0x9F:
            return true;
        default: return false;
    }
}
bool valid_ack_reason(PacketType t, std::uint8_t c) noexcept {
    if (t == PacketType::pubrel || t == PacketType::pubcomp) return c == 0x00 || c == 0x92;
    switch (c) {
        case 0x00: case 0x10: case 0x80: case 0x83: case 0x87: case 0x90: case 0x91: case 0x97: case 0x99:
            return true;
        default: return false;
    }
}
bool valid_suback_reason(std::uint8_t c, ProtocolVersion v) noexcept {
    if (v == ProtocolVersion::v311) return c <= 2 || c == 0x80;
    switch (c) {
        case 0x00: case 0x01: case 0x02: case 0x80: case 0x83: case 0x87: case 0x8F: case 0x91: case 0x97:
        case 0x9E: case 0xA1: case 0xA2:
            return true;
        default: return false;
    }
}
bool valid_unsuback_reason(std::uint8_t c) noexcept {
    switch (c) {
        case 0x00: case 0x11: case 0x80: case 0x83: case 0x87: case 0x8F: case 0x91: return true;
        default: return false;
    }
}
bool valid_disconnect_reason(std::uint8_t c) noexcept {
    switch (c) {
        case 0x00: case 0x04: case 0x80: case 0x81: case 0x82: case 0x83: case 0x87: case 0x89: case 0x8B:
        case 0x8D: case 0x8E: case 0x8F: case 0x90: case 0x93: case 0x94: case 0x95: case 0x96: case 0x97:
        case 0x98: case 0x99: case 0x9A: case 0x9B: case 0x9C: case 0x9D: case 0x9E: case 0x9F: case 0xA0:
        case 0xA1: case 0xA2:
            return true;
        default: return false;
    }
}

// 3.1.1 CONNACK return codes and the v5 reason codes of the same meaning.
ReasonCode connack_from_v311(std::uint8_t rc) noexcept {
    switch (rc) {
        case 1: return ReasonCode::unsupported_protocol_version;
        case 2: return ReasonCode::client_identifier_not_valid;
        case 3: return ReasonCode::server_unavailable;
        case 4: return ReasonCode::bad_user_name_or_password;
        case 5: return ReasonCode::not_authorized;
        default: return ReasonCode::success;
    }
}

ReasonCode read_packet_id(Reader& r, std::uint16_t& id) noexcept {
    if (!r.u16(id)) return malformed;
    // A Packet Identifier is non-zero ([MQTT-2.2.1-3] v5, [MQTT-2.3.1-1] 3.1.1).
    return id == 0 ? protocol : ReasonCode::success;
}

// Subscription options (spec 3.8.3.1): an error or success.
ReasonCode check_options(std::uint8_t o, ProtocolVersion v) noexcept {
    // 3.1.1: QoS 3 and any upper bit are malformed [MQTT-3.8.3-4] (3.1.1).
    if (v == ProtocolVersion::v311) {
        return ((o & 0x03) == 0x03 || (o & 0xFC) != 0) ? malformed : ReasonCode::success;
    }
    if ((o & 0xC0) != 0) return malformed;        // reserved bits [MQTT-3.8.3-5]
    if ((o & 0x03) == 0x03) return protocol;      // Maximum QoS 3 is a Protocol Error (3.8.3.1)
    if (((o >> 4) & 0x03) == 3) return protocol;  // Retain Handling 3 likewise
    return ReasonCode::success;
}

Subscription to_subscription(std::string_view filter, std::uint8_t o) noexcept {
    Subscription s;
    s.filter = filter;
    s.qos = static_cast<QoS>(o & 0x03);
    s.no_local = (o & 0x04) != 0;
    s.retain_as_published = (o & 0x08) != 0;
    s.retain_handling = static_cast<std::uint8_t>((o >> 4) & 0x03);
    return s;
}

}  // namespace

// ------------------------------------------------------------------ lists

SubscriptionList SubscriptionList::from_wire(Bytes raw, std::size_t count, ProtocolVersion version) noexcept {
    SubscriptionList l;
    l.raw_ = raw;
    l.count_ = count;
    l.version_ = version;
    l.wire_ = true;
    return l;
}

bool SubscriptionList::next(std::size_t& cursor, Subscription& out) const noexcept {
    if (!wire_) {
        if (cursor >= items_.size()) return false;
        out = items_[cursor++];
        return true;
    }
    // The cursor is a byte offset into the validated payload.
    if (cursor >= raw_.size()) return false;
    Reader r(raw_.subspan(cursor));
    std::string_view filter;
    std::uint8_t o = 0;
    if (!r.raw_string(filter) || !r.u8(o)) {
        cursor = raw_.size();
        return false;
    }
    out = to_subscription(filter, o);
    cursor = static_cast<std::size_t>(r.pos - raw_.data());
    return true;
}

FilterList FilterList::from_wire(Bytes raw, std::size_t count) noexcept {
    FilterList l;
    l.raw_ = raw;
    l.count_ = count;
    l.wire_ = true;
    return l;
}

bool FilterList::next(std::size_t& cursor, std::string_view& out) const noexcept {
    if (!wire_) {
        if (cursor >= items_.size()) return false;
        out = items_[cursor++];
        return true;
    }
    if (cursor >= raw_.size()) return false;
    Reader r(raw_.subspan(cursor));
    if (!r.raw_string(out)) {
        cursor = raw_.size();
        return false;
    }
    cursor = static_cast<std::size_t>(r.pos - raw_.data());
    return true;
}

namespace detail {

// ---------------------------------------------------------------- CONNECT

ReasonCode decode_connect_into(const FixedHeader& header, Bytes body, ConnectPacket& p) noexcept {
    if (header.flags != 0) return malformed;
    Reader r(body);
    std::string_view name;
    std::uint8_t level = 0;
    if (!r.raw_string(name) || !r.u8(level)) return malformed;
    // [MQTT-3.1.2-1]: another protocol name may be refused with 0x84;
    // [MQTT-3.1.2-2]: an unsupported level is answered with 0x84.
    if (name == "MQIsdp") {
        // MQTT 3.1 (level 3; 0x83 from a 3.1 bridge with try_private), as
        // Mosquitto still accepts: old devices and libraries speak it.
        if (level != 3 && level != 0x83) return ReasonCode::unsupported_protocol_version;
        p.bridge = level == 0x83;
        p.mqtt31 = true;
        level = 4;
    } else if (name != "MQTT") {
        return ReasonCode::unsupported_protocol_version;
    }
    if (level == 0x84 && !p.mqtt31) {
        p.bridge = true;  // try_private (Mosquitto): a 3.1.1 bridge
        level = 4;
    }
    if (level != 4 && level != 5) return ReasonCode::unsupported_protocol_version;
    p.version = static_cast<ProtocolVersion>(level);
    const bool v5 = p.version == ProtocolVersion::v5;
    std::uint8_t flags = 0;
    if (!r.u8(flags) || !r.u16(p.keep_alive)) return malformed;
    if ((flags & 0x01) != 0) return malformed;  // reserved flag [MQTT-3.1.2-3]
    const bool will = (flags & 0x04) != 0;
    const auto will_qos = static_cast<std::uint8_t>((flags >> 3) & 0x03);
    const bool will_retain = (flags & 0x20) != 0;
    const bool has_password = (flags & 0x40) != 0;
    const bool has_username = (flags & 0x80) != 0;
    if (will_qos == 3) return malformed;  // [MQTT-3.1.2-12]
    if (!will && (will_qos != 0 || will_retain)) return malformed;  // [MQTT-3.1.2-11], [MQTT-3.1.2-13]
    if (!v5 && has_password && !has_username) return malformed;  // 3.1.1 [MQTT-3.1.2-22]
    p.clean_start = (flags & 0x02) != 0;
    if (v5) {
        if (auto rc = read_property_block(r, PacketType::connect, Sender::client, p.properties);
            rc != ReasonCode::success)
            return rc;
    }
    if (!r.string(p.client_id)) return malformed;  // [MQTT-3.1.3-4]
    if (will) {
        Will& w = p.will.emplace();
        w.qos = static_cast<QoS>(will_qos);
        w.retain = will_retain;
        if (v5) {
            if (auto rc = read_property_block(r, PacketType::connect, Sender::client, w.properties, true);
                rc != ReasonCode::success)
                return rc;
        }
        if (!r.string(w.topic)) return malformed;  // [MQTT-3.1.3-11]
        if (check_topic_name(w.topic) != ReasonCode::success) return ReasonCode::topic_name_invalid;
        if (!r.binary(w.payload)) return malformed;
        // Payload Format Indicator 1 promises UTF-8 (spec 3.1.3.2.3).
        if (w.properties.payload_format_indicator.value_or(0) == 1 && !is_valid_utf8(as_string(w.payload)))
            return ReasonCode::payload_format_invalid;
    }
    if (has_username) {
        std::string_view user;
        if (!r.string(user)) return malformed;  // [MQTT-3.1.3-11]
        p.username = user;
    }
    if (has_password) {
        Bytes pw;
        if (!r.binary(pw)) return malformed;
        p.password = pw;
    }
    if (!r.empty()) return malformed;  // trailing bytes
    return ReasonCode::success;
}

// ---------------------------------------------------------------- CONNACK

ReasonCode decode_connack_into(const FixedHeader& header, Bytes body, ProtocolVersion version, ConnackPacket& p) noexcept {
    if (header.flags != 0) return malformed;
    Reader r(body);
    std::uint8_t ack = 0;
    std::uint8_t code = 0;
    if (!r.u8(ack) || !r.u8(code)) return malformed;
    if ((ack & 0xFE) != 0) return malformed;  // reserved bits [MQTT-3.2.2-1]
    p.session_present = (ack & 0x01) != 0;
    if (version == ProtocolVersion::v311) {
        if (code > 5) return protocol;
        p.reason = connack_from_v311(code);
    } else {
        if (!valid_connack_reason(code)) return protocol;
        p.reason = static_cast<ReasonCode>(code);
        if (auto rc = read_property_block(r, PacketType::connack, Sender::server, p.properties);
            rc != ReasonCode::success)
            return rc;
    }
    // Session Present is 0 with an error code ([MQTT-3.2.2-6], 3.1.1 [MQTT-3.2.2-4]).
    if (p.session_present && p.reason != ReasonCode::success) return protocol;
    if (!r.empty()) return malformed;
    return ReasonCode::success;
}

// ---------------------------------------------------------------- PUBLISH

ReasonCode decode_publish_into(const FixedHeader& header, Bytes body, ProtocolVersion version,
                                     Sender sender, PublishPacket& p) noexcept {
    const auto qos = static_cast<std::uint8_t>((header.flags >> 1) & 0x03);
    if (qos == 3) return malformed;  // [MQTT-3.3.1-4]
    const bool dup = (header.flags & 0x08) != 0;
    if (dup && qos == 0) return malformed;  // [MQTT-3.3.1-2]
    Reader r(body);
    p.dup = dup;
    p.qos = static_cast<QoS>(qos);
    p.retain = (header.flags & 0x01) != 0;
    if (!r.string(p.topic)) return malformed;  // [MQTT-3.3.2-1]
    if (qos != 0) {
        if (auto rc = read_packet_id(r, p.packet_id); rc != ReasonCode::success) return rc;
    }
    if (version == ProtocolVersion::v5) {
        if (auto rc = read_property_block(r, PacketType::publish, sender, p.properties); rc != ReasonCode::success)
            return rc;
        // An empty topic needs a Topic Alias (spec 3.3.2.1).
        if (p.topic.empty() && !p.properties.topic_alias) return protocol;
    } else if (p.topic.empty()) {
        return ReasonCode::topic_name_invalid;  // 3.1.1 [MQTT-4.7.3-1]
    }
    // No wildcards in a topic name [MQTT-3.3.2-2].
    if (detail::has_wildcard(p.topic)) return ReasonCode::topic_name_invalid;
    p.payload = r.rest();
    if (p.properties.payload_format_indicator.value_or(0) == 1 && !is_valid_utf8(as_string(p.payload)))
        return ReasonCode::payload_format_invalid;  // spec 3.3.2.3.2
    return ReasonCode::success;
}

// ------------------------------------------------- PUBACK PUBREC PUBREL PUBCOMP

ReasonCode decode_ack_into(const FixedHeader& header, Bytes body, ProtocolVersion version, AckPacket& p) noexcept {
    if (header.type != PacketType::puback && header.type != PacketType::pubrec &&
        header.type != PacketType::pubrel && header.type != PacketType::pubcomp)
        return protocol;
    if (auto rc = check_fixed_header_flags(header.type, header.flags); rc != ReasonCode::success) return rc;
    Reader r(body);
    p.type = header.type;
    if (auto rc = read_packet_id(r, p.packet_id); rc != ReasonCode::success) return rc;
    if (version == ProtocolVersion::v311) {
        if (!r.empty()) return malformed;
        return ReasonCode::success;
    }
    // Remaining length 2: Success, no properties (spec 3.4.2.1).
    if (r.empty()) return ReasonCode::success;
    std::uint8_t code = 0;
    r.u8(code);
    if (!valid_ack_reason(header.type, code)) return protocol;
    p.reason = static_cast<ReasonCode>(code);
    // Remaining length 3: a reason code without properties (spec 3.4.2.2.1).
    if (r.empty()) return ReasonCode::success;
    if (auto rc = read_property_block(r, header.type, Sender::client, p.properties); rc != ReasonCode::success)
        return rc;
    if (!r.empty()) return malformed;
    return ReasonCode::success;
}

// ------------------------------------------------------- SUBSCRIBE SUBACK

ReasonCode decode_subscribe_into(const FixedHeader& header, Bytes body, ProtocolVersion version, SubscribePacket& p) noexcept {
    if (header.flags != 0x02) return malformed;  // [MQTT-3.8.1-1]
    Reader r(body);
    if (auto rc = read_packet_id(r, p.packet_id); rc != ReasonCode::success) return rc;
    if (version == ProtocolVersion::v5) {
        if (auto rc = read_property_block(r, PacketType::subscribe, Sender::client, p.properties);
            rc != ReasonCode::success)
            return rc;
    }
    const Bytes payload(r.pos, r.left());
    std::size_t count = 0;
    while (!r.empty()) {
        std::string_view filter;
        std::uint8_t o = 0;
        // A filter that is valid UTF-8 but not a valid filter is the
        // broker's to refuse (SUBACK 0x8F), not a decoding error.
        if (!r.string(filter) || !r.u8(o)) return malformed;
        if (auto rc = check_options(o, version); rc != ReasonCode::success) return rc;
        // No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4].
        if ((o & 0x04) != 0 && filter.starts_with("$share/")) return protocol;
        ++count;
    }
    if (count == 0) return protocol;  // at least one filter [MQTT-3.8.3-2]
    p.subscriptions = SubscriptionList::from_wire(payload, count, version);
    return ReasonCode::success;
}

ReasonCode decode_suback_into(const FixedHeader& header, Bytes body, ProtocolVersion version, SubackPacket& p) noexcept {
    if (header.flags != 0) return malformed;
    Reader r(body);
    if (auto rc = read_packet_id(r, p.packet_id); rc != ReasonCode::success) return rc;
    if (version == ProtocolVersion::v5) {
        if (auto rc = read_property_block(r, PacketType::suback, Sender::server, p.properties);
            rc != ReasonCode::success)
            return rc;
    }
    p.reason_codes = r.rest();
    if (p.reason_codes.empty()) return protocol;  // one per filter
    for (auto c : p.reason_codes)
        if (!valid_suback_reason(static_cast<std::uint8_t>(c), version)) return protocol;
    return ReasonCode::success;
}

// --------------------------------------------------- UNSUBSCRIBE UNSUBACK

ReasonCode decode_unsubscribe_into(const FixedHeader& header, Bytes body,
                                             ProtocolVersion version, UnsubscribePacket& p) noexcept {
    if (header.flags != 0x02) return malformed;  // [MQTT-3.10.1-1]
    Reader r(body);
    if (auto rc = read_packet_id(r, p.packet_id); rc != ReasonCode::success) return rc;
    if (version == ProtocolVersion::v5) {
        if (auto rc = read_property_block(r, PacketType::unsubscribe, Sender::client, p.properties);
            rc != ReasonCode::success)
            return rc;
    }
    const Bytes payload(r.pos, r.left());
    std::size_t count = 0;
    while (!r.empty()) {
        std::string_view filter;
        if (!r.string(filter)) return malformed;
        ++count;
    }
    if (count == 0) return protocol;  // [MQTT-3.10.3-2]
    p.filters = FilterList::from_wire(payload, count);
    return ReasonCode::success;
}

ReasonCode decode_unsuback_into(const FixedHeader& header, Bytes body, ProtocolVersion version, UnsubackPacket& p) noexcept {
    if (header.flags != 0) return malformed;
    Reader r(body);
    if (auto rc = read_packet_id(r, p.packet_id); rc != ReasonCode::success) return rc;
    if (version == ProtocolVersion::v311) {
        if (!r.empty()) return malformed;  // 3.1.1 UNSUBACK has no payload
        return ReasonCode::success;
    }
    if (auto rc = read_property_block(r, PacketType::unsuback, Sender::server, p.properties);
        rc != ReasonCode::success)
        return rc;
    p.reason_codes = r.rest();
    if (p.reason_codes.empty()) return protocol;
    for (auto c : p.reason_codes)
        if (!valid_unsuback_reason(static_cast<std::uint8_t>(c))) return protocol;
    return ReasonCode::success;
}

// ------------------------------------------------------- DISCONNECT AUTH

ReasonCode decode_disconnect_into(const FixedHeader& header, Bytes body, ProtocolVersion version,
                                           Sender sender, DisconnectPacket& p) noexcept {
    if (header.flags != 0) return malformed;  // [MQTT-3.14.1-1]
    if (version == ProtocolVersion::v311) {
        if (sender == Sender::server) return protocol;  // only clients send it in 3.1.1
        if (!body.empty()) return malformed;
        return ReasonCode::success;
    }
    Reader r(body);
    if (r.empty()) return ReasonCode::success;  // remaining length 0: Normal disconnection
    std::uint8_t code = 0;
    r.u8(code);
    if (!valid_disconnect_reason(code)) return protocol;
    p.reason = static_cast<ReasonCode>(code);
    if (r.empty()) return ReasonCode::success;  // remaining length 1: no properties
    if (auto rc = read_property_block(r, PacketType::disconnect, sender, p.properties); rc != ReasonCode::success)
        return rc;
    if (!r.empty()) return malformed;
    return ReasonCode::success;
}

ReasonCode decode_auth_into(const FixedHeader& header, Bytes body, ProtocolVersion version, AuthPacket& p) noexcept {
    if (version == ProtocolVersion::v311) return protocol;  // no AUTH in 3.1.1
    if (header.flags != 0) return malformed;  // [MQTT-3.15.1-1]
    Reader r(body);
    if (r.empty()) return ReasonCode::success;  // Success without properties (spec 3.15.2.1)
    std::uint8_t code = 0;
    r.u8(code);
    if (code != 0x00 && code != 0x18 && code != 0x19) return protocol;
    p.reason = static_cast<ReasonCode>(code);
    if (r.empty()) return ReasonCode::success;
    if (auto rc = read_property_block(r, PacketType::auth, Sender::client, p.properties); rc != ReasonCode::success)
        return rc;
    if (!r.empty()) return malformed;
    return ReasonCode::success;
}

}  // namespace detail

// ---------------------------------------------------------------- public decoders
// Each builds its packet in place inside the Result (no copy of the struct).

Result<ConnectPacket> decode_connect(const FixedHeader& header, Bytes body) noexcept {
    Result<ConnectPacket> r(std::in_place);
    if (auto rc = detail::decode_connect_into(header, body, *r); rc != ReasonCode::success) r = rc;
    return r;
}

Result<ConnackPacket> decode_connack(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept {
    Result<ConnackPacket> r(std::in_place);
    if (auto rc = detail::decode_connack_into(header, body, version, *r); rc != ReasonCode::success) r = rc;
    return r;
}

Result<PublishPacket> decode_publish(const FixedHeader& header, Bytes body, ProtocolVersion version,
                                     Sender sender) noexcept {
    Result<PublishPacket> r(std::in_place);
    if (auto rc = detail::decode_publish_into(header, body, version, sender, *r); rc != ReasonCode::success) r = rc;
    return r;
}

Result<AckPacket> decode_ack(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept {
    Result<AckPacket> r(std::in_place);
    if (auto rc = detail::decode_ack_into(header, body, version, *r); rc != ReasonCode::success) r = rc;
    return r;
}

Result<SubscribePacket> decode_subscribe(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept {
    Result<SubscribePacket> r(std::in_place);
    if (auto rc = detail::decode_subscribe_into(header, body, version, *r); rc != ReasonCode::success) r = rc;
    return r;
}

Result<SubackPacket> decode_suback(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept {
    Result<SubackPacket> r(std::in_place);
    if (auto rc = detail::decode_suback_into(header, body, version, *r); rc != ReasonCode::success) r = rc;
    return r;
}

Result<UnsubscribePacket> decode_unsubscribe(const FixedHeader& header, Bytes body,
                                             ProtocolVersion version) noexcept {
    Result<UnsubscribePacket> r(std::in_place);
    if (auto rc = detail::decode_unsubscribe_into(header, body, version, *r); rc != ReasonCode::success) r = rc;
    return r;
}

Result<UnsubackPacket> decode_unsuback(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept {
    Result<UnsubackPacket> r(std::in_place);
    if (auto rc = detail::decode_unsuback_into(header, body, version, *r); rc != ReasonCode::success) r = rc;
    return r;
}

Result<DisconnectPacket> decode_disconnect(const FixedHeader& header, Bytes body, ProtocolVersion version,
                                           Sender sender) noexcept {
    Result<DisconnectPacket> r(std::in_place);
    if (auto rc = detail::decode_disconnect_into(header, body, version, sender, *r); rc != ReasonCode::success) r = rc;
    return r;
}

Result<AuthPacket> decode_auth(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept {
    Result<AuthPacket> r(std::in_place);
    if (auto rc = detail::decode_auth_into(header, body, version, *r); rc != ReasonCode::success) r = rc;
    return r;
}

// ---------------------------------------------------------------- dispatch

namespace {

// Decodes into a variant alternative built in place.
template <class T, class F>
Result<Packet> decode_as(F&& f) noexcept {
    Result<Packet> r(std::in_place, std::in_place_type<T>);
    if (auto rc = f(std::get<T>(*r)); rc != ReasonCode::success) r = rc;
    return r;
}

// Which side may send each packet type (spec 2.1.2).
bool may_send(PacketType t, ProtocolVersion v, Sender s) noexcept {
    switch (t) {
        case PacketType::connect:
        case PacketType::subscribe:
        case PacketType::unsubscribe:
        case PacketType::pingreq: return s == Sender::client;
        case PacketType::connack:
        case PacketType::suback:
        case PacketType::unsuback:
        case PacketType::pingresp: return s == Sender::server;
        case PacketType::disconnect: return v == ProtocolVersion::v5 || s == Sender::client;
        case PacketType::auth: return v == ProtocolVersion::v5;
        default: return true;
    }
}

}  // namespace

Result<Packet> decode_packet(const FixedHeader& header, Bytes body, ProtocolVersion version, Sender sender) noexcept {
    const auto t = static_cast<std::uint8_t>(header.type);
    if (t == 0 || t > 15) return malformed;
    if (!may_send(header.type, version, sender)) return protocol;
    switch (header.type) {
        case PacketType::connect: return decode_as<ConnectPacket>([&](auto& p) { return detail::decode_connect_into(header, body, p); });
        case PacketType::connack: return decode_as<ConnackPacket>([&](auto& p) { return detail::decode_connack_into(header, body, version, p); });
        case PacketType::publish: return decode_as<PublishPacket>([&](auto& p) { return detail::decode_publish_into(header, body, version, sender, p); });
        case PacketType::puback:
        case PacketType::pubrec:
        case PacketType::pubrel:
        case PacketType::pubcomp: return decode_as<AckPacket>([&](auto& p) { return detail::decode_ack_into(header, body, version, p); });
        case PacketType::subscribe: return decode_as<SubscribePacket>([&](auto& p) { return detail::decode_subscribe_into(header, body, version, p); });
        case PacketType::suback: return decode_as<SubackPacket>([&](auto& p) { return detail::decode_suback_into(header, body, version, p); });
        case PacketType::unsubscribe: return decode_as<UnsubscribePacket>([&](auto& p) { return detail::decode_unsubscribe_into(header, body, version, p); });
        case PacketType::unsuback: return decode_as<UnsubackPacket>([&](auto& p) { return detail::decode_unsuback_into(header, body, version, p); });
        case PacketType::pingreq:
            if (header.flags != 0 || !body.empty()) return malformed;
            return Packet(PingreqPacket{});
        case PacketType::pingresp:
            if (header.flags != 0 || !body.empty()) return malformed;
            return Packet(PingrespPacket{});
        case PacketType::disconnect: return decode_as<DisconnectPacket>([&](auto& p) { return detail::decode_disconnect_into(header, body, version, sender, p); });
        case PacketType::auth: return decode_as<AuthPacket>([&](auto& p) { return detail::decode_auth_into(header, body, version, p); });
    }
    return malformed;
}

}  // namespace mqttools
