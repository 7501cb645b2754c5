// RFC 6455 WebSocket, as pure functions over bytes: the HTTP/1.1 upgrade
// handshake (server and client side) and the frame codec. Nothing here
// touches a socket (ws_transport.* and the client do the I/O), so every
// byte sequence can be tested and fuzzed on its own.
//
// MQTT over WebSocket (MQTT 5 chapter 6): MQTT goes in binary frames only
// [MQTT-6.0.0-1]; a frame may carry several packets or part of one
// [MQTT-6.0.0-2], so the frame payloads simply form the byte stream the
// MQTT decoder reads; the subprotocol is "mqtt" [MQTT-6.0.0-3/4]
// ("mqttv3.1" for old clients).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mqttools/packets.hpp"

namespace mqttools::net::ws {

// ---- Handshake (RFC 6455 section 4)

struct ServerSettings {
    // Largest request head (request line + headers + blank line) accepted:
    // 431 beyond it.
    std::size_t headers_size = 4096;
    // Allowed Origin header values (exact, case-insensitive); empty: any
    // origin, and requests without one.
    std::vector<std::string> origins;
};

enum class HandshakeStatus : std::uint8_t {
    need_more,  // no complete request head yet
    accepted,   // `response` is the 101; `consumed` bytes were the request
    rejected,   // `response` is an HTTP error to send before closing
};

struct HandshakeResult {
    HandshakeStatus status = HandshakeStatus::need_more;
    std::size_t consumed = 0;  // request bytes, through the blank line
    int http_status = 0;       // 101, or 400/403/405/426/431
    std::string response;      // bytes for the peer
    std::string reason;        // why it was rejected (for the log)
    std::string path;          // the request target ("/mqtt"); any path is served
    std::string subprotocol;   // "mqtt", "mqttv3.1" or "" (none offered)
};

// Parses the buffered start of a connection as an upgrade request. Call
// again with more bytes on need_more. Anything that cannot become a valid
// upgrade is rejected as early as it is seen (an MQTT client on a
// WebSocket port gets a 400 at its first byte, not a wait).
HandshakeResult parse_request(std::string_view data, const ServerSettings& settings);

// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), RFC 6455 4.2.2.
std::string accept_key(std::string_view key);

// Client side: a fresh random Sec-WebSocket-Key, the request offering
// subprotocol "mqtt", and the check of the server's answer.
std::string make_key();
std::string make_request(std::string_view host, std::string_view path, std::string_view key);

struct ResponseResult {
    HandshakeStatus status = HandshakeStatus::need_more;
    std::size_t consumed = 0;
    std::string error;  // rejected: "HTTP/1.1 403 Forbidden", "wrong Sec-WebSocket-Accept"...
};
ResponseResult parse_response(std::string_view data, std::string_view key);

// ---- Frames (RFC 6455 section 5)

enum class Opcode : std::uint8_t {
    continuation = 0x0,
    text = 0x1,
    binary = 0x2,
    close = 0x8,
    ping = 0x9,
    pong = 0xA,
};

namespace close_code {
inline constexpr std::uint16_t normal = 1000;
inline constexpr std::uint16_t going_away = 1001;
inline constexpr std::uint16_t protocol_error = 1002;
inline constexpr std::uint16_t unsupported_data = 1003;
inline constexpr std::uint16_t no_status = 1005;  // never sent: "the close had no code"
inline constexpr std::uint16_t policy_violation = 1008;
inline constexpr std::uint16_t too_big = 1009;
inline constexpr std::uint16_t internal_error = 1011;
}  // namespace close_code

inline constexpr std::size_t max_header_size = 14;
inline constexpr std::size_t max_control_payload = 125;

// Header bytes for a payload of `length`: 2, 4 or 10, plus 4 with a mask.
std::size_t header_size(std::uint64_t length, bool masked) noexcept;
// Writes a frame header (at most max_header_size bytes) and returns its
// size. mask: 4 bytes for client frames, nullptr for server frames.
std::size_t encode_header(std::byte* out, Opcode opcode, bool fin, std::uint64_t length,
                          const std::uint8_t* mask) noexcept;
// XORs data with the mask, starting `offset` bytes into the frame payload.
// dst may equal src, or lie before it (in-place unmasking while compacting).
void mask_copy(std::byte* dst, const std::byte* src, std::size_t n, const std::uint8_t mask[4],
               std::uint64_t offset) noexcept;
// A whole control frame (payload at most 125 bytes), masked with `mask` if given.
std::string control_frame(Opcode opcode, Bytes payload, const std::uint8_t* mask = nullptr);
// A Close frame with a status code (and no reason text).
std::string close_frame(std::uint16_t code, const std::uint8_t* mask = nullptr);

// The streaming frame reader. It takes bytes in any split and hands out the
// payload of binary and continuation frames as one byte stream, unmasked in
// place; control frames are collected whole and reported one at a time.
class FrameReader {
public:
    enum class Event : std::uint8_t {
        none,   // everything given was consumed
        ping,   // control_payload(): answer with a Pong carrying it
        pong,
        close,  // peer's Close: code() is its status (1005 without one)
        error,  // code() is the status to close with, error() says why
    };
    struct Step {
        std::size_t consumed = 0;  // input bytes used
        std::size_t produced = 0;  // MQTT bytes written to out
        Event event = Event::none;
    };

    // expect_masked: true on the server (client frames MUST be masked,
    // RFC 6455 5.1), false on the client. max_frame: the largest data frame
    // payload accepted (1009 beyond).
    FrameReader(bool expect_masked, std::uint64_t max_frame) noexcept
        : expect_masked_(expect_masked), max_frame_(max_frame) {}

    // Decodes in[0..n), writing MQTT bytes to out, which may be `in` itself
    // or lie before it. Returns after the first control frame or error, or
    // when the input is used up; call again with the rest. After close or
    // error nothing more is read.
    Step decode(const std::byte* in, std::size_t n, std::byte* out) noexcept;

    Bytes control_payload() const noexcept { return {control_, control_len_}; }
    std::uint16_t code() const noexcept { return code_; }
    std::string_view error() const noexcept { return error_; }
    bool finished() const noexcept { return finished_; }
    // True while a frame header or control frame is partly read, or a
    // fragmented message has not ended (a peer closing now cut a frame).
    bool mid_frame() const noexcept { return header_have_ > 0 || left_ > 0 || in_message_; }

private:
    Event fail(std::uint16_t code, const char* why) noexcept;
    Event parse_header() noexcept;  // header_ complete: validate and set up the frame
    Event end_frame() noexcept;     // payload complete

    std::uint8_t header_[max_header_size] = {};
    std::size_t header_have_ = 0;
    std::size_t header_need_ = 2;
    std::uint64_t left_ = 0;  // payload bytes of the current frame still to come
    std::uint64_t pos_ = 0;   // payload bytes of the current frame seen (mask phase)
    std::uint8_t mask_[4] = {};
    Opcode opcode_ = Opcode::binary;
    bool masked_ = false;
    bool fin_ = false;
    bool in_frame_ = false;    // header done, payload (possibly empty) being read
    bool in_message_ = false;  // a fragmented binary message awaits continuations
    bool finished_ = false;
    bool expect_masked_;
    std::uint64_t max_frame_;
    std::byte control_[max_control_payload] = {};
    std::size_t control_len_ = 0;
    std::uint16_t code_ = 0;
    const char* error_ = "";
};

}  // namespace mqttools::net::ws
