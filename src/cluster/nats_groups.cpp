// Shared subscriptions across a node's death (issue 25, sessions =
// "replicated"; docs/cluster.md "What survives what").
//
// NATS' queue group gives each message of `$share/NAME/filter` to one node,
// which gives it to one local member; which node that was is known to that
// node alone. So every node notes it: for each QoS 1/2 message it takes
// from a group it appends a mark "taken" (message id, group, member, whether
// the member's session has a record) and, once the member is done with it
// (QoS 1 acknowledged, QoS 2 sent: from then on it is that member's, spec
// 4.8.2), a mark "done". The marks of one reactor turn go out as one
// message on the data connection to PREFIX.q.k.ORIGIN, which the message
// stream keeps (its subjects are PREFIX.q.>; topics live under .q.t and
// .q.s, so no filter's replay reads them). No acknowledgement is waited for:
// a mark is a hint for the survivors, never on a client's path.
//
// When a node dies:
// * a member whose session has a record resumes it on any node (or a
//   survivor takes it over): the record holds what the member had then,
//   and the replay (nats_sessions.cpp) adds, for its shared subscriptions,
//   the messages marked "taken" for it and not "done" (member_marks);
// * one survivor (the first to create "gone.INSTANCE" in the nodes bucket,
//   nats_nodes.cpp) hands back to their groups the messages the dead node
//   took for members without a record that they did not complete, and the
//   ones nobody marked in the moments before it died (its last marks never
//   left, or NATS had handed them to it unread): redispatch_dead_node.
// A message handed back goes to PREFIX.g.QUEUE, to which every node with a
// member of the group subscribes in the group's queue: one member gets it.
// A member's session that ends (expiry, Session Expiry 0 at disconnect)
// hands back what it had not completed the same way (Broker::redispatch_shared).
#include "cluster/nats_groups.hpp"

#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

#include <spdlog/spdlog.h>

#include "cluster/nats_shared.hpp"
#include "cluster/subject_map.hpp"

namespace mqttools::cluster {

namespace {

constexpr std::uint8_t mark_taken = 1, mark_done = 2;
// A batch of marks is sent at this size at the latest (well under NATS'
// max_payload).
constexpr std::size_t marks_batch_bytes = 256 * 1024;
// How far back a dead node's survivors look: its takes not completed (a
// slow member's queue), and messages nobody marked (what it had unread or
// unmarked when it died; older unmarked ones reached no member at all).
constexpr std::int64_t taken_window_ns = 60'000'000'000;
constexpr std::int64_t unmarked_window_ns = 15'000'000'000;

template <class T>
void put(std::string& out, T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

bool get_string(std::string_view& in, std::string_view& s) {
    std::uint16_t n = 0;
    if (!take(in, n) || n > in.size()) return false;
    s = in.substr(0, n);
    in.remove_prefix(n);
    return true;
}

struct Mark {
    std::uint8_t kind = 0;
    bool persistent = false;
    ClusterMessageIdPair id{0, 0};
    std::string_view member;
    std::string_view group;
};

// Each mark: kind, persistent, origin, seq, member, group (u16 lengths).
template <class F>
void for_each_mark(std::string_view in, F&& f) {
    for (;;) {
        Mark m;
        std::uint8_t persistent = 0;
        if (!take(in, m.kind) || !take(in, persistent) || !take(in, m.id.first) || !take(in, m.id.second) ||
            !get_string(in, m.member) || !get_string(in, m.group)) {
            return;
        }
        m.persistent = persistent != 0;
        f(m);
    }
}

// Lower-case hex digits up to `end` (a NUL or that character): false on
// anything else. `p` moves to the first byte not taken.
bool parse_hex(const char*& p, char end, std::uint64_t& out) {
    out = 0;
    for (; *p && *p != end; ++p) {
        const char c = *p;
        const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return false;
        out = out * 16 + static_cast<std::uint64_t>(v);
    }
    return true;
}

// The node instance a mark message came from (PREFIX.q.k.ORIGINHEX).
std::uint64_t marker_node(const char* subject) {
    const char* p = subject ? std::strrchr(subject, '.') : nullptr;
    std::uint64_t origin = 0;
    if (!p || !parse_hex(++p, '\0', origin)) return 0;
    return origin;
}

std::string marks_subject(const std::string& prefix) { return prefix + ".q.k.>"; }

std::string group_subject(const std::string& prefix, std::string_view group) {
    const auto sf = parse_shared_filter(group);
    return sf ? prefix + ".g." + queue_name(sf->share_name, sf->filter) : std::string();
}

// A message handed back to its group goes under its own id, "_o.ORIGIN.SEQ"
// as its reply (its receivers mark it as theirs, and a resumed session's
// dedupe knows it).
struct IdReply {
    char text[64];
    IdReply(std::uint64_t origin, std::uint64_t seq) {
        std::snprintf(text, sizeof text, "_o.%llx.%llu", static_cast<unsigned long long>(origin),
                      static_cast<unsigned long long>(seq));
    }
};

void hand_back(Durable* d, const std::string& subject, std::uint64_t origin, std::uint64_t seq, const char* data,
               std::size_t len) {
    natsConnection* c = d->shared.control.load();
    if (!c || subject.empty()) return;
    natsConnection_PublishRequest(c, subject.c_str(), IdReply(origin, seq).text, data, static_cast<int>(len));
}

}  // namespace

bool parse_msg_id(const char* id, std::uint64_t& origin, std::uint64_t& seq) {
    if (!id) return false;
    seq = 0;
    const char* p = id;
    if (!parse_hex(p, '.', origin) || *p != '.') return false;
    for (++p; *p >= '0' && *p <= '9'; ++p) seq = seq * 10 + static_cast<std::uint64_t>(*p - '0');
    return *p == '\0';
}

// ---- reactor: the marks

void NatsCluster::shared_taken(std::string_view group, std::string_view member, bool persistent,
                               broker::ClusterMessageId id) {
    add_mark(mark_taken, group, member, persistent, id);
}

void NatsCluster::shared_done(std::string_view member, broker::ClusterMessageId id) {
    add_mark(mark_done, {}, member, false, id);
}

void NatsCluster::add_mark(std::uint8_t kind, std::string_view group, std::string_view member, bool persistent,
                           broker::ClusterMessageId id) {
    if (!shared_->durable || member.size() > 0xFFFF || group.size() > 0xFFFF) return;
    if (marks_subject_.empty()) {
        char origin_hex[24];
        std::snprintf(origin_hex, sizeof origin_hex, "%llx", static_cast<unsigned long long>(shared_->origin));
        marks_subject_ = prefix_ + ".q.k." + origin_hex;
    }
    put(marks_, kind);
    put(marks_, static_cast<std::uint8_t>(persistent ? 1 : 0));
    put(marks_, id.origin);
    put(marks_, id.seq);
    put(marks_, static_cast<std::uint16_t>(member.size()));
    marks_.append(member);
    put(marks_, static_cast<std::uint16_t>(group.size()));
    marks_.append(group);
    if (marks_.size() >= marks_batch_bytes) {
        flush_marks();
        return;
    }
    if (!marks_timer_) {
        // After this turn: one message for all its marks.
        marks_timer_ = reactor_.add_timer_after(std::chrono::milliseconds(0), [this] {
            marks_timer_ = {};
            flush_marks();
        });
    }
}

void NatsCluster::flush_marks() {
    if (marks_.empty()) return;
    send_plain(marks_subject_, marks_, {}, false);
    marks_.clear();
}

void NatsCluster::redispatch(std::string_view group, const broker::MessageView& m) {
    if (m.cluster_origin == 0) return;
    const std::string subject = group_subject(prefix_, group);
    const Bytes bytes = encode_message(m);
    if (subject.empty() || bytes.empty()) return;
    spdlog::debug("Cluster: a message of {} goes back to its group (its member's session ended).", group);
    // On the link thread behind the unsubscribes of the session that ended
    // (the broker ends it first), on the connection of the queue
    // subscriptions: nats-server handles a connection's commands in order,
    // so a group this node has just left cannot give it back to this node.
    shared_->push_out(Op::hand_back, 0, 0, subject, IdReply(m.cluster_origin, m.cluster_seq).text, bytes.data(),
                      bytes.size());
}

// ---- durable thread

bool read_stream(Durable* d, jsCtx* js, const std::string& subject, std::int64_t since_ns,
                 std::chrono::steady_clock::time_point deadline,
                 const std::function<void(natsMsg*, const jsMsgMetaData&)>& each) {
    using namespace std::chrono;
    if (!js) return false;
    jsOptions jo;
    jsOptions_Init(&jo);
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = d->stream.c_str();
    so.Config.DeliverPolicy = js_DeliverByStartTime;
    so.Config.OptStartTime = since_ns > 0 ? since_ns : 1;
    so.Config.AckPolicy = js_AckNone;
    so.Config.Replicas = 1;  // a short-lived reader (nats_sessions.cpp says why)
    so.Config.MemoryStorage = true;
    natsSubscription* sub = nullptr;
    for (;;) {
        jsErrCode jerr = static_cast<jsErrCode>(0);
        jo.Wait = std::max<std::int64_t>(1000, duration_cast<milliseconds>(deadline - steady_clock::now()).count());
        if (js_SubscribeSync(&sub, js, subject.c_str(), &jo, &so, &jerr) == NATS_OK) break;
        sub = nullptr;
        if (steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(milliseconds(200));
    }
    std::uint64_t pending = 0;
    bool ok = false;
    while (!ok) {
        jsConsumerInfo* ci = nullptr;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        if (natsSubscription_GetConsumerInfo(&ci, sub, &jo, &jerr) == NATS_OK && ci) {
            pending = ci->NumPending;
            jsConsumerInfo_Destroy(ci);
            ok = true;
        } else if (steady_clock::now() >= deadline) {
            break;
        } else {
            std::this_thread::sleep_for(milliseconds(100));
        }
    }
    // The count is of what the server has not pushed yet: what it pushed
    // already is read until a short silence.
    while (ok) {
        natsMsg* m = nullptr;
        if (natsSubscription_NextMsg(&m, sub, pending > 0 ? 2000 : 100) != NATS_OK) {
            ok = pending == 0;  // messages still due that did not come: not whole
            break;
        }
        jsMsgMetaData* meta = nullptr;
        if (natsMsg_GetMetaData(&meta, m) == NATS_OK && meta) {
            pending = meta->NumPending;
            each(m, *meta);
            jsMsgMetaData_Destroy(meta);
        }
        natsMsg_Destroy(m);
    }
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    return ok;
}

bool member_marks(Durable* d, jsCtx* js, const std::string& member, std::int64_t since_ns,
                  std::chrono::steady_clock::time_point deadline, std::set<ClusterMessageIdPair>& mine) {
    std::set<ClusterMessageIdPair> done;
    const bool ok = read_stream(d, js, marks_subject(d->shared.prefix), since_ns, deadline,
                                [&](natsMsg* m, const jsMsgMetaData&) {
                                    for_each_mark({natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m))},
                                                  [&](const Mark& k) {
                                                      if (k.member != member) return;
                                                      (k.kind == mark_taken ? mine : done).insert(k.id);
                                                  });
                                });
    for (const ClusterMessageIdPair& id : done) mine.erase(id);
    return ok;
}

void redispatch_dead_node(Durable* d, jsCtx* js, std::uint64_t dead, std::int64_t alive_until_ns) {
    using namespace std::chrono;
    const auto deadline = steady_clock::now() + seconds(10);
    const std::int64_t from_ns = alive_until_ns - taken_window_ns;
    // NATS may still give the dead node a message until it notices the
    // closed connection: up to a second ago (a live node's marks of later
    // ones may still be on their way).
    const std::int64_t until_ns = std::max(alive_until_ns, static_cast<std::int64_t>(wall_ns()) - 1'000'000'000);
    struct Take {
        std::uint64_t node;
        std::string member;
        bool persistent;
    };
    std::map<std::pair<std::string, ClusterMessageIdPair>, Take> taken;  // (group, id)
    std::set<std::pair<std::string, ClusterMessageIdPair>> done;         // (member, id)
    std::set<std::string> groups;
    const bool marks_ok = read_stream(
        d, js, marks_subject(d->shared.prefix), from_ns, deadline, [&](natsMsg* m, const jsMsgMetaData&) {
            const std::uint64_t node = marker_node(natsMsg_GetSubject(m));
            for_each_mark({natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m))}, [&](const Mark& k) {
                if (k.kind == mark_done) {
                    done.emplace(std::string(k.member), k.id);
                    return;
                }
                groups.emplace(k.group);
                taken.insert_or_assign({std::string(k.group), k.id}, Take{node, std::string(k.member), k.persistent});
            });
        });
    if (!marks_ok) {
        d->shared.log("Cluster: cannot read the shared-subscription marks after a node died; its groups' messages "
                      "are not handed back.");
        return;
    }
    std::size_t handed = 0;
    std::size_t scanned = 0;
    for (const std::string& group : groups) {
        const auto sf = parse_shared_filter(group);
        if (!sf) continue;
        const std::string target = group_subject(d->shared.prefix, group);
        std::set<std::uint64_t> seen;  // stream sequences: a filter may map to two subjects
        for (const std::string& subject : filter_subjects(d->shared.prefix + ".q", sf->filter)) {
            read_stream(d, js, subject, from_ns, deadline, [&](natsMsg* m, const jsMsgMetaData& meta) {
                ++scanned;
                if (meta.Timestamp > until_ns || !seen.insert(meta.Sequence.Stream).second) return;
                const char* msg_id = nullptr;
                ClusterMessageIdPair id{0, 0};
                if (natsMsgHeader_Get(m, "Nats-Msg-Id", &msg_id) != NATS_OK || !parse_msg_id(msg_id, id.first, id.second)) {
                    return;
                }
                auto t = taken.find({group, id});
                if (t == taken.end()) {
                    // Nobody marked it: it was the dead node's (or reached no member).
                    if (meta.Timestamp < alive_until_ns - unmarked_window_ns) return;
                } else if (t->second.node != dead || t->second.persistent || done.contains({t->second.member, id})) {
                    // Another node's; a member with a record (its resume or
                    // take-over has it); or completed.
                    return;
                }
                hand_back(d, target, id.first, id.second, natsMsg_GetData(m),
                          static_cast<std::size_t>(natsMsg_GetDataLength(m)));
                ++handed;
            });
        }
    }
    if (natsConnection* c = d->shared.control.load()) natsConnection_Flush(c);
    char dead_hex[24];
    std::snprintf(dead_hex, sizeof dead_hex, "%llx", static_cast<unsigned long long>(dead));
    d->shared.log(std::string("Cluster: node instance ") + dead_hex + " is down: " + std::to_string(handed) +
                  " shared-subscription message(s) it had not completed handed back to their groups (read " +
                  std::to_string(taken.size()) + " taken and " + std::to_string(done.size()) + " done marks, " +
                  std::to_string(groups.size()) + " group(s), " + std::to_string(scanned) + " message(s)).");
}

}  // namespace mqttools::cluster
