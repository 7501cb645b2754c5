// The durable path of QoS 1/2 messages (issue 25, `[cluster] sessions =
// "replicated"`): every QoS 1/2 message a node publishes to the cluster is
// also stored in the JetStream stream PREFIX_MSGS (subjects PREFIX.q.>,
// file storage, `[cluster] replicas`), and its PUBACK/PUBREC waits until
// the stream acknowledged it. The live copy on NATS core still carries the
// message to the nodes at once; the stream is what a node replays when it
// resumes a session whose node died, or when its own link to NATS broke
// (nats_sessions.cpp). QoS 0 never touches the stream.
//
// Each message is sent as a NATS request to PREFIX.q.<topic subject> with
// a Nats-Msg-Id header ("ORIGIN.SEQ", the message's ClusterMessageId); the
// stream's answer names the message's ticket in its reply subject. No
// answer within a second: sent again (the stream's duplicate window makes
// that idempotent). Not stored within `[cluster] hold_timeout`: refused
// (the publisher gets 0x80 and resends), never acknowledged into the void.
//
// Where: on the reactor (StreamOut, below) when the reactor speaks the data
// connection itself (nats_wire.hpp): the request leaves in the same send as
// the message's live copy, right behind it, and its answer (reply
// _s.ORIGIN.TICKET) is parsed by the reactor, no thread hop (issue 25's
// QoS 1 cost: docs/profiling.md). With TLS or .creds (libnats carries the
// data connection) the durable thread does it on the control connection
// (reply _d.ORIGIN.TICKET, answered on libnats' delivery thread).
//
// Thread: one of its own ("durable thread"). It owns the stream's setup,
// the session records, replays, and on the libnats path the messages not
// yet acknowledged.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <atomic>

#include <nats/nats.h>

#include "cluster/nats_cluster.hpp"
#include "cluster/nats_wire.hpp"
#include "net/reactor.hpp"

namespace mqttools::cluster {

using ClusterMessageIdPair = std::pair<std::uint64_t, std::uint64_t>;  // origin, seq

// Results for the reactor (InHeader::tag); nats_shared.hpp's tags stay below.
constexpr std::uint32_t tag_durable = 13;  // seq = ticket; age 0 stored, 1 refused
constexpr std::uint32_t tag_replay = 14;   // a message replayed from the stream (origin, seq set)
constexpr std::uint32_t tag_loaded = 15;
// tag_loaded's kinds (`age`): 0-2 nats_sessions.cpp's; the ownership
// check (nats_fence.cpp): a session another node owns (CLIENT_ID NUL
// OWNER), the end of the check ("1" done, "0" JetStream unreachable).
constexpr std::uint32_t loaded_owner_lost = 3, loaded_audit_end = 4;
// A session record write was answered (CLIENT_ID): Broker::session_record_stored.
constexpr std::uint32_t loaded_record_stored = 5;
// nats_sessions.cpp's replay ends (CLIENT_ID, or "" for the link's): a
// replay JetStream could not serve, and the end of a resumed session's
// late window (messages the stream stored after its replay). Kept apart
// from the ownership check's kinds, which on_replica hands on as such.
constexpr std::uint32_t loaded_replay_failed = 6, loaded_late_end = 7;
// Sessions of dead nodes (nats_nodes.cpp): one whose owner is down
// (CLIENT_ID NUL OWNER, seq = the entry's revision, origin = when the
// owner was last seen alive, wall ns, 0 unknown); this node's
// compare-and-set on its entry won (CLIENT_ID, seq = the claim's stamp) or
// lost; its record read for the take-over (as loaded_found / loaded_none).
constexpr std::uint32_t loaded_orphan = 8, loaded_adopted = 9, loaded_adopt_failed = 10;
constexpr std::uint32_t loaded_orphan_found = 11, loaded_orphan_none = 12;
// A session record could not be read (CLIENT_ID): JetStream unreachable.
constexpr std::uint32_t loaded_unreadable = 13;
constexpr std::uint32_t tag_link_down = 12;  // the data connection broke: seq = wall time
constexpr std::uint32_t tag_link_up = 11;    // it is back (subscriptions re-sent)   // a session record (or the end of a replay), see nats_sessions.cpp

struct Durable {
    explicit Durable(NatsCluster::Shared& shared);
    ~Durable();
    Durable(const Durable&) = delete;
    Durable& operator=(const Durable&) = delete;

    // Reactor: one QoS 1/2 message for the stream (subject PREFIX.q...).
    void push(std::string subject, const void* data, std::size_t len, std::uint64_t ticket, std::uint64_t origin,
              std::uint64_t seq);
    // Link thread: start once the connections exist; stop before they close.
    void start();
    void stop();
    // libnats' delivery thread: the stream's answer to ticket `ticket`.
    void answered(std::uint64_t ticket, bool stored);

    // Replays (nats_sessions.cpp) run on this thread too: a job is a
    // function that may block on JetStream requests.
    void post(std::function<void(jsCtx*)> job);

    // The session bucket PREFIX_SESSIONS (nats_sessions.cpp), made on first
    // use; on this thread only. Null when JetStream is unreachable.
    kvStore* sessions_bucket(jsCtx* js);
    // The server has no JetStream: nothing is replicated (logged once).
    bool passthrough() const { return passthrough_.load(std::memory_order_relaxed); }
    // The stream exists (set up on this thread; read by StreamOut).
    bool stream_ready() const { return stream_ready_.load(std::memory_order_relaxed); }
    // StreamOut: the stream refused a message (gone, no leader): set it up again.
    void stream_refused() {
        resetup_.store(true);
        cv_.notify_one();
    }

    // Session records (nats_sessions.cpp), on this thread: written as a
    // publish to the bucket's subject for `key` and answered like a message
    // (_d.ORIGIN.TICKET), retried until the bucket stores it (a bucket
    // without a leader answers nothing for seconds). Per key one write in
    // flight and only the latest record waiting behind it: a retry never
    // overwrites a newer record. Each record written is answered to the
    // reactor once (loaded_record_stored) when it, or a newer one, is
    // stored, or at the latest after hold_timeout (its QoS 2 packets go
    // then: at least once rather than a stall); the write itself is tried
    // for a minute after the latest record came.
    void write_record(const std::string& client_id, const std::string& key, std::string record);
    // The session left this node (another owns it, or it ended): a write
    // still waiting would overwrite what comes next.
    void forget_record(const std::string& key);
    kvStore* sessions_kv = nullptr;

    // A resumed session's replay stays open after it caught up, until the
    // stores other nodes were still retrying when it began are over (their
    // `hold_timeout`): what the stream stores meanwhile reaches the session
    // too (nats_sessions.cpp). On this thread only.
    struct LateWindow {
        std::string id;
        std::vector<natsSubscription*> subs;
        std::chrono::steady_clock::time_point until;
    };
    std::vector<LateWindow> late_windows;
    void poll_late_windows(bool closing);

    std::string stream;  // PREFIX_MSGS
    NatsCluster::Shared& shared;

private:
    void main();
    bool setup();
    void send(std::uint64_t ticket);

    struct RecordWrite {
        std::string id;       // client id, for the answers
        std::string subject;  // $KV.BUCKET.KEY
        std::string data;     // the latest record
        int owed = 0;         // records not yet answered to the reactor
        int in_flight = 0;    // of them, in the write in flight
        std::uint64_t ticket = 0;  // the write in flight; 0: none
        std::chrono::steady_clock::time_point latest, sent;
        bool dirty = false;   // data not yet sent
        bool warned = false;
    };
    static constexpr std::uint64_t record_ticket_bit = std::uint64_t{1} << 63;
    std::map<std::string, RecordWrite> records_;  // by key
    std::map<std::uint64_t, std::string> record_tickets_;
    std::uint64_t record_seq_ = 0;
    void send_record(const std::string& key, RecordWrite& w);
    void record_answered(std::uint64_t ticket, bool stored);
    void answer_records(RecordWrite& w, int n);
    void tend_records();

    struct Item {
        std::string subject;
        std::string data;
        std::string msg_id;
        std::chrono::steady_clock::time_point first;
        std::chrono::steady_clock::time_point sent;  // {}: not sent yet
    };
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool stop_ = false;
    std::deque<std::pair<std::uint64_t, Item>> incoming_;
    std::deque<std::pair<std::uint64_t, bool>> answers_;
    std::deque<std::function<void(jsCtx*)>> jobs_;
    // Durable thread only.
    std::map<std::uint64_t, Item> pending_;
    natsSubscription* answer_sub_ = nullptr;
    jsCtx* js_ = nullptr;
    bool ready_ = false;
    std::atomic<bool> passthrough_{false};
    std::atomic<bool> stream_ready_{false};
    std::atomic<bool> resetup_{false};
    bool ever_ready_ = false;
    std::chrono::steady_clock::time_point no_js_since_{};  // no JetStream on the server: acknowledged at once (logged)
    std::string reply_prefix_;
};

// The stream's publishes on the reactor (the data connection is NatsWire):
// push() right after the message's live copy went into this turn's output,
// so both leave in one send, and nats-server, which handles a connection's
// commands in order, answers the stream's request only after it routed the
// live copy: the answer also confirms that NATS has the live copies up to
// it (NatsCluster::flush_wire then sends no barrier request of its own).
// Results go to `result` (ticket, stored) and `routed` (ticket), always
// from the reactor's loop, never inside push().
class StreamOut {
public:
    using Result = std::function<void(std::uint64_t ticket, bool stored)>;
    using Routed = std::function<void(std::uint64_t ticket)>;
    // `root`: the stream's subjects' root (PREFIX.q).
    StreamOut(net::Reactor& reactor, NatsWire& wire, Durable& durable, std::string root, std::uint64_t origin,
              std::chrono::milliseconds hold, Result result, Routed routed);
    ~StreamOut();
    StreamOut(const StreamOut&) = delete;
    StreamOut& operator=(const StreamOut&) = delete;

    // The reply subjects' wildcard ("_s.ORIGIN.*"), for the wire's subscription.
    std::string answers_subject() const { return reply_prefix_ + "*"; }
    // A QoS 1/2 message (ticket, ClusterMessageId origin.seq) for the
    // stream: subject root + `levels` (".t.a.b", as on the live subject).
    void push(std::string_view levels, std::string_view payload, std::uint64_t ticket, std::uint64_t seq);
    // The ticket of the last push() whose request went on the wire at once
    // (0: none yet).
    std::uint64_t sent_with_live() const { return sent_with_live_; }
    // A message on answers_subject().
    void on_answer(const nats::ServerMessage& m);
    // The data connection is (back) up: what waits goes now, in order.
    void on_wire_up() { resend(true); }

private:
    struct Item {
        std::uint64_t ticket = 0;
        std::uint64_t seq = 0;
        std::string subject;
        std::string data;
        net::Clock::time_point first{};
        net::Clock::time_point sent{};  // {}: not sent yet
        bool done = false;
    };
    bool send(Item& item);
    void resend(bool all);
    void arm();
    void drop_done();

    net::Reactor& reactor_;
    NatsWire& wire_;
    Durable& durable_;
    std::chrono::milliseconds hold_;
    Result result_;
    Routed routed_;
    std::string root_;
    std::string reply_prefix_;  // "_s.ORIGIN."
    std::string origin_hex_;
    std::string reply_;         // reused per message
    std::string headers_;       // reused per message
    std::deque<Item> items_;    // in ticket order; done ones dropped from the front
    std::vector<Item> spare_;   // their strings' buffers, reused
    std::uint64_t sent_with_live_ = 0;
    net::Reactor::TimerId timer_{};
    net::Reactor::TimerId now_timer_{};
};

}  // namespace mqttools::cluster
