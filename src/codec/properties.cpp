// MQTT 5.0 properties (spec 2.2.2): the 27 identifiers, their data types,
// where each is allowed, duplicates and value ranges; and their encoding.
#include <array>

#include "codec/wire.hpp"

namespace mqttools {
namespace {

enum class DataType : std::uint8_t { none, byte, two, four, varint, string, binary, pair };

struct PropertyInfo {
    DataType type = DataType::none;
    std::uint32_t allowed = 0;  // bit (1 << packet type); bit 0 = Will Properties
};

constexpr std::uint32_t bit(PacketType t) noexcept { return 1u << static_cast<unsigned>(t); }
constexpr std::uint32_t will_bit = 1u;
constexpr std::uint32_t acks = bit(PacketType::puback) | bit(PacketType::pubrec) | bit(PacketType::pubrel) |
                               bit(PacketType::pubcomp);
constexpr std::uint32_t all_packets = 0xFFFEu;

// The table of spec 2.2.2.2.
constexpr std::array<PropertyInfo, 0x2B> make_table() {
    std::array<PropertyInfo, 0x2B> t{};
    auto set = [&t](PropertyId id, DataType type, std::uint32_t allowed) {
        t[static_cast<std::size_t>(id)] = PropertyInfo{type, allowed};
    };
    const std::uint32_t pub_will = bit(PacketType::publish) | will_bit;
    set(PropertyId::payload_format_indicator, DataType::byte, pub_will);
    set(PropertyId::message_expiry_interval, DataType::four, pub_will);
    set(PropertyId::content_type, DataType::string, pub_will);
    set(PropertyId::response_topic, DataType::string, pub_will);
    set(PropertyId::correlation_data, DataType::binary, pub_will);
    set(PropertyId::subscription_identifier, DataType::varint,
        bit(PacketType::publish) | bit(PacketType::subscribe));
    set(PropertyId::session_expiry_interval, DataType::four,
        bit(PacketType::connect) | bit(PacketType::connack) | bit(PacketType::disconnect));
    set(PropertyId::assigned_client_identifier, DataType::string, bit(PacketType::connack));
    set(PropertyId::server_keep_alive, DataType::two, bit(PacketType::connack));
    const std::uint32_t auth = bit(PacketType::connect) | bit(PacketType::connack) | bit(PacketType::auth);
    set(PropertyId::authentication_method, DataType::string, auth);
    set(PropertyId::authentication_data, DataType::binary, auth);
    set(PropertyId::request_problem_information, DataType::byte, bit(PacketType::connect));
    set(PropertyId::will_delay_interval, DataType::four, will_bit);
    set(PropertyId::request_response_information, DataType::byte, bit(PacketType::connect));
    set(PropertyId::response_information, DataType::string, bit(PacketType::connack));
    set(PropertyId::server_reference, DataType::string, bit(PacketType::connack) | bit(PacketType::disconnect));
    set(PropertyId::reason_string, DataType::string,
        bit(PacketType::connack) | acks | bit(PacketType::suback) | bit(PacketType::unsuback) |
            bit(PacketType::disconnect) | bit(PacketType::auth));
    const std::uint32_t conn = bit(PacketType::connect) | bit(PacketType::connack);
    set(PropertyId::receive_maximum, DataType::two, conn);
    set(PropertyId::topic_alias_maximum, DataType::two, conn);
    set(PropertyId::topic_alias, DataType::two, bit(PacketType::publish));
    set(PropertyId::maximum_qos, DataType::byte, bit(PacketType::connack));
    set(PropertyId::retain_available, DataType::byte, bit(PacketType::connack));
    set(PropertyId::user_property, DataType::pair, all_packets | will_bit);
    set(PropertyId::maximum_packet_size, DataType::four, conn);
    set(PropertyId::wildcard_subscription_available, DataType::byte, bit(PacketType::connack));
    set(PropertyId::subscription_identifier_available, DataType::byte, bit(PacketType::connack));
    set(PropertyId::shared_subscription_available, DataType::byte, bit(PacketType::connack));
    return t;
}

constexpr auto table = make_table();

const PropertyInfo* info_of(std::uint32_t id) noexcept {
    if (id >= table.size() || table[id].type == DataType::none) return nullptr;
    return &table[id];
}

// Reads one property value of a given type, without validating it.
bool read_value(detail::Reader& r, DataType type, Property& out) noexcept {
    switch (type) {
        case DataType::byte: {
            std::uint8_t v = 0;
            if (!r.u8(v)) return false;
            out.integer = v;
            return true;
        }
        case DataType::two: {
            std::uint16_t v = 0;
            if (!r.u16(v)) return false;
            out.integer = v;
            return true;
        }
        case DataType::four: return r.u32(out.integer);
        case DataType::varint: return r.varint(out.integer);
        case DataType::string: return r.raw_string(out.string);
        case DataType::binary: return r.binary(out.binary);
        case DataType::pair: return r.raw_string(out.string) && r.raw_string(out.value);
        case DataType::none: break;
    }
    return false;
}

// Reads the next property's identifier and value; false on any error.
bool read_property(detail::Reader& r, Property& out, const PropertyInfo*& info) noexcept {
    std::uint32_t id = 0;
    if (!r.varint(id)) return false;
    info = info_of(id);
    if (info == nullptr) return false;
    out.id = static_cast<PropertyId>(id);
    return read_value(r, info->type, out);
}

bool is_flag(std::uint32_t v) noexcept { return v <= 1; }

}  // namespace

bool PropertyReader::next(Property& out) noexcept {
    if (pos_ >= raw_.size()) return false;
    detail::Reader r(raw_.subspan(pos_));
    out = Property{};
    const PropertyInfo* info = nullptr;
    if (!read_property(r, out, info)) {
        pos_ = raw_.size();
        return false;
    }
    pos_ = static_cast<std::size_t>(r.pos - raw_.data());
    return true;
}

namespace detail {

ReasonCode read_properties(Bytes raw, PacketType type, Sender sender, Properties& out, bool will) noexcept {
    out.raw = raw;
    const std::uint32_t where = will ? will_bit : bit(type);
    std::uint64_t seen = 0;
    Reader r(raw);
    Property p;
    while (!r.empty()) {
        std::uint32_t id = 0;
        if (!r.varint(id)) return ReasonCode::malformed_packet;
        const PropertyInfo* info = info_of(id);
        // An unknown identifier, or one not allowed in this packet, is
        // malformed (spec 2.2.2.2).
        if (info == nullptr || (info->allowed & where) == 0) return ReasonCode::malformed_packet;
        auto pid = static_cast<PropertyId>(id);
        if (!read_value(r, info->type, p)) return ReasonCode::malformed_packet;
        if (info->type == DataType::string && !is_valid_utf8(p.string)) return ReasonCode::malformed_packet;
        if (info->type == DataType::pair) {
            if (!is_valid_utf8(p.string) || !is_valid_utf8(p.value)) return ReasonCode::malformed_packet;
            ++out.user_property_count;  // repeatable (spec 3.1.2.11.8)
            continue;
        }
        const std::uint64_t b = property_bit(pid);
        if (pid == PropertyId::subscription_identifier && type == PacketType::publish) {
            // Only the server sends it in PUBLISH, possibly several times
            // [MQTT-3.3.4-6]; a client must not.
            if (sender == Sender::client) return ReasonCode::protocol_error;
            if (p.integer == 0) return ReasonCode::protocol_error;
            if (out.subscription_identifier_count++ == 0) out.subscription_identifier = p.integer;
            continue;
        }
        if ((seen & b) != 0) return ReasonCode::protocol_error;  // duplicate
        seen |= b;
        switch (pid) {
            case PropertyId::payload_format_indicator:
                if (!is_flag(p.integer)) return ReasonCode::protocol_error;
                out.payload_format_indicator = static_cast<std::uint8_t>(p.integer);
                break;
            case PropertyId::message_expiry_interval: out.message_expiry_interval = p.integer; break;
            case PropertyId::content_type: out.content_type = p.string; break;
            case PropertyId::response_topic:
                // No wildcards in a Response Topic [MQTT-3.3.2-14].
                if (check_topic_name(p.string) != ReasonCode::success) return ReasonCode::protocol_error;
                out.response_topic = p.string;
                break;
            case PropertyId::correlation_data: out.correlation_data = p.binary; break;
            case PropertyId::subscription_identifier:  // in SUBSCRIBE
                if (p.integer == 0) return ReasonCode::protocol_error;
                out.subscription_identifier = p.integer;
                out.subscription_identifier_count = 1;
                break;
            case PropertyId::session_expiry_interval:
                // The server must not send it in DISCONNECT [MQTT-3.14.2-2].
                if (type == PacketType::disconnect && sender == Sender::server) return ReasonCode::protocol_error;
                out.session_expiry_interval = p.integer;
                break;
            case PropertyId::assigned_client_identifier: out.assigned_client_identifier = p.string; break;
            case PropertyId::server_keep_alive: out.server_keep_alive = static_cast<std::uint16_t>(p.integer); break;
            case PropertyId::authentication_method: out.authentication_method = p.string; break;
            case PropertyId::authentication_data: out.authentication_data = p.binary; break;
            case PropertyId::request_problem_information:
                if (!is_flag(p.integer)) return ReasonCode::protocol_error;
                out.request_problem_information = static_cast<std::uint8_t>(p.integer);
                break;
            case PropertyId::will_delay_interval: out.will_delay_interval = p.integer; break;
            case PropertyId::request_response_information:
                if (!is_flag(p.integer)) return ReasonCode::protocol_error;
                out.request_response_information = static_cast<std::uint8_t>(p.integer);
                break;
            case PropertyId::response_information: out.response_information = p.string; break;
            case PropertyId::server_reference: out.server_reference = p.string; break;
            case PropertyId::reason_string: out.reason_string = p.string; break;
            case PropertyId::receive_maximum:
                if (p.integer == 0) return ReasonCode::protocol_error;  // spec 3.1.2.11.3
                out.receive_maximum = static_cast<std::uint16_t>(p.integer);
                break;
            case PropertyId::topic_alias_maximum:
                out.topic_alias_maximum = static_cast<std::uint16_t>(p.integer);
                break;
            case PropertyId::topic_alias:
                // A Topic Alias of 0 is not permitted [MQTT-3.3.2-8].
                if (p.integer == 0) return ReasonCode::topic_alias_invalid;
                out.topic_alias = static_cast<std::uint16_t>(p.integer);
                break;
            case PropertyId::maximum_qos:
                if (!is_flag(p.integer)) return ReasonCode::protocol_error;  // spec 3.2.2.3.4
                out.maximum_qos = static_cast<std::uint8_t>(p.integer);
                break;
            case PropertyId::retain_available:
                if (!is_flag(p.integer)) return ReasonCode::protocol_error;
                out.retain_available = static_cast<std::uint8_t>(p.integer);
                break;
            case PropertyId::maximum_packet_size:
                if (p.integer == 0) return ReasonCode::protocol_error;  // spec 3.1.2.11.4
                out.maximum_packet_size = p.integer;
                break;
            case PropertyId::wildcard_subscription_available:
                if (!is_flag(p.integer)) return ReasonCode::protocol_error;
                out.wildcard_subscription_available = static_cast<std::uint8_t>(p.integer);
                break;
            case PropertyId::subscription_identifier_available:
                if (!is_flag(p.integer)) return ReasonCode::protocol_error;
                out.subscription_identifier_available = static_cast<std::uint8_t>(p.integer);
                break;
            case PropertyId::shared_subscription_available:
                if (!is_flag(p.integer)) return ReasonCode::protocol_error;
                out.shared_subscription_available = static_cast<std::uint8_t>(p.integer);
                break;
            case PropertyId::user_property: break;  // handled above
        }
    }
    // Authentication Data without an Authentication Method is a Protocol
    // Error (spec 3.1.2.11.10, 3.2.2.3.18, 3.15.2.2.4).
    if (out.authentication_data && !out.authentication_method) return ReasonCode::protocol_error;
    return ReasonCode::success;
}

namespace {


// Calls f(id, bytes) for each property of a raw block (stops at bad bytes).
template <class F>
void for_each_raw(Bytes raw, F&& f) noexcept {
    Reader r(raw);
    Property p;
    while (!r.empty()) {
        const std::byte* start = r.pos;
        const PropertyInfo* info = nullptr;
        if (!read_property(r, p, info)) return;
        f(p.id, Bytes(start, static_cast<std::size_t>(r.pos - start)));
    }
}

}  // namespace

void write_properties(const Properties& p, Writer& w) noexcept {
    auto id = [&w](PropertyId i) { w.u8(static_cast<std::uint8_t>(i)); };
    if (p.payload_format_indicator) { id(PropertyId::payload_format_indicator); w.u8(*p.payload_format_indicator); }
    if (p.message_expiry_interval) { id(PropertyId::message_expiry_interval); w.u32(*p.message_expiry_interval); }
    if (p.content_type) { id(PropertyId::content_type); w.string(*p.content_type); }
    if (p.response_topic) { id(PropertyId::response_topic); w.string(*p.response_topic); }
    if (p.correlation_data) { id(PropertyId::correlation_data); w.binary(*p.correlation_data); }
    if (p.subscription_identifier) { id(PropertyId::subscription_identifier); w.varint(*p.subscription_identifier); }
    if (p.session_expiry_interval) { id(PropertyId::session_expiry_interval); w.u32(*p.session_expiry_interval); }
    if (p.assigned_client_identifier) { id(PropertyId::assigned_client_identifier); w.string(*p.assigned_client_identifier); }
    if (p.server_keep_alive) { id(PropertyId::server_keep_alive); w.u16(*p.server_keep_alive); }
    if (p.authentication_method) { id(PropertyId::authentication_method); w.string(*p.authentication_method); }
    if (p.authentication_data) { id(PropertyId::authentication_data); w.binary(*p.authentication_data); }
    if (p.request_problem_information) { id(PropertyId::request_problem_information); w.u8(*p.request_problem_information); }
    if (p.will_delay_interval) { id(PropertyId::will_delay_interval); w.u32(*p.will_delay_interval); }
    if (p.request_response_information) { id(PropertyId::request_response_information); w.u8(*p.request_response_information); }
    if (p.response_information) { id(PropertyId::response_information); w.string(*p.response_information); }
    if (p.server_reference) { id(PropertyId::server_reference); w.string(*p.server_reference); }
    if (p.reason_string) { id(PropertyId::reason_string); w.string(*p.reason_string); }
    if (p.receive_maximum) { id(PropertyId::receive_maximum); w.u16(*p.receive_maximum); }
    if (p.topic_alias_maximum) { id(PropertyId::topic_alias_maximum); w.u16(*p.topic_alias_maximum); }
    if (p.topic_alias) { id(PropertyId::topic_alias); w.u16(*p.topic_alias); }
    if (p.maximum_qos) { id(PropertyId::maximum_qos); w.u8(*p.maximum_qos); }
    if (p.retain_available) { id(PropertyId::retain_available); w.u8(*p.retain_available); }
    if (p.maximum_packet_size) { id(PropertyId::maximum_packet_size); w.u32(*p.maximum_packet_size); }
    if (p.wildcard_subscription_available) { id(PropertyId::wildcard_subscription_available); w.u8(*p.wildcard_subscription_available); }
    if (p.subscription_identifier_available) { id(PropertyId::subscription_identifier_available); w.u8(*p.subscription_identifier_available); }
    if (p.shared_subscription_available) { id(PropertyId::shared_subscription_available); w.u8(*p.shared_subscription_available); }
    if (p.passthrough_mask != 0 && !p.passthrough.empty()) {
        for_each_raw(p.passthrough, [&](PropertyId pid, Bytes bytes) {
            if ((p.passthrough_mask & property_bit(pid)) != 0) w.bytes(bytes.data(), bytes.size());
        });
    }
    for (const auto& up : p.user_properties) {
        id(PropertyId::user_property);
        w.string(up.name);
        w.string(up.value);
    }
    for (auto si : p.subscription_identifiers) {
        id(PropertyId::subscription_identifier);
        w.varint(si);
    }
}

}  // namespace detail

ReasonCode decode_properties(Bytes raw, PacketType type, Sender sender, Properties& out, bool will) noexcept {
    out = Properties{};
    return detail::read_properties(raw, type, sender, out, will);
}

std::size_t properties_size(const Properties& p) noexcept {
    using detail::string_size;
    std::size_t n = 0;
    if (p.payload_format_indicator) n += 2;
    if (p.message_expiry_interval) n += 5;
    if (p.content_type) n += 1 + string_size(*p.content_type);
    if (p.response_topic) n += 1 + string_size(*p.response_topic);
    if (p.correlation_data) n += 1 + string_size(*p.correlation_data);
    if (p.subscription_identifier) n += 1 + varint_size(*p.subscription_identifier);
    if (p.session_expiry_interval) n += 5;
    if (p.assigned_client_identifier) n += 1 + string_size(*p.assigned_client_identifier);
    if (p.server_keep_alive) n += 3;
    if (p.authentication_method) n += 1 + string_size(*p.authentication_method);
    if (p.authentication_data) n += 1 + string_size(*p.authentication_data);
    if (p.request_problem_information) n += 2;
    if (p.will_delay_interval) n += 5;
    if (p.request_response_information) n += 2;
    if (p.response_information) n += 1 + string_size(*p.response_information);
    if (p.server_reference) n += 1 + string_size(*p.server_reference);
    if (p.reason_string) n += 1 + string_size(*p.reason_string);
    if (p.receive_maximum) n += 3;
    if (p.topic_alias_maximum) n += 3;
    if (p.topic_alias) n += 3;
    if (p.maximum_qos) n += 2;
    if (p.retain_available) n += 2;
    if (p.maximum_packet_size) n += 5;
    if (p.wildcard_subscription_available) n += 2;
    if (p.subscription_identifier_available) n += 2;
    if (p.shared_subscription_available) n += 2;
    if (p.passthrough_mask != 0 && !p.passthrough.empty()) {
        detail::for_each_raw(p.passthrough, [&](PropertyId pid, Bytes bytes) {
            if ((p.passthrough_mask & property_bit(pid)) != 0) n += bytes.size();
        });
    }
    for (const auto& up : p.user_properties) n += 1 + string_size(up.name) + string_size(up.value);
    for (auto si : p.subscription_identifiers) n += 1 + varint_size(si);
    return n;
}

}  // namespace mqttools
