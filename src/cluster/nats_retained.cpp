// The JetStream thread (issue 13): the retained stream every node reads,
// the retained updates this node sends to it, and the catch-up that makes
// a SUBACK wait for what the stream had.

#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "cluster/nats_shared.hpp"

namespace mqttools::cluster {

namespace {

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

void on_purged(natsConnection*, natsSubscription*, natsMsg* msg, void*) { natsMsg_Destroy(msg); }

}  // namespace

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
        cfg.Replicas = static_cast<int>(config.replicas);  // survives a NATS cluster member as the messages do
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

// Purges the deletion markers older than retained_marker_age (at most 5,000
// a second): each a request that removes the marker's subject up to the
// marker only, so a topic set again since keeps its new value. Sent without
// waiting; their answers are dropped (on_purged).
void NatsCluster::Shared::purge_old_markers() {
    natsConnection* c = control.load();
    if (!c || natsConnection_Status(c) != NATS_CONN_STATUS_CONNECTED) return;
    if (!purge_answers) {
        char origin_hex[24];
        std::snprintf(origin_hex, sizeof origin_hex, "%llx", static_cast<unsigned long long>(origin));
        purge_reply = std::string("_q.") + origin_hex;
        if (natsConnection_Subscribe(&purge_answers, c, purge_reply.c_str(), on_purged, nullptr) != NATS_OK) {
            purge_answers = nullptr;
            return;
        }
        track(purge_answers);
    }
    const std::uint64_t before = wall_ns() - static_cast<std::uint64_t>(
                                                 std::chrono::nanoseconds(retained_marker_age).count());
    const std::string api = "$JS.API.STREAM.PURGE." + stream_name(prefix);
    std::string body;
    for (int n = 0; n < 5000; ++n) {
        Marker m;
        {
            std::lock_guard lock(markers_mutex);
            if (markers.empty() || markers.front().stored_ns > before) break;
            m = std::move(markers.front());
            markers.pop_front();
        }
        body = "{\"filter\":\"" + m.subject + "\",\"seq\":" + std::to_string(m.seq + 1) + "}";
        natsConnection_PublishRequest(c, api.c_str(), purge_reply.c_str(), body.data(), static_cast<int>(body.size()));
    }
}

void NatsCluster::Shared::js_main() {
    pthread_setname_np(pthread_self(), "mq-js");
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
            js_cv.wait_for(lock, std::chrono::seconds(1),
                           [&] { return stopping() || !retained_out.empty() || !barriers.empty(); });
            if (retained_out.empty() && barriers.empty() && stopping()) break;
            work.swap(retained_out);
            retained_out_bytes = 0;
            tickets.swap(barriers);
        }
        if (retained_mode == RetainedMode::stream) purge_old_markers();
        natsConnection* c = control.load();
        std::uint64_t ticket = 0;
        for (const auto& [subject, data, update_ticket, deleted] : work) {
            ticket = std::max(ticket, update_ticket);
            natsStatus st = NATS_ERR;
            if (retained_mode == RetainedMode::stream && deleted) {
                natsMsg* msg = nullptr;
                st = natsMsg_Create(&msg, subject.c_str(), nullptr, data.data(), static_cast<int>(data.size()));
                if (st == NATS_OK) st = natsMsgHeader_Set(msg, deleted_header, "1");
                if (st == NATS_OK) st = js_PublishMsgAsync(js, &msg, nullptr);
                if (msg) natsMsg_Destroy(msg);  // not taken over when the call failed
            } else if (retained_mode == RetainedMode::stream) {
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

}  // namespace mqttools::cluster
