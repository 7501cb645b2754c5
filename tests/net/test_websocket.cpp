// RFC 6455 handshake and framing (src/net/websocket.*) with the RFC's own
// byte vectors, and the broker-side WsTransport over a socketpair.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "net/transport.hpp"
#include "net/websocket.hpp"
#include "net/ws_transport.hpp"

using namespace mqttools;
using namespace mqttools::net;
using ws::FrameReader;

namespace {

// "82 85 37 fa" -> bytes.
std::string hex(std::string_view text) {
    std::string out;
    unsigned v = 0;
    int digits = 0;
    for (char c : text) {
        if (c == ' ') continue;
        v = v * 16 + static_cast<unsigned>(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
        if (++digits == 2) {
            out.push_back(static_cast<char>(v));
            v = 0;
            digits = 0;
        }
    }
    return out;
}

struct Decoded {
    std::string data;
    std::vector<FrameReader::Event> events;
    std::string last_control;
    std::uint16_t code = 0;
};

// Feeds `input` in pieces of `step` bytes (copied, then decoded in place).
Decoded decode(FrameReader& r, const std::string& input, std::size_t step = 1 << 20) {
    Decoded d;
    for (std::size_t at = 0; at < input.size() && !r.finished(); at += step) {
        std::string piece = input.substr(at, step);
        auto* p = reinterpret_cast<std::byte*>(piece.data());
        std::size_t rd = 0, wr = 0;
        while (rd < piece.size()) {
            const auto s = r.decode(p + rd, piece.size() - rd, p + wr);
            rd += s.consumed;
            wr += s.produced;
            if (s.event != FrameReader::Event::none) {
                d.events.push_back(s.event);
                auto c = r.control_payload();
                d.last_control.assign(reinterpret_cast<const char*>(c.data()), c.size());
                d.code = r.code();
            }
            if (s.event == FrameReader::Event::close || s.event == FrameReader::Event::error) break;
            if (s.consumed == 0 && s.produced == 0) break;
        }
        d.data.append(piece.data(), wr);
    }
    return d;
}

Decoded decode_server(const std::string& input, std::size_t step = 1 << 20, std::uint64_t max = 1 << 20) {
    FrameReader r(true, max);
    return decode(r, input, step);
}

std::string masked_binary(std::string_view payload, bool fin = true, ws::Opcode op = ws::Opcode::binary) {
    static const std::uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    std::string out(ws::max_header_size + payload.size(), '\0');
    auto* p = reinterpret_cast<std::byte*>(out.data());
    const std::size_t h = ws::encode_header(p, op, fin, payload.size(), mask);
    ws::mask_copy(p + h, reinterpret_cast<const std::byte*>(payload.data()), payload.size(), mask, 0);
    out.resize(h + payload.size());
    return out;
}

std::string control_frame_masked_ping() {
    static const std::uint8_t mask[4] = {1, 2, 3, 4};
    const std::string hi = "hi";
    return ws::control_frame(ws::Opcode::ping, as_bytes(hi), mask);
}

const std::string rfc_request =
    "GET /chat HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: mqtt\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

std::string replace(std::string s, std::string_view from, std::string_view to) {
    const auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    s.replace(at, from.size(), to);
    return s;
}

}  // namespace

TEST_CASE("RFC 6455 1.3: the accept key of the sample nonce", "[websocket]") {
    CHECK(ws::accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("handshake: the RFC request with subprotocol mqtt gets a byte-exact 101", "[websocket]") {
    ws::ServerSettings settings;
    const auto r = ws::parse_request(rfc_request, settings);
    REQUIRE(r.status == ws::HandshakeStatus::accepted);
    CHECK(r.http_status == 101);
    CHECK(r.consumed == rfc_request.size());
    CHECK(r.path == "/chat");
    CHECK(r.subprotocol == "mqtt");
    CHECK(r.response ==
          "HTTP/1.1 101 Switching Protocols\r\n"
          "Upgrade: websocket\r\n"
          "Connection: Upgrade\r\n"
          "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
          "Sec-WebSocket-Protocol: mqtt\r\n"
          "\r\n");
}

TEST_CASE("handshake: every prefix needs more, bytes after the head stay", "[websocket]") {
    ws::ServerSettings settings;
    for (std::size_t n = 0; n < rfc_request.size(); ++n) {
        INFO("prefix " << n);
        CHECK(ws::parse_request(rfc_request.substr(0, n), settings).status == ws::HandshakeStatus::need_more);
    }
    const auto r = ws::parse_request(rfc_request + hex("82 80 00 00 00 00"), settings);
    CHECK(r.status == ws::HandshakeStatus::accepted);
    CHECK(r.consumed == rfc_request.size());
}

TEST_CASE("handshake: what real clients send", "[websocket]") {
    ws::ServerSettings settings;
    SECTION("Firefox: Connection is a token list") {
        auto r = ws::parse_request(replace(rfc_request, "Connection: Upgrade", "Connection: keep-alive, Upgrade"),
                                   settings);
        CHECK(r.status == ws::HandshakeStatus::accepted);
    }
    SECTION("header names and the Upgrade token in any case") {
        auto req = replace(rfc_request, "Upgrade: websocket", "upgrade: WebSocket");
        req = replace(req, "Sec-WebSocket-Key", "sec-websocket-key");
        CHECK(ws::parse_request(req, settings).status == ws::HandshakeStatus::accepted);
    }
    SECTION("permessage-deflate offered: never agreed") {
        auto r = ws::parse_request(
            replace(rfc_request, "Origin:", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nOrigin:"),
            settings);
        REQUIRE(r.status == ws::HandshakeStatus::accepted);
        CHECK(r.response.find("Extensions") == std::string::npos);
    }
    SECTION("mqttv3.1 only") {
        auto r = ws::parse_request(replace(rfc_request, "Protocol: mqtt", "Protocol: mqttv3.1"), settings);
        REQUIRE(r.status == ws::HandshakeStatus::accepted);
        CHECK(r.response.find("Sec-WebSocket-Protocol: mqttv3.1\r\n") != std::string::npos);
    }
    SECTION("mqtt among others, listed twice") {
        auto r = ws::parse_request(
            replace(rfc_request, "Sec-WebSocket-Protocol: mqtt", "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: x, mqtt"),
            settings);
        REQUIRE(r.status == ws::HandshakeStatus::accepted);
        CHECK(r.subprotocol == "mqtt");
    }
    SECTION("no subprotocol offered: none echoed") {
        auto r = ws::parse_request(replace(rfc_request, "Sec-WebSocket-Protocol: mqtt\r\n", ""), settings);
        REQUIRE(r.status == ws::HandshakeStatus::accepted);
        CHECK(r.response.find("Sec-WebSocket-Protocol") == std::string::npos);
    }
    SECTION("any path") {
        auto r = ws::parse_request(replace(rfc_request, "GET /chat", "GET /"), settings);
        CHECK(r.status == ws::HandshakeStatus::accepted);
        CHECK(r.path == "/");
    }
}

TEST_CASE("handshake: bad requests get their HTTP error", "[websocket]") {
    ws::ServerSettings settings;
    struct Case {
        const char* name;
        std::string request;
        int status;
    };
    const std::vector<Case> cases = {
        {"plain GET, no Upgrade", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 426},
        {"Upgrade to something else", replace(rfc_request, "Upgrade: websocket", "Upgrade: h2c"), 426},
        {"Connection without upgrade", replace(rfc_request, "Connection: Upgrade", "Connection: keep-alive"), 400},
        {"no Host", replace(rfc_request, "Host: server.example.com\r\n", ""), 400},
        {"wrong version", replace(rfc_request, "Version: 13", "Version: 8"), 426},
        {"no version", replace(rfc_request, "Sec-WebSocket-Version: 13\r\n", ""), 400},
        {"no key", replace(rfc_request, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400},
        {"short key", replace(rfc_request, "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="), 400},
        {"two keys", replace(rfc_request, "Origin:", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin:"), 400},
        {"POST", replace(rfc_request, "GET", "POST"), 405},
        {"HTTP/1.0", replace(rfc_request, "HTTP/1.1", "HTTP/1.0"), 400},
        {"folded header", replace(rfc_request, "Origin:", " folded\r\nOrigin:"), 400},
        {"space before colon", replace(rfc_request, "Origin:", "Origin :"), 400},
        {"only other subprotocols", replace(rfc_request, "Protocol: mqtt", "Protocol: chat, superchat"), 400},
        {"request line with extra words", replace(rfc_request, "GET /chat HTTP/1.1", "GET /chat x HTTP/1.1"), 400},
    };
    for (const auto& c : cases) {
        INFO(c.name);
        const auto r = ws::parse_request(c.request, settings);
        REQUIRE(r.status == ws::HandshakeStatus::rejected);
        CHECK(r.http_status == c.status);
        CHECK(r.response.rfind("HTTP/1.1 " + std::to_string(c.status) + " ", 0) == 0);
        CHECK(r.response.find("Connection: close\r\n") != std::string::npos);
        CHECK(!r.reason.empty());
    }
    SECTION("426 says what is spoken") {
        const auto r = ws::parse_request(replace(rfc_request, "Version: 13", "Version: 8"), settings);
        CHECK(r.response.find("Sec-WebSocket-Version: 13\r\n") != std::string::npos);
    }
}

TEST_CASE("handshake: MQTT bytes on a WebSocket port are refused at once", "[websocket]") {
    ws::ServerSettings settings;
    const auto r = ws::parse_request(hex("10 0c 00 04 4d 51 54 54 05 02 00 3c"), settings);
    CHECK(r.status == ws::HandshakeStatus::rejected);
    CHECK(r.http_status == 400);
    CHECK(ws::parse_request(hex("10"), settings).status == ws::HandshakeStatus::rejected);
}

TEST_CASE("handshake: websockets_headers_size bounds the head", "[websocket]") {
    ws::ServerSettings settings;
    settings.headers_size = 512;
    const std::string big = replace(rfc_request, "Origin:", "Cookie: " + std::string(600, 'a') + "\r\nOrigin:");
    auto r = ws::parse_request(big.substr(0, 511), settings);
    CHECK(r.status == ws::HandshakeStatus::need_more);
    r = ws::parse_request(big, settings);
    REQUIRE(r.status == ws::HandshakeStatus::rejected);
    CHECK(r.http_status == 431);
    settings.headers_size = 4096;
    CHECK(ws::parse_request(big, settings).status == ws::HandshakeStatus::accepted);
}

TEST_CASE("handshake: websockets_origin allow-list", "[websocket]") {
    ws::ServerSettings settings;
    settings.origins = {"https://app.example.com", "http://example.com"};
    CHECK(ws::parse_request(rfc_request, settings).status == ws::HandshakeStatus::accepted);
    auto r = ws::parse_request(replace(rfc_request, "http://example.com", "http://evil.example"), settings);
    CHECK(r.http_status == 403);
    r = ws::parse_request(replace(rfc_request, "Origin: http://example.com\r\n", ""), settings);
    CHECK(r.http_status == 403);
}

TEST_CASE("client handshake: request and response check", "[websocket]") {
    const std::string key = ws::make_key();
    CHECK(key.size() == 24);
    CHECK(key != ws::make_key());
    const std::string req = ws::make_request("localhost:8080", "/mqtt", key);
    ws::ServerSettings settings;
    const auto server = ws::parse_request(req, settings);
    REQUIRE(server.status == ws::HandshakeStatus::accepted);
    CHECK(server.path == "/mqtt");
    CHECK(server.subprotocol == "mqtt");
    auto ok = ws::parse_response(server.response + "tail", key);
    CHECK(ok.status == ws::HandshakeStatus::accepted);
    CHECK(ok.consumed == server.response.size());
    CHECK(ws::parse_response(server.response.substr(0, 20), key).status == ws::HandshakeStatus::need_more);
    auto wrong = ws::parse_response(server.response, ws::make_key());
    CHECK(wrong.status == ws::HandshakeStatus::rejected);
    CHECK(wrong.error.find("Sec-WebSocket-Accept") != std::string::npos);
    auto refused = ws::parse_response("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", key);
    CHECK(refused.status == ws::HandshakeStatus::rejected);
    CHECK(refused.error.find("403 Forbidden") != std::string::npos);
    auto proto = ws::parse_response(replace(server.response, "Protocol: mqtt", "Protocol: chat"), key);
    CHECK(proto.status == ws::HandshakeStatus::rejected);
    CHECK(ws::parse_response("\x20\x02\x00\x00", key).status == ws::HandshakeStatus::rejected);
}

TEST_CASE("frames: RFC 6455 5.7 examples", "[websocket]") {
    SECTION("a masked frame unmasks (the 'Hello' example as binary)") {
        const auto d = decode_server(hex("82 85 37 fa 21 3d 7f 9f 4d 51 58"));
        CHECK(d.data == "Hello");
        CHECK(d.events.empty());
    }
    SECTION("the masked text frame is refused with 1003") {
        const auto d = decode_server(hex("81 85 37 fa 21 3d 7f 9f 4d 51 58"));
        REQUIRE(d.events == std::vector{FrameReader::Event::error});
        CHECK(d.code == 1003);
    }
    SECTION("the unmasked text frame, on the client side, is refused with 1003 too") {
        FrameReader client(false, 1 << 20);
        const auto d = decode(client, hex("81 05 48 65 6c 6c 6f"));
        CHECK(d.code == 1003);
    }
    SECTION("fragmented unmasked message on the client side") {
        FrameReader client(false, 1 << 20);
        const auto d = decode(client, hex("02 03 48 65 6c 80 02 6c 6f"));
        CHECK(d.data == "Hello");
        CHECK(d.events.empty());
    }
    SECTION("masked ping") {
        const auto d = decode_server(hex("89 85 37 fa 21 3d 7f 9f 4d 51 58"));
        REQUIRE(d.events == std::vector{FrameReader::Event::ping});
        CHECK(d.last_control == "Hello");
    }
    SECTION("pong frames as the RFC writes them") {
        const std::string hello = "Hello";
        CHECK(ws::control_frame(ws::Opcode::pong, as_bytes(hello)) == hex("8a 05 48 65 6c 6c 6f"));
        const std::uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
        CHECK(ws::control_frame(ws::Opcode::pong, as_bytes(hello), mask) == hex("8a 85 37 fa 21 3d 7f 9f 4d 51 58"));
    }
    SECTION("256 and 65536 byte binary frame headers") {
        std::byte h[ws::max_header_size];
        CHECK(std::string(reinterpret_cast<char*>(h), ws::encode_header(h, ws::Opcode::binary, true, 256, nullptr)) ==
              hex("82 7e 01 00"));
        CHECK(std::string(reinterpret_cast<char*>(h), ws::encode_header(h, ws::Opcode::binary, true, 65536, nullptr)) ==
              hex("82 7f 00 00 00 00 00 01 00 00"));
        CHECK(ws::header_size(125, false) == 2);
        CHECK(ws::header_size(126, true) == 8);
        CHECK(ws::header_size(65536, true) == 14);
        FrameReader client(false, 1 << 20);
        const auto d = decode(client, hex("82 7f 00 00 00 00 00 01 00 00") + std::string(65536, 'x'));
        CHECK(d.data == std::string(65536, 'x'));
    }
    SECTION("close frames") {
        auto d = decode_server(hex("88 82 00 00 00 00 03 e8"));
        REQUIRE(d.events == std::vector{FrameReader::Event::close});
        CHECK(d.code == 1000);
        d = decode_server(hex("88 80 01 02 03 04"));
        CHECK(d.code == ws::close_code::no_status);
        CHECK(ws::close_frame(1002) == hex("88 02 03 ea"));
        CHECK(ws::close_frame(ws::close_code::no_status) == hex("88 00"));
    }
}

TEST_CASE("frames: MQTT packets split across frames and several in one frame [MQTT-6.0.0-2]", "[websocket]") {
    // CONNECT (14 bytes) + PINGREQ + DISCONNECT as one MQTT stream.
    const std::string mqtt = hex("10 0c 00 04 4d 51 54 54 05 02 00 3c 00 00") + hex("c0 00") + hex("e0 00");
    // MQTT.js style: CONNECT in pieces over several frames, a fragmented
    // message with a ping in the middle; then two packets in one frame.
    const std::string input = masked_binary(mqtt.substr(0, 2)) + masked_binary(mqtt.substr(2, 5), false) +
                              masked_binary("", false, ws::Opcode::continuation) +
                              control_frame_masked_ping() + masked_binary(mqtt.substr(7, 7), true, ws::Opcode::continuation) +
                              masked_binary(mqtt.substr(14));
    for (std::size_t step = 1; step <= input.size(); ++step) {
        INFO("step " << step);
        const auto d = decode_server(input, step);
        CHECK(d.data == mqtt);
        CHECK(d.events == std::vector{FrameReader::Event::ping});
    }
}

TEST_CASE("frames: malformed input closes with the right code", "[websocket]") {
    struct Case {
        const char* name;
        std::string input;
        std::uint16_t code;
    };
    const std::vector<Case> cases = {
        {"unmasked client frame", hex("82 05 48 65 6c 6c 6f"), 1002},
        {"text frame", hex("81 81 00 00 00 00 41"), 1003},
        {"RSV1 without an extension (deflate)", hex("c2 81 00 00 00 00 41"), 1002},
        {"reserved opcode 3", hex("83 80 00 00 00 00"), 1002},
        {"reserved control opcode 0xB", hex("8b 80 00 00 00 00"), 1002},
        {"2^63-length frame", hex("82 ff 80 00 00 00 00 00 00 00 00 00 00 00"), 1002},
        {"frame over max_packet_size", hex("82 ff 00 00 00 00 00 10 00 01 00 00 00 00"), 1009},
        {"control frame over 125 bytes", hex("89 fe 00 7e 00 00 00 00"), 1002},
        {"fragmented ping", hex("09 80 00 00 00 00"), 1002},
        {"continuation without a message", hex("80 81 00 00 00 00 41"), 1002},
        {"new message inside a fragmented one", hex("02 81 00 00 00 00 41 82 81 00 00 00 00 42"), 1002},
        {"close with a 1-byte payload", hex("88 81 00 00 00 00 03"), 1002},
        {"close with code 1005", hex("88 82 00 00 00 00 03 ed"), 1002},
        {"close with code 999", hex("88 82 00 00 00 00 03 e7"), 1002},
    };
    for (const auto& c : cases) {
        for (std::size_t step : {std::size_t{1}, std::size_t{3}, c.input.size()}) {
            INFO(c.name << ", step " << step);
            FrameReader r(true, 1 << 20);
            const auto d = decode(r, c.input, step);
            REQUIRE(d.events.size() == 1);
            CHECK(d.events[0] == FrameReader::Event::error);
            CHECK(d.code == c.code);
            CHECK(r.finished());
            CHECK(!r.error().empty());
        }
    }
    SECTION("a masked server frame is refused by the client reader") {
        FrameReader client(false, 1 << 20);
        CHECK(decode(client, hex("82 81 00 00 00 00 41")).code == 1002);
    }
    SECTION("nothing is read after a close") {
        FrameReader r(true, 1 << 20);
        const auto d = decode(r, hex("88 80 00 00 00 00") + masked_binary("late"));
        CHECK(d.data.empty());
        CHECK(d.events == std::vector{FrameReader::Event::close});
    }
}

TEST_CASE("mask_copy: every offset and length, in place and compacting", "[websocket]") {
    const std::uint8_t mask[4] = {0xde, 0xad, 0xbe, 0xef};
    std::string plain;
    for (int i = 0; i < 40; ++i) plain.push_back(static_cast<char>(i * 7));
    for (std::size_t offset = 0; offset < 4; ++offset) {
        for (std::size_t len = 0; len <= plain.size(); ++len) {
            std::string buf = "xyz" + plain.substr(0, len);
            auto* p = reinterpret_cast<std::byte*>(buf.data());
            ws::mask_copy(p + 3, p + 3, len, mask, offset);
            ws::mask_copy(p, p + 3, len, mask, offset);  // unmask while moving down
            for (std::size_t i = 0; i < len; ++i) {
                REQUIRE(buf[i] == plain[i]);
            }
        }
    }
}

// ---- WsTransport over a socketpair: the peer is the test.

namespace {

struct Pair {
    UniqueFd ours;
    int peer = -1;
    Pair() {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
        ours = UniqueFd(sv[0]);
        peer = sv[1];
    }
    ~Pair() { ::close(peer); }
    void send(const std::string& s) const { REQUIRE(::write(peer, s.data(), s.size()) == static_cast<ssize_t>(s.size())); }
    std::string receive() const {
        std::string out;
        char buf[65536];
        for (;;) {
            const ssize_t n = ::recv(peer, buf, sizeof buf, MSG_DONTWAIT);
            if (n <= 0) break;
            out.append(buf, static_cast<std::size_t>(n));
        }
        return out;
    }
};

std::unique_ptr<WsTransport> make_ws(Pair& p, ws::ServerSettings settings = {}) {
    return std::make_unique<WsTransport>(std::make_unique<PlainTransport>(std::move(p.ours)),
                                         std::make_shared<const ws::ServerSettings>(std::move(settings)), 1 << 20,
                                         false, "127.0.0.1:1");
}

std::string read_all(Transport& t, IoStatus& last) {
    std::string out;
    std::byte buf[65536];
    for (int i = 0; i < 100; ++i) {
        const IoResult r = t.read(buf);
        last = r.status;
        if (r.status != IoStatus::ok) break;
        out.append(reinterpret_cast<char*>(buf), r.bytes);
    }
    return out;
}

std::string client_decode(const std::string& frames) {
    FrameReader client(false, 1u << 30);
    return decode(client, frames).data;
}

}  // namespace

TEST_CASE("WsTransport: handshake, pipelined frames, ping, output frames, close", "[websocket]") {
    Pair p;
    auto t = make_ws(p);
    CHECK(t->label() == "ws");
    IoStatus st{};
    CHECK(read_all(*t, st).empty());
    CHECK(st == IoStatus::would_block);
    // Request in two pieces, the second with a pipelined MQTT frame behind it.
    p.send(rfc_request.substr(0, 30));
    CHECK(read_all(*t, st).empty());
    CHECK(st == IoStatus::would_block);
    p.send(rfc_request.substr(30) + masked_binary("\xc0"));
    CHECK(read_all(*t, st) == "\xc0");
    CHECK(t->handshake_done());
    CHECK(t->path() == "/chat");
    CHECK(p.receive().rfind("HTTP/1.1 101 Switching Protocols\r\n", 0) == 0);

    // A ping between data: the pong goes out, the data comes up.
    p.send(masked_binary("ab") + control_frame_masked_ping() + masked_binary("cd"));
    CHECK(read_all(*t, st) == "abcd");
    CHECK(p.receive() == hex("8a 02 68 69"));

    // Output: one frame over all the iovecs offered.
    std::string a = "packet-one", b = "packet-two";
    iovec iov[2] = {{a.data(), a.size()}, {b.data(), b.size()}};
    const IoResult w = t->write(iov, 2);
    CHECK(w.status == IoStatus::ok);
    CHECK(w.bytes == a.size() + b.size());
    const std::string out = p.receive();
    CHECK(out == hex("82 14") + a + b);

    // Our goodbye: a Close 1000, then nothing more is written.
    t->close_gracefully();
    CHECK(p.receive() == hex("88 02 03 e8"));
    CHECK(t->write(iov, 1).status == IoStatus::error);
}

TEST_CASE("WsTransport: a frame the socket takes in parts is continued without a new header", "[websocket]") {
    Pair p;
    const int small = 4096;
    ::setsockopt(p.ours.get(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    auto t = make_ws(p);
    p.send(rfc_request);
    IoStatus st{};
    read_all(*t, st);
    REQUIRE(t->handshake_done());
    REQUIRE(p.receive().rfind("HTTP/1.1 101", 0) == 0);

    // The "queue": 300 packets of 1000 bytes, written as the socket allows.
    std::string queue;
    for (int i = 0; i < 300; ++i) queue += std::string(1000, static_cast<char>('A' + i % 26));
    std::size_t sent = 0;
    std::string wire;
    for (int round = 0; round < 100000 && (sent < queue.size() || t->has_pending()); ++round) {
        iovec iov[4];
        int n = 0;
        for (std::size_t at = sent; at < queue.size() && n < 4;) {
            const std::size_t end = std::min<std::size_t>(queue.size(), (at / 1000 + 1) * 1000);
            iov[n++] = {queue.data() + at, end - at};
            at = end;
        }
        if (n > 0) {
            const IoResult r = t->write(iov, n);
            REQUIRE(r.status != IoStatus::error);
            if (r.status == IoStatus::ok) sent += r.bytes;
        }
        wire += p.receive();
    }
    wire += p.receive();
    REQUIRE(sent == queue.size());
    CHECK(client_decode(wire) == queue);
}

TEST_CASE("WsTransport: refused upgrade answers in HTTP and fails the read", "[websocket]") {
    Pair p;
    auto t = make_ws(p);
    p.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    IoStatus st{};
    read_all(*t, st);
    CHECK(st == IoStatus::error);
    CHECK(t->error().find("426") != std::string_view::npos);
    CHECK(p.receive().rfind("HTTP/1.1 426 Upgrade Required\r\n", 0) == 0);
    t.reset();
    char c;
    CHECK(::recv(p.peer, &c, 1, 0) == 0);  // an orderly end, no reset
}

TEST_CASE("WsTransport: protocol errors send a Close with their code", "[websocket]") {
    Pair p;
    auto t = make_ws(p);
    p.send(rfc_request);
    IoStatus st{};
    read_all(*t, st);
    p.receive();
    p.send(hex("82 05 48 65 6c 6c 6f"));  // unmasked
    CHECK(read_all(*t, st).empty());
    CHECK(st == IoStatus::error);
    CHECK(t->error().find("1002") != std::string_view::npos);
    REQUIRE(t->has_pending());
    CHECK(t->flush().status == IoStatus::ok);
    CHECK(p.receive() == hex("88 02 03 ea"));
}

TEST_CASE("WsTransport: the peer's Close is echoed", "[websocket]") {
    Pair p;
    auto t = make_ws(p);
    p.send(rfc_request);
    IoStatus st{};
    read_all(*t, st);
    p.receive();
    p.send(masked_binary("xy") + hex("88 82 00 00 00 00 03 e9"));
    CHECK(read_all(*t, st) == "xy");
    CHECK(st == IoStatus::closed);
    CHECK(t->flush().status == IoStatus::ok);
    CHECK(p.receive() == hex("88 02 03 e9"));
}

TEST_CASE("WsTransport: an unfinished upgrade gets 408 on close", "[websocket]") {
    Pair p;
    auto t = make_ws(p);
    p.send("GET / HTTP/1.1\r\nHost:");
    IoStatus st{};
    read_all(*t, st);
    t->close_gracefully();
    CHECK(p.receive().rfind("HTTP/1.1 408 Request Timeout\r\n", 0) == 0);
}
