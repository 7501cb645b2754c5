#include "net/websocket.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace mqttools::net::ws {

namespace {

constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
constexpr std::string_view crlf2 = "\r\n\r\n";

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// RFC 9110 5.6.2 tchar.
bool is_tchar(char c) noexcept {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Does the comma-separated token list contain `token` (case-insensitive)?
// `Connection: keep-alive, Upgrade` (Firefox) must count as an upgrade.
bool list_has(std::string_view list, std::string_view token) noexcept {
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        const std::string_view item = trim(list.substr(0, comma));
        if (iequals(item, token)) return true;
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
    return false;
}

bool is_base64_char(char c) noexcept {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

// A Sec-WebSocket-Key is the base64 of 16 bytes: 22 characters and "==".
bool valid_key(std::string_view key) noexcept {
    if (key.size() != 24 || key.substr(22) != "==") return false;
    return std::all_of(key.begin(), key.begin() + 22, is_base64_char);
}

std::string base64(const unsigned char* data, std::size_t n) {
    std::string out(4 * ((n + 2) / 3), '\0');
    const int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
    out.resize(static_cast<std::size_t>(std::max(len, 0)));
    return out;
}

std::string_view status_text(int status) noexcept {
    switch (status) {
        case 400: return "Bad Request";
        case 403: return "Forbidden";
        case 405: return "Method Not Allowed";
        case 426: return "Upgrade Required";
        case 431: return "Request Header Fields Too Large";
        default: return "Error";
    }
}

HandshakeResult reject(int status, std::string reason, std::string_view extra_headers = {}) {
    HandshakeResult r;
    r.status = HandshakeStatus::rejected;
    r.http_status = status;
    const std::string body = reason + "\n";
    r.response = "HTTP/1.1 " + std::to_string(status) + " " + std::string(status_text(status)) +
                 "\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n" +
                 std::string(extra_headers) + "Content-Length: " + std::to_string(body.size()) +
                 "\r\n\r\n" + body;
    r.reason = std::move(reason);
    return r;
}

struct Header {
    std::string_view name;
    std::string_view value;
};

// Splits a head (without the final blank line) into its first line and
// header fields. Returns "" or what is wrong with it.
std::string split_head(std::string_view head, std::string_view& first, std::vector<Header>& headers) {
    std::size_t eol = head.find("\r\n");
    first = head.substr(0, eol);
    head = eol == std::string_view::npos ? std::string_view{} : head.substr(eol + 2);
    while (!head.empty()) {
        eol = head.find("\r\n");
        const std::string_view line = head.substr(0, eol);
        head = eol == std::string_view::npos ? std::string_view{} : head.substr(eol + 2);
        // Obsolete line folding is rejected (RFC 9112 5.2).
        if (line.empty() || line.front() == ' ' || line.front() == '\t') return "malformed header line";
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0) return "malformed header line";
        const std::string_view name = line.substr(0, colon);
        if (!std::all_of(name.begin(), name.end(), is_tchar)) return "malformed header name";
        headers.push_back({name, trim(line.substr(colon + 1))});
    }
    return {};
}

// Bytes that never occur in an HTTP head: an early sign of a client
// speaking something else (MQTT's CONNECT starts with 0x10).
bool bad_head_byte(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\r' && c != '\n' && c != '\t') || u == 0x7f;
}

}  // namespace

HandshakeResult parse_request(std::string_view data, const ServerSettings& settings) {
    const std::size_t limit = std::max<std::size_t>(settings.headers_size, 64);
    const std::size_t scan = std::min(data.size(), limit);
    const std::size_t end = data.substr(0, scan).find(crlf2);
    // (Only the head: frames may follow it in the same read.)
    for (std::size_t i = 0; i < std::min(scan, end); ++i) {
        if (bad_head_byte(data[i])) return reject(400, "not an HTTP request");
    }
    if (end == std::string_view::npos) {
        if (data.size() >= limit) {
            return reject(431, "request headers larger than " + std::to_string(limit) + " bytes");
        }
        // Reject a request line that is already wrong without waiting.
        const std::size_t sp = data.find(' ');
        const std::string_view method = data.substr(0, std::min(sp, data.size()));
        if (!std::all_of(method.begin(), method.end(), is_tchar)) return reject(400, "not an HTTP request");
        return {};
    }
    const std::string_view head = data.substr(0, end);
    std::string_view line;
    std::vector<Header> headers;
    if (std::string err = split_head(head, line, headers); !err.empty()) return reject(400, err);

    // Request line: GET SP request-target SP HTTP/1.1 (RFC 6455 4.1 item 2).
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
        return reject(400, "malformed request line");
    }
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (version != "HTTP/1.1") return reject(400, "WebSocket needs HTTP/1.1");
    if (method != "GET") return reject(405, "only GET upgrades to WebSocket", "Allow: GET\r\n");
    if (target.empty() || (target.front() != '/' && target.find("://") == std::string_view::npos)) {
        return reject(400, "malformed request target");
    }

    std::string upgrade, connection, versions, protocols;
    std::string_view key, origin;
    int hosts = 0, keys = 0, origins = 0;
    auto join = [](std::string& into, std::string_view v) {
        if (!into.empty()) into += ',';
        into += v;
    };
    for (const Header& h : headers) {
        if (iequals(h.name, "host")) {
            ++hosts;
        } else if (iequals(h.name, "upgrade")) {
            join(upgrade, h.value);
        } else if (iequals(h.name, "connection")) {
            join(connection, h.value);
        } else if (iequals(h.name, "sec-websocket-key")) {
            ++keys;
            key = h.value;
        } else if (iequals(h.name, "sec-websocket-version")) {
            join(versions, h.value);
        } else if (iequals(h.name, "sec-websocket-protocol")) {
            join(protocols, h.value);
        } else if (iequals(h.name, "origin")) {
            ++origins;
            origin = h.value;
        }
        // Sec-WebSocket-Extensions (permessage-deflate) is ignored: no
        // extension is ever agreed, so RSV bits stay 0 (RFC 6455 9.1).
    }
    static constexpr std::string_view upgrade_hint = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
    if (!list_has(upgrade, "websocket")) {
        return reject(426, "this port serves MQTT over WebSocket only", upgrade_hint);
    }
    if (!list_has(connection, "upgrade")) return reject(400, "Connection header lacks 'Upgrade'");
    if (hosts != 1) return reject(400, hosts == 0 ? "missing Host header" : "more than one Host header");
    if (versions.empty()) return reject(400, "missing Sec-WebSocket-Version");
    if (versions != "13") return reject(426, "unsupported Sec-WebSocket-Version (13 is spoken)", upgrade_hint);
    if (keys != 1 || !valid_key(key)) {
        return reject(400, keys == 0 ? "missing Sec-WebSocket-Key" : "invalid Sec-WebSocket-Key");
    }
    if (!settings.origins.empty()) {
        const bool allowed = origins == 1 && std::any_of(settings.origins.begin(), settings.origins.end(),
                                                         [&](const std::string& o) { return iequals(o, origin); });
        if (!allowed) {
            return reject(403, origins == 0 ? "Origin required" : "Origin '" + std::string(origin) + "' not allowed");
        }
    }
    // [MQTT-6.0.0-4]: select and return "mqtt"; "mqttv3.1" is what MQTT
    // 3.1 era clients offer. A client that offers neither (but some other
    // protocol) would refuse our answer anyway; one that offers nothing is
    // served without the header (a browser refuses a protocol it did not
    // offer).
    HandshakeResult r;
    if (list_has(protocols, "mqtt")) {
        r.subprotocol = "mqtt";
    } else if (list_has(protocols, "mqttv3.1")) {
        r.subprotocol = "mqttv3.1";
    } else if (!protocols.empty()) {
        return reject(400, "no supported Sec-WebSocket-Protocol (offer 'mqtt')");
    }
    r.status = HandshakeStatus::accepted;
    r.consumed = end + crlf2.size();
    r.http_status = 101;
    r.path = std::string(target);
    r.response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: " + accept_key(key) + "\r\n";
    if (!r.subprotocol.empty()) r.response += "Sec-WebSocket-Protocol: " + r.subprotocol + "\r\n";
    r.response += "\r\n";
    return r;
}

std::string accept_key(std::string_view key) {
    std::string input(key);
    input += guid;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha1(), nullptr) != 1) return {};
    return base64(digest, len);
}

std::string make_key() {
    unsigned char nonce[16];
    if (RAND_bytes(nonce, sizeof nonce) != 1) {
        // The key only proves the server read the request; it is no secret.
        for (unsigned char& b : nonce) b = static_cast<unsigned char>(std::rand());
    }
    return base64(nonce, sizeof nonce);
}

std::string make_request(std::string_view host, std::string_view path, std::string_view key) {
    std::string r = "GET ";
    r += path.empty() ? std::string_view("/") : path;
    r += " HTTP/1.1\r\nHost: ";
    r += host;
    r += "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ";
    r += key;
    r += "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";
    return r;
}

ResponseResult parse_response(std::string_view data, std::string_view key) {
    constexpr std::size_t limit = 16 * 1024;
    ResponseResult r;
    const std::size_t end = data.substr(0, std::min(data.size(), limit)).find(crlf2);
    if (end == std::string_view::npos) {
        if (data.size() >= limit) {
            r.status = HandshakeStatus::rejected;
            r.error = "WebSocket upgrade: response headers too large";
        } else if (!data.empty() && !data.starts_with(std::string_view("HTTP/").substr(0, data.size()))) {
            r.status = HandshakeStatus::rejected;
            r.error = "WebSocket upgrade: the server did not answer with HTTP";
        }
        return r;
    }
    r.status = HandshakeStatus::rejected;
    std::string_view line;
    std::vector<Header> headers;
    if (std::string err = split_head(data.substr(0, end), line, headers); !err.empty()) {
        r.error = "WebSocket upgrade: " + err;
        return r;
    }
    if (!line.starts_with("HTTP/1.1 101")) {
        r.error = "WebSocket upgrade refused: " + std::string(line.substr(0, 200));
        return r;
    }
    std::string upgrade, connection;
    std::string_view accept, protocol;
    bool have_protocol = false;
    for (const Header& h : headers) {
        if (iequals(h.name, "upgrade")) {
            upgrade += std::string(h.value) + ",";
        } else if (iequals(h.name, "connection")) {
            connection += std::string(h.value) + ",";
        } else if (iequals(h.name, "sec-websocket-accept")) {
            accept = h.value;
        } else if (iequals(h.name, "sec-websocket-protocol")) {
            protocol = h.value;
            have_protocol = true;
        }
    }
    if (!list_has(upgrade, "websocket") || !list_has(connection, "upgrade")) {
        r.error = "WebSocket upgrade: missing Upgrade/Connection headers in the 101";
    } else if (accept != accept_key(key)) {
        r.error = "WebSocket upgrade: wrong Sec-WebSocket-Accept";
    } else if (have_protocol && protocol != "mqtt") {
        r.error = "WebSocket upgrade: the server chose subprotocol '" + std::string(protocol) + "'";
    } else {
        r.status = HandshakeStatus::accepted;
        r.consumed = end + crlf2.size();
    }
    return r;
}

// ---- Frames

std::size_t header_size(std::uint64_t length, bool masked) noexcept {
    const std::size_t base = length < 126 ? 2 : length <= 0xFFFF ? 4 : 10;
    return base + (masked ? 4 : 0);
}

std::size_t encode_header(std::byte* out, Opcode opcode, bool fin, std::uint64_t length,
                          const std::uint8_t* mask) noexcept {
    out[0] = static_cast<std::byte>((fin ? 0x80 : 0x00) | static_cast<std::uint8_t>(opcode));
    const std::uint8_t mask_bit = mask ? 0x80 : 0x00;
    std::size_t n = 2;
    if (length < 126) {
        out[1] = static_cast<std::byte>(mask_bit | length);
    } else if (length <= 0xFFFF) {
        out[1] = static_cast<std::byte>(mask_bit | 126);
        out[2] = static_cast<std::byte>(length >> 8);
        out[3] = static_cast<std::byte>(length);
        n = 4;
    } else {
        out[1] = static_cast<std::byte>(mask_bit | 127);
        for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<std::byte>(length >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        std::memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void mask_copy(std::byte* dst, const std::byte* src, std::size_t n, const std::uint8_t mask[4],
               std::uint64_t offset) noexcept {
    // The mask rotated to this offset, repeated over 8 bytes: a word at a
    // time. dst <= src, so each word is read before anything overwrites it.
    std::uint8_t m8[8];
    for (int i = 0; i < 8; ++i) m8[i] = mask[(offset + static_cast<std::uint64_t>(i)) & 3];
    std::uint64_t m;
    std::memcpy(&m, m8, 8);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t v;
        std::memcpy(&v, src + i, 8);
        v ^= m;
        std::memcpy(dst + i, &v, 8);
    }
    for (; i < n; ++i) dst[i] = src[i] ^ static_cast<std::byte>(m8[i & 7]);
}

std::string control_frame(Opcode opcode, Bytes payload, const std::uint8_t* mask) {
    const std::size_t len = std::min(payload.size(), max_control_payload);
    std::string out(header_size(len, mask != nullptr) + len, '\0');
    auto* p = reinterpret_cast<std::byte*>(out.data());
    const std::size_t h = encode_header(p, opcode, true, len, mask);
    if (mask) {
        mask_copy(p + h, payload.data(), len, mask, 0);
    } else if (len > 0) {
        std::memcpy(p + h, payload.data(), len);
    }
    return out;
}

std::string close_frame(std::uint16_t code, const std::uint8_t* mask) {
    if (code == close_code::no_status) return control_frame(Opcode::close, {}, mask);
    const std::byte payload[2] = {static_cast<std::byte>(code >> 8), static_cast<std::byte>(code)};
    return control_frame(Opcode::close, Bytes(payload, 2), mask);
}

FrameReader::Event FrameReader::fail(std::uint16_t code, const char* why) noexcept {
    finished_ = true;
    code_ = code;
    error_ = why;
    return Event::error;
}

FrameReader::Event FrameReader::parse_header() noexcept {
    const std::uint8_t b0 = header_[0];
    const std::uint8_t b1 = header_[1];
    fin_ = (b0 & 0x80) != 0;
    const auto op = static_cast<std::uint8_t>(b0 & 0x0F);
    if ((b0 & 0x70) != 0) return fail(close_code::protocol_error, "reserved bits set (no extension agreed)");
    std::uint64_t len = b1 & 0x7F;
    std::size_t at = 2;
    if (len == 126) {
        len = (std::uint64_t{header_[2]} << 8) | header_[3];
        at = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; ++i) len = (len << 8) | header_[2 + i];
        at = 10;
        // The most significant bit MUST be 0 (RFC 6455 5.2).
        if (len >> 63) return fail(close_code::protocol_error, "frame length with the top bit set");
    }
    if (masked_) std::memcpy(mask_, header_ + at, 4);
    if (masked_ != expect_masked_) {
        return fail(close_code::protocol_error,
                    expect_masked_ ? "unmasked client frame" : "masked server frame");
    }
    switch (op) {
        case 0x0:
            if (!in_message_) return fail(close_code::protocol_error, "continuation frame without a message");
            break;
        case 0x1:
            // MQTT goes in binary frames only [MQTT-6.0.0-1].
            return fail(close_code::unsupported_data, "text frame (MQTT needs binary frames)");
        case 0x2:
            if (in_message_) return fail(close_code::protocol_error, "new message inside a fragmented one");
            break;
        case 0x8:
        case 0x9:
        case 0xA:
            if (!fin_ || len > max_control_payload) {
                return fail(close_code::protocol_error, "fragmented or oversized control frame");
            }
            break;
        default:
            return fail(close_code::protocol_error, "unknown opcode");
    }
    opcode_ = static_cast<Opcode>(op);
    if (op < 0x8) {
        if (len > max_frame_) return fail(close_code::too_big, "frame larger than the maximum packet size");
        in_message_ = !fin_;
    }
    left_ = len;
    pos_ = 0;
    control_len_ = 0;
    header_have_ = 0;
    header_need_ = 2;
    in_frame_ = true;
    return Event::none;
}

FrameReader::Event FrameReader::end_frame() noexcept {
    in_frame_ = false;
    switch (opcode_) {
        case Opcode::ping:
            return Event::ping;
        case Opcode::pong:
            return Event::pong;
        case Opcode::close: {
            finished_ = true;
            if (control_len_ == 0) {
                code_ = close_code::no_status;
                return Event::close;
            }
            if (control_len_ == 1) return fail(close_code::protocol_error, "Close frame with a 1-byte payload");
            code_ = static_cast<std::uint16_t>((std::to_integer<unsigned>(control_[0]) << 8) |
                                               std::to_integer<unsigned>(control_[1]));
            // Codes a peer may send (RFC 6455 7.4.1 and the IANA registry).
            const bool valid = (code_ >= 1000 && code_ <= 1003) || (code_ >= 1007 && code_ <= 1014) ||
                               (code_ >= 3000 && code_ <= 4999);
            if (!valid) return fail(close_code::protocol_error, "invalid close code");
            return Event::close;
        }
        default:
            return Event::none;
    }
}

FrameReader::Step FrameReader::decode(const std::byte* in, std::size_t n, std::byte* out) noexcept {
    Step s;
    while (s.consumed < n && !finished_) {
        if (!in_frame_) {
            // Gather the header: 2 bytes, then as many as they announce.
            while (header_have_ < header_need_ && s.consumed < n) {
                header_[header_have_++] = std::to_integer<std::uint8_t>(in[s.consumed++]);
                if (header_have_ == 2) {
                    const std::uint8_t len7 = header_[1] & 0x7F;
                    masked_ = (header_[1] & 0x80) != 0;
                    header_need_ = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked_ ? 4 : 0);
                }
            }
            if (header_have_ < header_need_) break;
            if (parse_header() == Event::error) {
                s.event = Event::error;
                return s;
            }
        }
        const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(left_, n - s.consumed));
        if (take > 0) {
            const std::byte* src = in + s.consumed;
            if (static_cast<std::uint8_t>(opcode_) >= 0x8) {
                std::byte* dst = control_ + control_len_;
                if (masked_) {
                    mask_copy(dst, src, take, mask_, pos_);
                } else {
                    std::memcpy(dst, src, take);
                }
                control_len_ += take;
            } else {
                std::byte* dst = out + s.produced;
                if (masked_) {
                    mask_copy(dst, src, take, mask_, pos_);
                } else if (dst != src) {
                    std::memmove(dst, src, take);
                }
                s.produced += take;
            }
            s.consumed += take;
            left_ -= take;
            pos_ += take;
        }
        if (left_ == 0) {
            const Event e = end_frame();
            if (e != Event::none) {
                s.event = e;
                return s;
            }
        }
    }
    return s;
}

}  // namespace mqttools::net::ws
