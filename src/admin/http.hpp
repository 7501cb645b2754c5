// HTTP/1.1 for the management API (RFC 9112), as pure functions over
// bytes: request parsing and response writing. Nothing here touches a
// socket (server.cpp does the I/O), so every byte sequence can be tested
// on its own. Bodies come with Content-Length only; a chunked request is
// refused with 411 (curl -d, browsers' fetch and every EMQX client send a
// length).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mqttools::admin::http {

struct Limits {
    std::size_t max_head = 8192;        // request line + headers + blank line: 431 beyond
    std::size_t max_body = 1024 * 1024;  // Content-Length: 413 beyond
};

struct Header {
    std::string name;  // lower case
    std::string value;  // surrounding blanks trimmed
};

struct Request {
    std::string method;
    std::string target;  // as sent: "/api/v5/clients?page=2"
    std::string path;    // target up to '?', percent-decoded
    std::string query;   // after '?', still encoded
    bool http10 = false;
    bool keep_alive = true;  // HTTP/1.1 unless "Connection: close"; 1.0 only with keep-alive
    std::vector<Header> headers;
    std::string body;
    // Asked by another node of the cluster (api_cluster.cpp): answered for
    // this node alone.
    bool from_peer = false;

    // The first header of that (lower-case) name.
    std::optional<std::string_view> header(std::string_view name) const;
};

enum class Status : unsigned char {
    need_more,  // no complete request yet
    complete,   // `request` holds it; `consumed` bytes were used
    error,      // answer `error_status` and close
};

struct ParseResult {
    Status status = Status::need_more;
    std::size_t consumed = 0;
    int error_status = 0;  // 400, 411, 413, 431, 501, 505
    std::string error;     // why, for the error body and the log
    Request request;
};

// Parses the request at the start of `data`. Call again with more bytes on
// need_more. Errors are reported as soon as they are seen: a body over
// the limit at its Content-Length header, not after it was received.
ParseResult parse_request(std::string_view data, const Limits& limits = {});

// Percent-decoding (RFC 3986 2.1); in a query '+' is a space. False on a
// truncated or non-hex escape.
bool percent_decode(std::string_view in, std::string& out, bool plus_is_space);
// "a=1&b=x%20y" -> {{"a","1"},{"b","x y"}}; nullopt on a bad escape.
std::optional<std::vector<std::pair<std::string, std::string>>> parse_query(std::string_view query);
// "Basic base64(user:secret)" -> {user, secret}; nullopt for anything else.
std::optional<std::pair<std::string, std::string>> basic_credentials(std::string_view authorization);

std::string_view status_text(int status);

struct Response {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // extra headers
};

// The response bytes. HEAD answers carry the length but no body.
std::string serialize(const Response& response, bool keep_alive, bool head_only = false);

}  // namespace mqttools::admin::http
