// Internal helpers of the codec: a bounds-checked reader over a packet body
// and an unchecked writer into a buffer whose size was computed beforehand.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "mqttools/codec.hpp"
#include "mqttools/packets.hpp"
#include "mqttools/reason_code.hpp"

namespace mqttools::detail {

// Reads MQTT data types (spec 1.5) from a body. Every read checks the bounds;
// a short read is a Malformed Packet (truncated field).
struct Reader {
    const std::byte* pos;
    const std::byte* end;

    explicit Reader(Bytes b) noexcept : pos(b.data()), end(b.data() + b.size()) {}

    std::size_t left() const noexcept { return static_cast<std::size_t>(end - pos); }
    bool empty() const noexcept { return pos == end; }

    bool u8(std::uint8_t& v) noexcept {
        if (pos == end) return false;
        v = static_cast<std::uint8_t>(*pos++);
        return true;
    }
    bool u16(std::uint16_t& v) noexcept {
        if (left() < 2) return false;
        v = static_cast<std::uint16_t>((static_cast<unsigned>(pos[0]) << 8) | static_cast<unsigned>(pos[1]));
        pos += 2;
        return true;
    }
    bool u32(std::uint32_t& v) noexcept {
        if (left() < 4) return false;
        v = (static_cast<std::uint32_t>(pos[0]) << 24) | (static_cast<std::uint32_t>(pos[1]) << 16) |
            (static_cast<std::uint32_t>(pos[2]) << 8) | static_cast<std::uint32_t>(pos[3]);
        pos += 4;
        return true;
    }
    // Variable Byte Integer: at most 4 bytes and minimally encoded
    // ([MQTT-1.5.5-1]); anything else is malformed.
    bool varint(std::uint32_t& v) noexcept {
        std::uint32_t value = 0;
        for (unsigned i = 0; i < 4; ++i) {
            if (pos == end) return false;
            auto b = static_cast<std::uint8_t>(*pos++);
            value |= static_cast<std::uint32_t>(b & 0x7F) << (7 * i);
            if ((b & 0x80) == 0) {
                if (i > 0 && b == 0) return false;  // non-minimal encoding
                v = value;
                return true;
            }
        }
        return false;
    }
    // Two-byte length then that many bytes.
    bool binary(Bytes& v) noexcept {
        std::uint16_t n = 0;
        if (!u16(n) || left() < n) return false;
        v = Bytes(pos, n);
        pos += n;
        return true;
    }
    // A UTF-8 Encoded String: the caller checks the UTF-8 rules.
    bool raw_string(std::string_view& v) noexcept {
        Bytes b;
        if (!binary(b)) return false;
        v = as_string(b);
        return true;
    }
    // A UTF-8 Encoded String checked against the MQTT UTF-8 rules; a
    // violation is a Malformed Packet ([MQTT-1.5.4-1], [MQTT-1.5.4-2]).
    bool string(std::string_view& v) noexcept { return raw_string(v) && is_valid_utf8(v); }
    Bytes rest() noexcept {
        Bytes b(pos, left());
        pos = end;
        return b;
    }
    bool take(std::size_t n, Bytes& v) noexcept {
        if (left() < n) return false;
        v = Bytes(pos, n);
        pos += n;
        return true;
    }
};

// Writes into a buffer known to be large enough.
struct Writer {
    std::byte* pos;

    void u8(std::uint8_t v) noexcept { *pos++ = static_cast<std::byte>(v); }
    void u16(std::uint16_t v) noexcept {
        pos[0] = static_cast<std::byte>(v >> 8);
        pos[1] = static_cast<std::byte>(v & 0xFF);
        pos += 2;
    }
    void u32(std::uint32_t v) noexcept {
        pos[0] = static_cast<std::byte>(v >> 24);
        pos[1] = static_cast<std::byte>((v >> 16) & 0xFF);
        pos[2] = static_cast<std::byte>((v >> 8) & 0xFF);
        pos[3] = static_cast<std::byte>(v & 0xFF);
        pos += 4;
    }
    void varint(std::uint32_t v) noexcept { pos += write_varint(v, pos); }
    void bytes(const void* data, std::size_t n) noexcept {
        if (n != 0) std::memcpy(pos, data, n);
        pos += n;
    }
    void binary(Bytes b) noexcept {
        u16(static_cast<std::uint16_t>(b.size()));
        bytes(b.data(), b.size());
    }
    void string(std::string_view s) noexcept {
        u16(static_cast<std::uint16_t>(s.size()));
        bytes(s.data(), s.size());
    }
};

// Sizes of encoded fields. A string or binary over 65,535 bytes cannot be
// encoded: its size is then `too_big`, which pushes every sum it enters past
// max_remaining_length without overflowing.
inline constexpr std::size_t too_big = std::size_t{1} << 40;
inline std::size_t string_size(std::size_t n) noexcept { return n > 0xFFFF ? too_big : 2 + n; }
inline std::size_t string_size(std::string_view s) noexcept { return string_size(s.size()); }
inline std::size_t string_size(Bytes b) noexcept { return string_size(b.size()); }

// True when a topic contains '+' or '#' ([MQTT-3.3.2-2]).
bool has_wildcard(std::string_view s) noexcept;

// Writes a property block's content (no length prefix); see Properties.
void write_properties(const Properties& p, Writer& w) noexcept;

// Decodes a property block into `out`, which the caller has freshly
// constructed. Used by the packet decoders.
ReasonCode read_properties(Bytes raw, PacketType type, Sender sender, Properties& out, bool will) noexcept;

// Reads a property length and the block it announces, and decodes it.
inline ReasonCode read_property_block(Reader& r, PacketType type, Sender sender, Properties& out,
                                      bool will = false) noexcept {
    std::uint32_t len = 0;
    if (!r.varint(len)) return ReasonCode::malformed_packet;
    Bytes raw;
    if (!r.take(len, raw)) return ReasonCode::malformed_packet;
    if (len == 0) return ReasonCode::success;
    return read_properties(raw, type, sender, out, will);
}

}  // namespace mqttools::detail
