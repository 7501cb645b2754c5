#include "cluster/nats_cluster.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include "cluster/subject_map.hpp"
#include "mqttools/codec.hpp"

namespace mqttools::cluster {

namespace {

// Tags on messages crossing to the reactor.
constexpr std::uint32_t tag_live = 0;
constexpr std::uint32_t tag_retained = 1;
constexpr std::uint32_t tag_claim = 2;
constexpr std::uint32_t tag_log = 3;
constexpr std::uint32_t tag_shared_base = 16;

// Queue bounds: beyond them a message is counted as lost instead of
// growing memory without limit while NATS or the reactor lags.
constexpr std::size_t max_out_bytes = 64u << 20;
constexpr std::size_t max_in_bytes = 256u << 20;

// publish_live carries (origin, sequence) in the reply subject: a node whose
// filters overlap ("a/+" and "+/b") holds two NATS subscriptions that both
// match "a/b", and NATS delivers one copy per subscription; the receiver
// keeps the first (one delivery per node, spec 3.3.4).
enum class Op : std::uint8_t { publish, publish_live, subscribe, queue_subscribe, unsubscribe };

struct OutHeader {
    Op op;
    std::uint32_t id;
    std::uint32_t tag;
    std::uint32_t subject_len;  // with the terminating NUL
    std::uint32_t queue_len;    // with the terminating NUL, 0 = none
    std::uint32_t data_len;
};

struct InHeader {
    std::uint32_t tag;
    std::uint32_t age;  // seconds since a retained message was stored
    std::uint32_t len;
    std::uint64_t origin;  // the sending node's instance, 0 = unknown
    std::uint64_t seq;     // its message sequence number
};

// "_o.ORIGIN.SEQ" (hex, decimal) -> origin, seq; false for anything else.
bool parse_origin(const char* reply, std::uint64_t& origin, std::uint64_t& seq) {
    if (!reply || std::strncmp(reply, "_o.", 3) != 0) return false;
    const char* p = reply + 3;
    origin = 0;
    for (; *p && *p != '.'; ++p) {
        const char c = *p;
        const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return false;
        origin = origin * 16 + static_cast<std::uint64_t>(v);
    }
    if (*p != '.') return false;
    seq = 0;
    for (++p; *p; ++p) {
        if (*p < '0' || *p > '9') return false;
        seq = seq * 10 + static_cast<std::uint64_t>(*p - '0');
    }
    return true;
}

void append(std::vector<char>& buf, const void* data, std::size_t n) {
    const auto* p = static_cast<const char*>(data);
    buf.insert(buf.end(), p, p + n);
}

std::uint64_t wall_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
}

std::string stream_name(std::string_view prefix) {
    // Stream names may not hold '.', '*', '>' or spaces.
    std::string name = "MQTT_RETAINED_";
    for (const char ch : prefix) name.push_back(ch == '.' ? '_' : ch);
    return name;
}

}  // namespace

struct SubContext {
    NatsCluster::Shared* shared;
    std::uint32_t tag;
};

struct NatsCluster::Shared {
    config::Cluster config;
    std::string node_id;
    std::string prefix;
    int eventfd = -1;
    std::uint64_t origin = 0;    // random per process: names this node's messages
    std::uint64_t live_seq = 0;  // link thread

    std::atomic<natsConnection*> data{nullptr};     // No Echo: publishes, non-shared interest, claims
    std::atomic<natsConnection*> control{nullptr};  // queue groups, JetStream

    // Out queue (reactor -> link thread).
    std::mutex out_mutex;
    std::condition_variable out_cv;
    std::vector<char> out;
    bool stop = false;

    // In queue (libnats delivery thread -> reactor).
    std::mutex in_mutex;
    std::vector<char> in;

    // Link thread only.
    std::unordered_map<std::uint32_t, natsSubscription*> subs;
    std::deque<SubContext> shared_contexts;
    std::unordered_map<std::uint32_t, SubContext*> context_by_tag;
    std::int64_t dropped_by_gone_subs = 0;

    SubContext live_context{this, tag_live};
    SubContext retained_context{this, tag_retained};
    SubContext claim_context{this, tag_claim};

    std::thread link_thread;
    std::thread js_thread;
    std::mutex js_mutex;
    std::condition_variable js_cv;
    natsSubscription* retained_sub = nullptr;  // js thread, destroyed by the link thread after it ended
    jsCtx* js = nullptr;

    std::atomic<std::uint64_t> messages_out{0};
    std::atomic<std::uint64_t> messages_in{0};
    std::atomic<std::uint64_t> lost_out{0};
    std::atomic<std::uint64_t> lost_in_queue{0};
    std::atomic<std::uint64_t> lost_in_nats{0};
    std::atomic<std::uint64_t> disconnects{0};
    std::atomic<std::uint64_t> reconnects{0};
    std::atomic<std::uint64_t> subscriptions{0};

    // From any thread: one record for the reactor.
    void push_in(std::uint32_t tag, std::uint32_t age, const char* data, std::size_t len, std::uint64_t from = 0,
                 std::uint64_t seq = 0) {
        bool wake = false;
        {
            std::lock_guard lock(in_mutex);
            if (in.size() + len > max_in_bytes) {
                lost_in_queue.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            wake = in.empty();
            const InHeader h{tag, age, static_cast<std::uint32_t>(len), from, seq};
            append(in, &h, sizeof h);
            append(in, data, len);
        }
        if (wake) {
            const std::uint64_t one = 1;
            [[maybe_unused]] ssize_t n = ::write(eventfd, &one, sizeof one);
        }
    }
    void log(const std::string& line) { push_in(tag_log, 0, line.data(), line.size()); }

    // Pushes one command; false when the queue is over its bound.
    bool push_out(Op op, std::uint32_t id, std::uint32_t tag, std::string_view subject, std::string_view queue,
                  const void* data, std::size_t len) {
        bool wake = false;
        {
            std::lock_guard lock(out_mutex);
            if (op == Op::publish && out.size() + len > max_out_bytes) return false;
            wake = out.empty();
            const OutHeader h{op, id, tag, static_cast<std::uint32_t>(subject.size() + 1),
                              queue.empty() ? 0u : static_cast<std::uint32_t>(queue.size() + 1),
                              static_cast<std::uint32_t>(len)};
            append(out, &h, sizeof h);
            append(out, subject.data(), subject.size());
            out.push_back('\0');
            if (!queue.empty()) {
                append(out, queue.data(), queue.size());
                out.push_back('\0');
            }
            if (len) append(out, data, len);
        }
        if (wake) out_cv.notify_one();
        return true;
    }

    bool stopping() {
        std::lock_guard lock(out_mutex);
        return stop;
    }

    natsConnection* connect(bool no_echo);
    void link_main();
    void js_main();
    void run_batch(std::vector<char>& batch);
    void refresh_dropped();
};

namespace {

void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* ctx = static_cast<SubContext*>(closure);
    std::uint32_t age = 0;
    if (ctx->tag == tag_retained) {
        // A retained message from the stream: its age counts against its
        // Message Expiry Interval.
        jsMsgMetaData* meta = nullptr;
        if (natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta) {
            const auto now = static_cast<std::int64_t>(wall_ns());
            if (meta->Timestamp > 0 && now > meta->Timestamp) {
                age = static_cast<std::uint32_t>((now - meta->Timestamp) / 1'000'000'000);
            }
            jsMsgMetaData_Destroy(meta);
        }
    }
    std::uint64_t origin = 0;
    std::uint64_t seq = 0;
    if (ctx->tag == tag_live && !parse_origin(natsMsg_GetReply(msg), origin, seq)) origin = 0;
    ctx->shared->messages_in.fetch_add(1, std::memory_order_relaxed);
    ctx->shared->push_in(ctx->tag, age, natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)),
                         origin, seq);
    natsMsg_Destroy(msg);
}

void on_disconnected(natsConnection*, void* closure) {
    auto* s = static_cast<NatsCluster::Shared*>(closure);
    s->disconnects.fetch_add(1, std::memory_order_relaxed);
    s->log("Cluster: lost the connection to NATS; serving local clients, reconnecting.");
}

void on_reconnected(natsConnection*, void* closure) {
    auto* s = static_cast<NatsCluster::Shared*>(closure);
    s->reconnects.fetch_add(1, std::memory_order_relaxed);
    s->log("Cluster: reconnected to NATS (interest re-subscribed).");
}

void on_connected(natsConnection*, void* closure) {
    static_cast<NatsCluster::Shared*>(closure)->log("Cluster: connected to NATS.");
}

void on_error(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
    auto* s = static_cast<NatsCluster::Shared*>(closure);
    s->log(std::string("Cluster: NATS error: ") + natsStatus_GetText(err));
}

// Back-off between reconnect attempts: 100 ms doubling up to 5 s, with
// jitter so that N nodes do not hit a restarted server at the same moment.
std::int64_t reconnect_delay(natsConnection*, int attempts, void*) {
    const int shift = attempts < 6 ? attempts : 6;
    const std::int64_t base = std::min<std::int64_t>(100LL << shift, 5000);
    return base + static_cast<std::int64_t>(wall_ns() % 100);
}

}  // namespace

natsConnection* NatsCluster::Shared::connect(bool no_echo) {
    natsOptions* o = nullptr;
    if (natsOptions_Create(&o) != NATS_OK) return nullptr;
    std::vector<const char*> urls;
    bool tls = !config.cafile.empty() || !config.certfile.empty();
    for (const auto& u : config.nats_urls) {
        urls.push_back(u.c_str());
        tls = tls || u.rfind("tls://", 0) == 0;
    }
    const std::string name = "mqttoolsd " + node_id + (no_echo ? " data" : " control");
    natsStatus st = natsOptions_SetServers(o, urls.data(), static_cast<int>(urls.size()));
    if (st == NATS_OK) st = natsOptions_SetName(o, name.c_str());
    if (st == NATS_OK) st = natsOptions_SetNoEcho(o, no_echo);
    if (st == NATS_OK) st = natsOptions_SetMaxReconnect(o, -1);
    if (st == NATS_OK) st = natsOptions_SetCustomReconnectDelay(o, reconnect_delay, nullptr);
    if (st == NATS_OK) st = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, this);
    if (st == NATS_OK) st = natsOptions_SetDisconnectedCB(o, on_disconnected, this);
    if (st == NATS_OK) st = natsOptions_SetReconnectedCB(o, on_reconnected, this);
    if (st == NATS_OK) st = natsOptions_SetErrorHandler(o, on_error, this);
    if (st == NATS_OK) st = natsOptions_UseGlobalMessageDelivery(o, true);
    // While disconnected, publishes wait in this buffer (8 MiB); beyond
    // it they fail and are counted as lost.
    if (st == NATS_OK) st = natsOptions_SetReconnectBufSize(o, 8 << 20);
    if (st == NATS_OK && !config.credentials.empty()) {
        st = natsOptions_SetUserCredentialsFromFiles(o, config.credentials.c_str(), nullptr);
    }
    if (st == NATS_OK && !config.username.empty()) {
        st = natsOptions_SetUserInfo(o, config.username.c_str(), config.password.c_str());
    }
    if (st == NATS_OK && tls) st = natsOptions_SetSecure(o, true);
    if (st == NATS_OK && !config.cafile.empty()) st = natsOptions_LoadCATrustedCertificates(o, config.cafile.c_str());
    if (st == NATS_OK && !config.certfile.empty()) {
        st = natsOptions_LoadCertificatesChain(o, config.certfile.c_str(), config.keyfile.c_str());
    }
    natsConnection* nc = nullptr;
    if (st == NATS_OK) {
        st = natsConnection_Connect(&nc, o);
        // Not yet connected: libnats keeps trying in its own thread.
        if (st == NATS_NOT_YET_CONNECTED) st = NATS_OK;
    }
    if (st != NATS_OK) {
        log(std::string("Cluster: cannot set up the NATS connection: ") + natsStatus_GetText(st) + " " +
            nats_GetLastError(nullptr));
        if (nc) natsConnection_Destroy(nc);
        nc = nullptr;
    }
    natsOptions_Destroy(o);
    return nc;
}

void NatsCluster::Shared::run_batch(std::vector<char>& batch) {
    natsConnection* d = data.load();
    natsConnection* c = control.load();
    std::size_t pos = 0;
    while (pos + sizeof(OutHeader) <= batch.size()) {
        OutHeader h;
        std::memcpy(&h, batch.data() + pos, sizeof h);
        pos += sizeof h;
        const char* subject = batch.data() + pos;
        pos += h.subject_len;
        const char* queue = h.queue_len ? batch.data() + pos : nullptr;
        pos += h.queue_len;
        const char* payload = batch.data() + pos;
        pos += h.data_len;
        switch (h.op) {
            case Op::publish_live: {
                char reply[64];
                std::snprintf(reply, sizeof reply, "_o.%llx.%llu", static_cast<unsigned long long>(origin),
                              static_cast<unsigned long long>(++live_seq));
                if (d && natsConnection_PublishRequest(d, subject, reply, payload, static_cast<int>(h.data_len)) ==
                             NATS_OK) {
                    messages_out.fetch_add(1, std::memory_order_relaxed);
                } else {
                    lost_out.fetch_add(1, std::memory_order_relaxed);
                }
                break;
            }
            case Op::publish:
                if (d && natsConnection_Publish(d, subject, payload, static_cast<int>(h.data_len)) == NATS_OK) {
                    messages_out.fetch_add(1, std::memory_order_relaxed);
                } else {
                    lost_out.fetch_add(1, std::memory_order_relaxed);
                }
                break;
            case Op::subscribe:
            case Op::queue_subscribe: {
                natsSubscription* sub = nullptr;
                natsStatus st = NATS_ERR;
                if (h.op == Op::subscribe) {
                    if (d) st = natsConnection_Subscribe(&sub, d, subject, on_message, &live_context);
                } else {
                    SubContext*& ctx = context_by_tag[h.tag];
                    if (!ctx) ctx = &shared_contexts.emplace_back(SubContext{this, h.tag});
                    if (c) st = natsConnection_QueueSubscribe(&sub, c, subject, queue, on_message, ctx);
                }
                if (st == NATS_OK) {
                    // Generous pending limits: a burst must not be dropped
                    // while the reactor is busy for a moment.
                    natsSubscription_SetPendingLimits(sub, 1'000'000, 512 << 20);
                    subs[h.id] = sub;
                    subscriptions.fetch_add(1, std::memory_order_relaxed);
                } else {
                    log(std::string("Cluster: cannot subscribe to ") + subject + ": " + natsStatus_GetText(st));
                }
                break;
            }
            case Op::unsubscribe: {
                auto it = subs.find(h.id);
                if (it == subs.end()) break;
                std::int64_t dropped = 0;
                if (natsSubscription_GetDropped(it->second, &dropped) == NATS_OK) dropped_by_gone_subs += dropped;
                natsSubscription_Unsubscribe(it->second);
                natsSubscription_Destroy(it->second);
                subs.erase(it);
                subscriptions.fetch_sub(1, std::memory_order_relaxed);
                break;
            }
        }
    }
}

void NatsCluster::Shared::refresh_dropped() {
    // Messages NATS dropped for us as a slow consumer (pending limits).
    std::int64_t total = dropped_by_gone_subs;
    for (const auto& [id, sub] : subs) {
        std::int64_t n = 0;
        if (natsSubscription_GetDropped(sub, &n) == NATS_OK) total += n;
    }
    lost_in_nats.store(static_cast<std::uint64_t>(total), std::memory_order_relaxed);
}

void NatsCluster::Shared::link_main() {
    // One delivery thread for every subscription: messages reach the
    // reactor in the order NATS sent them (the duplicate check relies on it).
    nats_SetMessageDeliveryPoolSize(1);
    data.store(connect(true));
    control.store(connect(false));
    natsSubscription* claims = nullptr;
    if (natsConnection* d = data.load()) {
        const std::string subject = prefix + ".claim";
        natsConnection_Subscribe(&claims, d, subject.c_str(), on_message, &claim_context);
    }
    js_thread = std::thread([this] { js_main(); });
    std::vector<char> batch;
    for (;;) {
        {
            std::unique_lock lock(out_mutex);
            out_cv.wait_for(lock, std::chrono::seconds(1), [&] { return stop || !out.empty(); });
            batch.swap(out);
            if (stop && batch.empty()) break;
        }
        run_batch(batch);
        batch.clear();
        refresh_dropped();
    }
    {
        std::lock_guard lock(js_mutex);
        js_cv.notify_all();
    }
    js_thread.join();
    // Wills published during shutdown still go out (best effort, 1 s).
    if (natsConnection* d = data.load()) natsConnection_FlushTimeout(d, 1000);
    for (auto& [id, sub] : subs) natsSubscription_Destroy(sub);
    subs.clear();
    if (claims) natsSubscription_Destroy(claims);
    if (retained_sub) natsSubscription_Destroy(retained_sub);
    if (js) jsCtx_Destroy(js);
    for (auto* conn : {data.exchange(nullptr), control.exchange(nullptr)}) {
        if (!conn) continue;
        natsConnection_Close(conn);
        natsConnection_Destroy(conn);
    }
}

// Retained messages: a JetStream stream keeps the latest message of every
// PREFIX.r.> subject (an empty payload = deleted); an ordered push consumer
// per node delivers the last of each subject, then every update, in stream
// order on every node (so all nodes converge to the same value). The setup
// calls are requests that block: this thread retries them until they work.
void NatsCluster::Shared::js_main() {
    const std::string subjects = prefix + ".r.>";
    const std::string name = stream_name(prefix);
    int attempt = 0;
    auto wait = [&](std::chrono::milliseconds ms) {
        std::unique_lock lock(js_mutex);
        js_cv.wait_for(lock, ms, [&] { return stopping(); });
        return !stopping();
    };
    while (!stopping()) {
        natsConnection* c = control.load();
        if (!c) return;
        if (natsConnection_Status(c) != NATS_CONN_STATUS_CONNECTED) {
            if (!wait(std::chrono::milliseconds(100))) return;
            continue;
        }
        if (!js && natsConnection_JetStream(&js, c, nullptr) != NATS_OK) {
            js = nullptr;
            if (!wait(std::chrono::milliseconds(500))) return;
            continue;
        }
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        cfg.Name = name.c_str();
        const char* subject_list[] = {subjects.c_str()};
        cfg.Subjects = subject_list;
        cfg.SubjectsLen = 1;
        cfg.MaxMsgsPerSubject = 1;
        cfg.Storage = js_FileStorage;
        jsStreamInfo* si = nullptr;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        natsStatus st = js_AddStream(&si, js, &cfg, nullptr, &jerr);
        if (si) jsStreamInfo_Destroy(si);
        if (st != NATS_OK && jerr != JSStreamNameExistErr) {
            if (st == NATS_NO_RESPONDERS || jerr == JSNotEnabledErr || jerr == JSNotEnabledForAccountErr) {
                // No JetStream: retained updates still reach every node
                // live, but a node started later does not get the old ones.
                log("Cluster: JetStream is not enabled on the NATS server: retained messages are shared live only "
                    "(start nats-server with -js).");
                natsConnection_Subscribe(&retained_sub, c, subjects.c_str(), on_message, &retained_context);
                return;
            }
            if (++attempt % 10 == 1) {
                log(std::string("Cluster: cannot create the retained stream: ") + natsStatus_GetText(st));
            }
            if (!wait(std::chrono::milliseconds(std::min(200 * attempt, 2000)))) return;
            continue;
        }
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Ordered = true;
        so.Config.DeliverPolicy = js_DeliverLastPerSubject;
        st = js_Subscribe(&retained_sub, js, subjects.c_str(), on_message, &retained_context, nullptr, &so, &jerr);
        if (st == NATS_OK) {
            natsSubscription_SetPendingLimits(retained_sub, 1'000'000, 512 << 20);
            return;
        }
        retained_sub = nullptr;
        if (++attempt % 10 == 1) {
            log(std::string("Cluster: cannot subscribe to retained messages: ") + natsStatus_GetText(st));
        }
        if (!wait(std::chrono::milliseconds(std::min(200 * attempt, 2000)))) return;
    }
}

// ---------------------------------------------------------------- reactor side

NatsCluster::NatsCluster(net::Reactor& reactor, broker::Broker& broker, const config::Cluster& config,
                         std::string node_id)
    : reactor_(reactor), broker_(broker), node_id_(std::move(node_id)), prefix_(config.subject_prefix),
      shared_(std::make_unique<Shared>()) {
    shared_->config = config;
    shared_->node_id = node_id_;
    shared_->prefix = prefix_;
}

std::unique_ptr<NatsCluster> NatsCluster::start(net::Reactor& reactor, broker::Broker& broker,
                                                const config::Cluster& config, std::string node_id,
                                                std::string& error) {
    std::unique_ptr<NatsCluster> c(new NatsCluster(reactor, broker, config, std::move(node_id)));
    c->eventfd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!c->eventfd_ || !reactor.add(c->eventfd_.get(), EPOLLIN, c.get())) {
        error = std::string("cluster: eventfd: ") + std::strerror(errno);
        return nullptr;
    }
    c->shared_->eventfd = c->eventfd_.get();
    Shared* s = c->shared_.get();
    s->origin = (wall_ns() * 0x9E3779B97F4A7C15ULL) ^ static_cast<std::uint64_t>(::getpid());
    if (s->origin == 0) s->origin = 1;
    // The link thread and every thread libnats starts from it block all
    // signals: SIGTERM/SIGHUP must reach the reactor's signalfd, never a
    // libnats thread (whose default action would kill the process).
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    s->link_thread = std::thread([s] { s->link_main(); });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    spdlog::info("Cluster: node {} joining over NATS {}.", c->node_id_, fmt::join(config.nats_urls, ", "));
    return c;
}

NatsCluster::~NatsCluster() {
    {
        std::lock_guard lock(shared_->out_mutex);
        shared_->stop = true;
    }
    shared_->out_cv.notify_all();
    {
        std::lock_guard lock(shared_->js_mutex);
        shared_->js_cv.notify_all();
    }
    if (shared_->link_thread.joinable()) shared_->link_thread.join();
    if (eventfd_) reactor_.remove(eventfd_.get());
    nats_Close();
}

void NatsCluster::interest_added(std::string_view filter) { change_interest(filter, true); }
void NatsCluster::interest_removed(std::string_view filter) { change_interest(filter, false); }

void NatsCluster::change_interest(std::string_view filter, bool add) {
    std::string_view plain = filter;
    std::string queue;
    std::uint32_t tag = tag_live;
    if (auto sf = parse_shared_filter(filter)) {
        plain = sf->filter;
        queue = queue_name(sf->share_name, sf->filter);
        auto [it, fresh] = shared_tags_.try_emplace(std::string(filter), 0);
        if (fresh) {
            it->second = tag_shared_base + static_cast<std::uint32_t>(shared_filters_.size());
            shared_filters_.emplace_back(filter);
        }
        tag = it->second;
    }
    for (std::string& subject : filter_subjects(prefix_ + ".m", plain)) {
        std::string key = subject;
        if (!queue.empty()) key.append(1, ' ').append(queue);  // ' ' never occurs in either
        auto it = interest_.find(key);
        if (add) {
            if (it == interest_.end()) it = interest_.emplace(std::move(key), Interest{}).first;
            if (it->second.count++ == 0) {
                it->second.id = next_interest_id_++;
                shared_->push_out(queue.empty() ? Op::subscribe : Op::queue_subscribe, it->second.id, tag, subject,
                                  queue, nullptr, 0);
            }
        } else if (it != interest_.end() && --it->second.count == 0) {
            shared_->push_out(Op::unsubscribe, it->second.id, 0, {}, {}, nullptr, 0);
            interest_.erase(it);
        }
    }
}

void NatsCluster::publish(const broker::MessageView& m) {
    Bytes bytes;
    if (m.qos == QoS::at_most_once && !m.raw.empty() && m.raw_version == ProtocolVersion::v5) {
        // A v5 QoS 0 PUBLISH without a topic alias, as the client sent it.
        bytes = m.raw;
    } else {
        PublishPacket p;
        p.qos = m.qos;
        p.retain = m.retain;
        p.topic = m.topic;
        p.packet_id = m.qos == QoS::at_most_once ? 0 : 1;  // required on the wire, unused by the receiver
        p.payload = m.payload;
        p.properties.passthrough = m.properties;
        p.properties.passthrough_mask = broker::forwarded_properties;
        p.properties.message_expiry_interval = m.expiry_interval;
        const std::size_t size = encoded_size(p, ProtocolVersion::v5);
        if (size == 0) {
            shared_->lost_out.fetch_add(1, std::memory_order_relaxed);
            return;
        }
        encoded_.resize(size);
        encode(p, ProtocolVersion::v5, {encoded_.data(), size});
        bytes = {encoded_.data(), size};
    }
    topic_subject(subject_, prefix_ + ".m", m.topic);
    if (!shared_->push_out(Op::publish_live, 0, 0, subject_, {}, bytes.data(), bytes.size())) {
        shared_->lost_out.fetch_add(1, std::memory_order_relaxed);
    }
    if (m.retain) {
        // The retained stream keeps it (or, empty, the deletion) for every
        // node, including nodes that start later.
        topic_subject(subject_, prefix_ + ".r", m.topic);
        if (!shared_->push_out(Op::publish, 0, 0, subject_, {}, bytes.data(), bytes.size())) {
            shared_->lost_out.fetch_add(1, std::memory_order_relaxed);
        }
    }
}

// Session ownership: the last claim wins, ordered by (wall-clock stamp,
// node id), the same total order on every node. Two simultaneous CONNECTs
// with one client id on two nodes: each node gets the other's claim; the
// node whose own claim is newer keeps its client, the other closes its
// client with 0x8E, so exactly one owner remains (while NATS carries the
// claims; see docs/cluster.md for what a partition does).
void NatsCluster::claim_session(std::string_view client_id) {
    const std::uint64_t stamp = wall_ns();
    const auto now = reactor_.now();
    claims_[std::string(client_id)] = Claim{stamp, now};
    if (++claims_since_prune_ >= 1024) {
        claims_since_prune_ = 0;
        std::erase_if(claims_, [&](const auto& kv) { return now - kv.second.at > std::chrono::seconds(60); });
    }
    std::string payload = std::to_string(stamp);
    payload.append(1, ' ').append(node_id_).append(1, ' ').append(client_id);
    shared_->push_out(Op::publish, 0, 0, prefix_ + ".claim", {}, payload.data(), payload.size());
}

void NatsCluster::on_claim(std::string_view payload) {
    const std::size_t a = payload.find(' ');
    const std::size_t b = a == payload.npos ? payload.npos : payload.find(' ', a + 1);
    if (b == payload.npos) return;
    std::uint64_t stamp = 0;
    for (const char ch : payload.substr(0, a)) {
        if (ch < '0' || ch > '9') return;
        stamp = stamp * 10 + static_cast<std::uint64_t>(ch - '0');
    }
    const std::string_view node = payload.substr(a + 1, b - a - 1);
    const std::string_view client_id = payload.substr(b + 1);
    if (node == node_id_) return;
    auto it = claims_.find(std::string(client_id));
    if (it != claims_.end() && std::pair(it->second.stamp, std::string_view(node_id_)) > std::pair(stamp, node)) {
        return;  // our claim is the newer one: the other node gives way
    }
    if (it != claims_.end()) claims_.erase(it);
    ++takeovers_in_;
    broker_.session_claimed_elsewhere(client_id);
}

void NatsCluster::on_io(std::uint32_t) {
    std::uint64_t n = 0;
    while (::read(eventfd_.get(), &n, sizeof n) == static_cast<ssize_t>(sizeof n)) {
    }
    drain_inbound();
}

void NatsCluster::drain_inbound() {
    inbound_.clear();
    {
        std::lock_guard lock(shared_->in_mutex);
        inbound_.swap(shared_->in);
    }
    reactor_.refresh_now();
    std::size_t pos = 0;
    while (pos + sizeof(InHeader) <= inbound_.size()) {
        InHeader h;
        std::memcpy(&h, inbound_.data() + pos, sizeof h);
        pos += sizeof h;
        const char* data = inbound_.data() + pos;
        pos += h.len;
        const Bytes bytes(reinterpret_cast<const std::byte*>(data), h.len);
        switch (h.tag) {
            case tag_live: {
                if (h.origin != 0) {
                    // A second copy through another of our subscriptions.
                    std::uint64_t& last = last_seq_[h.origin];
                    if (h.seq <= last) break;
                    last = h.seq;
                }
                if (!broker_.route_from_cluster(bytes, {})) shared_->lost_in_queue.fetch_add(1);
                break;
            }
            case tag_retained:
                if (broker_.retained_from_cluster(bytes, h.age)) ++retained_in_;
                break;
            case tag_claim:
                on_claim(std::string_view(data, h.len));
                break;
            case tag_log:
                spdlog::warn("{}", std::string_view(data, h.len));
                break;
            default:
                if (h.tag >= tag_shared_base && h.tag - tag_shared_base < shared_filters_.size()) {
                    if (!broker_.route_from_cluster(bytes, shared_filters_[h.tag - tag_shared_base])) {
                        shared_->lost_in_queue.fetch_add(1);
                    }
                }
                break;
        }
    }
    // Keep the larger buffer's capacity on this side; hand an empty one back.
    if (inbound_.capacity() > (4u << 20)) std::vector<char>().swap(inbound_);
}

broker::ClusterCounters NatsCluster::counters() const {
    broker::ClusterCounters c;
    c.links_total = 2;
    for (natsConnection* conn : {shared_->data.load(), shared_->control.load()}) {
        if (conn && natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED) ++c.links_up;
    }
    c.nodes_connected = c.links_up == c.links_total ? 1 : 0;
    c.messages_out = shared_->messages_out.load();
    c.messages_in = shared_->messages_in.load();
    c.messages_lost_out = shared_->lost_out.load();
    c.messages_lost_in = shared_->lost_in_queue.load() + shared_->lost_in_nats.load();
    c.disconnects = shared_->disconnects.load();
    c.reconnects = shared_->reconnects.load();
    c.remote_interest = shared_->subscriptions.load();
    c.retained_in = retained_in_;
    c.takeovers_in = takeovers_in_;
    return c;
}

}  // namespace mqttools::cluster
