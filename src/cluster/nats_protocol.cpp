#include "cluster/nats_protocol.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace mqttools::cluster::nats {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t'; }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

// Decimal without sign; false when empty, not digits, or over 2^63.
bool parse_size(std::string_view s, std::uint64_t& v) {
    if (s.empty() || s.size() > 18) return false;
    v = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return true;
}

// Splits a control line's arguments at runs of spaces/tabs; at most N.
template <std::size_t N>
std::size_t split(std::string_view line, std::array<std::string_view, N>& args) {
    std::size_t n = 0;
    std::size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && is_space(line[i])) ++i;
        if (i == line.size()) break;
        const std::size_t start = i;
        while (i < line.size() && !is_space(line[i])) ++i;
        if (n == N) return N + 1;  // too many
        args[n++] = line.substr(start, i - start);
    }
    return n;
}

// split() for MSG/HMSG lines, the hot path: nats-server separates their
// arguments by single spaces, so memchr finds each; anything else (tabs,
// runs of spaces) takes the general split, with the same result.
std::size_t split_args(std::string_view rest, std::array<std::string_view, 5>& args) {
    if (rest.size() < 2 || rest[0] != ' ' || rest.find('\t') != std::string_view::npos) return split(rest, args);
    std::size_t n = 0;
    std::size_t start = 1;
    for (;;) {
        const std::size_t space = rest.find(' ', start);
        const std::size_t end = space == std::string_view::npos ? rest.size() : space;
        if (end == start || n == args.size()) return split(rest, args);
        args[n++] = rest.substr(start, end - start);
        if (space == std::string_view::npos) return n;
        start = space + 1;
    }
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

ParseResult malformed(const char* why) {
    ParseResult r;
    r.status = ParseStatus::malformed;
    r.error = why;
    return r;
}

// Digits written backwards from `end`; returns their start.
char* format_decimal(char* end, std::uint64_t v) {
    do {
        *--end = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

}  // namespace

void append_decimal(std::string& out, std::uint64_t v) {
    char buf[20];
    char* const end = buf + sizeof buf;
    const char* start = format_decimal(end, v);
    out.append(start, static_cast<std::size_t>(end - start));
}

namespace {

void append_json_string(std::string& out, std::string_view s) {
    out.push_back('"');
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(c);
        } else if (u < 0x20) {
            out.append("\\u00");
            out.push_back("0123456789abcdef"[u >> 4]);
            out.push_back("0123456789abcdef"[u & 15]);
        } else {
            out.push_back(c);
        }
    }
    out.push_back('"');
}

// A minimal reader for INFO's flat JSON object: values of known keys are
// taken, anything else (arrays, nested objects) is skipped.
struct Json {
    std::string_view s;
    std::size_t i = 0;
    int depth = 0;

    void ws() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) ++i;
    }
    bool string(std::string* out) {
        if (i >= s.size() || s[i] != '"') return false;
        for (++i; i < s.size(); ++i) {
            char c = s[i];
            if (c == '"') {
                ++i;
                return true;
            }
            if (c == '\\') {
                if (++i >= s.size()) return false;
                c = s[i];
                switch (c) {
                    case 'n': c = '\n'; break;
                    case 't': c = '\t'; break;
                    case 'r': c = '\r'; break;
                    case 'b': c = '\b'; break;
                    case 'f': c = '\f'; break;
                    case 'u':
                        // Not needed by any field we read: kept as '?'.
                        if (i + 4 >= s.size()) return false;
                        i += 4;
                        c = '?';
                        break;
                    default: break;
                }
            }
            if (out) out->push_back(c);
        }
        return false;
    }
    bool number(std::int64_t* out) {
        const std::size_t start = i;
        if (i < s.size() && s[i] == '-') ++i;
        std::int64_t v = 0;
        bool digits = false;
        for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
            digits = true;
            if (v < (std::int64_t{1} << 58)) v = v * 10 + (s[i] - '0');
        }
        // Fraction or exponent: accepted, integer part kept.
        while (i < s.size() && (s[i] == '.' || s[i] == 'e' || s[i] == 'E' || s[i] == '+' || s[i] == '-' ||
                                (s[i] >= '0' && s[i] <= '9'))) {
            ++i;
        }
        if (!digits) return false;
        if (out) *out = s[start] == '-' ? -v : v;
        return true;
    }
    bool literal(std::string_view word) {
        if (s.substr(i, word.size()) != word) return false;
        i += word.size();
        return true;
    }
    bool skip_value() {
        ws();
        if (i >= s.size()) return false;
        const char c = s[i];
        if (c == '"') return string(nullptr);
        if (c == '{' || c == '[') {
            if (++depth > 32) return false;
            const char close = c == '{' ? '}' : ']';
            ++i;
            ws();
            if (i < s.size() && s[i] == close) {
                ++i;
                --depth;
                return true;
            }
            for (;;) {
                if (close == '}') {
                    ws();
                    if (!string(nullptr)) return false;
                    ws();
                    if (i >= s.size() || s[i] != ':') return false;
                    ++i;
                }
                if (!skip_value()) return false;
                ws();
                if (i < s.size() && s[i] == ',') {
                    ++i;
                    continue;
                }
                if (i < s.size() && s[i] == close) {
                    ++i;
                    --depth;
                    return true;
                }
                return false;
            }
        }
        if (c == 't') return literal("true");
        if (c == 'f') return literal("false");
        if (c == 'n') return literal("null");
        return number(nullptr);
    }
    bool boolean(bool& out) {
        ws();
        if (literal("true")) {
            out = true;
            return true;
        }
        if (literal("false")) {
            out = false;
            return true;
        }
        return false;
    }
};

}  // namespace

bool valid_token(std::string_view s) {
    if (s.empty()) return false;
    for (const char c : s) {
        if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return false;
    }
    return true;
}

ParseResult parse_server(std::string_view in, std::size_t max_control_line, std::size_t max_payload) {
    const std::size_t limit = std::min(in.size(), max_control_line + 2);
    const std::size_t nl = in.substr(0, limit).find('\n');
    if (nl == std::string_view::npos) {
        if (in.size() > max_control_line + 1) return malformed("control line too long");
        return {};
    }
    std::string_view line = in.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::size_t line_len = nl + 1;
    std::size_t v = 0;
    while (v < line.size() && !is_space(line[v])) ++v;
    const std::string_view verb = line.substr(0, v);
    const std::string_view rest = line.substr(v);

    ParseResult r;
    r.status = ParseStatus::ok;
    r.consumed = line_len;
    ServerMessage& m = r.message;
    if (iequals(verb, "MSG") || iequals(verb, "HMSG")) {
        const bool with_headers = verb.size() == 4;
        std::array<std::string_view, 5> a;
        const std::size_t n = split_args(rest, a);
        const std::size_t base = with_headers ? 4 : 3;
        if (n != base && n != base + 1) return malformed(with_headers ? "HMSG: wrong argument count" : "MSG: wrong argument count");
        m.op = with_headers ? ServerOp::hmsg : ServerOp::msg;
        m.subject = a[0];
        if (!parse_size(a[1], m.sid)) return malformed("MSG: bad sid");
        if (n == base + 1) m.reply = a[2];
        std::uint64_t header_len = 0;
        std::uint64_t total = 0;
        if (with_headers) {
            if (!parse_size(a[n - 2], header_len) || !parse_size(a[n - 1], total)) return malformed("HMSG: bad size");
            if (header_len > total) return malformed("HMSG: header size over total size");
        } else if (!parse_size(a[n - 1], total)) {
            return malformed("MSG: bad size");
        }
        if (total > max_payload) return malformed("MSG: payload over the limit");
        if (in.size() < line_len + total + 2) {
            return {};  // the payload is still coming
        }
        const std::string_view body = in.substr(line_len, total);
        if (in[line_len + total] != '\r' || in[line_len + total + 1] != '\n') {
            return malformed("MSG: payload not followed by CRLF");
        }
        m.headers = body.substr(0, header_len);
        m.payload = body.substr(header_len);
        r.consumed = line_len + total + 2;
        return r;
    }
    if (iequals(verb, "PING") || iequals(verb, "PONG") || iequals(verb, "+OK")) {
        if (!trim(rest).empty()) return malformed("unexpected arguments");
        m.op = iequals(verb, "PING") ? ServerOp::ping : iequals(verb, "PONG") ? ServerOp::pong : ServerOp::ok;
        return r;
    }
    if (iequals(verb, "INFO")) {
        m.op = ServerOp::info;
        m.text = trim(rest);
        if (m.text.empty()) return malformed("INFO without a body");
        return r;
    }
    if (iequals(verb, "-ERR")) {
        m.op = ServerOp::err;
        std::string_view t = trim(rest);
        if (t.size() >= 2 && t.front() == '\'' && t.back() == '\'') t = t.substr(1, t.size() - 2);
        m.text = t;
        return r;
    }
    return malformed("unknown protocol verb");
}

int header_status(std::string_view headers) {
    // "NATS/1.0 503[ description]\r\n"
    constexpr std::string_view version = "NATS/1.0";
    if (headers.substr(0, version.size()) != version) return 0;
    std::size_t i = version.size();
    if (i >= headers.size() || !is_space(headers[i])) return 0;
    while (i < headers.size() && is_space(headers[i])) ++i;
    int code = 0;
    int digits = 0;
    for (; i < headers.size() && headers[i] >= '0' && headers[i] <= '9' && digits < 3; ++i, ++digits) {
        code = code * 10 + (headers[i] - '0');
    }
    return digits == 3 ? code : 0;
}

std::string_view header_value(std::string_view headers, std::string_view name) {
    std::size_t pos = headers.find('\n');  // past the status line
    while (pos != std::string_view::npos && pos + 1 < headers.size()) {
        const std::size_t start = pos + 1;
        std::size_t end = headers.find('\n', start);
        std::string_view line = headers.substr(start, end == std::string_view::npos ? headers.npos : end - start);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        const std::size_t colon = line.find(':');
        if (colon != std::string_view::npos && iequals(trim(line.substr(0, colon)), name)) {
            return trim(line.substr(colon + 1));
        }
        pos = end;
    }
    return {};
}

bool parse_info(std::string_view json, ServerInfo& info) {
    Json j{json};
    j.ws();
    if (j.i >= json.size() || json[j.i] != '{') return false;
    ++j.i;
    j.ws();
    if (j.i < json.size() && json[j.i] == '}') return true;
    for (;;) {
        j.ws();
        std::string key;
        if (!j.string(&key)) return false;
        j.ws();
        if (j.i >= json.size() || json[j.i] != ':') return false;
        ++j.i;
        j.ws();
        bool ok = true;
        if (key == "server_id") {
            info.server_id.clear();
            ok = j.string(&info.server_id);
        } else if (key == "nonce") {
            info.nonce.clear();
            ok = j.string(&info.nonce);
        } else if (key == "max_payload") {
            std::int64_t n = 0;
            ok = j.number(&n) && n > 0;
            if (ok) info.max_payload = n;
        } else if (key == "proto") {
            std::int64_t n = 0;
            ok = j.number(&n);
            if (ok) info.proto = static_cast<int>(n);
        } else if (key == "headers") {
            ok = j.boolean(info.headers);
        } else if (key == "tls_required") {
            ok = j.boolean(info.tls_required);
        } else if (key == "tls_available") {
            ok = j.boolean(info.tls_available);
        } else if (key == "auth_required") {
            ok = j.boolean(info.auth_required);
        } else {
            ok = j.skip_value();
        }
        if (!ok) return false;
        j.ws();
        if (j.i < json.size() && json[j.i] == ',') {
            ++j.i;
            continue;
        }
        if (j.i < json.size() && json[j.i] == '}') return true;
        return false;
    }
}

void encode_connect(std::string& out, const ConnectOptions& o) {
    out.append("CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":");
    out.append(o.tls ? "true" : "false").append(",\"lang\":\"C++\",\"version\":");
    append_json_string(out, o.version.empty() ? std::string_view("0") : o.version);
    out.append(",\"protocol\":1,\"echo\":").append(o.echo ? "true" : "false");
    out.append(",\"headers\":").append(o.headers ? "true" : "false");
    out.append(",\"no_responders\":").append(o.no_responders ? "true" : "false");
    if (!o.name.empty()) {
        out.append(",\"name\":");
        append_json_string(out, o.name);
    }
    if (!o.user.empty()) {
        out.append(",\"user\":");
        append_json_string(out, o.user);
        out.append(",\"pass\":");
        append_json_string(out, o.pass);
    }
    if (!o.auth_token.empty()) {
        out.append(",\"auth_token\":");
        append_json_string(out, o.auth_token);
    }
    out.append("}\r\n");
}

bool encode_pub_line(std::string& out, std::string_view subject, std::string_view reply, std::size_t size) {
    if (!valid_token(subject) || (!reply.empty() && !valid_token(reply))) return false;
    out.append("PUB ").append(subject);
    if (!reply.empty()) out.append(1, ' ').append(reply);
    out.push_back(' ');
    append_decimal(out, size);
    out.append("\r\n");
    return true;
}

void encode_pub_trusted(std::string& out, std::string_view subject, std::string_view reply,
                        std::string_view payload) {
    char tail[24];  // " SIZE\r\n"
    char* const end = tail + sizeof tail;
    char* p = end - 2;
    p[0] = '\r';
    p[1] = '\n';
    p = format_decimal(p, payload.size());
    *--p = ' ';
    const auto tail_len = static_cast<std::size_t>(end - p);
    const std::size_t at = out.size();
    const std::size_t line = 4 + subject.size() + (reply.empty() ? 0 : reply.size() + 1) + tail_len;
    out.resize(at + line + payload.size() + 2);
    char* w = out.data() + at;
    std::memcpy(w, "PUB ", 4);
    w += 4;
    std::memcpy(w, subject.data(), subject.size());
    w += subject.size();
    if (!reply.empty()) {
        *w++ = ' ';
        std::memcpy(w, reply.data(), reply.size());
        w += reply.size();
    }
    std::memcpy(w, p, tail_len);
    w += tail_len;
    if (!payload.empty()) std::memcpy(w, payload.data(), payload.size());
    w += payload.size();
    w[0] = '\r';
    w[1] = '\n';
}

bool encode_pub(std::string& out, std::string_view subject, std::string_view reply, std::string_view payload) {
    if (!encode_pub_line(out, subject, reply, payload.size())) return false;
    out.append(payload).append("\r\n");
    return true;
}

bool encode_hpub(std::string& out, std::string_view subject, std::string_view reply, std::string_view headers,
                 std::string_view payload) {
    if (!valid_token(subject) || (!reply.empty() && !valid_token(reply))) return false;
    out.append("HPUB ").append(subject);
    if (!reply.empty()) out.append(1, ' ').append(reply);
    out.push_back(' ');
    append_decimal(out, headers.size());
    out.push_back(' ');
    append_decimal(out, headers.size() + payload.size());
    out.append("\r\n").append(headers).append(payload).append("\r\n");
    return true;
}

bool encode_sub(std::string& out, std::string_view subject, std::string_view queue, std::uint64_t sid) {
    if (!valid_token(subject) || (!queue.empty() && !valid_token(queue))) return false;
    out.append("SUB ").append(subject);
    if (!queue.empty()) out.append(1, ' ').append(queue);
    out.push_back(' ');
    append_decimal(out, sid);
    out.append("\r\n");
    return true;
}

void encode_unsub(std::string& out, std::uint64_t sid, std::uint64_t max_msgs) {
    out.append("UNSUB ");
    append_decimal(out, sid);
    if (max_msgs != 0) {
        out.push_back(' ');
        append_decimal(out, max_msgs);
    }
    out.append("\r\n");
}

}  // namespace mqttools::cluster::nats
