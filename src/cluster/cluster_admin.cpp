#include "cluster/cluster_admin.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include <nats/nats.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cluster/nats_kv.hpp"

namespace mqttools::cluster {

namespace {

using Json = nlohmann::json;

constexpr auto heartbeat_every = std::chrono::seconds(2);
constexpr auto peer_lost_after = std::chrono::seconds(8);
constexpr std::size_t part_size = 512 * 1024;  // under NATS' default max_payload (1 MiB)

std::string hex(std::string_view s) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(s.size() * 2);
    for (const unsigned char ch : s) {
        out += digits[ch >> 4];
        out += digits[ch & 15];
    }
    return out;
}

std::optional<std::string> unhex(std::string_view s) {
    if (s.size() % 2 != 0) return std::nullopt;
    auto value = [](char ch) -> int {
        if (ch >= '0' && ch <= '9') return ch - '0';
        if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
        return -1;
    };
    std::string out;
    for (std::size_t i = 0; i < s.size(); i += 2) {
        const int hi = value(s[i]), lo = value(s[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
    }
    return out;
}

std::string ban_key(broker::Ban::Kind as, std::string_view who) {
    return "ban." + std::string(broker::ban_kind_name(as)) + "." + hex(who);
}

std::string bucket_name(std::string_view prefix) {
    std::string name = "MQTT_ADMIN_";
    for (const char ch : prefix) name.push_back(ch == '.' ? '_' : ch);
    return name;
}

}  // namespace

struct ClusterAdmin::Event {
    enum class Kind : std::uint8_t { heartbeat, request, reply, entry, initial_done };
    Kind kind = Kind::heartbeat;
    std::string a;  // node id / reply subject / subject / key
    std::string b;  // payload / value
    bool deleted = false;
    std::uint64_t revision = 0;
};

struct ClusterAdmin::Shared {
    struct Op {
        enum class Kind : std::uint8_t { publish, kv_put, kv_create, kv_delete };
        Kind kind = Kind::publish;
        std::string subject;  // or the key
        std::string reply;
        std::string data;
    };

    config::Cluster config;
    std::string node_id;
    std::string prefix;
    std::string hb_subject, request_subject, reply_root;
    int event_fd = -1;

    std::mutex in_mu;
    std::vector<Event> in;
    std::mutex out_mu;
    std::condition_variable out_cv;
    std::deque<Op> out;
    bool stop = false;
    std::atomic<bool> stopping{false};

    natsConnection* nc = nullptr;  // the worker's; the watcher reads kv only
    jsCtx* js = nullptr;
    std::atomic<kvStore*> kv{nullptr};
    kvWatcher* watcher = nullptr;
    std::mutex watcher_mu;
    std::vector<natsSubscription*> subs;
    std::thread worker, watch_thread;

    void post(Event e) {
        {
            std::lock_guard lock(in_mu);
            in.push_back(std::move(e));
        }
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto n = ::write(event_fd, &one, sizeof one);
    }
    void push(Op op) {
        {
            std::lock_guard lock(out_mu);
            out.push_back(std::move(op));
        }
        out_cv.notify_one();
    }

    static void on_msg(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
        auto* self = static_cast<Shared*>(closure);
        Event e;
        const std::string_view subject = natsMsg_GetSubject(msg);
        const char* data = natsMsg_GetData(msg);
        const std::string_view payload(data ? data : "", static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
        if (subject == self->hb_subject) {
            e.kind = Event::Kind::heartbeat;
            e.a = payload;
        } else if (subject == self->request_subject) {
            e.kind = Event::Kind::request;
            const char* reply = natsMsg_GetReply(msg);
            e.a = reply ? reply : "";
            e.b = payload;
        } else {
            e.kind = Event::Kind::reply;
            e.a = subject;
            e.b = payload;
        }
        natsMsg_Destroy(msg);
        self->post(std::move(e));
    }

    bool connect() {
        natsOptions* o = nullptr;
        if (natsOptions_Create(&o) != NATS_OK) return false;
        std::vector<const char*> urls;
        for (const auto& u : config.nats_urls) urls.push_back(u.c_str());
        const std::string name = "mqttoolsd admin " + node_id;
        bool tls = !config.cafile.empty() || !config.certfile.empty();
        for (const auto& u : config.nats_urls) tls = tls || u.rfind("tls://", 0) == 0;
        natsStatus st = natsOptions_SetServers(o, urls.data(), static_cast<int>(urls.size()));
        if (st == NATS_OK) st = natsOptions_SetName(o, name.c_str());
        if (st == NATS_OK) st = natsOptions_SetMaxReconnect(o, -1);
        if (st == NATS_OK) st = natsOptions_SetReconnectWait(o, 500);
        if (st == NATS_OK) st = natsOptions_SetSendAsap(o, true);
        if (st == NATS_OK && !config.credentials.empty())
            st = natsOptions_SetUserCredentialsFromFiles(o, config.credentials.c_str(), nullptr);
        if (st == NATS_OK && config.credentials.empty() && !config.username.empty())
            st = natsOptions_SetUserInfo(o, config.username.c_str(), config.password.c_str());
        if (st == NATS_OK && tls) st = natsOptions_SetSecure(o, true);
        if (st == NATS_OK && !config.cafile.empty()) st = natsOptions_LoadCATrustedCertificates(o, config.cafile.c_str());
        if (st == NATS_OK && !config.certfile.empty())
            st = natsOptions_LoadCertificatesChain(o, config.certfile.c_str(), config.keyfile.c_str());
        if (st == NATS_OK) st = natsConnection_Connect(&nc, o);
        natsOptions_Destroy(o);
        if (st != NATS_OK) {
            nc = nullptr;
            return false;
        }
        for (const std::string& subject : {hb_subject, request_subject, reply_root + ".*"}) {
            natsSubscription* sub = nullptr;
            if (natsConnection_Subscribe(&sub, nc, subject.c_str(), on_msg, this) == NATS_OK) subs.push_back(sub);
        }
        return true;
    }

    // The bucket, then its watcher; retried every second until they work.
    void setup_bucket() {
        if (!js) {
            jsOptions jo;
            jsOptions_Init(&jo);
            jo.Wait = 2000;
            if (natsConnection_JetStream(&js, nc, &jo) != NATS_OK) {
                js = nullptr;
                return;
            }
        }
        kvStore* store = open_bucket(js, bucket_name(prefix), config.replicas);
        if (!store) return;
        kv.store(store);
        watch_thread = std::thread([this] { watch_main(); });
    }

    void run_op(Op& op, kvStore* store) {
        switch (op.kind) {
            case Op::Kind::publish:
                // (PublishRequest refuses an empty reply subject.)
                if (op.reply.empty()) {
                    natsConnection_Publish(nc, op.subject.c_str(), op.data.data(), static_cast<int>(op.data.size()));
                } else {
                    natsConnection_PublishRequest(nc, op.subject.c_str(), op.reply.c_str(), op.data.data(),
                                                  static_cast<int>(op.data.size()));
                }
                break;
            case Op::Kind::kv_put: {
                std::uint64_t rev = 0;
                if (kvStore_Put(&rev, store, op.subject.c_str(), op.data.data(), static_cast<int>(op.data.size())) !=
                    NATS_OK)
                    spdlog::warn("Cluster: could not write {} to the admin bucket: {}", op.subject, nats_GetLastError(nullptr));
                break;
            }
            case Op::Kind::kv_create: {
                std::uint64_t rev = 0;
                kvStore_Create(&rev, store, op.subject.c_str(), op.data.data(), static_cast<int>(op.data.size()));
                break;
            }
            case Op::Kind::kv_delete:
                kvStore_Delete(store, op.subject.c_str());
                break;
        }
    }

    void worker_main() {
        pthread_setname_np(pthread_self(), "mq-admin");
        auto next_try = std::chrono::steady_clock::now();
        auto next_hb = next_try;
        std::deque<Op> ops, waiting_kv;
        for (;;) {
            {
                std::unique_lock lock(out_mu);
                const auto wake = nc && kv.load() ? next_hb : std::min(next_try, next_hb);
                out_cv.wait_until(lock, wake, [&] { return stop || !out.empty(); });
                if (stop) break;
                for (auto& op : out) ops.push_back(std::move(op));
                out.clear();
            }
            const auto now = std::chrono::steady_clock::now();
            if (!nc || !kv.load()) {
                if (now >= next_try) {
                    next_try = now + std::chrono::seconds(1);
                    if (!nc) connect();
                    if (nc && !kv.load()) setup_bucket();
                }
            }
            if (!nc) {
                next_hb = next_try;
                // Requests and answers are for now: they go when NATS is
                // there; the bucket's changes wait for it.
                for (auto& op : ops) {
                    if (op.kind != Op::Kind::publish) waiting_kv.push_back(std::move(op));
                }
                ops.clear();
                continue;
            }
            if (now >= next_hb) {
                next_hb = now + heartbeat_every;
                natsConnection_Publish(nc, hb_subject.c_str(), node_id.data(), static_cast<int>(node_id.size()));
            }
            kvStore* store = kv.load();
            if (store) {
                for (auto& op : waiting_kv) run_op(op, store);
                waiting_kv.clear();
            }
            for (auto& op : ops) {
                if (op.kind != Op::Kind::publish && !store) {
                    waiting_kv.push_back(std::move(op));
                } else {
                    run_op(op, store);
                }
            }
            ops.clear();
        }
    }

    void watch_main() {
        pthread_setname_np(pthread_self(), "mq-admin-kv");
        kvStore* store = kv.load();
        while (!stopping.load()) {
            kvWatcher* w = nullptr;
            if (kvStore_WatchAll(&w, store, nullptr) != NATS_OK) {
                std::this_thread::sleep_for(std::chrono::seconds(1));
                continue;
            }
            {
                std::lock_guard lock(watcher_mu);
                watcher = w;
            }
            while (!stopping.load()) {
                kvEntry* e = nullptr;
                const natsStatus st = kvWatcher_Next(&e, w, 1000);
                if (st == NATS_TIMEOUT) continue;
                if (st != NATS_OK) break;
                Event ev;
                if (!e) {
                    ev.kind = Event::Kind::initial_done;
                } else {
                    ev.kind = Event::Kind::entry;
                    ev.a = kvEntry_Key(e);
                    ev.deleted = kvEntry_Operation(e) != kvOp_Put;
                    ev.revision = kvEntry_Revision(e);
                    const void* v = kvEntry_Value(e);
                    if (v) ev.b.assign(static_cast<const char*>(v), static_cast<std::size_t>(kvEntry_ValueLen(e)));
                    kvEntry_Destroy(e);
                }
                post(std::move(ev));
            }
            {
                std::lock_guard lock(watcher_mu);
                watcher = nullptr;
            }
            kvWatcher_Destroy(w);
        }
    }
};

std::unique_ptr<ClusterAdmin> ClusterAdmin::start(net::Reactor& reactor, broker::Broker& broker,
                                                  const config::Cluster& config, std::string node_id,
                                                  std::string& error) {
    std::unique_ptr<ClusterAdmin> self(new ClusterAdmin(reactor, broker, std::move(node_id)));
    Shared& s = *self->shared_;
    s.config = config;
    s.node_id = self->node_id_;
    s.prefix = config.subject_prefix;
    s.hb_subject = s.prefix + ".admin.hb";
    s.request_subject = s.prefix + ".admin.req." + hex(s.node_id);
    s.reply_root = s.prefix + ".admin.rep." + hex(s.node_id);
    self->eventfd_ = net::UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!self->eventfd_) {
        error = "cluster admin link: cannot make an eventfd";
        return nullptr;
    }
    s.event_fd = self->eventfd_.get();
    reactor.add(s.event_fd, EPOLLIN, self.get());
    // Signals are the reactor's (signalfd): this thread, and those it and
    // libnats start, never take them.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    s.worker = std::thread([&s] { s.worker_main(); });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return self;
}

ClusterAdmin::ClusterAdmin(net::Reactor& reactor, broker::Broker& broker, std::string node_id)
    : reactor_(reactor), broker_(broker), node_id_(std::move(node_id)), shared_(std::make_unique<Shared>()) {}

ClusterAdmin::~ClusterAdmin() {
    Shared& s = *shared_;
    s.stopping.store(true);
    {
        std::lock_guard lock(s.out_mu);
        s.stop = true;
    }
    s.out_cv.notify_all();
    if (s.worker.joinable()) s.worker.join();
    {
        std::lock_guard lock(s.watcher_mu);
        if (s.watcher) kvWatcher_Stop(s.watcher);
    }
    if (s.watch_thread.joinable()) s.watch_thread.join();
    for (natsSubscription* sub : s.subs) {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
    if (kvStore* store = s.kv.load()) kvStore_Destroy(store);
    if (s.js) jsCtx_Destroy(s.js);
    if (s.nc) {
        natsConnection_Close(s.nc);
        natsConnection_Destroy(s.nc);
    }
    if (eventfd_) reactor_.remove(eventfd_.get());
    for (auto& [id, ask] : asks_) reactor_.cancel_timer(ask.timer);
}

std::vector<std::string> ClusterAdmin::peers() const {
    std::vector<std::string> out;
    const auto now = reactor_.now();
    for (const auto& [node, seen] : peers_) {
        if (now - seen < peer_lost_after) out.push_back(node);
    }
    return out;
}

void ClusterAdmin::ask(std::string_view node, broker::PeerRequest request, std::chrono::milliseconds timeout,
                       Replies done) {
    const std::vector<std::string> targets = node.empty() ? peers() : std::vector<std::string>{std::string(node)};
    const std::uint64_t id = next_ask_++;
    Ask& a = asks_[id];
    a.done = std::move(done);
    for (const auto& t : targets) a.replies.push_back(broker::PeerReply{t, 0, {}});
    // Answered from the reactor loop, never from inside this call.
    a.timer = reactor_.add_timer_after(targets.empty() ? std::chrono::milliseconds(0) : timeout,
                                       [this, id] { finish_ask(id); });
    std::string payload = request.method + " " + request.target + "\n" + request.body;
    for (const auto& t : targets) {
        Shared::Op op;
        op.subject = shared_->prefix + ".admin.req." + hex(t);
        op.reply = shared_->reply_root + "." + std::to_string(id);
        op.data = payload;
        shared_->push(std::move(op));
    }
}

void ClusterAdmin::finish_ask(std::uint64_t id) {
    auto it = asks_.find(id);
    if (it == asks_.end()) return;
    Ask a = std::move(it->second);
    asks_.erase(it);
    reactor_.cancel_timer(a.timer);
    a.done(std::move(a.replies));
}

void ClusterAdmin::on_io(std::uint32_t) {
    std::uint64_t n = 0;
    [[maybe_unused]] const auto r = ::read(eventfd_.get(), &n, sizeof n);
    std::vector<Event> events;
    {
        std::lock_guard lock(shared_->in_mu);
        events.swap(shared_->in);
    }
    for (Event& e : events) handle(e);
}

void ClusterAdmin::handle(Event& e) {
    switch (e.kind) {
        case Event::Kind::heartbeat: {
            if (e.a == node_id_ || e.a.empty()) return;
            const auto now = reactor_.now();
            auto it = peers_.find(e.a);
            const bool fresh = it == peers_.end() || now - it->second >= peer_lost_after;
            peers_[e.a] = now;
            if (fresh) {
                // A node we did not know: it learns of us at once too.
                spdlog::info("Cluster: node {} is up (management API).", e.a);
                Shared::Op op;
                op.subject = shared_->hb_subject;
                op.data = node_id_;
                shared_->push(std::move(op));
            }
            return;
        }
        case Event::Kind::request: on_request(std::move(e.a), e.b); return;
        case Event::Kind::reply: on_reply_part(e.a, e.b); return;
        case Event::Kind::entry:
            if (e.revision <= last_revision_) return;
            last_revision_ = e.revision;
            on_entry(e.a, e.deleted, e.b);
            return;
        case Event::Kind::initial_done: on_initial_done(); return;
    }
}

void ClusterAdmin::on_request(std::string reply_to, std::string_view payload) {
    if (reply_to.empty()) return;
    const auto nl = payload.find('\n');
    const std::string_view line = payload.substr(0, nl);
    const auto space = line.find(' ');
    broker::PeerRequest req;
    req.method = line.substr(0, space);
    req.target = space == std::string_view::npos ? std::string() : std::string(line.substr(space + 1));
    if (nl != std::string_view::npos) req.body = payload.substr(nl + 1);
    auto respond = [shared = shared_.get(), node = node_id_, reply_to](int status, std::string body) {
        const std::size_t count = body.empty() ? 1 : (body.size() + part_size - 1) / part_size;
        for (std::size_t i = 0; i < count; ++i) {
            Shared::Op op;
            op.subject = reply_to;
            op.data = std::to_string(status) + " " + std::to_string(i) + " " + std::to_string(count) + " " + node + "\n";
            op.data.append(body, std::min(body.size(), i * part_size), part_size);
            shared->push(std::move(op));
        }
    };
    if (!serve_ || req.target.empty()) {
        respond(503, R"({"code":"SERVICE_UNAVAILABLE","message":"this node does not serve the API"})");
        return;
    }
    serve_(std::move(req), std::move(respond));
}

void ClusterAdmin::on_reply_part(std::string_view subject, std::string_view payload) {
    const auto dot = subject.rfind('.');
    if (dot == std::string_view::npos) return;
    const std::uint64_t id = std::strtoull(std::string(subject.substr(dot + 1)).c_str(), nullptr, 10);
    auto it = asks_.find(id);
    if (it == asks_.end()) return;  // too late
    Ask& a = it->second;
    const auto nl = payload.find('\n');
    if (nl == std::string_view::npos) return;
    int status = 0;
    std::size_t part = 0, count = 0;
    int used = 0;
    const std::string head(payload.substr(0, nl));
    if (std::sscanf(head.c_str(), "%d %zu %zu %n", &status, &part, &count, &used) != 3 || count == 0 || part >= count)
        return;
    const std::string node = head.substr(static_cast<std::size_t>(used));
    auto reply = std::find_if(a.replies.begin(), a.replies.end(), [&](const auto& r) { return r.node == node; });
    if (reply == a.replies.end() || reply->status != 0) return;
    auto& parts = a.parts[node];
    if (parts.size() < count) parts.resize(count);
    parts[part] = std::string(payload.substr(nl + 1));
    parts[part].insert(0, 1, '#');  // marks the part as received (an empty part is valid)
    if (!std::all_of(parts.begin(), parts.end(), [](const auto& p) { return !p.empty(); })) return;
    for (const auto& p : parts) reply->body.append(p, 1);
    reply->status = status;
    a.parts.erase(node);
    if (++a.answered == a.replies.size()) finish_ask(id);
}

void ClusterAdmin::ban_changed(const broker::Ban& ban, bool removed) {
    Shared::Op op;
    op.subject = ban_key(ban.as, ban.who);
    if (removed) {
        op.kind = Shared::Op::Kind::kv_delete;
    } else {
        op.kind = Shared::Op::Kind::kv_put;
        op.data = Json{{"as", broker::ban_kind_name(ban.as)}, {"who", ban.who},   {"by", ban.by},
                       {"reason", ban.reason},                  {"at", ban.at}, {"until", ban.until}}
                      .dump(-1, ' ', false, Json::error_handler_t::replace);
    }
    shared_->push(std::move(op));
}

void ClusterAdmin::dynsec_changed(std::string_view document, const std::vector<std::string>& kick_usernames,
                                  bool kick_anonymous) {
    ++own_dynsec_puts_;
    Shared::Op op;
    op.kind = Shared::Op::Kind::kv_put;
    op.subject = "dynsec";
    op.data = Json{{"origin", node_id_}, {"kick", kick_usernames}, {"kick_anonymous", kick_anonymous}, {"doc", document}}
                  .dump(-1, ' ', false, Json::error_handler_t::replace);
    shared_->push(std::move(op));
}

void ClusterAdmin::on_entry(const std::string& key, bool deleted, std::string_view value) {
    if (key == "dynsec") {
        if (deleted) return;
        const Json j = Json::parse(value, nullptr, false);
        if (!j.is_object() || !j.contains("doc") || !j["doc"].is_string()) return;
        dynsec_in_bucket_ = true;
        if (j.value("origin", std::string()) == node_id_ && own_dynsec_puts_ > 0 && --own_dynsec_puts_ > 0) {
            return;  // a later change of ours is on its way
        }
        std::vector<std::string> kick;
        bool anonymous = false;
        if (initial_done_) {
            // At start-up the cluster's document replaces the file's; the
            // disconnects of past changes happened where they were made.
            if (auto k = j.find("kick"); k != j.end() && k->is_array()) {
                for (const auto& u : *k) {
                    if (u.is_string()) kick.push_back(u.get<std::string>());
                }
            }
            anonymous = j.value("kick_anonymous", false);
        }
        broker_.dynsec_from_cluster(j["doc"].get_ref<const std::string&>(), kick, anonymous);
        return;
    }
    if (key.rfind("ban.", 0) != 0) return;
    const auto dot = key.find('.', 4);
    if (dot == std::string::npos) return;
    broker::Ban ban;
    const auto who = unhex(std::string_view(key).substr(dot + 1));
    if (!broker::parse_ban_kind(key.substr(4, dot - 4), ban.as) || !who) return;
    ban.who = *who;
    if (!initial_done_) initial_bans_.insert(key);
    if (deleted) {
        broker_.ban_from_cluster(ban, true);
        return;
    }
    const Json j = Json::parse(value, nullptr, false);
    if (!j.is_object()) return;
    ban.by = j.value("by", std::string());
    ban.reason = j.value("reason", std::string());
    ban.at = j.value("at", std::int64_t{0});
    ban.until = j.value("until", std::int64_t{0});
    broker_.ban_from_cluster(ban, false);
}

// The bucket's state is in: what this node has that the cluster lacks goes
// there (its dynamic security document when the cluster has none; bans
// made while it was away from NATS).
void ClusterAdmin::on_initial_done() {
    if (initial_done_) return;  // a watcher set up again after a reconnect
    initial_done_ = true;
    if (!dynsec_in_bucket_) {
        const std::string doc = broker_.dynsec_document();
        if (!doc.empty()) {
            Shared::Op op;
            op.kind = Shared::Op::Kind::kv_create;
            op.subject = "dynsec";
            op.data = Json{{"origin", node_id_}, {"kick", Json::array()}, {"kick_anonymous", false}, {"doc", doc}}.dump(
                -1, ' ', false, Json::error_handler_t::replace);
            shared_->push(std::move(op));
        }
    }
    const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    for (const broker::Ban& b : broker_.bans().list(now_s)) {
        if (!initial_bans_.contains(ban_key(b.as, b.who))) ban_changed(b, false);
    }
    initial_bans_.clear();
}

}  // namespace mqttools::cluster
