// The durable store (issue 12): one SQLite file in WAL mode, owned by one
// store thread. The reactor records changes into the current batch; once
// per reactor turn the batch is handed over (a mutex held for a vector
// swap), the store thread commits everything waiting in one transaction
// (group commit), and an eventfd wakes the reactor with the result.
// Failed commits keep their changes and are retried (every second, and
// with each new batch) until they succeed. The store thread counts each
// message's references itself (no lookups to find a message's last one),
// and a queue row put and erased within one transaction is never written.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "broker/persistence.hpp"
#include "net/reactor.hpp"
#include "net/unique_fd.hpp"
#include "store/sqlite.hpp"

namespace mqttools::store {

// The schema this build reads and writes ("PRAGMA user_version"), and the
// file's "PRAGMA application_id" ("MQTD"): a file without it is not ours.
// Version 1 (the same tables with two indexes for reference lookups) is
// upgraded in place by dropping them.
inline constexpr int schema_version = 2;
inline constexpr std::int32_t application_id = 0x4D515444;

// The WAL's bounds (issue 31). A checkpoint runs once a commit leaves
// this much in the log (SQLite's own default, 1000 pages of 4 KiB)...
inline constexpr std::int64_t wal_checkpoint_bytes = 4 << 20;
// ...and the WAL file is kept below this (journal_size_limit; the log is
// rewritten from its start after each checkpoint, so it only passes the
// limit when one transaction alone is bigger, or a reader outside the
// broker holds the file: then a warning is logged).
inline constexpr std::int64_t wal_limit_bytes = 16 << 20;
// The store thread commits what waits in transactions of about this size
// (whole batches), checkpointing between them when due.
inline constexpr std::size_t transaction_bytes = 2 << 20;
// Idle, free pages are given back to the file system once there are this
// many, this much at a time (each second while they last).
inline constexpr std::int64_t vacuum_free_bytes = 1 << 20;
inline constexpr std::int64_t vacuum_step_bytes = 4 << 20;
// Idle this long (no batch), the store truncates the WAL to nothing.
inline constexpr auto wal_idle_truncate = std::chrono::seconds(1);

struct Options {
    std::string path;       // the database file
    bool sync_full = true;  // persistence_sync: "full" (fsync per commit) or "normal"
};

// One recorded change.
struct Op {
    enum class Kind : std::uint8_t {
        put_session,
        erase_session,
        put_subscription,
        erase_subscription,
        put_message,
        put_outbound,
        update_outbound,
        erase_outbound,
        put_retained,
        erase_retained,
        put_inbound,
        erase_inbound,
        sweep,
        put_ban,
        erase_ban,
    };
    Kind kind = Kind::sweep;
    std::uint8_t qos = 0;
    std::uint8_t state = 0;
    bool flag = false;  // retain / no_local
    bool dead = false;  // cancelled by a later change of the same transaction
    std::uint16_t packet_id = 0;
    std::uint64_t number = 0;  // queue seq, message id, sweep time
    std::string client;        // client id, or a retained topic
    std::string key;           // subscription filter; blob of subscription ids
    broker::SubscriptionOptions options;
    broker::MessagePtr message;
    std::int64_t expires_at = 0;  // put_message: wall-clock Message Expiry, 0 = none
    std::unique_ptr<broker::StoredSession> session;
    std::unique_ptr<broker::Ban> ban;  // put_ban; erase_ban: as in qos, who in client
};

class Statements;

class SqliteStore final : public broker::Persistence, public net::IoHandler {
public:
    // Opens (or creates) and checks the file, then loads its state into
    // `loaded`. On any problem: null and `error` names the file and what is
    // wrong; a file that is not ours or not readable is left untouched.
    // A second broker on the same file is refused (the file is locked).
    static std::unique_ptr<SqliteStore> open(net::Reactor& reactor, const Options& options,
                                             broker::LoadedState& loaded, std::string& error);
    ~SqliteStore() override;
    SqliteStore(const SqliteStore&) = delete;
    SqliteStore& operator=(const SqliteStore&) = delete;

    // broker::Persistence
    void put_session(const broker::StoredSession& session) override;
    void erase_session(std::string_view client_id) override;
    void put_subscription(std::string_view client_id, std::string_view filter,
                          const broker::SubscriptionOptions& options) override;
    void erase_subscription(std::string_view client_id, std::string_view filter) override;
    void put_message(const broker::MessagePtr& message) override;
    void put_outbound(std::string_view client_id, std::uint64_t seq, const broker::OutboundMessage& m) override;
    void update_outbound(std::string_view client_id, std::uint64_t seq, broker::OutboundMessage::State state,
                         std::uint16_t packet_id) override;
    void erase_outbound(std::string_view client_id, std::uint64_t seq) override;
    void put_retained(const broker::MessagePtr& message) override;
    void erase_retained(std::string_view topic) override;
    void put_inbound_qos2(std::string_view client_id, std::uint16_t packet_id) override;
    void erase_inbound_qos2(std::string_view client_id, std::uint16_t packet_id) override;
    void sweep_expired(broker::WallTime now) override;
    void put_ban(const broker::Ban& ban) override;
    void erase_ban(broker::Ban::Kind as, std::string_view who) override;
    std::uint64_t current_batch() const noexcept override { return next_batch_; }
    std::uint64_t submit() override;
    void on_result(std::function<void(const broker::CommitResult&)> fn) override { result_fn_ = std::move(fn); }
    void drain() override;

    // net::IoHandler: the eventfd.
    void on_io(std::uint32_t events) override;

    // Unit tests: runs the thread-side commit of everything submitted now
    // (as drain() does) and reports whether the last commit worked.
    bool healthy() const noexcept { return healthy_.load(); }
    std::uint64_t wal_bytes() const noexcept { return wal_bytes_.load(); }
    std::uint64_t database_bytes() const noexcept { return database_bytes_.load(); }
    std::uint64_t checkpoints() const noexcept { return checkpoints_.load(); }
    const std::string& path() const noexcept { return path_; }

private:
    SqliteStore(net::Reactor& reactor, Db db, std::string path);
    bool prepare_statements(std::string& error);
    Op& add(Op::Kind kind);
    void run();
    void after_commit();
    void wake_reactor();
    static std::size_t op_bytes(const Op& op);
    void checkpoint(int mode);
    void read_sizes(net::Clock::time_point now);
    void idle();
    static int on_wal(void* self, sqlite3* db, const char* name, int pages);
    void cancel_pairs(std::vector<Op>& ops);
    bool commit(std::vector<Op>& ops);
    bool apply(Op& op);
    void deliver();
    // Message references (store thread).
    std::int64_t references(std::int64_t id) const;
    void set_references(std::int64_t id, std::int64_t n);
    bool drop_reference(std::int64_t id);
    void add_reference(std::int64_t id) { set_references(id, references(id) + 1); }

    net::Reactor& reactor_;
    // An exclusive flock on the file for the store's life (one broker per
    // file); declared before db_ so it is released after the file closes.
    net::UniqueFd lock_fd_;
    Db db_;
    std::string path_;
    std::unique_ptr<Statements> stmts_;
    net::UniqueFd event_fd_;
    std::function<void(const broker::CommitResult&)> result_fn_;

    // Reactor side.
    std::vector<Op> current_;
    std::uint64_t next_batch_ = 1;

    // Shared with the store thread.
    std::mutex mu_;
    std::condition_variable wake_;
    std::condition_variable idle_;
    struct Batch {
        std::uint64_t number;
        std::vector<Op> ops;
    };
    std::deque<Batch> waiting_;
    std::uint64_t attempted_ = 0;  // the last batch the thread tried (guarded by mu_)
    bool stop_ = false;
    std::atomic<std::uint64_t> durable_{0};
    std::atomic<std::uint64_t> failed_{0};
    std::atomic<std::uint64_t> failures_{0};
    std::atomic<bool> healthy_{true};

    // Store thread only.
    std::vector<Op> retry_;  // changes of failed commits, oldest first
    // References (queue and retained rows) to each message beyond its
    // first: most messages have exactly one, which an absent id means; a
    // message stored and not referenced yet has 0. So the map stays small
    // unless many sessions queue the same messages.
    std::unordered_map<std::int64_t, std::uint32_t> refs_;
    // The transaction's changes to refs_ (id, old count or -1: absent),
    // undone when it rolls back.
    std::vector<std::pair<std::int64_t, std::int64_t>> refs_undo_;
    struct PendingKey {
        std::string_view client;
        std::uint64_t seq;
        bool operator==(const PendingKey&) const = default;
    };
    struct PendingHash {
        std::size_t operator()(const PendingKey& k) const noexcept {
            return std::hash<std::string_view>{}(k.client) ^ (k.seq * 0x9E3779B97F4A7C15ull);
        }
    };
    // cancel_pairs(): queue rows put in this transaction, and messages
    // stored in it (op index, live references, cancelled references).
    std::unordered_map<PendingKey, std::size_t, PendingHash> pending_;
    struct Fresh {
        std::size_t op;
        std::uint32_t live;
        std::uint32_t cancelled;
    };
    std::unordered_map<std::int64_t, Fresh> fresh_;
    std::string last_error_;
    std::thread thread_;

    // The WAL (issue 31): the store thread checkpoints between its own
    // transactions (sqlite_store.cpp, "checkpoints"), so each one copies
    // everything and the next commit starts the log over.
    int page_size_ = 4096;
    bool auto_vacuum_ = false;  // the file is auto_vacuum = INCREMENTAL
    bool vacuum_due_ = false;   // it has vacuum_free_bytes free or more
    std::int64_t wal_frames_ = 0;        // frames in the log after the last commit (on_wal)
    bool truncate_due_ = false;          // a commit since the last idle TRUNCATE
    double wal_bytes_per_op_ = 0;        // WAL bytes an op cost in the last transactions
    std::size_t wal_estimate(std::size_t row_bytes, std::size_t ops) const;
    void learn_wal_per_op(std::int64_t frames, std::size_t ops);
    net::Clock::time_point sized_at_{};  // when the file sizes were last read
    net::Clock::time_point over_since_{};  // the WAL above wal_limit_bytes since then (or never)
    net::Clock::time_point warned_at_{};
    std::atomic<std::uint64_t> database_bytes_{0};
    std::atomic<std::uint64_t> wal_bytes_{0};
    std::atomic<std::uint64_t> checkpoints_{0};
};

}  // namespace mqttools::store
