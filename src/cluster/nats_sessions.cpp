// Persistent sessions in JetStream (issue 25, sessions = "replicated"): the
// session bucket PREFIX_SESSIONS (one record per client id, the latest) and
// the replay of the message stream for a session resumed from its record.
// The requests block: they run on the durable thread (nats_durable.hpp),
// in the order the reactor asked. The broker's side is
// broker/session_replica.cpp.
//
// Why a record plus a replay, not a durable consumer per subscription as
// nats-server's own MQTT does: a consumer per subscription costs a
// JetStream request per SUBSCRIBE and an acknowledgement to JetStream per
// message delivered, and its redelivery is JetStream's, not MQTT's (packet
// ids, DUP, QoS 2 state, Receive Maximum). Here the node delivering keeps
// doing all of that in RAM as a single node does; JetStream gets one store
// per message (needed anyway for the PUBACK) and one record write per
// session and change batch (at most every 500 ms), and is read only when a
// session's node died.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "cluster/nats_durable.hpp"
#include "cluster/nats_groups.hpp"
#include "cluster/nats_shared.hpp"
#include "cluster/subject_map.hpp"

namespace mqttools::cluster {

namespace {

// A client id as a key of the session bucket ([-/_=.A-Za-z0-9]+): its bytes
// in hex (injective); an id longer than 240 bytes by a 64-bit hash.
std::string record_key(std::string_view client_id) {
    static const char* hex = "0123456789abcdef";
    std::string key = "s";
    if (client_id.size() <= 240) {
        for (const char ch : client_id) {
            key.push_back(hex[static_cast<unsigned char>(ch) >> 4]);
            key.push_back(hex[static_cast<unsigned char>(ch) & 15]);
        }
        return key;
    }
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char ch : client_id) h = (h ^ static_cast<unsigned char>(ch)) * 0x100000001b3ULL;
    key = "h";
    for (int i = 60; i >= 0; i -= 4) key.push_back(hex[(h >> i) & 15]);
    return key;
}

constexpr std::uint32_t loaded_none = 0, loaded_found = 1, loaded_replay_end = 2;  // nats_durable.hpp: more

}  // namespace

kvStore* Durable::sessions_bucket(jsCtx* js) {
    if (sessions_kv || !js) return sessions_kv;
    sessions_kv = open_bucket(js, stream_name(shared.prefix, "MQTT_SESSIONS_"), shared.config.replicas);
    return sessions_kv;
}

bool NatsCluster::replicates_sessions() const { return shared_->durable != nullptr; }

void NatsCluster::store_session(std::string_view client_id, bool connected, std::string_view state) {
    Durable* d = shared_->durable;
    if (!d) return;
    // Header: version, time written, connected, this node's watermarks
    // (its own publishes and the last message of each origin it routed).
    std::string record;
    // Version 2: then the queue groups' watermarks.
    const std::uint8_t version = 2;
    const auto written = static_cast<std::int64_t>(wall_ns());
    const std::uint8_t on = connected ? 1 : 0;
    const auto n = static_cast<std::uint32_t>(last_seq_.size() + 1);
    record.append(reinterpret_cast<const char*>(&version), 1);
    record.append(reinterpret_cast<const char*>(&written), sizeof written);
    record.append(reinterpret_cast<const char*>(&on), 1);
    record.append(reinterpret_cast<const char*>(&n), sizeof n);
    auto mark = [&](std::uint64_t origin, std::uint64_t seq) {
        record.append(reinterpret_cast<const char*>(&origin), sizeof origin);
        record.append(reinterpret_cast<const char*>(&seq), sizeof seq);
    };
    mark(shared_->origin, live_pushed_);
    for (const auto& [origin, seq] : last_seq_) mark(origin, seq);
    const auto shared_n = static_cast<std::uint32_t>(shared_last_.size());
    record.append(reinterpret_cast<const char*>(&shared_n), sizeof shared_n);
    for (const auto& [origin, seq] : shared_last_) mark(origin, seq);
    record.append(state);
    d->post([d, id = std::string(client_id), record = std::move(record)](jsCtx*) mutable {
        d->write_record(id, record_key(id), std::move(record));
    });
}

void NatsCluster::forget_record(std::string_view client_id) {
    Durable* d = shared_->durable;
    if (!d) return;
    d->post([d, key = record_key(client_id)](jsCtx*) { d->forget_record(key); });
}

void Durable::write_record(const std::string& client_id, const std::string& key, std::string record) {
    auto [it, fresh] = records_.try_emplace(key);
    RecordWrite& w = it->second;
    if (fresh) {
        w.id = client_id;
        w.subject = "$KV." + stream_name(shared.prefix, "MQTT_SESSIONS_") + "." + key;
    }
    w.data = std::move(record);
    w.dirty = true;
    ++w.owed;
    w.latest = std::chrono::steady_clock::now();
    if (w.ticket == 0) send_record(key, w);  // else it follows the write in flight
}

void Durable::send_record(const std::string& key, RecordWrite& w) {
    w.sent = std::chrono::steady_clock::now();
    if (w.ticket != 0) record_tickets_.erase(w.ticket);
    w.ticket = 0;
    natsConnection* c = shared.control.load();
    // The bucket is made on first use (JetStream may be away: tried again).
    if (!c || natsConnection_Status(c) != NATS_CONN_STATUS_CONNECTED || !sessions_bucket(ready_ ? js_ : nullptr)) {
        return;
    }
    const std::uint64_t ticket = record_ticket_bit | ++record_seq_;
    const std::string reply = reply_prefix_ + std::to_string(ticket);
    natsMsg* m = nullptr;
    if (natsMsg_Create(&m, w.subject.c_str(), reply.c_str(), w.data.data(), static_cast<int>(w.data.size())) !=
        NATS_OK) {
        return;
    }
    if (natsConnection_PublishMsg(c, m) == NATS_OK) {
        w.ticket = ticket;
        w.in_flight = w.owed;
        w.dirty = false;
        record_tickets_.emplace(ticket, key);
    }
    natsMsg_Destroy(m);
}

void Durable::answer_records(RecordWrite& w, int n) {
    for (n = std::min(n, w.owed); n > 0; --n, --w.owed) {
        shared.push_in(tag_loaded, loaded_record_stored, w.id.data(), w.id.size());
    }
}

void Durable::record_answered(std::uint64_t ticket, bool stored) {
    auto t = record_tickets_.find(ticket);
    if (t == record_tickets_.end()) return;  // an earlier try's, sent again since
    const std::string key = std::move(t->second);
    record_tickets_.erase(t);
    auto it = records_.find(key);
    if (it == records_.end() || it->second.ticket != ticket) return;
    RecordWrite& w = it->second;
    w.ticket = 0;
    if (!stored) {
        // No leader yet, the stream being set up: tend_records tries again.
        w.dirty = true;
        return;
    }
    answer_records(w, w.in_flight);
    w.in_flight = 0;
    if (w.warned) shared.log("Cluster: the session record of " + w.id + " is stored after all.");
    if (w.dirty) {
        send_record(key, w);  // a newer record came meanwhile
    } else {
        records_.erase(it);
    }
}

void Durable::forget_record(const std::string& key) {
    auto it = records_.find(key);
    if (it == records_.end()) return;
    answer_records(it->second, it->second.owed);
    if (it->second.ticket != 0) record_tickets_.erase(it->second.ticket);
    records_.erase(it);
}

void Durable::tend_records() {
    using namespace std::chrono;
    const auto now = steady_clock::now();
    const auto hold = milliseconds(shared.config.hold_timeout);
    for (auto it = records_.begin(); it != records_.end();) {
        RecordWrite& w = it->second;
        if (w.owed > 0 && now - w.latest > hold) {
            if (!w.warned) {
                shared.log("Cluster: the session record of " + w.id + " is not stored yet (the session bucket does "
                           "not answer: no leader, JetStream unreachable); its QoS 2 messages go on, the write is "
                           "tried again.");
            }
            w.warned = true;
            answer_records(w, w.owed);
        }
        if (now - w.latest > minutes(1)) {
            shared.log("Cluster: the session record of " + w.id + " could not be written for a minute; given up "
                       "(the session's next change writes it again).");
            if (w.ticket != 0) record_tickets_.erase(w.ticket);
            it = records_.erase(it);
            continue;
        }
        // Refused: again after 250 ms; unanswered (a bucket without a
        // leader says nothing): again after a second, the latest record.
        if (w.ticket == 0 ? now - w.sent >= milliseconds(250) : now - w.sent >= seconds(1)) send_record(it->first, w);
        ++it;
    }
}

void NatsCluster::drop_session(std::string_view client_id) {
    Durable* d = shared_->durable;
    if (!d) return;
    d->post([d, key = record_key(client_id)](jsCtx* js) {
        d->forget_record(key);  // a write still waiting would bring it back
        if (kvStore* kv = d->sessions_bucket(js)) kvStore_Delete(kv, key.c_str());
    });
}

void NatsCluster::load_session(std::string_view client_id) { post_load(client_id, false); }

// `orphan`: for a session taken over from a dead node (nats_nodes.cpp).
void NatsCluster::post_load(std::string_view client_id, bool orphan) {
    Durable* d = shared_->durable;
    if (!d) return;
    d->post([d, id = std::string(client_id), orphan](jsCtx* js) {
        std::string out = id;
        out.push_back('\0');
        const std::uint32_t found_kind = orphan ? loaded_orphan_found : loaded_found;
        const std::uint32_t none_kind = orphan ? loaded_orphan_none : loaded_none;
        std::uint32_t found = none_kind;
        kvEntry* e = nullptr;
        kvStore* kv = d->sessions_bucket(js);
        const natsStatus st = kv ? kvStore_Get(&e, kv, record_key(id).c_str()) : NATS_CONNECTION_CLOSED;
        if (st == NATS_OK) {
            out.append(static_cast<const char*>(kvEntry_Value(e)), static_cast<std::size_t>(kvEntry_ValueLen(e)));
            found = kvEntry_ValueLen(e) > 0 ? found_kind : none_kind;
            kvEntry_Destroy(e);
        } else if (!orphan && st != NATS_NOT_FOUND && !d->passthrough()) {
            // Unreachable is not "no record": a new session would lose the
            // one the bucket holds (the CONNECT is refused, 0x88).
            d->shared.push_in(tag_loaded, loaded_unreadable, id.data(), id.size());
            return;
        }
        d->shared.push_in(tag_loaded, found, out.data(), out.size());
    });
}

void NatsCluster::replay_session(std::string_view client_id, const std::vector<std::string>& filters,
                                 std::int64_t since_ns) {
    Durable* d = shared_->durable;
    if (!d) return;
    // Plain filters first: a message both kinds match comes as the plain one.
    std::vector<std::string> subjects;
    for (const std::string& f : filters) {
        if (parse_shared_filter(f)) continue;
        for (std::string& s : filter_subjects(prefix_ + ".q", f)) subjects.push_back(std::move(s));
    }
    const std::size_t shared_from = subjects.size();
    for (const std::string& f : filters) {
        const auto sf = parse_shared_filter(f);
        if (!sf) continue;
        for (std::string& s : filter_subjects(prefix_ + ".q", sf->filter)) subjects.push_back(std::move(s));
    }
    post_replay(std::string(client_id), std::move(subjects), since_ns, shared_from);
}

namespace {

// One replay on the durable thread. JetStream may be unable to serve it for
// a while (a leader election after a NATS cluster member died, the stream
// being set up again): it is tried again until `deadline` rather than
// skipped, since a subject not replayed is a message lost for good.
struct ReplayJob {
    std::string id;
    std::vector<std::string> subjects;
    std::int64_t since_ns;
    std::chrono::steady_clock::time_point deadline;
    // A resumed session's: its consumers stay open until then (Durable::LateWindow).
    std::chrono::steady_clock::time_point late_until;
    std::size_t shared_from;  // subjects from here: shared subscriptions'
};

// One message of the stream, for the reactor: CLIENT_ID NUL PUBLISH with
// its ClusterMessageId (from its Nats-Msg-Id). False: not a stream message.
bool replayed(natsMsg* m, const std::string& id, std::uint64_t& stream_seq, std::uint64_t& pending,
              std::string& out, ClusterMessageIdPair& ids) {
    jsMsgMetaData* meta = nullptr;
    if (natsMsg_GetMetaData(&meta, m) != NATS_OK || !meta) return false;
    const char* msg_id = nullptr;
    natsMsgHeader_Get(m, "Nats-Msg-Id", &msg_id);
    if (!parse_msg_id(msg_id, ids.first, ids.second)) ids = {0, 0};
    out.assign(id).push_back('\0');
    out.append(natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m)));
    stream_seq = meta->Sequence.Stream;
    pending = meta->NumPending;
    jsMsgMetaData_Destroy(meta);
    return true;
}

void run_replay(Durable* d, ReplayJob job, jsCtx* js) {
    using namespace std::chrono;
    if (!js && steady_clock::now() < job.deadline) {
        std::this_thread::sleep_for(milliseconds(100));  // the thread sets the stream up meanwhile
        d->post([d, job = std::move(job)](jsCtx* again) mutable { run_replay(d, std::move(job), again); });
        return;
    }
    // Stream sequence -> (origin, seq, PUBLISH): one copy of a message
    // two filters match, in stream order.
    std::map<std::uint64_t, std::pair<ClusterMessageIdPair, std::string>> got;
    std::set<std::uint64_t> got_shared;  // of them, replayed for a shared subscription
    bool failed = false;
    // A shared subscription's messages: only those its group gave this
    // member (and it did not complete), by the nodes' marks.
    std::set<ClusterMessageIdPair> mine;
    if (job.shared_from < job.subjects.size() &&
        !member_marks(d, js, job.id, job.since_ns, job.deadline, mine)) {
        failed = true;
    }
    Durable::LateWindow late{job.id, {}, job.late_until};
    for (std::size_t index = 0; index < job.subjects.size(); ++index) {
        const std::string& subject = job.subjects[index];
        const bool shared_subject = index >= job.shared_from;
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = 2000;
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = d->stream.c_str();
        so.Config.DeliverPolicy = js_DeliverByStartTime;
        so.Config.OptStartTime = job.since_ns > 0 ? job.since_ns : 1;
        so.Config.AckPolicy = js_AckNone;
        // One copy in memory: a short-lived reader needs no Raft group of
        // its own (on a NATS cluster that just lost a member, creating a
        // replicated consumer took over 2 s, twice in a row).
        so.Config.Replicas = 1;
        so.Config.MemoryStorage = true;
        // The last message the stream's leader holds on the subject before
        // the reader starts (a later one reaches the session live: its
        // interest is on NATS by now). The reader's consumer is one copy on
        // one replica, and one not caught up after a NATS server died
        // counted nothing due: a session resumed without 100 acknowledged
        // messages. The reader goes on until it has delivered this one.
        std::uint64_t must_reach = 0;
        if (js) {
            natsMsg* last = nullptr;
            jsErrCode jerr = static_cast<jsErrCode>(0);
            if (js_GetLastMsg(&last, js, d->stream.c_str(), subject.c_str(), &jo, &jerr) == NATS_OK && last) {
                if (natsMsg_GetTime(last) >= job.since_ns) must_reach = natsMsg_GetSequence(last);
            }
            if (last) natsMsg_Destroy(last);
        }
        natsSubscription* sub = nullptr;
        for (;;) {
            jsErrCode jerr = static_cast<jsErrCode>(0);
            // The whole time left: a consumer made after a NATS cluster
            // member died took 2.1-2.2 s each time (a 2 s wait never won).
            jo.Wait = std::max<std::int64_t>(
                1000, duration_cast<milliseconds>(job.deadline - steady_clock::now()).count());
            const natsStatus st = js ? js_SubscribeSync(&sub, js, subject.c_str(), &jo, &so, &jerr)
                                     : NATS_CONNECTION_CLOSED;
            if (st == NATS_OK) break;
            sub = nullptr;
            if (steady_clock::now() >= job.deadline) {
                d->shared.log("Cluster: cannot replay " + subject +
                              (job.id.empty() ? std::string(" after the NATS link broke: ")
                                              : " for the resumed session of " + job.id + ": ") +
                              natsStatus_GetText(st) + " (JetStream error " + std::to_string(jerr) +
                              "); its messages since then are not delivered again.");
                break;
            }
            std::this_thread::sleep_for(milliseconds(200));
        }
        if (!sub) {
            failed = true;
            continue;
        }
        // How many messages the reader has to deliver: without that, a
        // slow first message (a new leader's consumer) looked like none,
        // and the replay ended as complete without them.
        std::uint64_t pending = 0;
        bool counted = false;
        for (;;) {
            jsConsumerInfo* ci = nullptr;
            jsErrCode jerr = static_cast<jsErrCode>(0);
            if (natsSubscription_GetConsumerInfo(&ci, sub, &jo, &jerr) == NATS_OK && ci) {
                pending = ci->NumPending;
                jsConsumerInfo_Destroy(ci);
                counted = true;
                break;
            }
            if (steady_clock::now() >= job.deadline) break;
            std::this_thread::sleep_for(milliseconds(100));
        }
        if (!counted) {
            d->shared.log("Cluster: cannot count the messages to replay on " + subject + " (JetStream did not answer).");
            failed = true;
        }
        std::string out;
        std::uint64_t last_seen = 0;  // the highest stream sequence the reader delivered
        while (counted) {
            natsMsg* m = nullptr;
            const bool behind = last_seen < must_reach;
            if ((behind && steady_clock::now() >= job.deadline) ||
                natsSubscription_NextMsg(&m, sub, pending > 0 || behind ? 2000 : 100) != NATS_OK) {
                // Messages still due that did not come: not a complete replay.
                if (pending > 0) {
                    d->shared.log("Cluster: the replay on " + subject + " stopped with " + std::to_string(pending) +
                                  " message(s) still due.");
                    failed = true;
                } else if (behind) {
                    d->shared.log("Cluster: the replay on " + subject + " ended at stream sequence " +
                                  std::to_string(last_seen) + " but the stream's leader has " +
                                  std::to_string(must_reach) + " (its consumer's replica not caught up).");
                    failed = true;
                }
                break;
            }
            std::uint64_t stream_seq = 0;
            ClusterMessageIdPair ids{0, 0};
            if (!replayed(m, job.id, stream_seq, pending, out, ids)) {
            } else if (last_seen = std::max(last_seen, stream_seq); !shared_subject) {
                got.emplace(stream_seq, std::pair(ids, out));
            } else if (mine.contains(ids) && got.emplace(stream_seq, std::pair(ids, out)).second) {
                got_shared.insert(stream_seq);
            }
            natsMsg_Destroy(m);
        }
        // A shared subscription's late messages went to the group live.
        if (job.late_until > steady_clock::now() && !shared_subject) {
            late.subs.push_back(sub);
        } else {
            natsSubscription_Unsubscribe(sub);
            natsSubscription_Destroy(sub);
        }
    }
    for (const auto& [stream_seq, item] : got) {
        d->shared.push_in(tag_replay, got_shared.contains(stream_seq) ? 1 : 0, item.second.data(), item.second.size(),
                          item.first.first, item.first.second);
    }
    d->shared.push_in(tag_loaded, failed ? loaded_replay_failed : loaded_replay_end, job.id.data(), job.id.size());
    if (job.late_until == steady_clock::time_point{}) return;
    if (late.subs.empty()) {
        d->shared.push_in(tag_loaded, loaded_late_end, job.id.data(), job.id.size());
    } else {
        d->late_windows.push_back(std::move(late));
    }
}

}  // namespace

// What a resumed session's consumers deliver after the replay caught up:
// messages whose store was still being retried when it began, each once
// the stream has it (the broker drops the ones the session already got).
void Durable::poll_late_windows(bool closing) {
    const auto now = std::chrono::steady_clock::now();
    std::string out;
    for (auto w = late_windows.begin(); w != late_windows.end();) {
        for (natsSubscription* sub : w->subs) {
            int msgs = 0, bytes = 0;
            while (!closing && natsSubscription_GetPending(sub, &msgs, &bytes) == NATS_OK && msgs > 0) {
                natsMsg* m = nullptr;
                if (natsSubscription_NextMsg(&m, sub, 10) != NATS_OK) break;
                std::uint64_t stream_seq = 0, pending = 0;
                ClusterMessageIdPair ids{0, 0};
                if (replayed(m, w->id, stream_seq, pending, out, ids)) {
                    shared.push_in(tag_replay, 0, out.data(), out.size(), ids.first, ids.second);
                }
                natsMsg_Destroy(m);
            }
        }
        if (!closing && now < w->until) {
            ++w;
            continue;
        }
        for (natsSubscription* sub : w->subs) {
            natsSubscription_Unsubscribe(sub);
            natsSubscription_Destroy(sub);
        }
        if (!closing) shared.push_in(tag_loaded, loaded_late_end, w->id.data(), w->id.size());
        w = late_windows.erase(w);
    }
}

// Replays the stream's messages on `subjects` since `since_ns` (id: the
// client id, or "" for this node's own recovery after its link broke). A
// resumed session's CONNECT waits 5 s at most for the record and the
// replay: the replay tries for 4 s of it. A resumed session's replay then
// stays open for `hold_timeout` and a second: a message published before
// the session's interest was in place may reach the stream that much
// later (its node retries the store until then), after the replay read
// it; its live copy went to the node that died, or came here before the
// session was imported (lost, 10 of 10: test_cluster_ha_random_kills.py).
void NatsCluster::post_replay(std::string id, std::vector<std::string> subjects, std::int64_t since_ns,
                              std::size_t shared_from) {
    using namespace std::chrono;
    Durable* d = shared_->durable;
    const auto now = steady_clock::now();
    const auto late_until =
        id.empty() ? steady_clock::time_point{} : now + milliseconds(shared_->config.hold_timeout) + seconds(1);
    ReplayJob job{std::move(id), std::move(subjects), since_ns, now + milliseconds(4000), late_until, shared_from};
    d->post([d, job = std::move(job)](jsCtx* js) mutable { run_replay(d, std::move(job), js); });
}


void NatsCluster::on_link_state(bool up, std::uint64_t at_ns) {
    fence_link_state(up);
    if (!shared_->durable) return;
    if (!up) {
        if (!recovering_) {
            // Everything routed before the break is ahead of this record.
            recovering_ = true;
            down_ns_ = at_ns;
            link_replay_retries_ = 0;
            marks_at_down_ = last_seq_;
        }
        if (link_replay_timer_) reactor_.cancel_timer(link_replay_timer_);
        link_replay_timer_ = {};
        link_replays_left_ = 0;
        return;
    }
    if (!recovering_) return;
    // Twice: 1 s after the link is back (the other nodes reconnect with
    // their own back-off, and store what they held once they are back),
    // and again 4 s later for the slowest of them.
    link_replays_left_ = 2;
    link_replay_timer_ = reactor_.add_timer_after(std::chrono::seconds(1), [this] {
        link_replay_timer_ = {};
        replay_link();
    });
}

void NatsCluster::replay_link() {
    if (link_replays_left_ <= 0) return;
    --link_replays_left_;
    std::vector<std::string> subjects;
    const std::string live = prefix_ + ".m.";
    for (const auto& [key, interest] : interest_) {
        // Queue groups (shared subscriptions) are not replayed: one member
        // cluster-wide got each message.
        if (key.find(' ') != key.npos || key.compare(0, live.size(), live) != 0) continue;
        subjects.push_back(prefix_ + ".q." + key.substr(live.size()));
    }
    ++link_replays_running_;
    post_replay("", std::move(subjects), static_cast<std::int64_t>(down_ns_) - 5'000'000'000);
    if (link_replays_left_ > 0) {
        link_replay_timer_ = reactor_.add_timer_after(std::chrono::seconds(4), [this] {
            link_replay_timer_ = {};
            replay_link();
        });
    }
}

// From drain_inbound: tag_loaded / tag_replay records.
void NatsCluster::on_replica(std::uint32_t tag, std::uint32_t kind, std::string_view data, std::uint64_t origin,
                             std::uint64_t seq) {
    if (tag == tag_loaded && kind == loaded_record_stored) {
        broker_.session_record_stored(data);
        return;
    }
    if (tag == tag_loaded && (kind == loaded_owner_lost || kind == loaded_audit_end)) {
        on_audit(kind, data, seq);
        return;
    }
    if (tag == tag_loaded && (kind == loaded_orphan || kind == loaded_adopted || kind == loaded_adopt_failed)) {
        on_orphan(kind, data, origin, seq);
        return;
    }
    const std::size_t nul = data.find('\0');
    if (tag == tag_loaded && (kind == loaded_replay_end || kind == loaded_replay_failed)) {
        if (data.empty()) {
            // A link replay JetStream could not serve (no leader yet) is
            // tried again 2 s later, up to 10 times per break.
            if (kind == loaded_replay_failed && link_replay_retries_ < 10 && link_replays_left_ == 0 &&
                !link_replay_timer_) {
                ++link_replay_retries_;
                link_replays_left_ = 1;
                link_replay_timer_ = reactor_.add_timer_after(std::chrono::seconds(2), [this] {
                    link_replay_timer_ = {};
                    replay_link();
                });
            }
            // The dedupe state goes only when no replay is left: a slow
            // first one (JetStream electing leaders) can end after the
            // second started, which then delivered everything again.
            if (link_replays_running_ > 0) --link_replays_running_;
            if (link_replays_left_ == 0 && !link_replay_timer_ && link_replays_running_ == 0) {
                recovering_ = false;
                seen_live_.clear();
                marks_at_down_.clear();
            }
        } else if (kind == loaded_replay_failed) {
            broker_.replay_failed(data);
        } else {
            broker_.replay_done(data);
        }
        return;
    }
    if (tag == tag_loaded && kind == loaded_unreadable) {
        broker_.session_unreadable(data);
        return;
    }
    if (tag == tag_loaded && kind == loaded_late_end) {
        broker_.late_replay_done(data);
        return;
    }
    if (nul == data.npos) return;
    const std::string_view client_id = data.substr(0, nul);
    std::string_view rest = data.substr(nul + 1);
    if (tag == tag_replay && client_id.empty()) {
        // This node's recovery: what NATS did not deliver while the link
        // was down (or before its subscriptions were back).
        if (origin == 0 || origin == shared_->origin) return;
        if (auto it = marks_at_down_.find(origin); it != marks_at_down_.end() && seq <= it->second) return;
        if (!seen_live_.insert({origin, seq}).second) return;
        if (!broker_.route_from_cluster(Bytes(reinterpret_cast<const std::byte*>(rest.data()), rest.size()), {},
                                        origin, seq)) {
            shared_->lost_in_queue.fetch_add(1);
        }
        return;
    }
    if (tag == tag_replay) {
        broker_.replayed_message(client_id, Bytes(reinterpret_cast<const std::byte*>(rest.data()), rest.size()),
                                 origin, seq, kind == 1);
        return;
    }
    broker::ReplicaRecord r;
    std::uint8_t version = 0;
    std::uint8_t on = 0;
    const bool orphan = kind == loaded_orphan_found || kind == loaded_orphan_none;
    auto take_marks = [&rest](std::vector<broker::ClusterMessageId>& out) {
        std::uint32_t count = 0;
        if (!take(rest, count) || rest.size() < std::size_t{count} * 16) return false;
        for (std::uint32_t i = 0; i < count; ++i) {
            broker::ClusterMessageId w;
            take(rest, w.origin);
            take(rest, w.seq);
            out.push_back(w);
        }
        return true;
    };
    if ((kind == loaded_found || kind == loaded_orphan_found) && take(rest, version) && (version == 1 || version == 2) &&
        take(rest, r.written_ns) && take(rest, on) && take_marks(r.watermarks) &&
        (version == 1 || take_marks(r.shared_watermarks))) {
        r.found = true;
        r.connected = on != 0;
        r.state = rest;
    }
    if (orphan) {
        orphan_loaded(client_id, r);
        return;
    }
    broker_.session_loaded(client_id, r);
}

}  // namespace mqttools::cluster
