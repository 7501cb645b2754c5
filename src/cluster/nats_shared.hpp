// The threads' side of the NATS cluster link (issue 13), private to
// src/cluster: the state the reactor shares with the link thread (NATS
// subscriptions and publishes, nats_link.cpp), the JetStream thread
// (retained stream, nats_retained.cpp) and the KV thread (session
// ownership, nats_owners.cpp), and the queues between them. Everything
// here is reached from those threads or through the queues' mutexes; the
// broker's state stays on the reactor (nats_cluster.cpp).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nats/nats.h>

#include "cluster/nats_cluster.hpp"
#include "cluster/nats_kv.hpp"

namespace mqttools::cluster {

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
constexpr std::uint32_t tag_bulk = 10;       // a part of a message larger than max_payload (BulkHeader)

// Flags of a settled claim (InHeader::age).
constexpr std::uint32_t claim_wants_state = 1;
constexpr std::uint32_t claim_other_owner = 2;  // another node (or maybe one) held the id
constexpr std::uint32_t claim_own_before = 4;   // this node held it (by the bucket)

// Claim stamps: a KV revision with the top bit set, so that a claim ordered
// by the bucket always beats one made while the bucket was unreachable
// (ordered by wall-clock time, below 2^63 until the year 2262).
constexpr std::uint64_t kv_stamp_bit = std::uint64_t{1} << 63;
constexpr std::uint32_t tag_shared_base = 16;

// A retained update that deletes (empty payload) carries this header; see
// Shared::markers.
constexpr const char* deleted_header = "Mqtt-Deleted";
constexpr std::chrono::seconds retained_marker_age{30};

// Queue bounds: beyond them a message is counted as lost instead of
// growing memory without limit while NATS or the reactor lags.
constexpr std::size_t max_out_bytes = 64u << 20;
constexpr std::size_t max_in_bytes = 256u << 20;

// The longest subject (with a queue name, both) this node puts on NATS:
// nats-server refuses a protocol line longer than its max_control_line
// (4 KiB by default) and closes the connection, which would cut the whole
// node off. 128 bytes are left for the verb, reply subject and sizes.
constexpr std::size_t max_subject_bytes = 4096 - 128;

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
// publish_bulk: a part of a message over max_payload (BulkHeader + bytes),
// on PREFIX.b; counted against the queue's bound once, by publish().
// hand_back: a shared subscription's message to its group (queue = the
// reply naming it), on the connection that holds the queue subscriptions,
// behind this node's unsubscribes (nats_groups.cpp).
enum class Op : std::uint8_t {
    publish,
    publish_live,
    subscribe,
    queue_subscribe,
    unsubscribe,
    barrier,
    publish_bulk,
    hand_back
};

// A message larger than NATS' max_payload crosses as parts on PREFIX.b
// (every node subscribes), followed by a small reference on the message's
// own subject, in order on one connection: the reference's subscriptions
// (queue groups included) decide who delivers it, the parts only carry
// the bytes. Receivers reassemble the parts by (origin, seq), then route
// the message when its reference arrives (NatsCluster::on_bulk).
struct BulkHeader {
    std::uint64_t origin;
    std::uint64_t seq;    // the reference's live sequence number
    std::uint32_t index;  // 0..count-1
    std::uint32_t count;
    std::uint64_t total;  // bytes of the whole message
};
// Room left in a NATS message beyond what we put in it, and how long a
// receiver keeps parts waiting for their reference (or the reverse).
constexpr std::size_t bulk_slack = 64;
constexpr std::chrono::seconds bulk_wait{5};
// The reference: bulk_marker then a BulkHeader with index 0. A PUBLISH as
// encoded by us never starts with a zero byte.
constexpr char bulk_marker = '\0';
// Several QoS 0 PUBLISHes of one subject in one NATS message (issue 26:
// nats-server's and the receiving node's cost is mostly per NATS message):
// pack_marker, then the MQTT 5 PUBLISH packets back to back, published by
// consecutive live messages of one origin; the reply subject numbers the
// first (seq), the others follow (seq + 1, ...). Also never a PUBLISH's
// first byte (packet type 0 is reserved).
constexpr char pack_marker = '\1';
constexpr std::size_t pack_limit = 64u << 10;  // bytes of one pack's payload at most

// Calls f(packet) for each PUBLISH of a pack (after the marker), in order;
// stops at a truncated one (never produced by a node).
template <class F>
void for_each_packed(const char* data, std::size_t len, F&& f) {
    std::size_t pos = 0;
    while (pos < len) {
        std::size_t i = pos + 1;  // the fixed header's Remaining Length
        std::size_t remaining = 0;
        for (int shift = 0;; shift += 7) {
            if (i >= len || shift > 21) return;
            const auto b = static_cast<unsigned char>(data[i++]);
            remaining |= static_cast<std::size_t>(b & 0x7f) << shift;
            if ((b & 0x80) == 0) break;
        }
        if (remaining > len - i) return;
        f(data + pos, i + remaining - pos);
        pos = i + remaining;
    }
}

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

// The next record's header of a queue's packed bytes (copied out: records
// are not aligned); false at the end. `pos` moves past the header.
template <class Header>
bool next_header(const std::vector<char>& queue, std::size_t& pos, Header& h) {
    if (pos + sizeof h > queue.size()) return false;
    std::memcpy(&h, queue.data() + pos, sizeof h);
    pos += sizeof h;
    return true;
}

// A session's state (or "nothing to hand over"), not the tail that follows
// it or the request for that tail: the broker's format marks them by the
// first byte (broker/session_transfer.cpp). Only states are counted.
inline bool is_session_state(std::string_view state) {
    return state.empty() || static_cast<std::uint8_t>(state[0]) <= 2;
}

inline void append(std::vector<char>& buf, const void* data, std::size_t n) {
    const auto* p = static_cast<const char*>(data);
    buf.insert(buf.end(), p, p + n);
}

inline std::uint64_t wall_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
}

// The ownership bucket's key of a client id (nats_owners.cpp).
std::string kv_key(std::string_view client_id);

inline std::string stream_name(std::string_view prefix, std::string_view kind = "MQTT_RETAINED_") {
    // Stream names may not hold '.', '*', '>' or spaces.
    std::string name(kind);
    for (const char ch : prefix) name.push_back(ch == '.' ? '_' : ch);
    return name;
}

struct Durable;  // nats_durable.hpp

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
        // sessions = "replicated": as long as a PUBACK may wait for the
        // stream (a loaded NATS answers late; confirming early could
        // acknowledge a message whose live copy never left this node).
        const auto too_old = std::chrono::steady_clock::now() -
                             (durable ? std::max<std::chrono::milliseconds>(std::chrono::seconds(2),
                                                                            std::chrono::milliseconds(config.hold_timeout))
                                      : std::chrono::milliseconds(2000));
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

    // The data connection is the reactor's own (NatsWire, nats_live.cpp)
    // unless TLS or .creds need libnats: then `data` below. Set before the
    // link thread starts.
    bool wire = false;
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
    SubContext bulk_context{this, tag_bulk};

    Durable* durable = nullptr;  // sessions = "replicated" (issue 25); owned by NatsCluster

    std::thread link_thread;
    std::thread js_thread;
    // Session claims (client id, wants state) for the KV thread; under kv_mutex.
    std::thread kv_thread;
    std::mutex kv_mutex;
    std::condition_variable kv_cv;
    // In the order the reactor made them: a release never overtakes a claim
    // of the same id (nats_owners.cpp).
    struct KvJob {
        std::string client_id;
        bool want_state = false;
        bool release = false;  // the session ended here: drop its entry
        // Nonzero: take the entry over from a dead node (nats_nodes.cpp)
        // if it is still at this revision, held by `dead_owner`.
        std::uint64_t adopt_revision = 0;
        std::string dead_owner;
    };
    void adopt_entry(kvStore* kv, natsConnection* d, const std::string& claim_subject,
                     std::unordered_map<std::string, std::uint64_t>& mine, const KvJob& job);
    void push_adopt(std::string_view client_id, std::string_view owner, std::uint64_t revision) {
        {
            std::lock_guard lock(kv_mutex);
            kv_jobs.push_back({std::string(client_id), false, false, revision, std::string(owner)});
        }
        kv_cv.notify_one();
    }
    // Node liveness (nats_nodes.cpp): heartbeats, and the scans for
    // sessions whose owner is down.
    std::thread nodes_thread;
    void nodes_main();
    std::deque<KvJob> kv_jobs;
    std::atomic<std::uint64_t> unsent_claims{0};
    std::mutex js_mutex;
    std::condition_variable js_cv;
    natsSubscription* retained_sub = nullptr;  // js thread, destroyed by the link thread after it ended
    natsSubscription* purge_answers = nullptr;  // the same (purge_old_markers)
    std::string purge_reply;
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
        bool deleted;  // empty payload: the stream gets a marker (deleted_header)
    };
    std::deque<RetainedUpdate> retained_out;
    // Deletion markers of retained topics seen on the stream (every node
    // sees every one): purged once older than retained_marker_age, so that
    // topics set and deleted do not leave a message each in the stream
    // forever (issue 26). A node cut off from NATS for longer than that may
    // keep a retained message deleted meanwhile (docs/cluster.md).
    struct Marker {
        std::string subject;
        std::uint64_t seq;
        std::uint64_t stored_ns;
    };
    std::mutex markers_mutex;
    std::deque<Marker> markers;
    void note_marker(const char* subject, std::uint64_t seq, std::uint64_t stored_ns) {
        std::lock_guard lock(markers_mutex);
        if (markers.size() < 1'000'000) markers.push_back({subject, seq, stored_ns});
    }
    void purge_old_markers();
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
    void pass_early_barriers(bool ready);
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
    // The server's max_payload (its INFO; 1 MiB, nats-server's default,
    // until known): the largest message that crosses.
    std::atomic<std::int64_t> max_payload{1 << 20};
    void learn_max_payload(natsConnection* nc) {
        const std::int64_t n = nc ? natsConnection_GetMaxPayload(nc) : 0;
        if (n > 0) max_payload.store(n);
    }

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
    // Why the first connection attempt failed ("" once connected): for the
    // warning at start, $SYS/broker/cluster/status and systemd's STATUS=.
    std::mutex unreachable_mutex;
    std::string unreachable;

    // Pushes one command; false when the queue is over its bound.
    bool push_out(Op op, std::uint32_t id, std::uint32_t tag, std::string_view subject, std::string_view queue,
                  const void* data, std::size_t len) {
        bool wake = false;
        {
            std::lock_guard lock(out_mutex);
            // A bulk reference follows its parts, which publish() let in
            // as a whole (out_room): never refused alone.
            const bool reference = len > 0 && static_cast<const char*>(data)[0] == bulk_marker;
            if ((op == Op::publish || (op == Op::publish_live && !reference)) && out.size() + len > max_out_bytes) {
                return false;
            }
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

    // Room for `len` more bytes of publishes in the out queue.
    bool out_room(std::size_t len) {
        std::lock_guard lock(out_mutex);
        return out.empty() || out.size() + len <= max_out_bytes;
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
            kv_jobs.push_back({std::string(client_id), want_state, false, 0, {}});
        }
        kv_cv.notify_one();
    }
    // Sessions that ended here, in one hand-over: a fleet leaving at once
    // wakes the KV thread once, not per id.
    void push_releases(std::vector<std::string>& client_ids) {
        if (client_ids.empty()) return;
        {
            std::lock_guard lock(kv_mutex);
            for (std::string& id : client_ids) kv_jobs.push_back({std::move(id), false, true, 0, {}});
        }
        client_ids.clear();
        kv_cv.notify_one();
    }
    // From the reactor: a retained update for the stream (false: over the
    // queue's bound, lost).
    bool push_retained(std::string_view subject, const void* data, std::size_t len, std::uint64_t ticket,
                       bool deleted) {
        {
            std::lock_guard lock(js_mutex);
            if (retained_out_bytes + len > max_out_bytes) return false;
            retained_out.push_back(
                {std::string(subject), std::string(static_cast<const char*>(data), len), ticket, deleted});
            retained_out_bytes += len;
        }
        js_cv.notify_one();
        return true;
    }
    void run_batch(std::vector<char>& batch);
    void refresh_dropped();
};

// libnats' message callback for every subscription whose closure is a
// SubContext (nats_link.cpp).
void on_message(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);

}  // namespace mqttools::cluster
