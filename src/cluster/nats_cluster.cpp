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
constexpr std::uint32_t tag_session = 4;
constexpr std::uint32_t tag_claimed = 5;  // this node's claim settled: seq = stamp, age = flags
constexpr std::uint32_t tag_confirmed = 6;  // interest up to barrier `seq` is in place
constexpr std::uint32_t tag_sent = 7;       // NATS has the first `seq` QoS 1/2 publishes
constexpr std::uint32_t tag_unreceived = 8; // QoS 1/2 publish number `seq` reached no other node
constexpr std::uint32_t tag_stored = 9;      // the stream has the retained QoS 1/2 publishes up to number `seq`

// Flags of a settled claim (InHeader::age).
constexpr std::uint32_t claim_wants_state = 1;
constexpr std::uint32_t claim_other_owner = 2;  // another node (or maybe one) held the id

// Claim stamps: a KV revision with the top bit set, so that a claim ordered
// by the bucket always beats one made while the bucket was unreachable
// (ordered by wall-clock time, below 2^63 until the year 2262).
constexpr std::uint64_t kv_stamp_bit = std::uint64_t{1} << 63;
constexpr std::uint32_t tag_shared_base = 16;

// Queue bounds: beyond them a message is counted as lost instead of
// growing memory without limit while NATS or the reactor lags.
constexpr std::size_t max_out_bytes = 64u << 20;
constexpr std::size_t max_in_bytes = 256u << 20;

// publish_live carries (origin, sequence) in the reply subject: a node whose
// filters overlap ("a/+" and "+/b") holds two NATS subscriptions that both
// match "a/b", and NATS delivers one copy per subscription; the receiver
// keeps the first (one delivery per node, spec 3.3.4).
// publish_live with tag 1: a QoS 1/2 message whose PUBACK waits until NATS
// has it; the link thread counts them in order (the reactor's tickets are
// the same count) and confirms when the barrier request after its batch is
// answered (run_batch, on_unreceived).
// barrier: data = a ticket (std::uint64_t) confirmed back to the reactor
// once the server has every subscription sent before it.
enum class Op : std::uint8_t { publish, publish_live, subscribe, queue_subscribe, unsubscribe, barrier };

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

// "_o.ORIGIN.SEQ" or "_p.ORIGIN.SEQ.TICKET" (hex, decimal, decimal) ->
// origin, seq; false for anything else. `_p` marks a QoS 1/2 message whose
// PUBACK waits: its "no responders" answer comes back to the sending node.
bool parse_origin(const char* reply, std::uint64_t& origin, std::uint64_t& seq) {
    if (!reply || (std::strncmp(reply, "_o.", 3) != 0 && std::strncmp(reply, "_p.", 3) != 0)) return false;
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
    for (++p; *p && *p != '.'; ++p) {
        if (*p < '0' || *p > '9') return false;
        seq = seq * 10 + static_cast<std::uint64_t>(*p - '0');
    }
    return *p == '\0' || reply[1] == 'p';
}

// A session's state (or "nothing to hand over"), not the tail that follows
// it or the request for that tail: the broker's format marks them by the
// first byte (broker/session_transfer.cpp). Only states are counted.
bool is_session_state(std::string_view state) {
    return state.empty() || static_cast<std::uint8_t>(state[0]) <= 2;
}

// The decimal after the last '.' of `s`; false when there is none.
bool last_number(const char* s, std::uint64_t& n) {
    const char* dot = std::strrchr(s, '.');
    if (!dot || dot[1] == '\0') return false;
    n = 0;
    for (const char* p = dot + 1; *p; ++p) {
        if (*p < '0' || *p > '9') return false;
        n = n * 10 + static_cast<std::uint64_t>(*p - '0');
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

std::string stream_name(std::string_view prefix, std::string_view kind = "MQTT_RETAINED_") {
    // Stream names may not hold '.', '*', '>' or spaces.
    std::string name(kind);
    for (const char ch : prefix) name.push_back(ch == '.' ? '_' : ch);
    return name;
}

// A client id as a KV key ([-/_=.A-Za-z0-9]+): the bytes [A-Za-z0-9_-]
// stay, every other one becomes =XX (injective). An id whose key would be
// long (a subject must fit NATS' control line) becomes a 64-bit FNV-1a
// hash: two ids sharing a key only share the order of their claims.
std::string kv_key(std::string_view client_id) {
    static const char* hex = "0123456789ABCDEF";
    std::string key;
    if (client_id.size() <= 256) {
        for (const char ch : client_id) {
            const auto b = static_cast<unsigned char>(ch);
            if ((b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || b == '_' || b == '-') {
                key.push_back(ch);
            } else {
                key.push_back('=');
                key.push_back(hex[b >> 4]);
                key.push_back(hex[b & 15]);
            }
        }
        if (key.size() <= 512) return key;
    }
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char ch : client_id) {
        h ^= static_cast<unsigned char>(ch);
        h *= 0x100000001b3ULL;
    }
    key = "=H";
    for (int i = 60; i >= 0; i -= 4) key.push_back(hex[(h >> i) & 15]);
    return key;
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
    std::uint64_t publishes_confirmable = 0;  // link thread: QoS 1/2 publish_live ops taken (tag 1)
    // "No responders" answers to this node's QoS 1/2 publishes and barriers
    // ("_p.ORIGIN.>", libnats' delivery thread: on_unreceived), and the
    // barriers sent and not yet answered (link thread; sweep_barriers).
    natsSubscription* unreceived_sub = nullptr;
    std::string nobody_subject;  // subscribed by nobody: barriers go there
    std::mutex barrier_mutex;
    std::deque<std::pair<std::uint64_t, std::chrono::steady_clock::time_point>> sent_barriers;
    std::atomic<std::uint64_t> sent_confirmed{0};
    // Confirms the first n QoS 1/2 publishes to the reactor (once; from the
    // link thread or the delivery thread).
    void confirm_sent_upto(std::uint64_t n) {
        std::uint64_t seen = sent_confirmed.load();
        while (seen < n && !sent_confirmed.compare_exchange_weak(seen, n)) {
        }
        if (seen < n) push_in(tag_sent, 0, nullptr, 0, 0, n);
    }
    void sweep_barriers() {
        const auto too_old = std::chrono::steady_clock::now() - std::chrono::seconds(2);
        std::uint64_t upto = 0;
        {
            std::lock_guard lock(barrier_mutex);
            while (!sent_barriers.empty() &&
                   (sent_barriers.front().first <= sent_confirmed.load() || sent_barriers.front().second < too_old)) {
                if (sent_barriers.front().second < too_old) upto = sent_barriers.front().first;
                sent_barriers.pop_front();
            }
        }
        if (upto != 0) confirm_sent_upto(upto);
    }

    std::atomic<natsConnection*> data{nullptr};     // No Echo: publishes, non-shared interest, claims
    std::atomic<natsConnection*> control{nullptr};  // queue groups, JetStream

    // Out queue (reactor -> link thread).
    std::mutex out_mutex;
    std::condition_variable out_cv;
    std::vector<char> out;
    bool stop = false;
    bool link_wake = false;  // the retained stream's state changed (pass_early_barriers)
    void retained_state(bool ready) {
        if (ready) {
            retained_ready.store(true);
        } else {
            retained_soon.store(false);
        }
        {
            std::lock_guard lock(out_mutex);
            link_wake = true;
        }
        out_cv.notify_one();
    }

    // In queue (libnats delivery thread -> reactor).
    std::mutex in_mutex;
    std::vector<char> in;

    // Link thread only.
    std::unordered_map<std::uint32_t, natsSubscription*> subs;
    std::deque<SubContext> shared_contexts;
    std::unordered_map<std::uint32_t, SubContext*> context_by_tag;
    std::int64_t dropped_by_gone_subs = 0;
    std::uint64_t unsent_control = 0;

    SubContext live_context{this, tag_live};
    SubContext retained_context{this, tag_retained};
    SubContext claim_context{this, tag_claim};
    SubContext session_context{this, tag_session};

    std::thread link_thread;
    std::thread js_thread;
    // Session claims (client id, wants state) for the KV thread; under kv_mutex.
    std::thread kv_thread;
    std::mutex kv_mutex;
    std::condition_variable kv_cv;
    std::deque<std::pair<std::string, bool>> kv_jobs;
    std::atomic<std::uint64_t> unsent_claims{0};
    std::mutex js_mutex;
    std::condition_variable js_cv;
    natsSubscription* retained_sub = nullptr;  // js thread, destroyed by the link thread after it ended
    jsCtx* js = nullptr;
    // Retained updates (subject, PUBLISH) for the stream, in the order the
    // reactor published them; under js_mutex. The js thread sends them
    // once the stream exists: sent earlier, NATS would have dropped them
    // for want of a stream, and a node started later would never see them.
    // `ticket`: the publish's QoS 1/2 number (0 for QoS 0), whose PUBACK
    // waits for the stream (tag_stored).
    struct RetainedUpdate {
        std::string subject;
        std::string data;
        std::uint64_t ticket;
    };
    std::deque<RetainedUpdate> retained_out;
    std::size_t retained_out_bytes = 0;
    enum class RetainedMode { waiting, stream, live_only };
    RetainedMode retained_mode = RetainedMode::waiting;  // js thread

    // SUBACK barriers (Op::barrier) the link thread passes on once the
    // stream is in use, so that retained messages sent after a SUBACK are
    // the cluster's (js_serve); under js_mutex, in order. `retained_ready`:
    // set once by the js thread; before it barriers are confirmed by the
    // link thread directly (either way in ticket order), but those of
    // SUBSCRIBEs that want retained messages wait while `retained_soon`
    // (the js thread is setting the stream up and has not failed yet),
    // at most 3 s: a node just started must not answer a SUBSCRIBE
    // without the retained messages the cluster has.
    std::deque<std::pair<std::uint64_t, bool>> barriers;
    std::atomic<bool> retained_ready{false};
    std::atomic<bool> retained_soon{true};
    std::deque<std::pair<std::uint64_t, std::chrono::steady_clock::time_point>> early_barriers;  // link thread
    void pass_early_barriers();
    bool unflushed_subs = false;  // link thread: SUBs sent since the last PING
    // The highest stream sequence the retained consumer handed to the reactor.
    std::mutex seen_mutex;
    std::condition_variable seen_cv;
    std::uint64_t retained_seen = 0;
    void retained_seen_up_to(std::uint64_t seq) {
        {
            std::lock_guard lock(seen_mutex);
            if (seq <= retained_seen) return;
            retained_seen = seq;
        }
        seen_cv.notify_all();
    }
    void catch_up_retained();

    std::atomic<std::uint64_t> messages_out{0};
    std::atomic<std::uint64_t> retained_stored{0};  // acknowledged by the stream
    std::atomic<std::uint64_t> messages_in{0};
    std::atomic<std::uint64_t> lost_out{0};
    std::atomic<std::uint64_t> lost_in_queue{0};
    std::atomic<std::uint64_t> lost_in_nats{0};
    std::atomic<std::uint64_t> disconnects{0};
    std::atomic<std::uint64_t> reconnects{0};
    std::atomic<std::uint64_t> subscriptions{0};

    // Subscriptions whose close libnats' delivery thread has not handled
    // yet (natsSubscription_SetOnCompleteCB). At shutdown the link thread
    // waits for it to reach 0 before closing the connections: a close still
    // queued then was never handled, and its control message leaked.
    std::mutex subs_open_mutex;
    std::condition_variable subs_open_cv;
    int subs_open = 0;
    static void on_subscription_complete(void* closure) {
        auto* s = static_cast<Shared*>(closure);
        std::lock_guard lock(s->subs_open_mutex);
        if (--s->subs_open == 0) s->subs_open_cv.notify_all();
    }
    void track(natsSubscription* sub) {
        if (!sub || natsSubscription_SetOnCompleteCB(sub, on_subscription_complete, this) != NATS_OK) return;
        std::lock_guard lock(subs_open_mutex);
        ++subs_open;
    }

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
            if ((op == Op::publish || op == Op::publish_live) && out.size() + len > max_out_bytes) return false;
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
    bool js_setup();
    void js_serve();
    void kv_main();
    void push_claim(std::string_view client_id, bool want_state) {
        {
            std::lock_guard lock(kv_mutex);
            kv_jobs.emplace_back(std::string(client_id), want_state);
        }
        kv_cv.notify_one();
    }
    // From the reactor: a retained update for the stream (false: over the
    // queue's bound, lost).
    bool push_retained(std::string_view subject, const void* data, std::size_t len, std::uint64_t ticket) {
        {
            std::lock_guard lock(js_mutex);
            if (retained_out_bytes + len > max_out_bytes) return false;
            retained_out.push_back({std::string(subject), std::string(static_cast<const char*>(data), len), ticket});
            retained_out_bytes += len;
        }
        js_cv.notify_one();
        return true;
    }
    void run_batch(std::vector<char>& batch);
    void refresh_dropped();
};

namespace {

void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* ctx = static_cast<SubContext*>(closure);
    std::uint32_t age = 0;
    std::uint64_t stream_seq = 0;
    if (ctx->tag == tag_retained) {
        // A retained message from the stream: its age counts against its
        // Message Expiry Interval.
        jsMsgMetaData* meta = nullptr;
        if (natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta) {
            const auto now = static_cast<std::int64_t>(wall_ns());
            if (meta->Timestamp > 0 && now > meta->Timestamp) {
                age = static_cast<std::uint32_t>((now - meta->Timestamp) / 1'000'000'000);
            }
            stream_seq = meta->Sequence.Stream;
            jsMsgMetaData_Destroy(meta);
        }
    }
    std::uint64_t origin = 0;
    std::uint64_t seq = 0;
    const bool live = ctx->tag == tag_live || ctx->tag >= tag_shared_base;
    if (live && !parse_origin(natsMsg_GetReply(msg), origin, seq)) origin = seq = 0;
    if (live) ctx->shared->messages_in.fetch_add(1, std::memory_order_relaxed);
    ctx->shared->push_in(ctx->tag, age, natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)),
                         origin, seq);
    natsMsg_Destroy(msg);
    // After push_in: once a catch-up sees this sequence, the message is
    // ahead of its confirmation in the reactor's queue.
    if (stream_seq != 0) ctx->shared->retained_seen_up_to(stream_seq);
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

// The stream's answer to a retained update. One it did not acknowledge is
// lost for nodes that start later (the live copy went to every node's
// retained store already).
void on_retained_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* s = static_cast<NatsCluster::Shared*>(closure);
    natsMsg_Destroy(msg);
    if (pa) {
        s->retained_stored.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    const std::uint64_t n = s->lost_out.fetch_add(1, std::memory_order_relaxed) + 1;
    if ((n & (n - 1)) == 0) {  // 1, 2, 4, 8...: a failing stream does not flood the log
        s->log(std::string("Cluster: the retained stream did not store an update: ") +
               (pae && pae->ErrText ? pae->ErrText : natsStatus_GetText(pae ? pae->Err : NATS_ERR)) +
               " (lost so far: " + std::to_string(n) + ")");
    }
}

// "_p.ORIGIN.SEQ.TICKET": QoS 1/2 message number TICKET reached no other
// node; "_p.ORIGIN.b.N": the barrier after message N, answered after every
// answer to the messages before it.
void on_unreceived(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* s = static_cast<NatsCluster::Shared*>(closure);
    const char* subject = natsMsg_GetSubject(msg);
    std::uint64_t n = 0;
    if (natsMsg_IsNoResponders(msg) && subject && last_number(subject, n)) {
        const char* p = std::strchr(subject + 3, '.');
        if (p && p[1] == 'b' && p[2] == '.') {
            s->confirm_sent_upto(n);
        } else if (n > s->sent_confirmed.load()) {
            s->push_in(tag_unreceived, 0, nullptr, 0, 0, n);
        }
    }
    natsMsg_Destroy(msg);
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
    // Write each publish (and SUB) at once: libnats otherwise leaves them to
    // its flusher thread, which first sleeps 1 ms. That delay let a message a
    // client published on this node (and had acknowledged) reach NATS after
    // a subscription made afterwards on another node, and arrive after a
    // later message of another client published there (cross-node
    // conformance run, docs/cluster.md); it also added 1 ms to every hop.
    if (st == NATS_OK) st = natsOptions_SetSendAsap(o, true);
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
    // While the data connection is down a message is counted as lost
    // rather than left in libnats' reconnect buffer: sent after the
    // reconnect it would reach only the nodes that re-subscribed by then,
    // and nobody could say which. So lost_sending counts exactly what this
    // node published during an outage (tests: test_nats_restart_under_traffic).
    const bool up = d && natsConnection_Status(d) == NATS_CONN_STATUS_CONNECTED;
    std::uint64_t barrier = 0;
    bool barrier_retained = false;
    bool confirm_sent = false;
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
                ++live_seq;
                if (h.tag == 0) {
                    std::snprintf(reply, sizeof reply, "_o.%llx.%llu", static_cast<unsigned long long>(origin),
                                  static_cast<unsigned long long>(live_seq));
                } else {
                    // Its "no responders" answer (no other node has interest)
                    // names it: the PUBACK can then say 0x10.
                    ++publishes_confirmable;
                    confirm_sent = true;
                    std::snprintf(reply, sizeof reply, "_p.%llx.%llu.%llu", static_cast<unsigned long long>(origin),
                                  static_cast<unsigned long long>(live_seq),
                                  static_cast<unsigned long long>(publishes_confirmable));
                }
                if (up && natsConnection_PublishRequest(d, subject, reply, payload, static_cast<int>(h.data_len)) ==
                              NATS_OK) {
                    messages_out.fetch_add(1, std::memory_order_relaxed);
                } else {
                    lost_out.fetch_add(1, std::memory_order_relaxed);
                }
                break;
            }
            case Op::publish:
                // Claims and session hand-overs: not messages of clients,
                // so not in the message counters; the node that waits for
                // one goes on after its bounded wait.
                if (!up || natsConnection_Publish(d, subject, payload, static_cast<int>(h.data_len)) != NATS_OK) {
                    ++unsent_control;
                    if ((unsent_control & (unsent_control - 1)) == 0) {
                        log("Cluster: NATS is down: session claims/hand-overs not sent so far: " +
                            std::to_string(unsent_control));
                    }
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
                    track(sub);
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
            case Op::barrier:
                if (h.data_len == sizeof barrier) std::memcpy(&barrier, payload, sizeof barrier);
                barrier_retained = barrier_retained || h.tag != 0;
                break;
        }
        if (h.op == Op::subscribe || h.op == Op::queue_subscribe) unflushed_subs = true;
    }
    if (confirm_sent) {
        // A request to a subject nobody subscribes to: its "no responders"
        // answer comes after those of every PUB before it (the server
        // handles a connection's commands in order), and when it comes
        // each node subscribed has its copy on the way (on_unreceived
        // confirms). Down: confirmed at once, the messages counted as lost
        // above; the publisher must not wait for NATS to come back (local
        // clients are served meanwhile). No answer within 2 s: confirmed
        // by sweep_barriers().
        char reply[64];
        std::snprintf(reply, sizeof reply, "_p.%llx.b.%llu", static_cast<unsigned long long>(origin),
                      static_cast<unsigned long long>(publishes_confirmable));
        if (up && unreceived_sub &&
            natsConnection_PublishRequest(d, nobody_subject.c_str(), reply, nullptr, 0) == NATS_OK) {
            std::lock_guard lock(barrier_mutex);
            sent_barriers.emplace_back(publishes_confirmable, std::chrono::steady_clock::now());
        } else {
            confirm_sent_upto(publishes_confirmable);
        }
    }
    if (barrier == 0) return;
    if (unflushed_subs) {
        // A PING/PONG round trip on each connection: the server has
        // processed every SUB sent before it, so a message another node
        // publishes from now on reaches this node. A connection that is
        // down confirms at once (its subscriptions are re-sent when it
        // reconnects; docs/cluster.md says what is missed meanwhile).
        unflushed_subs = false;
        for (natsConnection* conn : {d, c}) {
            if (conn && natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED) {
                natsConnection_FlushTimeout(conn, 1000);
            }
        }
    }
    if (retained_ready.load()) {
        {
            std::lock_guard lock(js_mutex);
            barriers.emplace_back(barrier, barrier_retained);
        }
        js_cv.notify_one();
    } else if (barrier_retained && retained_soon.load()) {
        early_barriers.emplace_back(barrier, std::chrono::steady_clock::now());
    } else if (early_barriers.empty()) {
        push_in(tag_confirmed, 0, nullptr, 0, 0, barrier);
    } else {
        early_barriers.emplace_back(barrier, std::chrono::steady_clock::time_point{});  // behind the waiting ones
    }
}

// Barriers that waited for the retained stream: to the js thread once it
// serves them, confirmed here once it gave up or after 3 s (in order).
void NatsCluster::Shared::pass_early_barriers() {
    if (early_barriers.empty()) return;
    if (retained_ready.load()) {
        {
            std::lock_guard lock(js_mutex);
            for (const auto& b : early_barriers) barriers.emplace_back(b.first, true);
        }
        early_barriers.clear();
        js_cv.notify_one();
        return;
    }
    const auto too_old = std::chrono::steady_clock::now() - std::chrono::seconds(3);
    std::uint64_t upto = 0;
    while (!early_barriers.empty() && (!retained_soon.load() || early_barriers.front().second < too_old)) {
        upto = early_barriers.front().first;
        early_barriers.pop_front();
    }
    if (upto != 0) push_in(tag_confirmed, 0, nullptr, 0, 0, upto);
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
    natsSubscription* handovers = nullptr;
    if (natsConnection* d = data.load()) {
        const std::string subject = prefix + ".claim";
        natsConnection_Subscribe(&claims, d, subject.c_str(), on_message, &claim_context);
        track(claims);
        std::string mine = prefix + ".session.";
        append_level_token(mine, node_id);
        natsConnection_Subscribe(&handovers, d, mine.c_str(), on_message, &session_context);
        track(handovers);
        // A session's state can be large (its queued messages).
        if (handovers) natsSubscription_SetPendingLimits(handovers, 100'000, 256 << 20);
        char origin_hex[24];
        std::snprintf(origin_hex, sizeof origin_hex, "%llx", static_cast<unsigned long long>(origin));
        const std::string answers = std::string("_p.") + origin_hex + ".>";
        nobody_subject = std::string("_n.") + origin_hex;
        natsConnection_Subscribe(&unreceived_sub, d, answers.c_str(), on_unreceived, this);
        track(unreceived_sub);
        if (unreceived_sub) natsSubscription_SetPendingLimits(unreceived_sub, -1, -1);
    }
    js_thread = std::thread([this] { js_main(); });
    kv_thread = std::thread([this] { kv_main(); });
    std::vector<char> batch;
    for (;;) {
        {
            std::unique_lock lock(out_mutex);
            out_cv.wait_for(lock, std::chrono::seconds(1), [&] { return stop || !out.empty() || link_wake; });
            link_wake = false;
            batch.swap(out);
            if (stop && batch.empty()) break;
        }
        run_batch(batch);
        batch.clear();
        refresh_dropped();
        sweep_barriers();
        pass_early_barriers();
    }
    {
        std::lock_guard lock(js_mutex);
        js_cv.notify_all();
    }
    {
        std::lock_guard lock(kv_mutex);
        kv_cv.notify_all();
    }
    js_thread.join();
    kv_thread.join();
    // Wills published during shutdown still go out (best effort, 1 s).
    if (natsConnection* d = data.load()) natsConnection_FlushTimeout(d, 1000);
    for (auto& [id, sub] : subs) natsSubscription_Destroy(sub);
    subs.clear();
    if (claims) natsSubscription_Destroy(claims);
    if (handovers) natsSubscription_Destroy(handovers);
    if (unreceived_sub) natsSubscription_Destroy(unreceived_sub);
    if (retained_sub) natsSubscription_Destroy(retained_sub);
    if (js) jsCtx_Destroy(js);
    {
        std::unique_lock lock(subs_open_mutex);
        subs_open_cv.wait_for(lock, std::chrono::seconds(1), [&] { return subs_open == 0; });
    }
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
// calls are requests that block: this thread retries them until they work
// (true), or until the link stops (false).
bool NatsCluster::Shared::js_setup() {
    const std::string subjects = prefix + ".r.>";
    const std::string name = stream_name(prefix);
    int attempt = 0;
    // A failed attempt: SUBSCRIBEs stop waiting for the stream, and
    // PUBACKs of retained updates queued for it go (the updates are sent
    // when the stream is there; meanwhile they reached the nodes live).
    auto wait = [&](std::chrono::milliseconds ms) {
        if (retained_soon.load()) retained_state(false);
        std::unique_lock lock(js_mutex);
        std::uint64_t ticket = 0;
        for (const auto& u : retained_out) ticket = std::max(ticket, u.ticket);
        if (ticket != 0) push_in(tag_stored, 0, nullptr, 0, 0, ticket);
        js_cv.wait_for(lock, ms, [&] { return stopping(); });
        return !stopping();
    };
    while (!stopping()) {
        natsConnection* c = control.load();
        if (!c) return false;
        if (natsConnection_Status(c) != NATS_CONN_STATUS_CONNECTED) {
            if (!wait(std::chrono::milliseconds(100))) return false;
            continue;
        }
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.PublishAsync.AckHandler = on_retained_ack;
        jo.PublishAsync.AckHandlerClosure = this;
        jo.PublishAsync.StallWait = 1000;
        if (!js && natsConnection_JetStream(&js, c, &jo) != NATS_OK) {
            js = nullptr;
            if (!wait(std::chrono::milliseconds(500))) return false;
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
                track(retained_sub);
                retained_mode = RetainedMode::live_only;
                retained_state(false);
                return true;
            }
            if (++attempt % 10 == 1) {
                log(std::string("Cluster: cannot create the retained stream: ") + natsStatus_GetText(st));
            }
            if (!wait(std::chrono::milliseconds(std::min(200 * attempt, 2000)))) return false;
            continue;
        }
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Ordered = true;
        so.Config.DeliverPolicy = js_DeliverLastPerSubject;
        st = js_Subscribe(&retained_sub, js, subjects.c_str(), on_message, &retained_context, nullptr, &so, &jerr);
        if (st == NATS_OK) {
            natsSubscription_SetPendingLimits(retained_sub, 1'000'000, 512 << 20);
            track(retained_sub);
            retained_mode = RetainedMode::stream;
            retained_state(true);
            return true;
        }
        retained_sub = nullptr;
        if (++attempt % 10 == 1) {
            log(std::string("Cluster: cannot subscribe to retained messages: ") + natsStatus_GetText(st));
        }
        if (!wait(std::chrono::milliseconds(std::min(200 * attempt, 2000)))) return false;
    }
    return false;
}

void NatsCluster::Shared::js_main() {
    if (js_setup()) js_serve();
    // Updates still waiting when the link stops were never sent.
    std::lock_guard lock(js_mutex);
    lost_out.fetch_add(retained_out.size(), std::memory_order_relaxed);
    retained_out.clear();
}

// A SUBSCRIBE whose retained messages go out after its SUBACK: the node's
// copy must hold every update the stream stored before the SUBSCRIBE came
// (a retained message a client set on another node and had acknowledged).
// Asks the stream for its last sequence (one request for every SUBSCRIBE
// waiting), then waits until the consumer has handed that far to the
// reactor. Bounded: NATS down or slow, the SUBACK goes with what is here.
void NatsCluster::Shared::catch_up_retained() {
    natsConnection* c = control.load();
    if (!js || !c || natsConnection_Status(c) != NATS_CONN_STATUS_CONNECTED) return;
    const std::string name = stream_name(prefix);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 1000;
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&si, js, name.c_str(), &jo, &jerr) != NATS_OK || !si) return;
    const std::uint64_t last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    std::unique_lock lock(seen_mutex);
    seen_cv.wait_for(lock, std::chrono::seconds(1), [&] { return retained_seen >= last || stopping(); });
}

// Sends the retained updates in order: one thread, one connection, so the
// stream stores a topic's set and its later delete in the order they were
// published (a delete never overtakes its set). With JetStream they go as
// asynchronous JetStream publishes (a failed acknowledgement is counted as
// lost); without it, live on the control connection. A batch with QoS 1/2
// updates waits (at most 2 s) for the stream's acknowledgements before it
// releases their PUBACKs (tag_stored): a SUBSCRIBE on another node after
// the PUBACK finds the update in the stream (catch_up_retained).
void NatsCluster::Shared::js_serve() {
    std::deque<RetainedUpdate> work;
    std::deque<std::pair<std::uint64_t, bool>> tickets;
    for (;;) {
        {
            std::unique_lock lock(js_mutex);
            js_cv.wait(lock, [&] { return stopping() || !retained_out.empty() || !barriers.empty(); });
            if (retained_out.empty() && barriers.empty()) break;  // stopping
            work.swap(retained_out);
            retained_out_bytes = 0;
            tickets.swap(barriers);
        }
        natsConnection* c = control.load();
        std::uint64_t ticket = 0;
        for (const auto& [subject, data, update_ticket] : work) {
            ticket = std::max(ticket, update_ticket);
            natsStatus st = NATS_ERR;
            if (retained_mode == RetainedMode::stream) {
                st = js_PublishAsync(js, subject.c_str(), data.data(), static_cast<int>(data.size()), nullptr);
            } else if (c) {
                st = natsConnection_Publish(c, subject.c_str(), data.data(), static_cast<int>(data.size()));
            }
            if (st == NATS_OK) {
                messages_out.fetch_add(1, std::memory_order_relaxed);
            } else {
                lost_out.fetch_add(1, std::memory_order_relaxed);
            }
        }
        work.clear();
        if (ticket != 0) {
            if (retained_mode == RetainedMode::stream) {
                jsPubOptions po;
                jsPubOptions_Init(&po);
                po.MaxWait = 2000;
                js_PublishAsyncComplete(js, &po);
            }
            push_in(tag_stored, 0, nullptr, 0, 0, ticket);
        }
        if (!tickets.empty()) {
            bool retained = false;
            for (const auto& t : tickets) retained = retained || t.second;
            if (retained) catch_up_retained();
            push_in(tag_confirmed, 0, nullptr, 0, 0, tickets.back().first);
            tickets.clear();
        }
    }
    if (retained_mode == RetainedMode::stream) {
        // Wills and last updates published during shutdown: wait (bounded)
        // for the stream to acknowledge them.
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 1000;
        js_PublishAsyncComplete(js, &po);
    }
}

// Session ownership by compare-and-set on a JetStream KV bucket (one key
// per client id, value = owning node): a claim reads the key's revision and
// writes this node with kvStore_Update(last = that revision), or
// kvStore_Create when the key does not exist; when another node wrote in
// between, the write fails and the claim reads again. Each successful
// write gets a new, higher revision, so every claim has a place in one
// total order that no clock can disturb; the revision is the claim's stamp
// on PREFIX.claim, and a node whose claim has the lower revision gives way
// (on_claim). The requests block: they run here, never on the reactor.
// Without the bucket (no JetStream, NATS down) a claim falls back to a
// wall-clock stamp and the old owner is unknown.
void NatsCluster::Shared::kv_main() {
    const std::string bucket = stream_name(prefix, "MQTT_OWNERS_");
    const std::string claim_subject = prefix + ".claim";
    jsCtx* kjs = nullptr;
    kvStore* kv = nullptr;
    auto next_setup = std::chrono::steady_clock::now();
    bool warned = false;
    std::uint64_t kv_failures = 0;
    // Keys this node wrote last, with that revision: a client reconnecting
    // to the same node settles with one request.
    std::unordered_map<std::string, std::uint64_t> mine;
    std::deque<std::pair<std::string, bool>> jobs;
    for (;;) {
        {
            std::unique_lock lock(kv_mutex);
            kv_cv.wait(lock, [&] { return stopping() || !kv_jobs.empty(); });
            if (kv_jobs.empty()) break;  // stopping
            jobs.swap(kv_jobs);
        }
        natsConnection* c = control.load();
        natsConnection* d = data.load();
        const bool up = c && natsConnection_Status(c) == NATS_CONN_STATUS_CONNECTED;
        if (up && !kv && std::chrono::steady_clock::now() >= next_setup) {
            next_setup = std::chrono::steady_clock::now() + std::chrono::seconds(1);
            // A CONNECT waits at most handover_wait (1.5 s) for its claim:
            // a request that takes longer is not worth waiting for.
            jsOptions jo;
            jsOptions_Init(&jo);
            jo.Wait = 1500;
            if (!kjs && natsConnection_JetStream(&kjs, c, &jo) != NATS_OK) kjs = nullptr;
            if (kjs) {
                kvConfig cfg;
                kvConfig_Init(&cfg);
                cfg.Bucket = bucket.c_str();
                cfg.History = 1;
                cfg.StorageType = js_FileStorage;
                if (js_CreateKeyValue(&kv, kjs, &cfg) != NATS_OK) {
                    kv = nullptr;
                    if (js_KeyValue(&kv, kjs, bucket.c_str()) != NATS_OK) kv = nullptr;
                }
            }
            if (!kv && !warned) {
                warned = true;
                log("Cluster: no JetStream key/value bucket " + bucket +
                    ": session claims are ordered by wall-clock time (start nats-server with -js).");
            }
            if (kv) warned = false;
        }
        if (mine.size() > 200000) mine.clear();
        for (auto& [client_id, want_state] : jobs) {
            std::uint64_t stamp = 0;
            bool other_owner = true;  // unknown counts as another
            std::string previous = "?";
            if (up && kv) {
                const std::string key = kv_key(client_id);
                const void* value = node_id.data();
                const int value_len = static_cast<int>(node_id.size());
                // NATS_ERR: the server refused the write (another node
                // wrote first: wrong last sequence): read again. Anything
                // else (a timeout, the connection gone): give up at once.
                for (int attempt = 0; attempt < 8 && stamp == 0; ++attempt) {
                    std::uint64_t rev = 0;
                    natsStatus st = NATS_OK;
                    if (auto it = mine.find(key); it != mine.end()) {
                        st = kvStore_Update(&rev, kv, key.c_str(), value, value_len, it->second);
                        if (st == NATS_OK) {
                            it->second = rev;
                            stamp = rev;
                            other_owner = false;
                            previous = node_id;
                            break;
                        }
                        mine.erase(it);  // another node wrote since
                        if (st != NATS_ERR) break;
                    }
                    kvEntry* e = nullptr;
                    st = kvStore_Get(&e, kv, key.c_str());
                    if (st == NATS_NOT_FOUND) {
                        st = kvStore_Create(&rev, kv, key.c_str(), value, value_len);
                        if (st == NATS_OK) {
                            mine[key] = rev;
                            stamp = rev;
                            other_owner = false;
                            previous = "-";
                        }
                        if (st != NATS_OK && st != NATS_ERR) break;
                        continue;  // created by another node meanwhile: read again
                    }
                    if (st != NATS_OK) break;
                    const std::string_view owner(static_cast<const char*>(kvEntry_Value(e)),
                                                 static_cast<std::size_t>(kvEntry_ValueLen(e)));
                    const bool other = owner != node_id;
                    const std::string owner_copy(owner.substr(0, 128).find(' ') == owner.npos ? owner.substr(0, 128)
                                                                                             : "?");
                    const std::uint64_t last = kvEntry_Revision(e);
                    kvEntry_Destroy(e);
                    st = kvStore_Update(&rev, kv, key.c_str(), value, value_len, last);
                    if (st == NATS_OK) {
                        mine[key] = rev;
                        stamp = rev;
                        other_owner = other;
                        previous.assign(owner_copy);
                    } else if (st != NATS_ERR) {
                        break;
                    }
                }
                if (stamp != 0) {
                    stamp |= kv_stamp_bit;
                } else {
                    ++kv_failures;
                    if ((kv_failures & (kv_failures - 1)) == 0) {
                        const char* why = nats_GetLastError(nullptr);
                        log("Cluster: session claims not settled by the KV bucket so far: " +
                            std::to_string(kv_failures) + " (last: " + (why ? why : "?") +
                            "); ordered by wall-clock time");
                    }
                }
            }
            if (stamp == 0) {
                stamp = wall_ns() & ~kv_stamp_bit;
                other_owner = true;
                previous = "?";
            }
            // Tell the other nodes, then the reactor.
            std::string payload = std::to_string(stamp);
            payload.append(1, ' ').append(node_id).append(want_state ? " s " : " - ");
            payload.append(previous.empty() ? "?" : previous).append(1, ' ').append(client_id);
            if (!d || natsConnection_Status(d) != NATS_CONN_STATUS_CONNECTED ||
                natsConnection_Publish(d, claim_subject.c_str(), payload.data(), static_cast<int>(payload.size())) !=
                    NATS_OK) {
                const std::uint64_t n = unsent_claims.fetch_add(1, std::memory_order_relaxed) + 1;
                if ((n & (n - 1)) == 0) log("Cluster: NATS is down: session claims not sent so far: " + std::to_string(n));
            }
            const std::uint32_t flags = (want_state ? claim_wants_state : 0) | (other_owner ? claim_other_owner : 0);
            push_in(tag_claimed, flags, client_id.data(), client_id.size(), 0, stamp);
        }
        jobs.clear();
    }
    if (kv) kvStore_Destroy(kv);
    if (kjs) jsCtx_Destroy(kjs);
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
    // Every connection and subscription is destroyed above; wait (bounded)
    // for libnats' own threads to release what they still hold. nats_Close()
    // returns at once, and a message its delivery thread had just created
    // was then reported as a leak by LeakSanitizer at exit.
    if (nats_CloseAndWait(2000) != NATS_OK) spdlog::debug("Cluster: libnats still closing after 2 s.");
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
                ++subscribes_pushed_;
                shared_->push_out(queue.empty() ? Op::subscribe : Op::queue_subscribe, it->second.id, tag, subject,
                                  queue, nullptr, 0);
            }
        } else if (it != interest_.end() && --it->second.count == 0) {
            shared_->push_out(Op::unsubscribe, it->second.id, 0, {}, {}, nullptr, 0);
            interest_.erase(it);
        }
    }
}

std::uint64_t NatsCluster::interest_ticket(bool retained) {
    if (subscribes_pushed_ != subscribes_at_barrier_ ||
        (retained && (shared_->retained_ready.load() || shared_->retained_soon.load()))) {
        subscribes_at_barrier_ = subscribes_pushed_;
        ++barrier_;
        shared_->push_out(Op::barrier, 0, retained ? 1 : 0, {}, {}, &barrier_, sizeof barrier_);
    }
    // An older barrier still pending covers interest this SUBSCRIBE shares
    // (a filter another session subscribed to a moment ago).
    return barrier_ > confirmed_ ? barrier_ : 0;
}

bool NatsCluster::reached_no_node(std::uint64_t ticket) {
    // Asked in ticket order while the acknowledgements are released.
    while (!unreceived_.empty() && unreceived_.front() < ticket) unreceived_.pop_front();
    return !unreceived_.empty() && unreceived_.front() == ticket;
}

void NatsCluster::publish(const broker::MessageView& m) {
    last_publish_ticket_ = 0;
    last_publish_id_ = {};
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
    const bool confirm = m.qos != QoS::at_most_once;
    if (!shared_->push_out(Op::publish_live, 0, confirm ? 1 : 0, subject_, {}, bytes.data(), bytes.size())) {
        shared_->lost_out.fetch_add(1, std::memory_order_relaxed);
    } else {
        // The link thread numbers publish_live ops in the order pushed
        // (live_seq): the same count.
        last_publish_id_ = {shared_->origin, ++live_pushed_};
        if (confirm) last_publish_ticket_ = ++publishes_pushed_;
    }
    if (m.retain) {
        // The retained stream keeps it (or, empty, the deletion) for every
        // node, including nodes that start later.
        topic_subject(subject_, prefix_ + ".r", m.topic);
        if (!shared_->push_retained(subject_, bytes.data(), bytes.size(), last_publish_ticket_)) {
            shared_->lost_out.fetch_add(1, std::memory_order_relaxed);
        } else if (last_publish_ticket_ != 0) {
            retained_pending_.push_back(last_publish_ticket_);
        }
    }
}

// Session ownership: the last claim wins, ordered by (stamp, node id), the
// same total order on every node; the stamp is the KV revision the claim's
// compare-and-set got (kv_main). Two simultaneous CONNECTs with one client
// id on two nodes: the bucket orders their writes; each node gets the
// other's claim; the node whose claim is newer keeps its client, the other
// accepts its client and closes it with 0x8E, so exactly one owner remains
// (while NATS carries the claims; see docs/cluster.md for partitions).
void NatsCluster::claim_session(std::string_view client_id, bool want_state) {
    ++pending_claims_[std::string(client_id)].count;
    shared_->push_claim(client_id, want_state);
}

void NatsCluster::on_claimed(std::string_view client_id, std::uint64_t stamp, std::uint32_t flags) {
    const auto now = reactor_.now();
    std::string id(client_id);
    PendingClaim pending;
    if (auto it = pending_claims_.find(id); it != pending_claims_.end()) {
        pending = it->second;
        if (--it->second.count == 0) pending_claims_.erase(it);
    }
    claims_[id] = Claim{stamp, now};
    if (++claims_since_prune_ >= 1024) {
        claims_since_prune_ = 0;
        std::erase_if(claims_, [&](const auto& kv) { return now - kv.second.at > std::chrono::seconds(60); });
    }
    if (pending.remote_stamp != 0 && std::pair(pending.remote_stamp, std::string_view(pending.remote_node)) >
                                         std::pair(stamp, std::string_view(node_id_))) {
        // A newer claim from another node came while ours was settling.
        claims_.erase(id);
        if (broker_.session_claimed_elsewhere(client_id, pending.remote_node, pending.remote_wants_state)) {
            ++takeovers_in_;
        }
        return;
    }
    broker_.claim_settled(client_id, (flags & claim_wants_state) != 0 && (flags & claim_other_owner) != 0);
}

void NatsCluster::send_session(std::string_view node, std::string_view client_id, std::string_view state) {
    // MQTT strings never hold U+0000 [MQTT-1.5.4-2]: NUL ends the client id.
    std::string payload;
    payload.reserve(client_id.size() + 1 + state.size());
    payload.append(client_id).append(1, '\0').append(state);
    std::string subject = prefix_ + ".session.";
    append_level_token(subject, node);
    if (shared_->push_out(Op::publish, 0, 0, subject, {}, payload.data(), payload.size())) {
        if (is_session_state(state)) ++sessions_sent_;
    } else {
        spdlog::warn("Cluster: the session of {} could not be handed to {} (queue full).", std::string(client_id),
                     std::string(node));
    }
}

void NatsCluster::on_session(std::string_view payload) {
    const std::size_t nul = payload.find('\0');
    if (nul == payload.npos) return;
    if (is_session_state(payload.substr(nul + 1))) ++sessions_received_;
    broker_.session_arrived(payload.substr(0, nul), payload.substr(nul + 1));
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
    if (payload.size() < b + 3 || payload[b + 2] != ' ') return;
    const bool wants_state = payload[b + 1] == 's';
    const std::size_t c = payload.find(' ', b + 3);
    if (c == payload.npos) return;
    const std::string_view previous = payload.substr(b + 3, c - b - 3);
    const std::string_view client_id = payload.substr(c + 1);
    if (node == node_id_) return;
    if (auto p = pending_claims_.find(std::string(client_id)); p != pending_claims_.end()) {
        // Ours is still settling: compared when its stamp is known.
        PendingClaim& pc = p->second;
        if (std::pair(stamp, node) > std::pair(pc.remote_stamp, std::string_view(pc.remote_node))) {
            pc.remote_stamp = stamp;
            pc.remote_node.assign(node);
            pc.remote_wants_state = wants_state;
        }
        return;
    }
    auto it = claims_.find(std::string(client_id));
    if (it != claims_.end() && std::pair(it->second.stamp, std::string_view(node_id_)) > std::pair(stamp, node)) {
        return;  // our claim is the newer one: the other node gives way
    }
    if (it != claims_.end()) claims_.erase(it);
    if (broker_.session_claimed_elsewhere(client_id, node, wants_state)) {
        ++takeovers_in_;
    } else if (wants_state && previous == node_id_) {
        // The bucket says we held it, but the session is gone (expired,
        // or ended with its connection): the claimer need not wait.
        send_session(node, client_id, {});
    }
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
                if (!broker_.route_from_cluster(bytes, {}, h.origin, h.seq)) shared_->lost_in_queue.fetch_add(1);
                break;
            }
            case tag_retained:
                if (broker_.retained_from_cluster(bytes, h.age)) ++retained_in_;
                break;
            case tag_claim:
                on_claim(std::string_view(data, h.len));
                break;
            case tag_session:
                on_session(std::string_view(data, h.len));
                break;
            case tag_claimed:
                on_claimed(std::string_view(data, h.len), h.seq, h.age);
                break;
            case tag_unreceived:
                if (h.seq > publishes_confirmed_) unreceived_.push_back(h.seq);
                break;
            case tag_sent:
                live_sent_ = std::max(live_sent_, h.seq);
                release_publishes();
                break;
            case tag_stored:
                while (!retained_pending_.empty() && retained_pending_.front() <= h.seq) retained_pending_.pop_front();
                release_publishes();
                break;
            case tag_confirmed:
                if (h.seq > confirmed_) {
                    confirmed_ = h.seq;
                    broker_.interest_confirmed(confirmed_);
                }
                break;
            case tag_log:
                spdlog::warn("{}", std::string_view(data, h.len));
                break;
            default:
                if (h.tag >= tag_shared_base && h.tag - tag_shared_base < shared_filters_.size()) {
                    if (!broker_.route_from_cluster(bytes, shared_filters_[h.tag - tag_shared_base], h.origin, h.seq)) {
                        shared_->lost_in_queue.fetch_add(1);
                    }
                }
                break;
        }
    }
    // Keep the larger buffer's capacity on this side; hand an empty one back.
    if (inbound_.capacity() > (4u << 20)) std::vector<char>().swap(inbound_);
}

// QoS 1/2 publishes are confirmed to the broker (their PUBACKs go) in
// order, once NATS has them and, for retained ones, the stream too.
void NatsCluster::release_publishes() {
    std::uint64_t upto = live_sent_;
    if (!retained_pending_.empty()) upto = std::min(upto, retained_pending_.front() - 1);
    if (upto <= publishes_confirmed_) return;
    publishes_confirmed_ = upto;
    broker_.publishes_confirmed(publishes_confirmed_);
    while (!unreceived_.empty() && unreceived_.front() <= publishes_confirmed_) unreceived_.pop_front();
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
    c.retained_stored = shared_->retained_stored.load();
    c.sessions_sent = sessions_sent_;
    c.sessions_received = sessions_received_;
    return c;
}

}  // namespace mqttools::cluster
