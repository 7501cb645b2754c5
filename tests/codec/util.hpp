// Helpers shared by the codec tests: hex fixtures, decoding a whole packet,
// and re-encoding a decoded packet.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "mqttools/codec.hpp"

namespace codec_test {

using namespace mqttools;
using Buffer = std::vector<std::byte>;

// "10 0a ff" -> bytes; spaces and newlines are ignored. "30 | 00 01 61"
// means: first byte 0x30, then the Remaining Length of what follows '|'
// (computed here), then the body.
inline Buffer hex(std::string_view s) {
    if (auto bar = s.find('|'); bar != std::string_view::npos) {
        Buffer first = hex(s.substr(0, bar));
        Buffer body = hex(s.substr(bar + 1));
        std::byte len[4];
        std::size_t n = write_varint(static_cast<std::uint32_t>(body.size()), len);
        first.insert(first.end(), len, len + n);
        first.insert(first.end(), body.begin(), body.end());
        return first;
    }
    Buffer out;
    int hi = -1;
    for (char c : s) {
        if (std::isspace(static_cast<unsigned char>(c))) continue;
        int v = std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (std::tolower(c) - 'a' + 10);
        if (v < 0 || v > 15) throw std::invalid_argument("bad hex");
        if (hi < 0) {
            hi = v;
        } else {
            out.push_back(static_cast<std::byte>(hi * 16 + v));
            hi = -1;
        }
    }
    if (hi >= 0) throw std::invalid_argument("odd hex");
    return out;
}

inline std::string to_hex(Bytes b) {
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (std::size_t i = 0; i < b.size(); ++i) {
        if (i) s += ' ';
        auto v = static_cast<unsigned>(b[i]);
        s += digits[v >> 4];
        s += digits[v & 15];
    }
    return s;
}

inline Buffer bytes_of(std::string_view s) {
    auto b = as_bytes(s);
    return Buffer(b.begin(), b.end());
}

// Frames and decodes one whole packet. The frame must be complete and span
// the whole input; framing errors are returned as the decoding error.
inline Result<Packet> decode_all(const Buffer& in, ProtocolVersion v, Sender s) {
    Frame f = read_frame(Bytes(in));
    if (f.status == FrameStatus::error) return f.error;
    if (f.status != FrameStatus::complete) return ReasonCode::unspecified_error;
    if (f.header.packet_size() != in.size()) return ReasonCode::unspecified_error;
    return decode_packet(f.header, Bytes(in).subspan(f.header.header_size), v, s);
}

inline ReasonCode decode_error(std::string_view hexstr, ProtocolVersion v, Sender s) {
    Buffer in = hex(hexstr);
    auto r = decode_all(in, v, s);
    return r ? ReasonCode::success : r.error();
}

// Makes decoded properties encodable again: repeatable properties are
// copied from the raw bytes (single-valued ones from the fields).
inline void passthrough_repeatables(Properties& p) {
    p.passthrough = p.raw;
    p.passthrough_mask = property_bit(PropertyId::user_property) | property_bit(PropertyId::subscription_identifier);
    // The first Subscription Identifier is also in the optional field; the
    // passthrough copy carries every one of them.
    p.subscription_identifier.reset();
}

template <class P>
Buffer encode_v(const P& p, ProtocolVersion v) {
    Buffer out(encoded_size(p, v));
    REQUIRE(!out.empty());
    REQUIRE(encode(p, v, MutableBytes(out)) == out.size());
    return out;
}
inline Buffer encode_v(const ConnectPacket& p, ProtocolVersion) {
    Buffer out(encoded_size(p));
    REQUIRE(!out.empty());
    REQUIRE(encode(p, MutableBytes(out)) == out.size());
    return out;
}

// Re-encodes any decoded packet (used by round trips).
inline Buffer reencode(Packet& pkt, ProtocolVersion v) {
    return std::visit(
        [v](auto& p) -> Buffer {
            using T = std::decay_t<decltype(p)>;
            if constexpr (std::is_same_v<T, PingreqPacket> || std::is_same_v<T, PingrespPacket>) {
                return encode_v(p, v);
            } else {
                passthrough_repeatables(p.properties);
                if constexpr (std::is_same_v<T, ConnectPacket>) {
                    if (p.will) passthrough_repeatables(p.will->properties);
                }
                return encode_v(p, v);
            }
        },
        pkt);
}

// Encodes, decodes, re-encodes: the bytes must be identical and the decoded
// packet is returned (with its buffer) for field checks.
template <class P>
struct RoundTrip {
    Buffer wire;
    P decoded;
};

template <class P>
RoundTrip<P> round_trip(const P& p, ProtocolVersion v, Sender s) {
    RoundTrip<P> rt;
    rt.wire = encode_v(p, v);
    auto r = decode_all(rt.wire, v, s);
    INFO("wire: " << to_hex(rt.wire));
    REQUIRE(r.ok());
    REQUIRE(std::holds_alternative<P>(*r));
    rt.decoded = std::get<P>(*r);
    Buffer again = reencode(*r, v);
    CHECK(to_hex(again) == to_hex(rt.wire));
    return rt;
}

inline bool same_bytes(Bytes a, Bytes b) { return std::equal(a.begin(), a.end(), b.begin(), b.end()); }

}  // namespace codec_test
