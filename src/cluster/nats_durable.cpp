// The durable thread (issue 25): QoS 1/2 messages into the JetStream
// stream PREFIX_MSGS, acknowledged back to the reactor in ticket terms
// (nats_durable.hpp says why and how).

#include "cluster/nats_durable.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "cluster/nats_shared.hpp"

namespace mqttools::cluster {

namespace {

// "_d.ORIGIN.TICKET": the stream's answer to one durable publish.
void on_answer(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    auto* d = static_cast<Durable*>(closure);
    const char* subject = natsMsg_GetSubject(msg);
    const char* dot = subject ? std::strrchr(subject, '.') : nullptr;
    std::uint64_t ticket = 0;
    for (const char* p = dot ? dot + 1 : ""; *p >= '0' && *p <= '9'; ++p) ticket = ticket * 10 + (*p - '0');
    // A PubAck is {"stream":"..","seq":N[,"duplicate":true]}; a failure
    // {"error":{...}} or a "no responders" status (no stream).
    const std::string_view body(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    const bool stored = !natsMsg_IsNoResponders(msg) && body.find("\"error\"") == body.npos &&
                        body.find("\"seq\"") != body.npos;
    natsMsg_Destroy(msg);
    if (ticket != 0) d->answered(ticket, stored);
}

}  // namespace

Durable::Durable(NatsCluster::Shared& s) : stream(stream_name(s.prefix, "MQTT_MSGS_")), shared(s) {
    char origin_hex[24];
    std::snprintf(origin_hex, sizeof origin_hex, "%llx", static_cast<unsigned long long>(s.origin));
    reply_prefix_ = std::string("_d.") + origin_hex + ".";
}

Durable::~Durable() { stop(); }

void Durable::push(std::string subject, const void* data, std::size_t len, std::uint64_t ticket,
                   std::uint64_t origin, std::uint64_t seq) {
    char id[48];
    std::snprintf(id, sizeof id, "%llx.%llu", static_cast<unsigned long long>(origin),
                  static_cast<unsigned long long>(seq));
    Item item{std::move(subject), std::string(static_cast<const char*>(data), len), id,
              std::chrono::steady_clock::now(), {}};
    {
        std::lock_guard lock(mutex_);
        incoming_.emplace_back(ticket, std::move(item));
    }
    cv_.notify_one();
}

void Durable::answered(std::uint64_t ticket, bool stored) {
    {
        std::lock_guard lock(mutex_);
        answers_.emplace_back(ticket, stored);
    }
    cv_.notify_one();
}

void Durable::post(std::function<void(jsCtx*)> job) {
    {
        std::lock_guard lock(mutex_);
        jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
}

void Durable::start() {
    natsConnection* c = shared.control.load();
    if (!c) return;
    const std::string answers = reply_prefix_ + "*";
    natsConnection_Subscribe(&answer_sub_, c, answers.c_str(), on_answer, this);
    shared.track(answer_sub_);
    if (answer_sub_) natsSubscription_SetPendingLimits(answer_sub_, -1, -1);
    thread_ = std::thread([this] { main(); });
}

void Durable::stop() {
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    poll_late_windows(true);
    if (answer_sub_) {
        natsSubscription_Unsubscribe(answer_sub_);
        natsSubscription_Destroy(answer_sub_);
        answer_sub_ = nullptr;
    }
    if (sessions_kv) {
        kvStore_Destroy(sessions_kv);
        sessions_kv = nullptr;
    }
    if (js_) {
        jsCtx_Destroy(js_);
        js_ = nullptr;
    }
}

// The stream: file storage, `replicas` copies, a message kept a week at
// most (a session offline longer than that finds the older ones gone), a
// two-minute duplicate window for the resends. True once it exists (or
// the server has no JetStream: then the path is passed through, logged).
bool Durable::setup() {
    natsConnection* c = shared.control.load();
    if (!c || natsConnection_Status(c) != NATS_CONN_STATUS_CONNECTED) return false;
    if (!js_) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = 2000;
        if (natsConnection_JetStream(&js_, c, &jo) != NATS_OK) {
            js_ = nullptr;
            return false;
        }
    }
    const std::string subjects = shared.prefix + ".q.>";
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream.c_str();
    const char* subject_list[] = {subjects.c_str()};
    cfg.Subjects = subject_list;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = shared.config.replicas;
    cfg.MaxAge = std::int64_t{7} * 24 * 3600 * 1'000'000'000LL;
    cfg.Duplicates = std::int64_t{120} * 1'000'000'000LL;
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    const natsStatus st = js_AddStream(&si, js_, &cfg, nullptr, &jerr);
    if (si) jsStreamInfo_Destroy(si);
    if (st == NATS_OK || jerr == JSStreamNameExistErr) {
        ever_ready_ = true;
        return true;
    }
    // It had JetStream: a restarting server's (messages wait, bounded).
    if (ever_ready_ && st == NATS_NO_RESPONDERS) return false;
    // "No responders" is also what a nats-server still starting its
    // JetStream answers: only 3 s of it in a row mean there is none.
    const auto now = std::chrono::steady_clock::now();
    if (st != NATS_NO_RESPONDERS) no_js_since_ = {};
    if (st == NATS_NO_RESPONDERS && no_js_since_ == std::chrono::steady_clock::time_point{}) no_js_since_ = now;
    if ((st == NATS_NO_RESPONDERS && now - no_js_since_ >= std::chrono::seconds(3)) || jerr == JSNotEnabledErr ||
        jerr == JSNotEnabledForAccountErr) {
        shared.log("Cluster: JetStream is not enabled on the NATS server: QoS 1/2 messages and sessions are not "
                   "replicated (sessions = \"replicated\" needs nats-server -js).");
        passthrough_ = true;
        return false;
    }
    static int attempts = 0;
    if (attempts++ % 20 == 0) {
        shared.log(std::string("Cluster: cannot create the message stream ") + stream + ": " +
                   natsStatus_GetText(st) + " (JetStream error " + std::to_string(jerr) + ")");
    }
    return false;
}

void Durable::send(std::uint64_t ticket) {
    auto it = pending_.find(ticket);
    if (it == pending_.end()) return;
    Item& item = it->second;
    natsConnection* c = shared.control.load();
    item.sent = std::chrono::steady_clock::now();
    if (!c || natsConnection_Status(c) != NATS_CONN_STATUS_CONNECTED) return;
    const std::string reply = reply_prefix_ + std::to_string(ticket);
    natsMsg* m = nullptr;
    if (natsMsg_Create(&m, item.subject.c_str(), reply.c_str(), item.data.data(),
                       static_cast<int>(item.data.size())) != NATS_OK) {
        return;
    }
    natsMsgHeader_Set(m, "Nats-Msg-Id", item.msg_id.c_str());
    natsConnection_PublishMsg(c, m);
    natsMsg_Destroy(m);
}

void Durable::main() {
    using namespace std::chrono;
    const auto hold = milliseconds(shared.config.hold_timeout);
    auto next_setup = steady_clock::now();
    std::deque<std::pair<std::uint64_t, Item>> incoming;
    std::deque<std::pair<std::uint64_t, bool>> answers;
    std::deque<std::function<void(jsCtx*)>> jobs;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            cv_.wait_for(lock, milliseconds(100), [&] {
                return stop_ || !incoming_.empty() || !answers_.empty() || !jobs_.empty() || resetup_.load();
            });
            if (stop_) break;
            incoming.swap(incoming_);
            answers.swap(answers_);
            jobs.swap(jobs_);
        }
        const auto now = steady_clock::now();
        if (resetup_.exchange(false)) ready_ = false;  // StreamOut's message was refused
        if (!ready_ && !passthrough_ && now >= next_setup) {
            ready_ = setup();
            next_setup = now + milliseconds(500);
        }
        for (auto& [ticket, item] : incoming) {
            if (passthrough_) {
                shared.push_in(tag_durable, 0, nullptr, 0, 0, ticket);
                continue;
            }
            pending_.emplace(ticket, std::move(item));
            if (ready_) send(ticket);
        }
        incoming.clear();
        for (const auto& [ticket, stored] : answers) {
            if ((ticket & record_ticket_bit) != 0) {
                record_answered(ticket, stored);
                continue;
            }
            auto it = pending_.find(ticket);
            if (it == pending_.end()) continue;
            if (stored) {
                pending_.erase(it);
                shared.push_in(tag_durable, 0, nullptr, 0, 0, ticket);
            } else {
                // Refused for now (no stream yet, a leader election under
                // way): sent again shortly.
                it->second.sent = now - milliseconds(800);
                ready_ = false;  // set the stream up again (it may be gone)
            }
        }
        answers.clear();
        for (auto& job : jobs) job(ready_ ? js_ : nullptr);
        jobs.clear();
        poll_late_windows(false);
        tend_records();
        for (auto it = pending_.begin(); it != pending_.end();) {
            if (passthrough_ || now - it->second.first > hold) {
                // Not stored in time: the publisher is refused and resends.
                shared.push_in(tag_durable, passthrough_ ? 0 : 1, nullptr, 0, 0, it->first);
                it = pending_.erase(it);
                continue;
            }
            if (ready_ && (it->second.sent == steady_clock::time_point{} || now - it->second.sent > seconds(1))) {
                send(it->first);
            }
            ++it;
        }
        stream_ready_.store(ready_, std::memory_order_relaxed);
    }
    // Stopping: what was not stored is not acknowledged (the node exits).
    pending_.clear();
}

}  // namespace mqttools::cluster

namespace mqttools::cluster {

StreamOut::StreamOut(net::Reactor& reactor, NatsWire& wire, Durable& durable, std::string root,
                     std::uint64_t origin, std::chrono::milliseconds hold, Result result, Routed routed)
    : reactor_(reactor), wire_(wire), durable_(durable), hold_(hold), result_(std::move(result)),
      routed_(std::move(routed)), root_(std::move(root)) {
    char hex[24];
    std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(origin));
    origin_hex_ = hex;
    reply_prefix_ = std::string("_s.") + hex + ".";
}

StreamOut::~StreamOut() {
    reactor_.cancel_timer(timer_);
    reactor_.cancel_timer(now_timer_);
}

void StreamOut::push(std::string_view levels, std::string_view payload, std::uint64_t ticket, std::uint64_t seq) {
    Item item;
    if (!spare_.empty()) {
        item = std::move(spare_.back());
        spare_.pop_back();
    }
    item.ticket = ticket;
    item.seq = seq;
    item.subject.assign(root_).append(levels);
    item.data.assign(payload);
    item.first = reactor_.now();
    item.sent = {};
    item.done = false;
    items_.push_back(std::move(item));
    if (durable_.passthrough()) {
        // No JetStream: acknowledged as soon as the broker's call is over.
        if (!now_timer_) {
            now_timer_ = reactor_.add_timer_after(std::chrono::milliseconds(0), [this] {
                now_timer_ = {};
                resend(false);
            });
        }
    } else if (durable_.stream_ready() && send(items_.back())) {
        sent_with_live_ = ticket;
    }
    arm();
}

bool StreamOut::send(Item& item) {
    reply_.assign(reply_prefix_);
    nats::append_decimal(reply_, item.ticket);
    headers_.assign("NATS/1.0\r\nNats-Msg-Id: ");
    headers_.append(origin_hex_).append(1, '.');
    nats::append_decimal(headers_, item.seq);
    headers_.append("\r\n\r\n");
    if (!wire_.publish_headers(item.subject, reply_, headers_, item.data)) return false;
    item.sent = reactor_.now();
    return true;
}

void StreamOut::arm() {
    if (timer_ || items_.empty()) return;
    timer_ = reactor_.add_timer_after(std::chrono::milliseconds(100), [this] {
        timer_ = {};
        resend(false);
        arm();
    });
}

// Every 100 ms while messages wait (and at once when the connection is
// back, `all`): the unanswered ones are sent again after a second, the
// ones held since the stream was not ready go once it is, and those not
// stored within hold_timeout are refused.
void StreamOut::resend(bool all) {
    const auto now = reactor_.now();
    const bool passthrough = durable_.passthrough();
    const bool ready = durable_.stream_ready();
    std::vector<std::pair<std::uint64_t, bool>> results;
    for (Item& item : items_) {
        if (item.done) continue;
        if (passthrough || now - item.first > hold_) {
            item.done = true;
            results.emplace_back(item.ticket, passthrough);
            continue;
        }
        if (ready && (all || item.sent == net::Clock::time_point{} || now - item.sent > std::chrono::seconds(1))) {
            if (!send(item)) break;  // not up: nothing more goes
        }
    }
    drop_done();
    for (const auto& [ticket, stored] : results) result_(ticket, stored);
}

void StreamOut::drop_done() {
    while (!items_.empty() && items_.front().done) {
        if (spare_.size() < 64) spare_.push_back(std::move(items_.front()));
        items_.pop_front();
    }
}

void StreamOut::on_answer(const nats::ServerMessage& m) {
    const std::string_view subject = m.subject;
    if (subject.size() <= reply_prefix_.size()) return;
    std::uint64_t ticket = 0;
    for (const char c : subject.substr(reply_prefix_.size())) {
        if (c < '0' || c > '9') return;
        ticket = ticket * 10 + static_cast<std::uint64_t>(c - '0');
    }
    // A PubAck is {"stream":"..","seq":N[,"duplicate":true]}; a failure
    // {"error":{...}}, or a "no responders" status (no stream).
    const bool no_stream = m.op == nats::ServerOp::hmsg && nats::header_status(m.headers) == 503;
    const bool stored = !no_stream && m.payload.find("\"error\"") == std::string_view::npos &&
                        m.payload.find("\"seq\"") != std::string_view::npos;
    auto it = std::lower_bound(items_.begin(), items_.end(), ticket,
                               [](const Item& item, std::uint64_t t) { return item.ticket < t; });
    bool finished = false;
    if (it != items_.end() && it->ticket == ticket && !it->done) {
        if (stored) {
            it->done = true;
            finished = true;
        } else {
            // Refused for now (no stream yet, a leader election under
            // way): sent again shortly, once the stream is set up again.
            it->sent = reactor_.now() - std::chrono::milliseconds(800);
            durable_.stream_refused();
        }
    }
    drop_done();
    if (finished) result_(ticket, true);
    // Whatever the answer, the server handled the request, so every live
    // copy this connection sent before it.
    routed_(ticket);
}

}  // namespace mqttools::cluster
