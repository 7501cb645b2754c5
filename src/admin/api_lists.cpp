// GET /api/v5/clients and GET /api/v5/subscriptions: the session table is
// scanned a slice of at most kStepTime per reactor turn (SessionStore::
// scan), so listing 100,000 clients never holds the MQTT clients up for
// more than that at a time. The count of matches and the
// page's entries are gathered in the same pass.
#include <algorithm>
#include <chrono>

#include "admin/api_util.hpp"
#include "broker/broker.hpp"
#include "broker/connection.hpp"
#include "broker/auth/topic_filter.hpp"
#include "net/socket.hpp"

namespace mqttools::admin {

namespace {

bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

// A paged listing gathered over the session table, a slice per step:
// visit() offers each session's entries to add(), which counts them and
// keeps those on the requested page.
class PagedScan : public Job {
public:
    PagedScan(ApiContext& ctx, Paging paging) : ctx_(ctx), paging_(paging) { body_ = "{\"data\":["; }

    bool step(http::Response& out) final {
        // A slice of at most kStepTime: sessions are visited kScanChunk at
        // a time until it is used up. Skipping sessions before the page
        // costs little; writing entries more (about a microsecond each):
        // the clock, not a count, keeps either under the bound.
        const auto start = std::chrono::steady_clock::now();
        bool more = true;
        while (more) {
            more = ctx_.broker->sessions().scan(bucket_, kScanChunk, [this](const broker::Session& s) {
                if (!s.bridge) visit(s);
            });
            if (std::chrono::steady_clock::now() - start >= kStepTime) break;
        }
        if (more) return false;
        // The entries were written into the body as they came (a
        // 10,000-entry page is about 3 MB: never built in one turn, and
        // handed over without a copy).
        body_ += "],\"meta\":";
        body_ += paging_.meta(count_).dump();
        body_ += '}';
        out = http::Response{};
        out.body = std::move(body_);
        return true;
    }

protected:
    virtual void visit(const broker::Session& s) = 0;
    // An entry: counted, and written with `write(body)` when on the page.
    template <class Write>
    void add(Write&& write) {
        if (count_ >= paging_.first() && kept_ < paging_.limit) {
            // Room for the page at once (a client is about 300 bytes): no
            // growing by copying MBs within one turn.
            if (kept_ == 0) body_.reserve(body_.size() + paging_.limit * 320 + 128);
            if (kept_++ != 0) body_ += ',';
            write(body_);
        }
        ++count_;
    }
    ApiContext& ctx_;

private:
    Paging paging_;
    std::size_t bucket_ = 0;
    std::size_t count_ = 0;
    std::size_t kept_ = 0;
    std::string body_;
};

class ClientsJob final : public PagedScan {
public:
    using PagedScan::PagedScan;

    std::vector<std::string> clientids;  // clientid=... (any of them)
    std::optional<std::string> username, like_clientid, like_username, ip_address;
    std::optional<bool> connected;  // conn_state
    std::optional<int> proto_ver;

private:
    void visit(const broker::Session& s) override {
        if (matches(s)) add([&](std::string& out) { append_client_json(out, s, ctx_.node); });
    }

    bool matches(const broker::Session& s) const {
        const broker::Connection* c = s.connection;
        const bool live = c && c->state == broker::Connection::State::connected;
        if (!clientids.empty() && std::find(clientids.begin(), clientids.end(), s.client_id) == clientids.end()) {
            return false;
        }
        if (like_clientid && !contains(s.client_id, *like_clientid)) return false;
        if (connected && *connected != live) return false;
        if (username || like_username || ip_address || proto_ver) {
            if (!live) return false;  // a session away has no connection to say these
            if (username && c->username != *username) return false;
            if (like_username && !contains(c->username, *like_username)) return false;
            if (proto_ver && *proto_ver != static_cast<int>(c->version)) return false;
            if (ip_address && broker::split_peer(net::peer_address(c->fd())).first != *ip_address) return false;
        }
        return true;
    }
};

class SubscriptionsJob final : public PagedScan {
public:
    using PagedScan::PagedScan;

    std::optional<std::string> clientid, topic, match_topic, share_group;
    std::optional<int> qos;

private:
    void visit(const broker::Session& s) override {
        if (clientid && s.client_id != *clientid) return;
        for (const auto& [filter, options] : s.subscriptions) {
            if (matches(filter, options)) {
                add([&](std::string& out) { append_subscription_json(out, s.client_id, filter, options, ctx_.node); });
            }
        }
    }

    bool matches(std::string_view filter, const broker::SubscriptionOptions& o) const {
        if (topic && filter != *topic) return false;
        if (qos && *qos != static_cast<int>(o.qos)) return false;
        if (share_group) {
            const std::string prefix = "$share/" + *share_group + "/";
            if (filter.rfind(prefix, 0) != 0) return false;
        }
        if (match_topic) {
            // Subscriptions whose filter matches this topic name.
            std::string_view f = filter;
            if (f.rfind("$share/", 0) == 0) {
                const auto slash = f.find('/', 7);
                f = slash == std::string_view::npos ? std::string_view() : f.substr(slash + 1);
            }
            if (!auth::topic_matches(f, *match_topic)) return false;
        }
        return true;
    }
};

}  // namespace

std::unique_ptr<Job> clients_job(ApiContext& ctx, const http::Request& request, http::Response& error) {
    Query q;
    Paging paging;
    if (!q.parse(request.query, error) || !paging.parse(q, error)) return nullptr;
    auto job = std::make_unique<ClientsJob>(ctx, paging);
    job->clientids = q.all("clientid");
    job->username = q.get("username");
    job->like_clientid = q.get("like_clientid");
    job->like_username = q.get("like_username");
    job->ip_address = q.get("ip_address");
    if (auto state = q.get("conn_state")) {
        if (*state != "connected" && *state != "disconnected") {
            error = error_response(400, "BAD_REQUEST", "conn_state must be connected or disconnected");
            return nullptr;
        }
        job->connected = *state == "connected";
    }
    if (q.get("proto_ver")) {
        std::int64_t v = 0;
        if (!q.integer("proto_ver", 3, 5, v, error)) return nullptr;
        job->proto_ver = static_cast<int>(v);
    }
    return job;
}

std::unique_ptr<Job> subscriptions_job(ApiContext& ctx, const http::Request& request, http::Response& error) {
    Query q;
    Paging paging;
    if (!q.parse(request.query, error) || !paging.parse(q, error)) return nullptr;
    auto job = std::make_unique<SubscriptionsJob>(ctx, paging);
    job->clientid = q.get("clientid");
    job->topic = q.get("topic");
    job->match_topic = q.get("match_topic");
    job->share_group = q.get("share_group");
    if (q.get("qos")) {
        std::int64_t v = 0;
        if (!q.integer("qos", 0, 2, v, error)) return nullptr;
        job->qos = static_cast<int>(v);
    }
    return job;
}

}  // namespace mqttools::admin
