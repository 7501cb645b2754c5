// NATS client protocol codec (src/cluster/nats_protocol.*): what the client
// encodes parses back the way a server would send it, every message parses
// the same whatever way the stream is split, and malformed input (hex
// fixtures) is refused with a reason instead of read past.
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "cluster/nats_protocol.hpp"

using namespace mqttools::cluster::nats;

namespace {

std::string unhex(std::string_view hex) {
    std::string out;
    int hi = -1;
    for (const char c : hex) {
        int v = -1;
        if (c >= '0' && c <= '9') v = c - '0';
        if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
        if (v < 0) continue;
        if (hi < 0) {
            hi = v;
        } else {
            out.push_back(static_cast<char>(hi * 16 + v));
            hi = -1;
        }
    }
    return out;
}

// The client's PUB/HPUB as the server would deliver it (PUB -> MSG with a sid).
std::string as_delivery(std::string pub, std::uint64_t sid) {
    const bool h = pub.rfind("HPUB ", 0) == 0;
    const std::size_t verb = h ? 5 : 4;
    const std::size_t space = pub.find(' ', verb);
    return std::string(h ? "HMSG " : "MSG ") + pub.substr(verb, space - verb) + " " + std::to_string(sid) +
           pub.substr(space);
}

std::vector<ServerMessage> parse_all(std::string_view in, std::size_t& used) {
    std::vector<ServerMessage> out;
    used = 0;
    for (;;) {
        ParseResult r = parse_server(in.substr(used));
        if (r.status != ParseStatus::ok) break;
        out.push_back(r.message);
        used += r.consumed;
    }
    return out;
}

}  // namespace

TEST_CASE("nats protocol: PUB and HPUB round-trip as MSG and HMSG") {
    std::string pub;
    REQUIRE(encode_pub(pub, "mqtt.m.t.a.b", "_o.1f.7", std::string("hello\r\nworld\0!", 14)));
    CHECK(pub == std::string("PUB mqtt.m.t.a.b _o.1f.7 14\r\nhello\r\nworld\0!\r\n", 45));
    const std::string msg = as_delivery(pub, 42);
    ParseResult r = parse_server(msg);
    REQUIRE(r.status == ParseStatus::ok);
    CHECK(r.consumed == msg.size());
    CHECK(r.message.op == ServerOp::msg);
    CHECK(r.message.subject == "mqtt.m.t.a.b");
    CHECK(r.message.sid == 42);
    CHECK(r.message.reply == "_o.1f.7");
    CHECK(r.message.payload == std::string_view("hello\r\nworld\0!", 14));
    CHECK(r.message.headers.empty());

    std::string hpub;
    REQUIRE(encode_hpub(hpub, "_n.1f", "", "NATS/1.0\r\nA: b\r\n\r\n", "xyz"));
    CHECK(hpub == "HPUB _n.1f 18 21\r\nNATS/1.0\r\nA: b\r\n\r\nxyz\r\n");
    const std::string hmsg = as_delivery(hpub, 3);  // the views of r point into it
    r = parse_server(hmsg);
    REQUIRE(r.status == ParseStatus::ok);
    CHECK(r.message.op == ServerOp::hmsg);
    CHECK(r.message.reply.empty());
    CHECK(r.message.headers == "NATS/1.0\r\nA: b\r\n\r\n");
    CHECK(r.message.payload == "xyz");
    CHECK(header_value(r.message.headers, "a") == "b");
    CHECK(header_value(r.message.headers, "missing").empty());
    CHECK(header_status(r.message.headers) == 0);

    // The live path's unchecked encoder writes the same bytes.
    for (const auto& [s, rp, pl] : {std::tuple{"a.b", "", ""}, std::tuple{"mqtt.m.t.x", "_p.ff.1.2", "payload"}}) {
        std::string checked = "prefix";
        std::string trusted = "prefix";
        REQUIRE(encode_pub(checked, s, rp, pl));
        encode_pub_trusted(trusted, s, rp, pl);
        CHECK(checked == trusted);
    }

    std::string empty;
    REQUIRE(encode_pub(empty, "s", "", ""));
    CHECK(empty == "PUB s 0\r\n\r\n");
    const std::string empty_msg = as_delivery(empty, 1);
    r = parse_server(empty_msg);
    REQUIRE(r.status == ParseStatus::ok);
    CHECK(r.message.payload.empty());
}

TEST_CASE("nats protocol: a no-responders answer carries status 503") {
    const std::string in = "HMSG _p.1f.b.9 7 16 16\r\nNATS/1.0 503\r\n\r\n\r\n";
    ParseResult r = parse_server(in);
    REQUIRE(r.status == ParseStatus::ok);
    CHECK(r.consumed == in.size());
    CHECK(r.message.subject == "_p.1f.b.9");
    CHECK(r.message.sid == 7);
    CHECK(header_status(r.message.headers) == 503);
    CHECK(r.message.payload.empty());
    CHECK(header_status("NATS/1.0 408 Request Timeout\r\n\r\n") == 408);
    CHECK(header_status("NATS/1.0\r\n\r\n") == 0);
    CHECK(header_status("HTTP/1.1 503\r\n") == 0);
}

TEST_CASE("nats protocol: control messages, case and spacing") {
    std::size_t used = 0;
    const std::string in =
        "PING\r\nPONG\r\n+OK\r\n-ERR 'Authorization Violation'\r\nping\r\nMSG  a\t9   5\r\nabcde\r\n"
        "INFO {\"server_id\":\"X\",\"max_payload\":1048576}\r\n";
    const auto all = parse_all(in, used);
    CHECK(used == in.size());
    REQUIRE(all.size() == 7);
    CHECK(all[0].op == ServerOp::ping);
    CHECK(all[1].op == ServerOp::pong);
    CHECK(all[2].op == ServerOp::ok);
    CHECK(all[3].op == ServerOp::err);
    CHECK(all[3].text == "Authorization Violation");
    CHECK(all[4].op == ServerOp::ping);
    CHECK(all[5].op == ServerOp::msg);
    CHECK(all[5].subject == "a");
    CHECK(all[5].sid == 9);
    CHECK(all[5].payload == "abcde");
    CHECK(all[6].op == ServerOp::info);
    CHECK(all[6].text == "{\"server_id\":\"X\",\"max_payload\":1048576}");
}

TEST_CASE("nats protocol: any split of the stream gives the same messages") {
    std::string stream;
    std::mt19937 rng(26);
    for (int i = 0; i < 200; ++i) {
        std::string payload(rng() % 300, 'x');
        for (char& c : payload) c = static_cast<char>(rng());
        std::string pub;
        if (i % 3 == 0) {
            REQUIRE(encode_hpub(pub, "s." + std::to_string(i), "r." + std::to_string(i), "NATS/1.0\r\n\r\n", payload));
        } else {
            REQUIRE(encode_pub(pub, "s." + std::to_string(i), i % 2 ? "" : "r", payload));
        }
        stream += as_delivery(pub, static_cast<std::uint64_t>(i));
        if (i % 17 == 0) stream += "PING\r\n";
    }
    std::size_t used = 0;
    const auto whole = parse_all(stream, used);
    REQUIRE(used == stream.size());
    REQUIRE(whole.size() == 200 + 12);
    // Fed in random pieces, as reads would deliver it.
    std::string buf;
    std::size_t pos = 0;
    std::size_t k = 0;
    while (pos < stream.size()) {
        const std::size_t n = std::min<std::size_t>(1 + rng() % 97, stream.size() - pos);
        buf.append(stream, pos, n);
        pos += n;
        for (;;) {
            ParseResult r = parse_server(buf);
            REQUIRE(r.status != ParseStatus::malformed);
            if (r.status == ParseStatus::incomplete) break;
            REQUIRE(k < whole.size());
            CHECK(r.message.op == whole[k].op);
            CHECK(r.message.subject == whole[k].subject);
            CHECK(r.message.sid == whole[k].sid);
            CHECK(r.message.reply == whole[k].reply);
            CHECK(r.message.headers == whole[k].headers);
            CHECK(r.message.payload == whole[k].payload);
            ++k;
            buf.erase(0, r.consumed);
        }
    }
    CHECK(k == whole.size());
    CHECK(buf.empty());
}

TEST_CASE("nats protocol: malformed input (hex fixtures)") {
    struct Case {
        const char* hex;
        const char* why;
    };
    const Case cases[] = {
        {"4d 53 47 20 61 20 31 20 78 0d 0a", "MSG a 1 x: size not a number"},
        {"4d 53 47 20 61 20 31 0d 0a", "MSG a 1: too few arguments"},
        {"4d 53 47 20 61 20 31 20 72 20 73 20 33 0d 0a", "MSG with five arguments"},
        {"4d 53 47 20 61 20 2d 31 20 33 0d 0a", "negative sid"},
        {"4d 53 47 20 61 20 31 20 33 0d 0a 61 62 63 58 59", "payload not followed by CRLF"},
        {"48 4d 53 47 20 61 20 31 20 39 20 33 0d 0a", "HMSG header size over total"},
        {"48 4d 53 47 20 61 20 31 20 33 0d 0a", "HMSG without header size"},
        {"46 4f 4f 0d 0a", "unknown verb FOO"},
        {"50 4f 4e 47 20 78 0d 0a", "PONG with an argument"},
        {"49 4e 46 4f 0d 0a", "INFO without a body"},
        {"4d 53 47 20 61 20 31 20 39 39 39 39 39 39 39 39 39 39 39 39 39 39 39 39 39 39 39 0d 0a", "size overflow"},
        {"0d 0a", "empty line"},
    };
    for (const auto& c : cases) {
        INFO(c.why);
        const ParseResult r = parse_server(unhex(c.hex));
        CHECK(r.status == ParseStatus::malformed);
        CHECK(r.error != nullptr);
    }
    // A payload over the limit is refused from its line, before it arrives.
    CHECK(parse_server("MSG a 1 2000000\r\n", 4096, 1 << 20).status == ParseStatus::malformed);
    // A control line without CRLF: incomplete up to max_control_line, then malformed.
    CHECK(parse_server(std::string(100, 'M'), 4096).status == ParseStatus::incomplete);
    CHECK(parse_server(std::string(5000, 'M'), 4096).status == ParseStatus::malformed);
    // Incomplete, not malformed: a line or payload cut short.
    CHECK(parse_server(unhex("4d 53 47 20 61")).status == ParseStatus::incomplete);
    CHECK(parse_server(unhex("4d 53 47 20 61 20 31 20 33 0d 0a 61 62")).status == ParseStatus::incomplete);
    CHECK(parse_server(unhex("4d 53 47 20 61 20 31 20 33 0d 0a 61 62 63 0d")).status == ParseStatus::incomplete);
}

TEST_CASE("nats protocol: INFO fields") {
    ServerInfo info;
    REQUIRE(parse_info(R"({"server_id":"NAB","version":"2.9.11","proto":1,"headers":true,"max_payload":65536,)"
                       R"("connect_urls":["10.0.0.1:4222",{"x":[1,2]}],"tls_required":false,"auth_required":true,)"
                       R"("nonce":"a\"b","jetstream":true,"client_id":5.0e1})",
                       info));
    CHECK(info.server_id == "NAB");
    CHECK(info.proto == 1);
    CHECK(info.headers);
    CHECK(info.max_payload == 65536);
    CHECK(info.auth_required);
    CHECK_FALSE(info.tls_required);
    CHECK_FALSE(info.tls_available);
    CHECK(info.nonce == "a\"b");
    ServerInfo tls;
    REQUIRE(parse_info(R"({"tls_required":false,"tls_available":true})", tls));
    CHECK(tls.tls_available);
    CHECK_FALSE(parse_info(R"({"tls_available":"yes"})", tls));
    ServerInfo defaults;
    REQUIRE(parse_info("{}", defaults));
    CHECK(defaults.max_payload == default_max_payload);
    CHECK_FALSE(parse_info("[]", defaults));
    CHECK_FALSE(parse_info(R"({"max_payload":"big"})", defaults));
    CHECK_FALSE(parse_info(R"({"max_payload":0})", defaults));
    CHECK_FALSE(parse_info(R"({"headers":1})", defaults));
    CHECK_FALSE(parse_info(R"({"a":)", defaults));
    CHECK_FALSE(parse_info(R"({"a":[1,2)", defaults));
    CHECK_FALSE(parse_info(std::string(100, '[').insert(0, "{\"a\":"), defaults));
}

TEST_CASE("nats protocol: CONNECT, SUB, UNSUB and refused tokens") {
    std::string out;
    ConnectOptions o;
    o.name = "mqttoolsd \"n1\" data";
    o.user = "u";
    o.pass = "p\\w";
    o.version = "1.0";
    o.echo = false;
    encode_connect(out, o);
    CHECK(out ==
          "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"lang\":\"C++\",\"version\":\"1.0\","
          "\"protocol\":1,\"echo\":false,\"headers\":true,\"no_responders\":true,"
          "\"name\":\"mqttoolsd \\\"n1\\\" data\",\"user\":\"u\",\"pass\":\"p\\\\w\"}\r\n");
    out.clear();
    // Over TLS (nats_tls.hpp) CONNECT says so.
    o.tls = true;
    encode_connect(out, o);
    CHECK(out.rfind("CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":true,\"lang\":\"C++\",", 0) == 0);
    out.clear();
    REQUIRE(encode_sub(out, "mqtt.m.t.>", "", 12));
    REQUIRE(encode_sub(out, "mqtt.m.t.*", "g.q", 13));
    encode_unsub(out, 12);
    encode_unsub(out, 13, 5);
    encode_ping(out);
    encode_pong(out);
    CHECK(out == "SUB mqtt.m.t.> 12\r\nSUB mqtt.m.t.* g.q 13\r\nUNSUB 12\r\nUNSUB 13 5\r\nPING\r\nPONG\r\n");
    out.clear();
    CHECK_FALSE(encode_pub(out, "a b", "", "x"));
    CHECK_FALSE(encode_pub(out, "", "", "x"));
    CHECK_FALSE(encode_pub(out, "a", "r\n", "x"));
    CHECK_FALSE(encode_sub(out, "a\tb", "", 1));
    CHECK_FALSE(encode_sub(out, "a", "q q", 1));
    CHECK_FALSE(encode_hpub(out, "a\r", "", "NATS/1.0\r\n\r\n", ""));
    CHECK(out.empty());
}
