// Routing of /api/v5/... and the handlers that answer in one turn
// (the listings that may take several are in api_lists.cpp).
#include <algorithm>
#include <cstdio>

#include "admin/api_util.hpp"
#include "broker/auth/password_hash.hpp"
#include "broker/auth/topic_filter.hpp"
#include "broker/broker.hpp"
#include "mqttools/codec.hpp"

namespace mqttools::admin {

namespace {

Outcome now(http::Response r) { return Outcome{std::move(r), nullptr}; }

Outcome not_found(std::string_view what = "no such resource") {
    return now(error_response(404, "NOT_FOUND", what));
}

Outcome method_not_allowed(std::string_view allow) {
    http::Response r = error_response(405, "METHOD_NOT_ALLOWED", "use " + std::string(allow));
    r.headers.emplace_back("Allow", allow);
    return now(std::move(r));
}

Outcome no_content() {
    http::Response r;
    r.status = 204;
    r.content_type.clear();
    return now(std::move(r));
}

// The target's path split at '/', each segment percent-decoded (an
// encoded '/' in a client id stays inside its segment).
std::optional<std::vector<std::string>> segments(std::string_view target) {
    std::string_view path = target.substr(0, target.find('?'));
    std::vector<std::string> out;
    while (!path.empty()) {
        if (path.front() == '/') {
            path.remove_prefix(1);
            continue;
        }
        const auto slash = path.find('/');
        std::string seg;
        if (!http::percent_decode(path.substr(0, slash), seg, false)) return std::nullopt;
        out.push_back(std::move(seg));
        path.remove_prefix(slash == std::string_view::npos ? path.size() : slash);
    }
    return out;
}

// What follows `prefix` in the raw path, percent-decoded: a retained
// message's topic ("a/b/c", or "a%2Fb").
std::optional<std::string> rest_of_path(std::string_view target, std::string_view prefix) {
    std::string_view path = target.substr(0, target.find('?'));
    if (path.rfind(prefix, 0) != 0) return std::nullopt;
    std::string out;
    if (!http::percent_decode(path.substr(prefix.size()), out, false)) return std::nullopt;
    return out;
}

bool parse_body(const http::Request& req, Json& out, http::Response& error) {
    out = Json::parse(req.body, nullptr, false);
    if (out.is_discarded() || !out.is_object()) {
        error = error_response(400, "BAD_REQUEST", "the body must be a JSON object");
        return false;
    }
    return true;
}

// ---- clients

Outcome get_client(ApiContext& ctx, const std::string& id) {
    const broker::Session* s = ctx.broker->sessions().find(id);
    if (!s || s->bridge) return now(error_response(404, "CLIENTID_NOT_FOUND", "client id not found"));
    http::Response r;
    append_client_json(r.body, *s, ctx.node);
    return now(std::move(r));
}

Outcome kick_client(ApiContext& ctx, const std::string& id) {
    if (!ctx.broker->kick(id)) return now(error_response(404, "CLIENTID_NOT_FOUND", "client id not found"));
    return no_content();
}

Outcome client_subscriptions(ApiContext& ctx, const std::string& id) {
    const broker::Session* s = ctx.broker->sessions().find(id);
    if (!s || s->bridge) return now(error_response(404, "CLIENTID_NOT_FOUND", "client id not found"));
    http::Response r;
    r.body = "[";
    for (const auto& [filter, o] : s->subscriptions) {
        if (r.body.size() > 1) r.body += ',';
        append_subscription_json(r.body, s->client_id, filter, o, ctx.node);
    }
    r.body += ']';
    return now(std::move(r));
}

// ---- publish

void put_u32(std::string& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
}
void put_string(std::string& out, std::string_view s) {
    out += static_cast<char>((s.size() >> 8) & 0xff);
    out += static_cast<char>(s.size() & 0xff);
    out += s;
}

// EMQX's "properties" object as MQTT 5 PUBLISH property bytes.
bool encode_properties(const Json& p, std::string& raw, std::optional<std::uint32_t>& expiry, std::string& why) {
    if (!p.is_object()) {
        why = "properties must be an object";
        return false;
    }
    auto text = [&](const char* key, std::string& out) {
        const auto it = p.find(key);
        if (it == p.end()) return true;
        if (!it->is_string() || it->get_ref<const std::string&>().size() > 65535 ||
            !is_valid_utf8(it->get_ref<const std::string&>())) {
            why = std::string(key) + " must be a UTF-8 string";
            return false;
        }
        out = it->get<std::string>();
        return true;
    };
    if (auto it = p.find("payload_format_indicator"); it != p.end()) {
        if (!it->is_number_unsigned() || it->get<unsigned>() > 1) {
            why = "payload_format_indicator must be 0 or 1";
            return false;
        }
        raw += '\x01';
        raw += static_cast<char>(it->get<unsigned>());
    }
    if (auto it = p.find("message_expiry_interval"); it != p.end()) {
        if (!it->is_number_unsigned() || it->get<std::uint64_t>() > 0xffffffffu) {
            why = "message_expiry_interval must be a number of seconds";
            return false;
        }
        expiry = it->get<std::uint32_t>();
        raw += '\x02';
        put_u32(raw, *expiry);
    }
    std::string content_type, response_topic, correlation;
    if (!text("content_type", content_type) || !text("response_topic", response_topic) ||
        !text("correlation_data", correlation)) {
        return false;
    }
    if (p.contains("content_type")) {
        raw += '\x03';
        put_string(raw, content_type);
    }
    if (p.contains("response_topic")) {
        if (check_topic_name(response_topic) != ReasonCode::success) {
            why = "response_topic is not a valid topic name";
            return false;
        }
        raw += '\x08';
        put_string(raw, response_topic);
    }
    if (p.contains("correlation_data")) {
        raw += '\x09';
        put_string(raw, correlation);
    }
    if (auto it = p.find("user_properties"); it != p.end()) {
        if (!it->is_object()) {
            why = "user_properties must be an object of strings";
            return false;
        }
        for (const auto& [k, v] : it->items()) {
            if (!v.is_string() || k.size() > 65535 || v.get_ref<const std::string&>().size() > 65535 ||
                !is_valid_utf8(k) || !is_valid_utf8(v.get_ref<const std::string&>())) {
                why = "user_properties must be an object of strings";
                return false;
            }
            raw += '\x26';
            put_string(raw, k);
            put_string(raw, v.get_ref<const std::string&>());
        }
    }
    return true;
}

Outcome publish(ApiContext& ctx, const http::Request& req) {
    Json body;
    http::Response error;
    if (!parse_body(req, body, error)) return now(std::move(error));
    auto bad = [](std::string_view why) { return now(error_response(400, "BAD_REQUEST", why)); };
    const auto topic = body.find("topic");
    if (topic == body.end() || !topic->is_string()) return bad("topic is required");
    const std::string& t = topic->get_ref<const std::string&>();
    if (check_topic_name(t) != ReasonCode::success) return bad("topic is not a valid topic name");
    int qos = 0;
    if (auto it = body.find("qos"); it != body.end()) {
        if (!it->is_number_unsigned() || it->get<unsigned>() > 2) return bad("qos must be 0, 1 or 2");
        qos = it->get<int>();
    }
    bool retain = false;
    if (auto it = body.find("retain"); it != body.end()) {
        if (!it->is_boolean()) return bad("retain must be true or false");
        retain = it->get<bool>();
    }
    std::string payload;
    if (auto it = body.find("payload"); it != body.end()) {
        if (!it->is_string()) return bad("payload must be a string");
        payload = it->get<std::string>();
    }
    if (auto it = body.find("payload_encoding"); it != body.end()) {
        if (!it->is_string() || (*it != "plain" && *it != "base64")) {
            return bad("payload_encoding must be plain or base64");
        }
        if (*it == "base64") {
            auto raw = auth::base64_decode(payload);
            if (!raw) return bad("payload is not valid base64");
            payload.assign(raw->begin(), raw->end());
        }
    }
    std::string properties;
    broker::MessageView m;
    if (auto it = body.find("properties"); it != body.end()) {
        std::string why;
        if (!encode_properties(*it, properties, m.expiry_interval, why)) return bad(why);
    }
    const auto& cfg = ctx.broker->config();
    if (cfg.message_size_limit != 0 && payload.size() > cfg.message_size_limit) {
        return now(error_response(413, "PAYLOAD_TOO_LARGE", "payload over message_size_limit"));
    }
    if (retain && !cfg.retain_available) return bad("retained messages are not available (retain_available)");
    m.topic = t;
    m.payload = as_bytes(std::string_view(payload));
    m.properties = as_bytes(std::string_view(properties));
    m.qos = static_cast<QoS>(qos);
    m.retain = retain;
    const std::size_t delivered = ctx.broker->publish_admin(m);
    static std::uint64_t counter = 0;
    char id[40];
    std::snprintf(id, sizeof id, "%016llX%08llX", static_cast<unsigned long long>(unix_ms_now()),
                  static_cast<unsigned long long>(++counter));
    Json out;
    out["id"] = id;
    if (delivered == 0 && !ctx.broker->cluster()) {
        // EMQX: 202 with reason code 16 (No matching subscribers).
        out["reason_code"] = 16;
        out["message"] = "no_matched_subscribers";
        return now(json_response(202, out));
    }
    return now(json_response(200, out));
}

// ---- retained messages

Json retained_json(const broker::Message& m, bool with_payload) {
    Json j;
    j["topic"] = m.topic;
    j["qos"] = static_cast<int>(m.qos);
    j["msgid"] = std::to_string(m.store_id);
    j["from_clientid"] = nullptr;
    j["from_username"] = nullptr;
    j["publish_at"] = nullptr;
    if (with_payload) {
        j["payload"] = auth::base64_encode(std::span<const unsigned char>(
            reinterpret_cast<const unsigned char*>(m.payload.data()), m.payload.size()));
    }
    return j;
}

Outcome retained_list(ApiContext& ctx, const http::Request& req) {
    Query q;
    Paging paging;
    http::Response error;
    if (!q.parse(req.query, error) || !paging.parse(q, error)) return now(std::move(error));
    std::vector<broker::MessagePtr> all;
    ctx.broker->retained().all(ctx.broker->reactor().now(), all);
    const auto topic = q.get("topic");  // a filter, as EMQX's "topic" query
    if (topic) {
        std::erase_if(all, [&](const broker::MessagePtr& m) { return !auth::topic_matches(*topic, m->topic); });
    }
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a->topic < b->topic; });
    Json data = Json::array();
    for (std::size_t i = paging.first(); i < all.size() && data.size() < paging.limit; ++i) {
        data.push_back(retained_json(*all[i], false));
    }
    Json body;
    body["data"] = std::move(data);
    body["meta"] = paging.meta(all.size());
    return now(json_response(200, body));
}

Outcome retained_one(ApiContext& ctx, const http::Request& req) {
    const auto topic = rest_of_path(req.target, "/api/v5/mqtt/retainer/message/");
    if (!topic || topic->empty()) return now(error_response(400, "BAD_REQUEST", "malformed topic"));
    if (req.method == "DELETE") {
        if (!ctx.broker->delete_retained(*topic)) return not_found("no retained message for that topic");
        return no_content();
    }
    if (req.method != "GET" && req.method != "HEAD") return method_not_allowed("GET, DELETE");
    const auto m = ctx.broker->retained().find(*topic, ctx.broker->reactor().now());
    if (!m) return not_found("no retained message for that topic");
    return now(json_response(200, retained_json(*m, true)));
}

// ---- banned

// Answers once the store has the change (Broker::when_durable): a ban
// acknowledged and then a crash (kill -9, power) is still a ban after the
// restart. The reactor goes on meanwhile; the store thread's report wakes
// the job.
class DurableJob final : public Job {
public:
    DurableJob(broker::Broker& broker, http::Response answer, std::string failed)
        : state_(std::make_shared<State>()) {
        state_->answer = std::move(answer);
        state_->failed = std::move(failed);
        broker.when_durable([s = state_](bool ok) {
            s->done = true;
            s->ok = ok;
            if (auto wake = std::move(s->wake)) {
                s->wake = nullptr;
                wake();
            }
        });
    }
    ~DurableJob() override { state_->wake = nullptr; }  // the request is gone: nobody to wake
    bool step(http::Response& out) override {
        if (!state_->done) return false;
        out = state_->ok ? std::move(state_->answer) : error_response(503, "STORE_FAILED", state_->failed);
        return true;
    }
    bool park(std::function<void()> wake) override {
        if (state_->done) return false;
        state_->wake = std::move(wake);
        return true;
    }

private:
    struct State {
        bool done = false;
        bool ok = false;
        http::Response answer;
        std::string failed;
        std::function<void()> wake;
    };
    std::shared_ptr<State> state_;
};

Outcome when_durable(ApiContext& ctx, http::Response answer, std::string failed) {
    return Outcome{{}, std::make_unique<DurableJob>(*ctx.broker, std::move(answer), std::move(failed))};
}

Json ban_json(const broker::Ban& b) {
    Json j;
    j["as"] = broker::ban_kind_name(b.as);
    j["who"] = b.who;
    j["by"] = b.by;
    j["reason"] = b.reason;
    j["at"] = rfc3339(b.at * 1000);
    j["until"] = b.until ? Json(rfc3339(b.until * 1000)) : Json("infinity");
    return j;
}

// "2026-12-08T00:00:00Z", "...+01:00", or Unix seconds (EMQX takes both).
bool parse_time(const Json& v, std::int64_t& out) {
    if (v.is_number_integer()) {
        out = v.get<std::int64_t>();
        return out > 0;
    }
    if (!v.is_string()) return false;
    const std::string& s = v.get_ref<const std::string&>();
    if (s == "infinity") {
        out = 0;
        return true;
    }
    std::tm tm{};
    const char* end = ::strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) return false;
    if (*end == '.') {
        ++end;
        while (*end >= '0' && *end <= '9') ++end;
    }
    long offset = 0;
    if (*end == 'Z' || *end == 'z') {
        ++end;
    } else if (*end == '+' || *end == '-') {
        int hh = 0, mm = 0;
        if (std::sscanf(end + 1, "%2d:%2d", &hh, &mm) != 2) return false;
        offset = (hh * 3600L + mm * 60L) * (*end == '-' ? -1 : 1);
        end += 6;
    } else {
        return false;
    }
    if (*end != '\0') return false;
    out = static_cast<std::int64_t>(::timegm(&tm)) - offset;
    return true;
}

Outcome banned_list(ApiContext& ctx, const http::Request& req) {
    Query q;
    Paging paging;
    http::Response error;
    if (!q.parse(req.query, error) || !paging.parse(q, error)) return now(std::move(error));
    const auto all = ctx.broker->bans().list(unix_ms_now() / 1000);
    Json data = Json::array();
    for (std::size_t i = paging.first(); i < all.size() && data.size() < paging.limit; ++i) {
        data.push_back(ban_json(all[i]));
    }
    Json body;
    body["data"] = std::move(data);
    body["meta"] = paging.meta(all.size());
    return now(json_response(200, body));
}

Outcome banned_add(ApiContext& ctx, const http::Request& req) {
    Json body;
    http::Response error;
    if (!parse_body(req, body, error)) return now(std::move(error));
    auto bad = [](std::string_view why) { return now(error_response(400, "BAD_REQUEST", why)); };
    broker::Ban ban;
    const auto as = body.find("as");
    if (as == body.end() || !as->is_string() || !broker::parse_ban_kind(as->get<std::string>(), ban.as)) {
        return bad("as must be clientid, username or peerhost");
    }
    const auto who = body.find("who");
    if (who == body.end() || !who->is_string() || who->get_ref<const std::string&>().empty()) {
        return bad("who is required");
    }
    ban.who = who->get<std::string>();
    ban.by = "mqttools_api";
    if (auto it = body.find("by"); it != body.end() && it->is_string()) ban.by = it->get<std::string>();
    if (auto it = body.find("reason"); it != body.end() && it->is_string()) ban.reason = it->get<std::string>();
    const std::int64_t now_s = unix_ms_now() / 1000;
    ban.at = now_s;
    if (auto it = body.find("at"); it != body.end() && !parse_time(*it, ban.at)) return bad("at must be a RFC 3339 time");
    if (auto it = body.find("until"); it != body.end()) {
        if (!parse_time(*it, ban.until)) return bad("until must be a RFC 3339 time or \"infinity\"");
        if (ban.until != 0 && ban.until <= now_s) return bad("until is in the past");
    }
    if (!ctx.broker->add_ban(ban)) return now(error_response(409, "ALREADY_EXISTS", "already banned"));
    return when_durable(ctx, json_response(200, ban_json(ban)),
                        "the ban is in force, but the store could not write it yet (retrying)");
}

Outcome banned_delete(ApiContext& ctx, const std::string& as, const std::string& who) {
    broker::Ban::Kind kind;
    if (!broker::parse_ban_kind(as, kind)) {
        return now(error_response(400, "BAD_REQUEST", "as must be clientid, username or peerhost"));
    }
    if (!ctx.broker->remove_ban(kind, who)) return not_found("not banned");
    return when_durable(ctx, no_content().response,
                        "the ban is lifted, but the store could not record it yet (retrying)");
}

// ---- stats, metrics, nodes

// EMQX's names for the broker's counters: /api/v5/stats (gauges) and
// /api/v5/metrics (totals), each one entry per node.
enum class CounterKind : std::uint8_t { stats, metrics };

struct CounterField {
    CounterKind kind;
    const char* name;
    std::uint64_t value;
};

std::vector<CounterField> counter_fields(const broker::Counters& c) {
    using K = CounterKind;
    const std::uint64_t sessions = c.clients_connected + c.clients_disconnected;
    return {
        {K::stats, "connections.count", sessions},
        {K::stats, "connections.max", c.clients_maximum},
        {K::stats, "live_connections.count", c.clients_connected},
        {K::stats, "live_connections.max", c.clients_maximum},
        {K::stats, "sessions.count", sessions},
        {K::stats, "subscriptions.count", c.subscriptions},
        {K::stats, "subscriptions.shared.count", c.shared_subscriptions},
        {K::stats, "retained.count", c.retained_messages},
        {K::stats, "topics.count", c.subscriptions},
        {K::metrics, "bytes.received", c.bytes_received},
        {K::metrics, "bytes.sent", c.bytes_sent},
        {K::metrics, "packets.received", c.messages_received},
        {K::metrics, "packets.sent", c.messages_sent},
        {K::metrics, "packets.publish.received", c.publish_received},
        {K::metrics, "packets.publish.sent", c.publish_sent},
        {K::metrics, "messages.received", c.publish_received},
        {K::metrics, "messages.sent", c.publish_sent},
        {K::metrics, "messages.dropped", c.publish_dropped},
        {K::metrics, "messages.retained", c.retained_messages},
        {K::metrics, "messages.queued", c.queued_messages},
        {K::metrics, "messages.inflight", c.inflight_messages},
        {K::metrics, "client.connected", c.connections_total},
        {K::metrics, "session.expired", c.clients_expired},
    };
}

Json counters_json(ApiContext& ctx, CounterKind kind) {
    Json j;
    j["node"] = ctx.node;
    for (const CounterField& f : counter_fields(ctx.broker->counters())) {
        if (f.kind == kind) j[f.name] = f.value;
    }
    return j;
}

Json node_json(ApiContext& ctx) {
    const broker::Counters c = ctx.broker->counters();
    Json j;
    j["node"] = ctx.node;
    j["node_status"] = "running";
    j["version"] = ctx.version;
    j["edition"] = "mqttools";
    j["role"] = "core";
    j["uptime"] = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                       ctx.started)
                      .count();
    j["connections"] = c.clients_connected + c.clients_disconnected;
    j["live_connections"] = c.clients_connected;
    j["cluster"] = ctx.broker->cluster() != nullptr;
    return j;
}

// ?aggregate=true: one object; else a list with one entry per node.
Outcome per_node(const http::Request& req, Json one) {
    Query q;
    http::Response error;
    if (!q.parse(req.query, error)) return now(std::move(error));
    if (q.get("aggregate") == "true") {
        one.erase("node");
        return now(json_response(200, one));
    }
    return now(json_response(200, Json::array({std::move(one)})));
}

}  // namespace

Outcome handle_api(ApiContext& ctx, const http::Request& req) {
    if (!req.from_peer && ctx.broker->admin_link()) {
        if (auto job = cluster_job(ctx, req)) return Outcome{{}, std::move(job)};
    }
    const auto segs = segments(req.target);
    if (!segs) return now(error_response(400, "BAD_REQUEST", "malformed percent-escape in the path"));
    const auto& s = *segs;
    const std::string& m = req.method;
    const bool get = m == "GET" || m == "HEAD";
    if (s.size() == 1 && s[0] == "metrics") {
        if (!get) return method_not_allowed("GET");
        http::Response r;
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        r.body = ctx.metrics_text ? ctx.metrics_text() : std::string();
        return now(std::move(r));
    }
    if (s.size() < 3 || s[0] != "api" || s[1] != "v5") return not_found();
    const std::string& what = s[2];
    if (what == "clients") {
        if (s.size() == 3) {
            if (!get) return method_not_allowed("GET");
            http::Response error;
            auto job = clients_job(ctx, req, error);
            if (!job) return now(std::move(error));
            return Outcome{{}, std::move(job)};
        }
        if (s.size() == 4) {
            if (get) return get_client(ctx, s[3]);
            if (m == "DELETE") return kick_client(ctx, s[3]);
            return method_not_allowed("GET, DELETE");
        }
        if (s.size() == 5 && s[4] == "subscriptions") {
            if (!get) return method_not_allowed("GET");
            return client_subscriptions(ctx, s[3]);
        }
        return not_found();
    }
    if (what == "subscriptions" && s.size() == 3) {
        if (!get) return method_not_allowed("GET");
        http::Response error;
        auto job = subscriptions_job(ctx, req, error);
        if (!job) return now(std::move(error));
        return Outcome{{}, std::move(job)};
    }
    if (what == "publish" && s.size() == 3) {
        if (m != "POST") return method_not_allowed("POST");
        return publish(ctx, req);
    }
    if (what == "mqtt" && s.size() >= 4 && s[3] == "retainer") {
        if (s.size() == 5 && s[4] == "messages") {
            if (!get) return method_not_allowed("GET");
            return retained_list(ctx, req);
        }
        if (s.size() >= 6 && s[4] == "message") return retained_one(ctx, req);
        return not_found();
    }
    if (what == "banned") {
        if (s.size() == 3) {
            if (get) return banned_list(ctx, req);
            if (m == "POST") return banned_add(ctx, req);
            return method_not_allowed("GET, POST");
        }
        if (s.size() == 5) {
            if (m != "DELETE") return method_not_allowed("DELETE");
            return banned_delete(ctx, s[3], s[4]);
        }
        return not_found();
    }
    if (s.size() == 3 && (what == "stats" || what == "metrics" || what == "nodes")) {
        if (!get) return method_not_allowed("GET");
        if (what == "stats") return per_node(req, counters_json(ctx, CounterKind::stats));
        if (what == "metrics") return per_node(req, counters_json(ctx, CounterKind::metrics));
        return now(json_response(200, Json::array({node_json(ctx)})));
    }
    if (what == "nodes" && s.size() == 4) {
        if (!get) return method_not_allowed("GET");
        if (s[3] != ctx.node) return not_found("no such node");
        return now(json_response(200, node_json(ctx)));
    }
    return not_found();
}

}  // namespace mqttools::admin
