// The API of a cluster (issue 27): any node answers for all of them, as
// EMQX's does. Each node answers for itself (its request marked
// from_peer); the asking node merges:
//   GET /api/v5/clients, /api/v5/subscriptions   one page over every node:
//       the nodes' counts first (this node, then the others by name), then
//       each node's share of the page (_offset, limit), joined in order
//   GET|DELETE /api/v5/clients/{id}[/subscriptions], GET /api/v5/nodes/{n}
//       this node, else the node that has it (a kick reaches its owner)
//   GET /api/v5/nodes, /api/v5/stats, /api/v5/metrics
//       every node's entry; with aggregate=true the sums
// A node that does not answer in time is left out. Bans and dynamic
// security are replicated instead (admin_link.hpp): every node answers
// them from its own copy.
#include <algorithm>

#include "admin/api_util.hpp"
#include "broker/broker.hpp"

namespace mqttools::admin {

namespace {

constexpr auto list_timeout = std::chrono::seconds(15);
constexpr auto ask_timeout = std::chrono::seconds(5);

using Replies = std::vector<broker::PeerReply>;

// This node's own answer to a request, stepped like the server steps it.
class Local {
public:
    void start(ApiContext& ctx, http::Request req) {
        req.from_peer = true;
        Outcome o = handle_api(ctx, req);
        job_ = std::move(o.job);
        if (!job_) {
            response_ = std::move(o.response);
            done_ = true;
        }
    }
    bool step() {
        if (!done_ && (!job_ || job_->step(response_))) {
            done_ = true;
            job_.reset();
        }
        return done_;
    }
    bool done() const { return done_; }
    http::Response& response() { return response_; }

private:
    std::unique_ptr<Job> job_;
    http::Response response_;
    bool done_ = false;
};

// Replies to one ask(): shared with the link's callback, which may come
// after the job is gone (its HTTP client left).
struct Slot {
    bool done = false;
    Replies replies;
};

std::shared_ptr<Slot> ask(ApiContext& ctx, std::string_view node, const http::Request& req, std::string target,
                          std::chrono::milliseconds timeout) {
    auto slot = std::make_shared<Slot>();
    broker::PeerRequest pr{req.method, std::move(target), req.body};
    ctx.broker->admin_link()->ask(node, std::move(pr), timeout, [slot](Replies r) {
        slot->replies = std::move(r);
        slot->done = true;
    });
    return slot;
}

// The query without `drop`'s parameters, then `extra`.
std::string requery(const http::Request& req, std::initializer_list<std::string_view> drop, std::string_view extra) {
    std::string out(req.path);
    std::string q;
    std::string_view rest = req.query;
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        const std::string_view item = rest.substr(0, amp);
        rest.remove_prefix(amp == std::string_view::npos ? rest.size() : amp + 1);
        const std::string_view name = item.substr(0, item.find('='));
        if (item.empty() || std::find(drop.begin(), drop.end(), name) != drop.end()) continue;
        q.append(item).push_back('&');
    }
    q += extra;
    return out + "?" + q;
}

http::Response with_body(int status, std::string body) {
    http::Response r;
    r.status = status;
    r.body = std::move(body);
    return r;
}

// {"data":[...],"meta":{...}} as the listings write it: the entries'
// text and the count.
bool split_page(std::string_view body, std::string_view& items, std::size_t& count) {
    constexpr std::string_view head = "{\"data\":[";
    constexpr std::string_view meta = "],\"meta\":";
    const auto at = body.rfind(meta);
    if (body.rfind(head, 0) != 0 || at == std::string_view::npos) return false;
    items = body.substr(head.size(), at - head.size());
    const Json m = Json::parse(body.substr(at + meta.size(), body.size() - at - meta.size() - 1), nullptr, false);
    if (!m.is_object() || !m.contains("count") || !m["count"].is_number_unsigned()) return false;
    count = m["count"].get<std::size_t>();
    return true;
}

// GET /api/v5/clients and /api/v5/subscriptions over every node.
class ListJob final : public Job {
public:
    ListJob(ApiContext& ctx, const http::Request& req) : ctx_(ctx), req_(req) {}

    bool waiting() const override { return phase_ != Phase::start && local_.done(); }

    bool step(http::Response& out) override {
        switch (phase_) {
            case Phase::start: {
                http::Response error;
                Query q;
                if (!q.parse(req_.query, error) || !paging_.parse(q, error)) {
                    out = std::move(error);
                    return true;
                }
                const std::string count_target = requery(req_, {"page", "limit", "_offset"}, "page=1&limit=1");
                http::Request local = req_;
                local.target = count_target;
                local.query = count_target.substr(count_target.find('?') + 1);
                local_.start(ctx_, std::move(local));
                counts_ = ask(ctx_, {}, req_, count_target, list_timeout);
                phase_ = Phase::counting;
                return false;
            }
            case Phase::counting: {
                if (!local_.step() || !counts_->done) return false;
                if (local_.response().status != 200) {
                    out = std::move(local_.response());  // a bad parameter: 400
                    return true;
                }
                std::string_view items;
                std::size_t count = 0;
                split_page(local_.response().body, items, count);
                nodes_.push_back(Node{{}, count, nullptr});
                for (const auto& r : counts_->replies) {
                    std::size_t n = 0;
                    if (r.status == 200 && split_page(r.body, items, n)) nodes_.push_back(Node{r.node, n, nullptr});
                }
                start_pages();
                phase_ = Phase::paging;
                return false;
            }
            case Phase::paging: {
                if (!local_.step()) return false;
                for (const auto& n : nodes_) {
                    if (n.slot && !n.slot->done) return false;
                }
                out = assemble();
                return true;
            }
        }
        return true;
    }

private:
    enum class Phase { start, counting, paging };
    struct Node {
        std::string name;  // "" = this node
        std::size_t count = 0;
        std::shared_ptr<Slot> slot;
    };

    // Each node's share of [first, first + limit) in node order.
    void start_pages() {
        const std::size_t first = paging_.first(), end = first + paging_.limit;
        std::size_t base = 0;
        local_ = Local();
        bool local_asked = false;
        for (auto& n : nodes_) {
            const std::size_t from = std::max(first, base), to = std::min(end, base + n.count);
            base += n.count;
            if (from >= to) continue;
            const std::string extra =
                "page=1&_offset=" + std::to_string(from - (base - n.count)) + "&limit=" + std::to_string(to - from);
            const std::string target = requery(req_, {"page", "limit", "_offset"}, extra);
            if (n.name.empty()) {
                http::Request local = req_;
                local.target = target;
                local.query = target.substr(target.find('?') + 1);
                local_.start(ctx_, std::move(local));
                local_asked = true;
            } else {
                n.slot = ask(ctx_, n.name, req_, target, list_timeout);
            }
        }
        total_ = base;
        local_skipped_ = !local_asked;  // local_ answers at once then, with nothing
    }

    http::Response assemble() {
        std::string items;
        for (const auto& n : nodes_) {
            std::string_view part;
            std::size_t count = 0;
            if (n.name.empty()) {
                if (local_skipped_ || !split_page(local_.response().body, part, count)) continue;
            } else {
                if (!n.slot || n.slot->replies.empty() || n.slot->replies[0].status != 200 ||
                    !split_page(n.slot->replies[0].body, part, count))
                    continue;
            }
            if (part.empty()) continue;
            if (!items.empty()) items += ',';
            items += part;
        }
        http::Response r;
        r.body.reserve(items.size() + 96);
        r.body += "{\"data\":[";
        r.body += items;
        r.body += "],\"meta\":";
        Paging shown = paging_;
        shown.offset.reset();
        r.body += shown.meta(total_).dump();
        r.body += '}';
        return r;
    }

    ApiContext& ctx_;
    http::Request req_;
    Paging paging_;
    Phase phase_ = Phase::start;
    Local local_;
    bool local_skipped_ = false;
    std::shared_ptr<Slot> counts_;
    std::vector<Node> nodes_;
    std::size_t total_ = 0;
};

// One client (or one node): here, else the node that has it.
class FindJob final : public Job {
public:
    FindJob(ApiContext& ctx, const http::Request& req, std::string node)
        : ctx_(ctx), req_(req), node_(std::move(node)) {}

    bool waiting() const override { return slot_ != nullptr; }

    bool step(http::Response& out) override {
        if (!started_) {
            started_ = true;
            if (node_.empty() || node_ == ctx_.node) {
                local_.start(ctx_, req_);
            } else {
                slot_ = ask(ctx_, node_, req_, req_.target, ask_timeout);
                return false;
            }
        }
        if (!slot_) {
            if (!local_.step()) return false;
            if (local_.response().status != 404 || !node_.empty()) {
                out = std::move(local_.response());
                return true;
            }
            slot_ = ask(ctx_, {}, req_, req_.target, ask_timeout);
            return false;
        }
        if (!slot_->done) return false;
        for (auto& r : slot_->replies) {
            if (r.status != 0 && r.status != 404) {
                out = with_body(r.status, std::move(r.body));
                if (r.status == 204) out.content_type.clear();
                return true;
            }
        }
        if (local_.done()) {
            out = std::move(local_.response());
        } else {
            out = error_response(404, "NOT_FOUND", "no such node");
        }
        return true;
    }

private:
    ApiContext& ctx_;
    http::Request req_;
    std::string node_;  // nodes/{node}: ask only that one
    bool started_ = false;
    Local local_;
    std::shared_ptr<Slot> slot_;
};

// nodes, stats, metrics: every node's entries, or their sums.
class GatherJob final : public Job {
public:
    GatherJob(ApiContext& ctx, const http::Request& req) : ctx_(ctx), req_(req) {}

    bool waiting() const override { return slot_ && local_.done(); }

    bool step(http::Response& out) override {
        if (!slot_) {
            local_.start(ctx_, req_);
            slot_ = ask(ctx_, {}, req_, req_.target, ask_timeout);
        }
        if (!local_.step() || !slot_->done) return false;
        if (local_.response().status != 200) {
            out = std::move(local_.response());
            return true;
        }
        Json all = Json::parse(local_.response().body, nullptr, false);
        for (const auto& r : slot_->replies) {
            if (r.status != 200) continue;
            const Json theirs = Json::parse(r.body, nullptr, false);
            if (all.is_array() && theirs.is_array()) {
                for (const auto& e : theirs) all.push_back(e);
            } else if (all.is_object() && theirs.is_object()) {
                for (const auto& [k, v] : theirs.items()) {
                    if (v.is_number_unsigned() && all.contains(k) && all[k].is_number_unsigned()) {
                        all[k] = all[k].get<std::uint64_t>() + v.get<std::uint64_t>();
                    }
                }
            }
        }
        out = json_response(200, all);
        return true;
    }

private:
    ApiContext& ctx_;
    http::Request req_;
    Local local_;
    std::shared_ptr<Slot> slot_;
};

// The raw path's segments (only counted and compared here).
std::vector<std::string_view> raw_segments(std::string_view target) {
    std::string_view path = target.substr(0, target.find('?'));
    std::vector<std::string_view> out;
    while (!path.empty()) {
        const auto slash = path.find('/');
        if (slash != 0) out.push_back(path.substr(0, slash));
        path.remove_prefix(slash == std::string_view::npos ? path.size() : slash + 1);
    }
    return out;
}

}  // namespace

std::unique_ptr<Job> cluster_job(ApiContext& ctx, const http::Request& req) {
    const auto s = raw_segments(req.target);
    if (s.size() < 3 || s[0] != "api" || s[1] != "v5") return nullptr;
    const bool get = req.method == "GET" || req.method == "HEAD";
    const std::string_view what = s[2];
    if (get && s.size() == 3 && (what == "clients" || what == "subscriptions")) {
        return std::make_unique<ListJob>(ctx, req);
    }
    if (what == "clients" && ((s.size() == 4 && (get || req.method == "DELETE")) ||
                              (s.size() == 5 && get && s[4] == "subscriptions"))) {
        return std::make_unique<FindJob>(ctx, req, std::string());
    }
    if (get && s.size() == 3 && (what == "nodes" || what == "stats" || what == "metrics")) {
        return std::make_unique<GatherJob>(ctx, req);
    }
    if (get && s.size() == 4 && what == "nodes") {
        std::string node;
        if (!http::percent_decode(s[3], node, false)) return nullptr;
        return std::make_unique<FindJob>(ctx, req, node);
    }
    return nullptr;
}

struct PeerApi::Running {
    Local local;
    broker::AdminLink::Respond respond;
    net::Reactor::TimerId timer{};
};

PeerApi::PeerApi(net::Reactor& reactor, ApiContext context, broker::AdminLink& link)
    : reactor_(reactor), ctx_(std::move(context)), link_(link) {
    link_.serve([this](broker::PeerRequest pr, broker::AdminLink::Respond respond) {
        http::Request req;
        req.method = std::move(pr.method);
        req.target = std::move(pr.target);
        const auto q = req.target.find('?');
        std::string raw_path = req.target.substr(0, q);
        if (!http::percent_decode(raw_path, req.path, false)) req.path = raw_path;
        if (q != std::string::npos) req.query = req.target.substr(q + 1);
        req.body = std::move(pr.body);
        const std::uint64_t id = next_++;
        auto run = std::make_unique<Running>();
        run->respond = std::move(respond);
        run->local.start(ctx_, std::move(req));
        running_.emplace(id, std::move(run));
        step(id);
    });
}

PeerApi::~PeerApi() {
    link_.serve(nullptr);
    for (auto& [id, run] : running_) reactor_.cancel_timer(run->timer);
}

void PeerApi::step(std::uint64_t id) {
    auto it = running_.find(id);
    if (it == running_.end()) return;
    Running& run = *it->second;
    run.timer = {};
    if (!run.local.step()) {
        run.timer = reactor_.add_timer_after(std::chrono::microseconds(1), [this, id] { step(id); });
        return;
    }
    http::Response& r = run.local.response();
    run.respond(r.status, std::move(r.body));
    running_.erase(it);
}

}  // namespace mqttools::admin
