// The management API's HTTP/1.1 request codec (src/admin/http.cpp): round
// trips, split input, and hex fixtures of malformed requests.
#include <catch2/catch.hpp>

#include <string>

#include "admin/http.hpp"

using namespace mqttools::admin::http;

namespace {

std::string from_hex(std::string_view hex) {
    std::string out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        while (hex[i] == ' ') ++i;
        out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
    }
    return out;
}

}  // namespace

TEST_CASE("a GET with a query parses", "[http]") {
    const std::string raw =
        "GET /api/v5/clients?page=2&like_clientid=dev%2F1 HTTP/1.1\r\nHost: x\r\n"
        "Authorization: Basic a2V5OnNlY3JldA==\r\n\r\n";
    const auto r = parse_request(raw);
    REQUIRE(r.status == Status::complete);
    CHECK(r.consumed == raw.size());
    CHECK(r.request.method == "GET");
    CHECK(r.request.path == "/api/v5/clients");
    CHECK(r.request.query == "page=2&like_clientid=dev%2F1");
    CHECK(r.request.keep_alive);
    CHECK(r.request.header("host") == "x");
    const auto q = parse_query(r.request.query);
    REQUIRE(q);
    REQUIRE(q->size() == 2);
    CHECK((*q)[1].second == "dev/1");
    const auto creds = basic_credentials(*r.request.header("authorization"));
    REQUIRE(creds);
    CHECK(creds->first == "key");
    CHECK(creds->second == "secret");
}

TEST_CASE("a POST body arrives in pieces, byte by byte", "[http]") {
    const std::string raw =
        "POST /api/v5/publish HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
        "{\"topic\":\"a/b\"}GET / HTTP/1.1\r\n\r\n";
    const std::size_t first = raw.find("GET");
    for (std::size_t n = 0; n < first; ++n) {
        INFO(n);
        CHECK(parse_request(std::string_view(raw).substr(0, n)).status == Status::need_more);
    }
    const auto r = parse_request(raw);
    REQUIRE(r.status == Status::complete);
    CHECK(r.consumed == first);
    CHECK(r.request.body == "{\"topic\":\"a/b\"}");
    // The pipelined request after it.
    const auto next = parse_request(std::string_view(raw).substr(r.consumed));
    REQUIRE(next.status == Status::complete);
    CHECK(next.request.path == "/");
}

TEST_CASE("connection persistence follows the version and Connection", "[http]") {
    CHECK_FALSE(parse_request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").request.keep_alive);
    CHECK_FALSE(parse_request("GET / HTTP/1.0\r\n\r\n").request.keep_alive);
    CHECK(parse_request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").request.keep_alive);
    CHECK(parse_request("GET / HTTP/1.1\r\nConnection: foo, keep-alive\r\n\r\n").request.keep_alive);
}

TEST_CASE("responses round-trip through the parser's framing", "[http]") {
    Response resp;
    resp.status = 404;
    resp.body = R"({"code":"NOT_FOUND","message":"x"})";
    resp.headers.emplace_back("Allow", "GET");
    const std::string bytes = serialize(resp, true);
    CHECK(bytes.rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
    CHECK(bytes.find("Content-Length: " + std::to_string(resp.body.size()) + "\r\n") != std::string::npos);
    CHECK(bytes.find("Allow: GET\r\n") != std::string::npos);
    CHECK(bytes.find("Connection: keep-alive\r\n\r\n") != std::string::npos);
    CHECK(bytes.substr(bytes.size() - resp.body.size()) == resp.body);

    Response none;
    none.status = 204;
    const std::string empty = serialize(none, false);
    CHECK(empty == "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    // HEAD: the length of the body that is not sent.
    Response head;
    head.body = "12345";
    const std::string h = serialize(head, true, true);
    CHECK(h.find("Content-Length: 5\r\n") != std::string::npos);
    CHECK(h.substr(h.size() - 4) == "\r\n\r\n");
}

TEST_CASE("malformed requests are refused with the right status", "[http][malformed]") {
    struct Case {
        const char* name;
        const char* hex;
        int status;
    };
    const Case cases[] = {
        // An MQTT CONNECT sent to the HTTP port: refused at its first byte.
        {"MQTT CONNECT", "10 0c 00 04 4d 51 54 54 05 02 00 3c", 400},
        {"TLS ClientHello to a plain port", "16 03 01 02 00 01 00 01 fc 03 03", 400},
        // "GET  / HTTP/1.1" (two spaces)
        {"double space", "47 45 54 20 20 2f 20 48 54 54 50 2f 31 2e 31 0d 0a 0d 0a", 400},
        // "GET x HTTP/1.1": a target that is not a path
        {"relative target", "47 45 54 20 78 20 48 54 54 50 2f 31 2e 31 0d 0a 0d 0a", 400},
        // "GET / HTTP/2.0"
        {"HTTP/2", "47 45 54 20 2f 20 48 54 54 50 2f 32 2e 30 0d 0a 0d 0a", 505},
        // "GET / HTTP/1.1\r\n folded\r\n\r\n"
        {"folded header", "47 45 54 20 2f 20 48 54 54 50 2f 31 2e 31 0d 0a 20 66 6f 6c 64 0d 0a 0d 0a", 400},
        // "GET / HTTP/1.1\r\nX y: 1\r\n\r\n": a space in a header name
        {"space in name", "47 45 54 20 2f 20 48 54 54 50 2f 31 2e 31 0d 0a 58 20 79 3a 20 31 0d 0a 0d 0a", 400},
        // "GET / HTTP/1.1\r\nX:\x01\r\n\r\n": a control byte in a value
        {"control in value", "47 45 54 20 2f 20 48 54 54 50 2f 31 2e 31 0d 0a 58 3a 01 0d 0a 0d 0a", 400},
        // "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"
        {"negative length",
         "50 4f 53 54 20 2f 20 48 54 54 50 2f 31 2e 31 0d 0a 43 6f 6e 74 65 6e 74 2d 4c 65 6e 67 74 68 3a 20 2d 31 "
         "0d 0a 0d 0a",
         400},
        // "GET /%zz HTTP/1.1\r\n\r\n": a bad escape
        {"bad escape", "47 45 54 20 2f 25 7a 7a 20 48 54 54 50 2f 31 2e 31 0d 0a 0d 0a", 400},
    };
    for (const auto& c : cases) {
        INFO(c.name);
        const auto r = parse_request(from_hex(c.hex));
        CHECK(r.status == Status::error);
        CHECK(r.error_status == c.status);
    }
}

TEST_CASE("limits answer before the data is all there", "[http][malformed]") {
    Limits limits;
    limits.max_head = 64;
    limits.max_body = 10;
    CHECK(parse_request("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", limits).error_status == 413);
    CHECK(parse_request("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", limits).error_status ==
          400);
    CHECK(parse_request("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", limits).error_status ==
          400);
    CHECK(parse_request("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", limits).error_status == 411);
    CHECK(parse_request("GET / HTTP/1.1\r\nX: " + std::string(100, 'a'), limits).error_status == 431);
    // Incomplete but fine so far.
    CHECK(parse_request("GET /api/v5/cli", limits).status == Status::need_more);
    CHECK(parse_request("GET /api/v5/clients HTTP/1.1\r\nHost: a", limits).status == Status::need_more);
}

TEST_CASE("percent-decoding and Basic credentials", "[http]") {
    std::string out;
    CHECK(percent_decode("a%2Fb+c", out, false));
    CHECK(out == "a/b+c");
    CHECK(percent_decode("a%2Fb+c", out, true));
    CHECK(out == "a/b c");
    CHECK_FALSE(percent_decode("%2", out, false));
    CHECK_FALSE(percent_decode("%", out, false));
    CHECK_FALSE(percent_decode("%g0", out, false));
    CHECK_FALSE(parse_query("a=%zz"));
    CHECK_FALSE(basic_credentials("Bearer abc"));
    CHECK_FALSE(basic_credentials("Basic !!!"));
    CHECK_FALSE(basic_credentials("Basic bm9jb2xvbg=="));  // "nocolon"
    const auto c = basic_credentials("basic   dTpwOnE=");      // "u:p:q": the secret may hold ':'
    REQUIRE(c);
    CHECK(c->first == "u");
    CHECK(c->second == "p:q");
}
