#include "admin/http.hpp"

#include <algorithm>
#include <charconv>

#include "broker/auth/password_hash.hpp"

namespace mqttools::admin::http {

namespace {

char to_lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }

bool same_token(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return to_lower(x) == to_lower(y); });
}

std::string_view strip(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// RFC 9110 5.6.2: token characters (methods and header names).
bool token_char(char c) noexcept {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    switch (c) {
        case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
        case '-': case '.': case '^': case '_': case '`': case '|': case '~':
            return true;
        default:
            return false;
    }
}

// Field values: visible characters, blanks and obs-text; no controls.
bool value_char(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
}

// request-target: printable ASCII without blanks (RFC 9112 3.2).
bool target_char(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f;
}

// Does the comma-separated list hold `token`?
bool list_contains(std::string_view list, std::string_view token) noexcept {
    while (true) {
        const auto comma = list.find(',');
        if (same_token(strip(list.substr(0, comma)), token)) return true;
        if (comma == std::string_view::npos) return false;
        list.remove_prefix(comma + 1);
    }
}

ParseResult fail(int status, std::string why) {
    ParseResult r;
    r.status = Status::error;
    r.error_status = status;
    r.error = std::move(why);
    return r;
}

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

std::optional<std::string_view> Request::header(std::string_view name) const {
    for (const auto& h : headers) {
        if (h.name == name) return std::string_view(h.value);
    }
    return std::nullopt;
}

ParseResult parse_request(std::string_view data, const Limits& limits) {
    const auto head_end = data.find("\r\n\r\n");
    const std::size_t head_size = head_end == std::string_view::npos ? data.size() : head_end + 4;
    if (head_size > limits.max_head) {
        return fail(431, "request head larger than " + std::to_string(limits.max_head) + " bytes");
    }
    // The request line, as far as it has come: garbage is refused at once,
    // not after the peer filled the head limit.
    const auto line_end = data.find("\r\n");
    const std::string_view line = data.substr(0, std::min(line_end, head_end));
    const auto sp1 = line.find(' ');
    const std::string_view method = line.substr(0, sp1);
    if (!std::all_of(method.begin(), method.end(), token_char) || (sp1 == 0)) {
        return fail(400, "malformed request line");
    }
    if (head_end == std::string_view::npos) {
        if (line_end != std::string_view::npos || sp1 == std::string_view::npos) return {};
        // Still in the request line: its target must be printable so far.
        const std::string_view rest = line.substr(sp1 + 1);
        const auto sp2 = rest.find(' ');
        const std::string_view target = rest.substr(0, sp2);
        if (!std::all_of(target.begin(), target.end(), target_char)) return fail(400, "malformed request line");
        return {};
    }

    ParseResult r;
    Request& q = r.request;
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
        return fail(400, "malformed request line");
    }
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (target.empty() || target.front() != '/' || !std::all_of(target.begin(), target.end(), target_char)) {
        return fail(400, "malformed request target");
    }
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' || version[5] < '0' ||
        version[5] > '9' || version[7] < '0' || version[7] > '9') {
        return fail(400, "malformed HTTP version");
    }
    if (version[5] != '1') return fail(505, "only HTTP/1.x is spoken");
    q.method = method;
    q.target = target;
    q.http10 = version == "HTTP/1.0";
    const auto question = target.find('?');
    if (!percent_decode(target.substr(0, question), q.path, false)) return fail(400, "malformed percent-escape");
    if (question != std::string_view::npos) q.query = target.substr(question + 1);

    // Header fields (RFC 9112 5): "name: value", no blank before the colon,
    // no line folding.
    std::string_view rest = data.substr(line.size() + 2, head_end + 2 - line.size() - 2);
    std::optional<std::size_t> content_length;
    bool chunked = false;
    std::string connection;
    while (!rest.empty()) {
        const auto eol = rest.find("\r\n");
        const std::string_view field = rest.substr(0, eol);
        rest.remove_prefix(eol + 2);
        if (field.empty() || field.front() == ' ' || field.front() == '\t') return fail(400, "folded header line");
        const auto colon = field.find(':');
        if (colon == std::string_view::npos || colon == 0) return fail(400, "malformed header line");
        const std::string_view name = field.substr(0, colon);
        if (!std::all_of(name.begin(), name.end(), token_char)) return fail(400, "malformed header name");
        const std::string_view value = strip(field.substr(colon + 1));
        if (!std::all_of(value.begin(), value.end(), value_char)) return fail(400, "control character in a header");
        Header h;
        h.name.reserve(name.size());
        for (char c : name) h.name += to_lower(c);
        h.value = value;
        if (h.name == "content-length") {
            std::size_t n = 0;
            const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
            if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
                return fail(400, "malformed Content-Length");
            }
            // RFC 9112 6.3: differing lengths make the message invalid.
            if (content_length && *content_length != n) return fail(400, "conflicting Content-Length headers");
            content_length = n;
        } else if (h.name == "transfer-encoding") {
            chunked = true;
        } else if (h.name == "connection") {
            if (!connection.empty()) connection += ',';
            connection += value;
        }
        q.headers.push_back(std::move(h));
    }
    if (chunked) return fail(411, "chunked request bodies are not accepted; send Content-Length");
    const std::size_t body_size = content_length.value_or(0);
    if (body_size > limits.max_body) {
        return fail(413, "request body larger than " + std::to_string(limits.max_body) + " bytes");
    }
    q.keep_alive = q.http10 ? list_contains(connection, "keep-alive") : !list_contains(connection, "close");
    if (data.size() - head_size < body_size) return {};  // the body is still coming
    q.body = data.substr(head_size, body_size);
    r.status = Status::complete;
    r.consumed = head_size + body_size;
    return r;
}

bool percent_decode(std::string_view in, std::string& out, bool plus_is_space) {
    out.clear();
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        const char c = in[i];
        if (c == '%') {
            if (i + 2 >= in.size()) return false;
            const int hi = hex_value(in[i + 1]);
            const int lo = hex_value(in[i + 2]);
            if (hi < 0 || lo < 0) return false;
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        } else if (c == '+' && plus_is_space) {
            out += ' ';
        } else {
            out += c;
        }
    }
    return true;
}

std::optional<std::vector<std::pair<std::string, std::string>>> parse_query(std::string_view query) {
    std::vector<std::pair<std::string, std::string>> out;
    while (!query.empty()) {
        const auto amp = query.find('&');
        const std::string_view item = query.substr(0, amp);
        query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
        if (item.empty()) continue;
        const auto eq = item.find('=');
        std::pair<std::string, std::string> kv;
        if (!percent_decode(item.substr(0, eq), kv.first, true)) return std::nullopt;
        if (eq != std::string_view::npos && !percent_decode(item.substr(eq + 1), kv.second, true)) {
            return std::nullopt;
        }
        out.push_back(std::move(kv));
    }
    return out;
}

std::optional<std::pair<std::string, std::string>> basic_credentials(std::string_view authorization) {
    // RFC 7617: the scheme is case-insensitive, then one or more blanks.
    const auto sp = authorization.find(' ');
    if (sp == std::string_view::npos || !same_token(authorization.substr(0, sp), "basic")) return std::nullopt;
    const std::string_view encoded = strip(authorization.substr(sp + 1));
    const auto raw = auth::base64_decode(encoded);
    if (!raw) return std::nullopt;
    const std::string text(raw->begin(), raw->end());
    const auto colon = text.find(':');
    if (colon == std::string::npos) return std::nullopt;
    return std::make_pair(text.substr(0, colon), text.substr(colon + 1));
}

std::string_view status_text(int status) {
    switch (status) {
        case 200: return "OK";
        case 201: return "Created";
        case 202: return "Accepted";
        case 204: return "No Content";
        case 304: return "Not Modified";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 409: return "Conflict";
        case 411: return "Length Required";
        case 413: return "Content Too Large";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 503: return "Service Unavailable";
        case 505: return "HTTP Version Not Supported";
        default: return "Unknown";
    }
}

std::string serialize(const Response& response, bool keep_alive, bool head_only) {
    std::string out = "HTTP/1.1 " + std::to_string(response.status) + " ";
    out += status_text(response.status);
    out += "\r\n";
    // 204 has no body and no Content-Length (RFC 9110 8.6).
    if (response.status != 204) {
        if (!response.content_type.empty()) out += "Content-Type: " + response.content_type + "\r\n";
        out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
    }
    for (const auto& [name, value] : response.headers) out += name + ": " + value + "\r\n";
    out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    if (!head_only && response.status != 204) {
        out.reserve(out.size() + response.body.size());  // one allocation for a page of MBs
        out += response.body;
    }
    return out;
}

}  // namespace mqttools::admin::http
