#include "admin/api_util.hpp"

#include <charconv>
#include <chrono>
#include <ctime>

#include "broker/admin_view.hpp"
#include "broker/connection.hpp"
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

Json client_json(const broker::Session& s, std::string_view node) {
    const broker::Connection* c = s.connection;
    const bool live = c && c->state == broker::Connection::State::connected;
    Json j;
    j["node"] = node;
    j["clientid"] = s.client_id;
    j["connected"] = live;
    j["expiry_interval"] = s.expiry_interval;
    j["subscriptions_cnt"] = s.subscriptions.size();
    j["inflight"] = s.outbound ? s.outbound->inflight.size() : 0;
    j["mqueue_len"] = s.outbound ? s.outbound->queue.size() : 0;
    j["mqueue_dropped"] = s.outbound ? s.outbound->dropped_messages : 0;
    j["connected_at"] = s.connected_at_ms ? Json(rfc3339(s.connected_at_ms)) : Json(nullptr);
    j["is_bridge"] = s.peer_broker != 0;
    j["proto_name"] = "MQTT";
    if (live) {
        const auto [host, port] = broker::split_peer(net::peer_address(c->fd()));
        j["username"] = c->has_username ? Json(c->username) : Json(nullptr);
        j["ip_address"] = host;
        j["port"] = port;
        j["proto_ver"] = static_cast<int>(c->version);
        j["keepalive"] = c->keep_alive;
        j["clean_start"] = c->clean_start;
    } else {
        j["username"] = nullptr;
        j["ip_address"] = nullptr;
        j["port"] = nullptr;
        j["proto_ver"] = nullptr;
        j["keepalive"] = nullptr;
        j["clean_start"] = false;
    }
    return j;
}

Json subscription_json(std::string_view client_id, std::string_view filter, const broker::SubscriptionOptions& o,
                       std::string_view node) {
    Json j;
    j["node"] = node;
    j["clientid"] = client_id;
    j["topic"] = filter;
    j["qos"] = static_cast<int>(o.qos);
    j["nl"] = o.no_local ? 1 : 0;
    j["rap"] = o.retain_as_published ? 1 : 0;
    j["rh"] = o.retain_handling;
    if (filter.rfind("$share/", 0) == 0) {
        const auto rest = filter.substr(7);
        j["share_group"] = rest.substr(0, rest.find('/'));
    }
    return j;
}

}  // namespace mqttools::admin
