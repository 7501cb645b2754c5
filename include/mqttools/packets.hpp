// MQTT packet views. A decoded packet points into the buffer it was decoded
// from: nothing is copied, so the packet is valid only while that buffer is.
// The same structs are the input of the encoders (codec.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "mqttools/reason_code.hpp"

namespace mqttools {

using Bytes = std::span<const std::byte>;
using MutableBytes = std::span<std::byte>;

inline Bytes as_bytes(std::string_view s) noexcept {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
inline std::string_view as_string(Bytes b) noexcept {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

enum class ProtocolVersion : std::uint8_t { v311 = 4, v5 = 5 };

enum class PacketType : std::uint8_t {
    connect = 1,
    connack = 2,
    publish = 3,
    puback = 4,
    pubrec = 5,
    pubrel = 6,
    pubcomp = 7,
    subscribe = 8,
    suback = 9,
    unsubscribe = 10,
    unsuback = 11,
    pingreq = 12,
    pingresp = 13,
    disconnect = 14,
    auth = 15,
};

std::string_view packet_type_name(PacketType type) noexcept;  // "PUBLISH"

enum class QoS : std::uint8_t { at_most_once = 0, at_least_once = 1, exactly_once = 2 };

// Who sent the packet being decoded: some properties are allowed in one
// direction only (e.g. Subscription Identifier in PUBLISH, [MQTT-3.3.4-6]).
enum class Sender : std::uint8_t { client, server };

// The 27 property identifiers of MQTT 5.0 (spec 2.2.2.2).
enum class PropertyId : std::uint8_t {
    payload_format_indicator = 0x01,           // byte
    message_expiry_interval = 0x02,            // four byte integer
    content_type = 0x03,                       // UTF-8 string
    response_topic = 0x08,                     // UTF-8 string
    correlation_data = 0x09,                   // binary
    subscription_identifier = 0x0B,            // variable byte integer
    session_expiry_interval = 0x11,            // four byte integer
    assigned_client_identifier = 0x12,         // UTF-8 string
    server_keep_alive = 0x13,                  // two byte integer
    authentication_method = 0x15,              // UTF-8 string
    authentication_data = 0x16,                // binary
    request_problem_information = 0x17,        // byte
    will_delay_interval = 0x18,                // four byte integer
    request_response_information = 0x19,      // byte
    response_information = 0x1A,              // UTF-8 string
    server_reference = 0x1C,                   // UTF-8 string
    reason_string = 0x1F,                      // UTF-8 string
    receive_maximum = 0x21,                    // two byte integer
    topic_alias_maximum = 0x22,                // two byte integer
    topic_alias = 0x23,                        // two byte integer
    maximum_qos = 0x24,                        // byte
    retain_available = 0x25,                   // byte
    user_property = 0x26,                      // UTF-8 string pair
    maximum_packet_size = 0x27,                // four byte integer
    wildcard_subscription_available = 0x28,    // byte
    subscription_identifier_available = 0x29,  // byte
    shared_subscription_available = 0x2A,      // byte
};

constexpr std::uint64_t property_bit(PropertyId id) noexcept {
    return std::uint64_t{1} << static_cast<unsigned>(id);
}

struct StringPair {
    std::string_view name;
    std::string_view value;
};

// One property as read from the wire by PropertyReader.
struct Property {
    PropertyId id{};
    std::uint32_t integer = 0;  // byte, two/four byte and variable byte integers
    std::string_view string;    // UTF-8 strings; the name of a user property
    std::string_view value;     // the value of a user property
    Bytes binary;               // binary data
};

// Walks raw property bytes that the decoder has already validated (or that
// an encoder produced). Used for the repeatable properties (User Property,
// Subscription Identifier) and to copy properties through unchanged.
class PropertyReader {
public:
    explicit PropertyReader(Bytes raw) noexcept : raw_(raw) {}
    // Reads the next property; false at the end (or on bytes that are not
    // valid properties, which validated input never has).
    bool next(Property& out) noexcept;

private:
    Bytes raw_;
    std::size_t pos_ = 0;
};

// All properties of one packet. Decoding fills the optional fields of the
// single-valued properties and `raw` (every property byte in wire order,
// without the length prefix). Encoding writes, in this order: every set
// optional field, then each property of `passthrough` whose id bit is set in
// `passthrough_mask` (copied verbatim, order kept), then `user_properties`,
// then `subscription_identifiers`. `raw` is ignored by the encoders.
struct Properties {
    Bytes raw;
    std::uint16_t user_property_count = 0;          // decoded
    std::uint16_t subscription_identifier_count = 0;  // decoded

    std::optional<std::uint8_t> payload_format_indicator;
    std::optional<std::uint32_t> message_expiry_interval;
    std::optional<std::string_view> content_type;
    std::optional<std::string_view> response_topic;
    std::optional<Bytes> correlation_data;
    std::optional<std::uint32_t> subscription_identifier;  // the first one
    std::optional<std::uint32_t> session_expiry_interval;
    std::optional<std::string_view> assigned_client_identifier;
    std::optional<std::uint16_t> server_keep_alive;
    std::optional<std::string_view> authentication_method;
    std::optional<Bytes> authentication_data;
    std::optional<std::uint8_t> request_problem_information;
    std::optional<std::uint32_t> will_delay_interval;
    std::optional<std::uint8_t> request_response_information;
    std::optional<std::string_view> response_information;
    std::optional<std::string_view> server_reference;
    std::optional<std::string_view> reason_string;
    std::optional<std::uint16_t> receive_maximum;
    std::optional<std::uint16_t> topic_alias_maximum;
    std::optional<std::uint16_t> topic_alias;
    std::optional<std::uint8_t> maximum_qos;
    std::optional<std::uint8_t> retain_available;
    std::optional<std::uint32_t> maximum_packet_size;
    std::optional<std::uint8_t> wildcard_subscription_available;
    std::optional<std::uint8_t> subscription_identifier_available;
    std::optional<std::uint8_t> shared_subscription_available;

    // Encoding only.
    std::span<const StringPair> user_properties;
    std::span<const std::uint32_t> subscription_identifiers;
    Bytes passthrough;
    std::uint64_t passthrough_mask = 0;
};

struct Will {
    std::string_view topic;
    Bytes payload;
    QoS qos = QoS::at_most_once;
    bool retain = false;
    Properties properties;  // v5 only
};

struct ConnectPacket {
    ProtocolVersion version = ProtocolVersion::v5;
    bool clean_start = true;  // "Clean Session" in 3.1.1
    std::uint16_t keep_alive = 0;
    std::string_view client_id;
    std::optional<Will> will;
    std::optional<std::string_view> username;
    std::optional<Bytes> password;
    Properties properties;  // v5 only
    // Mosquitto's try_private: a 3.1.1 bridge sends protocol level 0x84
    // (0x80 | 4) so the server knows it is a bridge (no echo of its own
    // messages, retain flags kept). Decoded from and encoded as 0x84.
    bool bridge = false;
    // MQTT 3.1 (protocol name "MQIsdp", level 3): decoded as 3.1.1, whose
    // packets are the same on the wire; its CONNECT rules (a client id of 1
    // to 23 bytes) are the server's to apply. Never encoded.
    bool mqtt31 = false;
};

// In 3.1.1 the return code is mapped to the v5 reason code of the same
// meaning (1 -> 0x84, 2 -> 0x85, 3 -> 0x88, 4 -> 0x86, 5 -> 0x87) when
// decoded and back when encoded; other v5 codes encode as 3 (unavailable).
struct ConnackPacket {
    bool session_present = false;
    ReasonCode reason = ReasonCode::success;
    Properties properties;
};

struct PublishPacket {
    bool dup = false;
    QoS qos = QoS::at_most_once;
    bool retain = false;
    std::string_view topic;
    std::uint16_t packet_id = 0;  // only when qos > 0
    Properties properties;
    Bytes payload;
};

// PUBACK, PUBREC, PUBREL and PUBCOMP. The v5 encoder omits the reason code
// and properties when they are Success and empty (spec 3.4.2.1).
struct AckPacket {
    PacketType type = PacketType::puback;
    std::uint16_t packet_id = 0;
    ReasonCode reason = ReasonCode::success;
    Properties properties;
};

struct Subscription {
    std::string_view filter;
    QoS qos = QoS::at_most_once;  // maximum QoS
    bool no_local = false;
    bool retain_as_published = false;
    std::uint8_t retain_handling = 0;
};

// The topic filters of a SUBSCRIBE: either validated wire bytes (decoded) or
// a caller's array (for encoding). Iterate with next().
class SubscriptionList {
public:
    SubscriptionList() = default;
    explicit SubscriptionList(std::span<const Subscription> items) noexcept : items_(items), count_(items.size()) {}
    static SubscriptionList from_wire(Bytes raw, std::size_t count, ProtocolVersion version) noexcept;

    std::size_t size() const noexcept { return count_; }
    // cursor starts at 0; false after the last entry.
    bool next(std::size_t& cursor, Subscription& out) const noexcept;

private:
    std::span<const Subscription> items_;
    Bytes raw_;
    std::size_t count_ = 0;
    ProtocolVersion version_ = ProtocolVersion::v5;
    bool wire_ = false;
};

// The topic filters of an UNSUBSCRIBE, in the same two forms.
class FilterList {
public:
    FilterList() = default;
    explicit FilterList(std::span<const std::string_view> items) noexcept : items_(items), count_(items.size()) {}
    static FilterList from_wire(Bytes raw, std::size_t count) noexcept;

    std::size_t size() const noexcept { return count_; }
    bool next(std::size_t& cursor, std::string_view& out) const noexcept;

private:
    std::span<const std::string_view> items_;
    Bytes raw_;
    std::size_t count_ = 0;
    bool wire_ = false;
};

struct SubscribePacket {
    std::uint16_t packet_id = 0;
    Properties properties;
    SubscriptionList subscriptions;
};

// One reason code byte per filter. 3.1.1 SUBACK return codes are 0, 1, 2 and
// 0x80, which are also their v5 codes; the encoder writes any v5 error as
// 0x80 for 3.1.1. A 3.1.1 UNSUBACK has no reason codes.
struct SubackPacket {
    std::uint16_t packet_id = 0;
    Properties properties;
    Bytes reason_codes;
};

struct UnsubscribePacket {
    std::uint16_t packet_id = 0;
    Properties properties;
    FilterList filters;
};

struct UnsubackPacket {
    std::uint16_t packet_id = 0;
    Properties properties;
    Bytes reason_codes;
};

struct PingreqPacket {};
struct PingrespPacket {};

// In 3.1.1 only the client sends DISCONNECT and it has no body.
struct DisconnectPacket {
    ReasonCode reason = ReasonCode::success;
    Properties properties;
};

struct AuthPacket {
    ReasonCode reason = ReasonCode::success;
    Properties properties;
};

}  // namespace mqttools
