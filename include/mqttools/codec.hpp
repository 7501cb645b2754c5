// The MQTT codec: bytes in, packet views or a reason code out; packets out
// into caller-provided buffers. No I/O, no logging, no exceptions, no heap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <variant>

#include "mqttools/packets.hpp"
#include "mqttools/reason_code.hpp"

namespace mqttools {

inline constexpr std::uint32_t max_remaining_length = 268'435'455;
// The largest packet the protocol can express: 1 type byte, 4 length bytes.
inline constexpr std::uint32_t max_packet_size_limit = max_remaining_length + 5;

// ---------------------------------------------------------------- framing

struct FixedHeader {
    PacketType type{};
    std::uint8_t flags = 0;              // low nibble of the first byte
    std::uint32_t remaining_length = 0;
    std::uint8_t header_size = 0;        // 2..5 bytes
    std::uint32_t packet_size() const noexcept { return header_size + remaining_length; }
};

enum class FrameStatus : std::uint8_t { complete, need_more, error };

struct Frame {
    FrameStatus status = FrameStatus::need_more;
    FixedHeader header;
    // On error: malformed_packet (packet type 0, a fifth length byte) or
    // packet_too_large (the header announces more than max_packet_size).
    ReasonCode error = ReasonCode::success;
};

// Looks at the start of `input`. `complete` means header.packet_size() bytes
// are available; `need_more` means the fixed header or the body is not all
// there yet. A packet over `max_packet_size` (whole packet, spec 3.1.2.11.4)
// is rejected as soon as its length is known, before its body arrives.
Frame read_frame(Bytes input, std::uint32_t max_packet_size = max_packet_size_limit) noexcept;

// Checks the fixed-header flags of a packet type ([MQTT-2.1.3-1]): PUBREL,
// SUBSCRIBE, UNSUBSCRIBE need 0b0010, PUBLISH any flags but QoS 3, the rest 0.
ReasonCode check_fixed_header_flags(PacketType type, std::uint8_t flags) noexcept;

// ---------------------------------------------------------------- decoding
// Every decoder takes the fixed header and the body (remaining_length bytes
// after the fixed header). It checks the fixed-header flags, lengths, UTF-8,
// property identifiers, types, duplicates and per-packet allowance, and value
// ranges; errors are malformed_packet (0x81), protocol_error (0x82) or the
// more specific code the spec names.

// The version is read from the packet. A protocol level other than 4 or 5
// gives unsupported_protocol_version; a protocol name other than "MQTT" gives
// unsupported_protocol_version too (the level is then not trusted).
Result<ConnectPacket> decode_connect(const FixedHeader& header, Bytes body) noexcept;
Result<ConnackPacket> decode_connack(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept;
Result<PublishPacket> decode_publish(const FixedHeader& header, Bytes body, ProtocolVersion version,
                                     Sender sender) noexcept;
Result<AckPacket> decode_ack(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept;
Result<SubscribePacket> decode_subscribe(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept;
Result<SubackPacket> decode_suback(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept;
Result<UnsubscribePacket> decode_unsubscribe(const FixedHeader& header, Bytes body,
                                             ProtocolVersion version) noexcept;
Result<UnsubackPacket> decode_unsuback(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept;
Result<DisconnectPacket> decode_disconnect(const FixedHeader& header, Bytes body, ProtocolVersion version,
                                           Sender sender) noexcept;
Result<AuthPacket> decode_auth(const FixedHeader& header, Bytes body, ProtocolVersion version) noexcept;

using Packet = std::variant<ConnectPacket, ConnackPacket, PublishPacket, AckPacket, SubscribePacket,
                            SubackPacket, UnsubscribePacket, UnsubackPacket, PingreqPacket, PingrespPacket,
                            DisconnectPacket, AuthPacket>;

// Decodes any packet type by dispatching on header.type. Packets the sender
// may not send (a client's CONNACK, a server's SUBSCRIBE, AUTH in 3.1.1...)
// give protocol_error. The variant is large (a CONNECT with its Will): on a
// hot path, switch on header.type and call the per-type decoder instead
// (decode_publish is about twice as fast as decode_packet on a PUBLISH).
Result<Packet> decode_packet(const FixedHeader& header, Bytes body, ProtocolVersion version, Sender sender) noexcept;

// Decodes and validates a property block (`raw` without its length prefix)
// for a packet type. `will` selects the Will Properties of a CONNECT. `out`
// is reset first. Errors: malformed_packet (unknown identifier, identifier
// not allowed in this packet, truncated value, bad UTF-8), protocol_error
// (duplicate, value out of range, Subscription Identifier in a client's
// PUBLISH, Session Expiry Interval in a server's DISCONNECT, Authentication
// Data without Method), topic_alias_invalid (Topic Alias 0).
ReasonCode decode_properties(Bytes raw, PacketType type, Sender sender, Properties& out,
                             bool will = false) noexcept;

// ---------------------------------------------------------------- encoding
// encoded_size() is the whole packet's size; 0 when it cannot be encoded
// (remaining length over 268,435,455, a string over 65,535 bytes).
// encode() writes the packet to the start of `out` and returns the number of
// bytes written, or 0 when `out` is smaller than encoded_size().
// In 3.1.1 properties are not written.

// A CONNACK reason code as MQTT 3.1.1's return code (1 to 5; 3 for codes
// 3.1.1 has no word for), as the encoder writes it.
std::uint8_t connack_to_v311(ReasonCode c) noexcept;

std::size_t encoded_size(const ConnectPacket& p) noexcept;  // version from p.version
std::size_t encode(const ConnectPacket& p, MutableBytes out) noexcept;
std::size_t encoded_size(const ConnackPacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const ConnackPacket& p, ProtocolVersion v, MutableBytes out) noexcept;
std::size_t encoded_size(const PublishPacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const PublishPacket& p, ProtocolVersion v, MutableBytes out) noexcept;
// PUBLISH up to its payload (the Remaining Length counts the payload), for
// a sender that queues the payload bytes by reference: writes and returns
// encoded_size(p, v) - p.payload.size() bytes, or 0 as encode().
std::size_t encode_publish_head(const PublishPacket& p, ProtocolVersion v, MutableBytes out) noexcept;
std::size_t encoded_size(const AckPacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const AckPacket& p, ProtocolVersion v, MutableBytes out) noexcept;
std::size_t encoded_size(const SubscribePacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const SubscribePacket& p, ProtocolVersion v, MutableBytes out) noexcept;
std::size_t encoded_size(const SubackPacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const SubackPacket& p, ProtocolVersion v, MutableBytes out) noexcept;
std::size_t encoded_size(const UnsubscribePacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const UnsubscribePacket& p, ProtocolVersion v, MutableBytes out) noexcept;
std::size_t encoded_size(const UnsubackPacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const UnsubackPacket& p, ProtocolVersion v, MutableBytes out) noexcept;
std::size_t encoded_size(const PingreqPacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const PingreqPacket& p, ProtocolVersion v, MutableBytes out) noexcept;
std::size_t encoded_size(const PingrespPacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const PingrespPacket& p, ProtocolVersion v, MutableBytes out) noexcept;
// v5: reason Success with no properties is written as remaining length 0.
std::size_t encoded_size(const DisconnectPacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const DisconnectPacket& p, ProtocolVersion v, MutableBytes out) noexcept;
std::size_t encoded_size(const AuthPacket& p, ProtocolVersion v) noexcept;
std::size_t encode(const AuthPacket& p, ProtocolVersion v, MutableBytes out) noexcept;

// Size of a property block's content (not counting its length prefix).
// A string or binary value over 65,535 bytes makes it larger than
// max_remaining_length (such properties cannot be encoded).
std::size_t properties_size(const Properties& p) noexcept;

// Variable Byte Integer helpers (spec 1.5.5).
std::size_t varint_size(std::uint32_t value) noexcept;            // 1..4
std::size_t write_varint(std::uint32_t value, std::byte* out) noexcept;  // returns bytes written

// ---------------------------------------------------------------- validation

// MQTT UTF-8 rules (spec 1.5.4): well-formed UTF-8, no U+0000, no UTF-16
// surrogates (U+D800..U+DFFF), no overlong forms, nothing above U+10FFFF.
bool is_valid_utf8(std::string_view s) noexcept;

// A PUBLISH topic name: non-empty, valid UTF-8, no '+' or '#'
// ([MQTT-3.3.2-2]). Returns success or topic_name_invalid.
ReasonCode check_topic_name(std::string_view topic) noexcept;

// A topic filter: non-empty, valid UTF-8, '#' only as the whole last level,
// '+' only as a whole level ([MQTT-4.7.1-1], [MQTT-4.7.1-2]); for
// "$share/NAME/filter" the share name is non-empty without '+', '#' or '/'
// and the filter is valid ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
// Returns success or topic_filter_invalid.
ReasonCode check_topic_filter(std::string_view filter) noexcept;

struct SharedFilter {
    std::string_view share_name;
    std::string_view filter;
};
// Splits "$share/NAME/filter"; nullopt when `filter` is not a shared one.
// Does not validate (use check_topic_filter first).
std::optional<SharedFilter> parse_shared_filter(std::string_view filter) noexcept;

// Does a (valid, non-shared) filter match a (valid) topic name? Wildcards at
// the first level do not match topics starting with '$' ([MQTT-4.7.2-1]);
// "a/#" matches "a" ([MQTT-4.7.1-2]).
bool topic_matches(std::string_view filter, std::string_view topic) noexcept;

}  // namespace mqttools
