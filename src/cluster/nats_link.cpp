// The link thread (issue 13): the node's two NATS connections, its
// subscriptions (one per distinct local filter), its live publishes and the
// barriers that confirm them; libnats' callbacks hand what arrives to the
// reactor's queue.

#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "cluster/nats_durable.hpp"
#include "cluster/nats_shared.hpp"
#include "cluster/subject_map.hpp"

namespace mqttools::cluster {

namespace {

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

// "_K.ORIGIN." (ORIGIN in lower-case hex) into `out`; returns the end.
char* reply_prefix(char* out, char kind, std::uint64_t origin) {
    *out++ = '_';
    *out++ = kind;
    *out++ = '.';
    char digits[16];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[origin & 15];
        origin >>= 4;
    } while (origin != 0);
    while (n > 0) *out++ = digits[--n];
    *out++ = '.';
    return out;
}

char* append_decimal(char* out, std::uint64_t v) {
    char digits[20];
    int n = 0;
    do {
        digits[n++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0) *out++ = digits[--n];
    return out;
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

}  // namespace

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
            const char* deleted = nullptr;
            if (natsMsgHeader_Get(msg, deleted_header, &deleted) == NATS_OK && natsMsg_GetSubject(msg)) {
                ctx->shared->note_marker(natsMsg_GetSubject(msg), stream_seq, static_cast<std::uint64_t>(meta->Timestamp));
            }
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

namespace {

void on_disconnected(natsConnection* nc, void* closure) {
    auto* s = static_cast<NatsCluster::Shared*>(closure);
    // sessions = "replicated": what NATS drops meanwhile is replayed from
    // the stream once the link is back (NatsCluster::on_link_state).
    if ((s->durable || s->config.disconnect_after) && nc == s->data.load()) s->push_in(tag_link_down, 0, nullptr, 0, 0, wall_ns());
    s->disconnects.fetch_add(1, std::memory_order_relaxed);
    s->log("Cluster: lost the connection to NATS; serving local clients, reconnecting.");
}

void on_reconnected(natsConnection* nc, void* closure) {
    auto* s = static_cast<NatsCluster::Shared*>(closure);
    s->reconnects.fetch_add(1, std::memory_order_relaxed);
    if ((s->durable || s->config.disconnect_after) && nc == s->data.load()) s->push_in(tag_link_up, 0, nullptr, 0, 0, wall_ns());
    s->learn_max_payload(nc);
    s->log("Cluster: reconnected to NATS (interest re-subscribed).");
}

void on_connected(natsConnection* nc, void* closure) {
    auto* s = static_cast<NatsCluster::Shared*>(closure);
    s->learn_max_payload(nc);
    {
        std::lock_guard lock(s->unreachable_mutex);
        s->unreachable.clear();
    }
    s->log("Cluster: connected to NATS.");
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
        // Not yet connected: libnats keeps trying in its own thread. Say so
        // now (once, for the first connection), with the URL and why, not
        // only when a client first needs the cluster.
        if (st == NATS_NOT_YET_CONNECTED) {
            st = NATS_OK;
            if (no_echo) {
                std::string where;
                for (const char* u : urls) where += (where.empty() ? "" : ", ") + std::string(u);
                const std::string why = where + ": " + nats_GetLastError(nullptr);
                {
                    std::lock_guard lock(unreachable_mutex);
                    unreachable = why;
                }
                log("Cluster: cannot reach NATS at " + why +
                    "; retrying in the background (until then this node serves only its own clients).");
            }
        }
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
    OutHeader h;
    while (next_header(batch, pos, h)) {
        const char* subject = batch.data() + pos;
        pos += h.subject_len;
        const char* queue = h.queue_len ? batch.data() + pos : nullptr;
        pos += h.queue_len;
        const char* payload = batch.data() + pos;
        pos += h.data_len;
        switch (h.op) {
            case Op::publish_live: {
                // "_o.ORIGIN.SEQ", or "_p.ORIGIN.SEQ.TICKET" whose "no
                // responders" answer (no other node has interest) names
                // it: the PUBACK can then say 0x10. Formatted by hand:
                // snprintf was a tenth of the publishing node's
                // instructions per message (docs/profiling.md).
                char reply[64];
                ++live_seq;
                char* end = reply_prefix(reply, h.tag == 0 ? 'o' : 'p', origin);
                end = append_decimal(end, live_seq);
                if (h.tag != 0) {
                    ++publishes_confirmable;
                    confirm_sent = true;
                    *end++ = '.';
                    end = append_decimal(end, publishes_confirmable);
                }
                *end = '\0';
                if (up && natsConnection_PublishRequest(d, subject, reply, payload, static_cast<int>(h.data_len)) ==
                              NATS_OK) {
                    messages_out.fetch_add(1, std::memory_order_relaxed);
                } else {
                    lost_out.fetch_add(1, std::memory_order_relaxed);
                }
                break;
            }
            case Op::publish_bulk:
                // A part that fails leaves its message incomplete: the
                // reference that follows fails too (NATS down) and is
                // counted as lost, or receivers drop the incomplete parts.
                if (up) natsConnection_Publish(d, subject, payload, static_cast<int>(h.data_len));
                break;
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
            case Op::hand_back:
                if (!c || !queue ||
                    natsConnection_PublishRequest(c, subject, queue, payload, static_cast<int>(h.data_len)) != NATS_OK) {
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
    // One reading of `retained_ready` for both steps: the barriers that
    // waited go to the js thread before this one, never after it (a later
    // barrier confirmed first would release their SUBACKs too early).
    const bool ready = retained_ready.load();
    pass_early_barriers(ready);
    if (ready) {
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
void NatsCluster::Shared::pass_early_barriers(bool ready) {
    if (early_barriers.empty()) return;
    if (ready) {
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
    // Threads are named for profiles (docs/profiling.md): libnats' own
    // threads, started from here, inherit "nats-lib"; this one is renamed
    // once they exist.
    pthread_setname_np(pthread_self(), "nats-lib");
    // One delivery thread for every subscription: messages reach the
    // reactor in the order NATS sent them (the duplicate check relies on it).
    nats_SetMessageDeliveryPoolSize(1);
    if (!wire) data.store(connect(true));
    learn_max_payload(data.load());
    control.store(connect(false));
    natsSubscription* claims = nullptr;
    natsSubscription* handovers = nullptr;
    natsSubscription* bulk_sub = nullptr;
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
        // Parts of messages over max_payload, from every node.
        const std::string bulk = prefix + ".b.>";
        natsConnection_Subscribe(&bulk_sub, d, bulk.c_str(), on_message, &bulk_context);
        track(bulk_sub);
        if (bulk_sub) natsSubscription_SetPendingLimits(bulk_sub, 1'000'000, 512 << 20);
        natsConnection_Subscribe(&unreceived_sub, d, answers.c_str(), on_unreceived, this);
        track(unreceived_sub);
        if (unreceived_sub) natsSubscription_SetPendingLimits(unreceived_sub, -1, -1);
    }
    if (durable) durable->start();
    pthread_setname_np(pthread_self(), "mq-link");
    js_thread = std::thread([this] { js_main(); });
    kv_thread = std::thread([this] { kv_main(); });
    if (durable) nodes_thread = std::thread([this] { nodes_main(); });
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
        pass_early_barriers(retained_ready.load());
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
    if (nodes_thread.joinable()) nodes_thread.join();
    if (durable) durable->stop();
    // Wills published during shutdown still go out (best effort, 1 s).
    if (natsConnection* d = data.load()) natsConnection_FlushTimeout(d, 1000);
    for (auto& [id, sub] : subs) natsSubscription_Destroy(sub);
    subs.clear();
    if (claims) natsSubscription_Destroy(claims);
    if (handovers) natsSubscription_Destroy(handovers);
    if (bulk_sub) natsSubscription_Destroy(bulk_sub);
    if (unreceived_sub) natsSubscription_Destroy(unreceived_sub);
    if (retained_sub) natsSubscription_Destroy(retained_sub);
    if (purge_answers) natsSubscription_Destroy(purge_answers);
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

}  // namespace mqttools::cluster
