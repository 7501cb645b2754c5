#include "admin/api_util.hpp"

#include <charconv>
#include <chrono>
#include <ctime>

#include "broker/admin_view.hpp"
#include "broker/connection.hpp"
#include "mqttools/codec.hpp"
#include "net/socket.hpp"

namespace mqttools::admin {

http::Response error_response(int status, std::string_view code, std::string_view message) {
    Json body;
    body["code"] = code;
    body["message"] = message;
    return json_response(status, body);
}

http::Response json_response(int status, const Json& body) {
    http::Response r;
    r.status = status;
    // Invalid UTF-8 in a client id or topic is replaced, never a throw.
    r.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
    return r;
}

bool Query::parse(std::string_view query, http::Response& error) {
    auto items = http::parse_query(query);
    if (!items) {
        error = error_response(400, "BAD_REQUEST", "malformed query string");
        return false;
    }
    items_ = std::move(*items);
    return true;
}

std::optional<std::string> Query::get(std::string_view name) const {
    for (const auto& [k, v] : items_) {
        if (k == name) return v;
    }
    return std::nullopt;
}

std::vector<std::string> Query::all(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : items_) {
        if (k == name) out.push_back(v);
    }
    return out;
}

bool Query::integer(std::string_view name, std::int64_t min, std::int64_t max, std::int64_t& out,
                    http::Response& error) const {
    const auto text = get(name);
    if (!text) return true;
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
    if (text->empty() || ec != std::errc() || end != text->data() + text->size() || v < min || v > max) {
        error = error_response(400, "BAD_REQUEST",
                               std::string(name) + " must be an integer from " + std::to_string(min) + " to " +
                                   std::to_string(max));
        return false;
    }
    out = v;
    return true;
}

bool Paging::parse(const Query& q, http::Response& error) {
    std::int64_t p = 1, l = 100;
    if (!q.integer("page", 1, 1'000'000'000, p, error) || !q.integer("limit", 1, 10'000, l, error)) return false;
    page = static_cast<std::size_t>(p);
    limit = static_cast<std::size_t>(l);
    if (q.get("_offset")) {
        // A node's share of a cluster-wide page (api_cluster.cpp).
        std::int64_t o = 0;
        if (!q.integer("_offset", 0, 1'000'000'000'000, o, error)) return false;
        offset = static_cast<std::size_t>(o);
    }
    return true;
}

Json Paging::meta(std::size_t count) const {
    Json m;
    m["page"] = page;
    m["limit"] = limit;
    m["count"] = count;
    m["hasnext"] = page * limit < count;
    return m;
}

std::int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string rfc3339(std::int64_t unix_ms) {
    const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    ::gmtime_r(&seconds, &tm);
    char buf[48];
    const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(buf + n, sizeof buf - n, ".%03d+00:00", static_cast<int>(unix_ms % 1000));
    return buf;
}

// ---- entries written straight into the answer (no Json tree per entry:
// a 10,000-entry page is built a slice per reactor turn, and a tree of
// 18 nodes per client cost more than the walk itself)

void append_json_string(std::string& out, std::string_view s) {
    if (!is_valid_utf8(s)) {
        // Replaced as json_response() does (U+FFFD), never a throw.
        out += Json(std::string(s)).dump(-1, ' ', false, Json::error_handler_t::replace);
        return;
    }
    static constexpr char hex[] = "0123456789abcdef";
    out += '"';
    std::size_t plain = 0;  // start of the run not yet copied
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto ch = static_cast<unsigned char>(s[i]);
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        out.append(s.data() + plain, i - plain);
        plain = i + 1;
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                out += "\\u00";
                out += hex[ch >> 4];
                out += hex[ch & 15];
        }
    }
    out.append(s.data() + plain, s.size() - plain);
    out += '"';
}

namespace {

void append_number(std::string& out, std::uint64_t v) {
    char buf[24];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, end);
}

// ,"key": (the keys are literals: nothing to escape)
void key(std::string& out, std::string_view k) {
    out += ",\"";
    out += k;
    out += "\":";
}

}  // namespace

void append_client_json(std::string& out, const broker::Session& s, std::string_view node) {
    const broker::Connection* c = s.connection;
    const bool live = c && c->state == broker::Connection::State::connected;
    out += "{\"node\":";
    append_json_string(out, node);
    key(out, "clientid");
    append_json_string(out, s.client_id);
    key(out, "connected");
    out += live ? "true" : "false";
    key(out, "expiry_interval");
    append_number(out, s.expiry_interval);
    key(out, "subscriptions_cnt");
    append_number(out, s.subscriptions.size());
    key(out, "inflight");
    append_number(out, s.outbound ? s.outbound->inflight.size() : 0);
    key(out, "mqueue_len");
    append_number(out, s.outbound ? s.outbound->queue.size() : 0);
    key(out, "mqueue_dropped");
    append_number(out, s.outbound ? s.outbound->dropped_messages : 0);
    key(out, "connected_at");
    if (s.connected_at_ms) {
        out += '"';
        out += rfc3339(s.connected_at_ms);
        out += '"';
    } else {
        out += "null";
    }
    key(out, "is_bridge");
    out += s.peer_broker != 0 ? "true" : "false";
    key(out, "proto_name");
    out += "\"MQTT\"";
    if (live) {
        const auto [host, port] = broker::split_peer(net::peer_address(c->fd()));
        key(out, "username");
        if (c->has_username) {
            append_json_string(out, c->username);
        } else {
            out += "null";
        }
        key(out, "ip_address");
        append_json_string(out, host);
        key(out, "port");
        append_number(out, port);
        key(out, "proto_ver");
        append_number(out, static_cast<unsigned>(c->version));
        key(out, "keepalive");
        append_number(out, c->keep_alive);
        key(out, "clean_start");
        out += c->clean_start ? "true" : "false";
    } else {
        out += ",\"username\":null,\"ip_address\":null,\"port\":null,\"proto_ver\":null,\"keepalive\":null,"
               "\"clean_start\":false";
    }
    out += '}';
}

void append_subscription_json(std::string& out, std::string_view client_id, std::string_view filter,
                              const broker::SubscriptionOptions& o, std::string_view node) {
    out += "{\"node\":";
    append_json_string(out, node);
    key(out, "clientid");
    append_json_string(out, client_id);
    key(out, "topic");
    append_json_string(out, filter);
    key(out, "qos");
    append_number(out, static_cast<unsigned>(o.qos));
    key(out, "nl");
    out += o.no_local ? '1' : '0';
    key(out, "rap");
    out += o.retain_as_published ? '1' : '0';
    key(out, "rh");
    append_number(out, o.retain_handling);
    if (filter.rfind("$share/", 0) == 0) {
        const auto rest = filter.substr(7);
        key(out, "share_group");
        append_json_string(out, rest.substr(0, rest.find('/')));
    }
    out += '}';
}

}  // namespace mqttools::admin
