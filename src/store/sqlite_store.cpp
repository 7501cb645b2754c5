// Recording changes (reactor thread), the store thread's group commit, and
// the result handed back through the eventfd. The schema and start-up load
// are in store_open.cpp.
#include "store/sqlite_store.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <spdlog/spdlog.h>

namespace mqttools::store {

using broker::MessagePtr;
using broker::OutboundMessage;

// Every statement the store thread runs, prepared once.
class Statements {
public:
    bool prepare(const Db& db, std::string& error) {
        const std::pair<Stmt*, const char*> all[] = {
            {&begin, "BEGIN IMMEDIATE"},
            {&freelist_count, "PRAGMA freelist_count"},
            {&commit, "COMMIT"},
            {&rollback, "ROLLBACK"},
            {&put_session,
             "INSERT OR REPLACE INTO sessions(client_id, username, expiry_interval, connected, expires_at, "
             "will_topic, will_payload, will_properties, will_qos, will_retain, will_expiry, will_delay, will_at) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"},
            {&session_messages, "SELECT msg_id FROM queue WHERE client_id = ?1 AND msg_id IS NOT NULL"},
            {&erase_session, "DELETE FROM sessions WHERE client_id = ?1"},
            {&erase_session_subs, "DELETE FROM subscriptions WHERE client_id = ?1"},
            {&erase_session_queue, "DELETE FROM queue WHERE client_id = ?1"},
            {&erase_session_inbound, "DELETE FROM inbound_qos2 WHERE client_id = ?1"},
            {&put_subscription,
             "INSERT OR REPLACE INTO subscriptions(client_id, filter, qos, no_local, retain_as_published, "
             "retain_handling, identifier) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
            {&erase_subscription, "DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2"},
            {&put_message,
             "INSERT OR REPLACE INTO messages(id, topic, payload, properties, qos, retain, expires_at) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
            {&put_outbound,
             "INSERT OR REPLACE INTO queue(client_id, seq, msg_id, qos, retain, state, packet_id, subscription_ids) "
             "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"},
            {&update_outbound, "UPDATE queue SET state = ?3, packet_id = ?4 WHERE client_id = ?1 AND seq = ?2"},
            {&release_outbound,
             "UPDATE queue SET state = ?3, packet_id = ?4, msg_id = NULL WHERE client_id = ?1 AND seq = ?2"},
            {&outbound_message, "SELECT msg_id FROM queue WHERE client_id = ?1 AND seq = ?2"},
            {&erase_outbound, "DELETE FROM queue WHERE client_id = ?1 AND seq = ?2 RETURNING msg_id"},
            {&retained_message, "SELECT msg_id FROM retained WHERE topic = ?1"},
            {&put_retained, "INSERT OR REPLACE INTO retained(topic, msg_id) VALUES(?1, ?2)"},
            {&erase_retained, "DELETE FROM retained WHERE topic = ?1 RETURNING msg_id"},
            {&put_inbound, "INSERT OR REPLACE INTO inbound_qos2(client_id, packet_id) VALUES(?1, ?2)"},
            {&erase_inbound, "DELETE FROM inbound_qos2 WHERE client_id = ?1 AND packet_id = ?2"},
            {&erase_message, "DELETE FROM messages WHERE id = ?1"},
            // Messages only queued are never swept: a queue row holds its
            // message until it is delivered or dropped (expiry is checked then).
            {&sweep_retained,
             "DELETE FROM retained WHERE msg_id IN "
             "(SELECT id FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?1) RETURNING msg_id"},
            {&put_ban,
             "INSERT OR REPLACE INTO banned(kind, who, by, reason, at, until) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"},
            {&erase_ban, "DELETE FROM banned WHERE kind = ?1 AND who = ?2"},
        };
        for (const auto& [stmt, sql] : all) {
            if (stmt->prepare(db, sql) != SQLITE_OK) {
                error = db.message() + " (in: " + sql + ")";
                return false;
            }
        }
        return true;
    }

    Stmt begin, commit, rollback, freelist_count;
    Stmt put_session, session_messages, erase_session, erase_session_subs, erase_session_queue, erase_session_inbound;
    Stmt put_subscription, erase_subscription;
    Stmt put_message, put_outbound, update_outbound, release_outbound, outbound_message, erase_outbound;
    Stmt retained_message, put_retained, erase_retained;
    Stmt put_inbound, erase_inbound;
    Stmt erase_message, sweep_retained;
    Stmt put_ban, erase_ban;
};

SqliteStore::SqliteStore(net::Reactor& reactor, Db db, std::string path)
    : reactor_(reactor), db_(std::move(db)), path_(std::move(path)), stmts_(std::make_unique<Statements>()) {}

SqliteStore::~SqliteStore() {
    submit();
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (event_fd_) reactor_.remove(event_fd_.get());
    if (!retry_.empty()) {
        spdlog::error("Persistence: {} changes could not be written to {} before the stop.", retry_.size(), path_);
    }
    stmts_.reset();
    // A clean stop leaves no WAL behind: the next start reads one file.
    if (db_ && retry_.empty()) sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
}

bool SqliteStore::prepare_statements(std::string& error) { return stmts_->prepare(db_, error); }

// ---- reactor side

Op& SqliteStore::add(Op::Kind kind) {
    Op& op = current_.emplace_back();
    op.kind = kind;
    return op;
}

void SqliteStore::put_session(const broker::StoredSession& session) {
    Op& op = add(Op::Kind::put_session);
    // The will is kept inline in the session row (it is nobody else's).
    op.session = std::make_unique<broker::StoredSession>(session);
}

void SqliteStore::erase_session(std::string_view client_id) { add(Op::Kind::erase_session).client.assign(client_id); }

void SqliteStore::put_subscription(std::string_view client_id, std::string_view filter,
                                   const broker::SubscriptionOptions& options) {
    Op& op = add(Op::Kind::put_subscription);
    op.client.assign(client_id);
    op.key.assign(filter);
    op.options = options;
}

void SqliteStore::erase_subscription(std::string_view client_id, std::string_view filter) {
    Op& op = add(Op::Kind::erase_subscription);
    op.client.assign(client_id);
    op.key.assign(filter);
}

void SqliteStore::put_message(const MessagePtr& message) {
    Op& op = add(Op::Kind::put_message);
    op.message = message;
    if (message->expires_at) {
        op.expires_at = broker::to_wall(*message->expires_at, net::Clock::now(), broker::wall_now());
        if (op.expires_at == 0) op.expires_at = 1;
    }
}

void SqliteStore::put_outbound(std::string_view client_id, std::uint64_t seq, const OutboundMessage& m) {
    Op& op = add(Op::Kind::put_outbound);
    op.client.assign(client_id);
    op.number = seq;
    op.message = m.message;
    op.qos = static_cast<std::uint8_t>(m.qos);
    op.flag = m.retain;
    op.state = static_cast<std::uint8_t>(m.state);
    op.packet_id = m.packet_id;
    op.key.assign(reinterpret_cast<const char*>(m.subscription_ids.data()), m.subscription_ids.size() * 4);
}

void SqliteStore::update_outbound(std::string_view client_id, std::uint64_t seq, OutboundMessage::State state,
                                  std::uint16_t packet_id) {
    // Queued and sent in the same turn (the usual case for a connected
    // subscriber): the row is written once, already in flight.
    if (!current_.empty()) {
        Op& last = current_.back();
        if (last.kind == Op::Kind::put_outbound && last.number == seq && last.client == client_id &&
            state != OutboundMessage::State::awaiting_pubcomp) {
            last.state = static_cast<std::uint8_t>(state);
            last.packet_id = packet_id;
            return;
        }
    }
    Op& op = add(Op::Kind::update_outbound);
    op.client.assign(client_id);
    op.number = seq;
    op.state = static_cast<std::uint8_t>(state);
    op.packet_id = packet_id;
}

void SqliteStore::erase_outbound(std::string_view client_id, std::uint64_t seq) {
    Op& op = add(Op::Kind::erase_outbound);
    op.client.assign(client_id);
    op.number = seq;
}

void SqliteStore::put_retained(const MessagePtr& message) {
    Op& op = add(Op::Kind::put_retained);
    op.client = message->topic;
    op.message = message;
}

void SqliteStore::erase_retained(std::string_view topic) { add(Op::Kind::erase_retained).client.assign(topic); }

void SqliteStore::put_ban(const broker::Ban& ban) {
    Op& op = add(Op::Kind::put_ban);
    op.ban = std::make_unique<broker::Ban>(ban);
}

void SqliteStore::erase_ban(broker::Ban::Kind as, std::string_view who) {
    Op& op = add(Op::Kind::erase_ban);
    op.qos = static_cast<std::uint8_t>(as);
    op.client.assign(who);
}

void SqliteStore::put_inbound_qos2(std::string_view client_id, std::uint16_t packet_id) {
    Op& op = add(Op::Kind::put_inbound);
    op.client.assign(client_id);
    op.packet_id = packet_id;
}

void SqliteStore::erase_inbound_qos2(std::string_view client_id, std::uint16_t packet_id) {
    Op& op = add(Op::Kind::erase_inbound);
    op.client.assign(client_id);
    op.packet_id = packet_id;
}

void SqliteStore::sweep_expired(broker::WallTime now) { add(Op::Kind::sweep).number = static_cast<std::uint64_t>(now); }

std::uint64_t SqliteStore::submit() {
    if (current_.empty()) return 0;
    const std::uint64_t number = next_batch_++;
    const std::size_t size = current_.size();
    {
        std::lock_guard lock(mu_);
        waiting_.push_back(Batch{number, std::move(current_)});
    }
    // The next turn is likely as busy: no growing from empty op by op.
    current_ = std::vector<Op>();
    current_.reserve(size);
    wake_.notify_one();
    return number;
}

void SqliteStore::drain() {
    submit();
    const std::uint64_t last = next_batch_ - 1;
    {
        std::unique_lock lock(mu_);
        idle_.wait(lock, [&] { return attempted_ >= last; });
    }
    deliver();
}

void SqliteStore::on_io(std::uint32_t) {
    std::uint64_t n = 0;
    while (::read(event_fd_.get(), &n, sizeof n) == static_cast<ssize_t>(sizeof n)) {
    }
    deliver();
}

void SqliteStore::deliver() {
    broker::CommitResult r;
    r.durable = durable_.load();
    r.failed = failed_.load();
    r.healthy = healthy_.load();
    r.failures = failures_.load();
    r.database_bytes = database_bytes_.load();
    r.wal_bytes = wal_bytes_.load();
    r.checkpoints = checkpoints_.load();
    if (result_fn_) result_fn_(r);
}

// ---- checkpoints (store thread)
//
// Issue 31: the WAL grew without bound. Checkpoints used to run on a second
// connection that had never read the database, and on such a connection
// sqlite3_wal_checkpoint_v2() does nothing and returns SQLITE_OK (its pager
// has not opened the WAL: log and checkpointed frames come back as -1),
// while wal_autocheckpoint was off on the writer: nothing was ever copied
// back until a clean stop. A second connection that works is no cure
// either: its PASSIVE checkpoints rarely catch up with a writer that
// commits continuously, and SQLite starts the log over only when a write
// begins with every frame copied (sqlite.org/wal.html, "Avoiding
// Excessively Large WAL Files"), so the log still grew to tens of MiB under
// load, by chance. Here the writer checkpoints between its own
// transactions: nothing can write meanwhile, so the checkpoint copies every
// frame and the next commit rewrites the log from its start.

int SqliteStore::on_wal(void* self, sqlite3*, const char*, int pages) {
    // Called on the store thread after each commit: frames in the log.
    static_cast<SqliteStore*>(self)->wal_frames_ = pages;
    return SQLITE_OK;
}

void SqliteStore::after_commit() {
    // The file keeps its size after a checkpoint (the next commit writes
    // from its start): only the idle TRUNCATE gives the space back, so one
    // is due after every commit, even when a PASSIVE checkpoint just copied
    // every frame (wal_frames_ 0).
    truncate_due_ = true;
    if (wal_frames_ * page_size_ >= wal_checkpoint_bytes) {
        // PASSIVE waits for nobody: with no other writer it copies every
        // frame (a reader outside the broker holding an old snapshot stops
        // it short, and the warning below says so).
        checkpoint(SQLITE_CHECKPOINT_PASSIVE);
    } else {
        read_sizes(net::Clock::now());
    }
}

void SqliteStore::checkpoint(int mode) {
    int log = 0;
    int done = 0;
    const int rc = sqlite3_wal_checkpoint_v2(db_.get(), nullptr, mode, &log, &done);
    ++checkpoints_;
    if (rc == SQLITE_OK && log == done) {
        wal_frames_ = 0;
    } else {
        spdlog::debug("Persistence: checkpoint of {} copied {} of {} frames: {}", path_, done, log,
                      rc == SQLITE_OK ? "a reader holds the rest" : db_.message());
    }
    sized_at_ = {};
    read_sizes(net::Clock::now());
}

void SqliteStore::idle() {
    // Free pages (acknowledged messages, deleted retained ones, expired
    // sessions) are reused by later writes, but after a peak the file would
    // keep its largest size: idle, it gives them back, 4 MiB a second
    // (auto_vacuum = INCREMENTAL moves pages from the end into the holes).
    if (vacuum_due_) {
        const std::string sql = "PRAGMA incremental_vacuum(" + std::to_string(vacuum_step_bytes / page_size_) + ")";
        if (!db_.exec(sql.c_str())) spdlog::debug("Persistence: incremental vacuum of {}: {}", path_, db_.message());
        vacuum_due_ = false;  // read again with the sizes
    }
    // TRUNCATE waits for readers: not for long, batches may come.
    sqlite3_busy_timeout(db_.get(), 100);
    checkpoint(SQLITE_CHECKPOINT_TRUNCATE);
    sqlite3_busy_timeout(db_.get(), 5000);
    wal_frames_ = 0;  // tried once per idle spell, not every second
    truncate_due_ = false;
}

void SqliteStore::read_sizes(net::Clock::time_point now) {
    // A stat() per commit would be cheap too; $SYS needs far less.
    if (now - sized_at_ < std::chrono::milliseconds(100)) return;
    sized_at_ = now;
    struct stat st {};
    database_bytes_.store(::stat(path_.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0);
    if (auto_vacuum_) {
        // The free pages: in the header of page 1 (read without I/O while cached).
        Stmt& q = stmts_->freelist_count;
        const std::int64_t free = q.step() == SQLITE_ROW ? q.integer(0) : 0;
        q.reset();
        vacuum_due_ = free * page_size_ >= vacuum_free_bytes;
    }
    const std::uint64_t wal = ::stat((path_ + "-wal").c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
    wal_bytes_.store(wal);
    if (wal <= static_cast<std::uint64_t>(wal_limit_bytes)) {
        if (over_since_ != net::Clock::time_point{} && warned_at_ != net::Clock::time_point{}) {
            spdlog::info("Persistence: the WAL of {} is back under {} MiB.", path_, wal_limit_bytes >> 20);
        }
        over_since_ = {};
        warned_at_ = {};
        return;
    }
    // Above the bound for a moment is one big transaction (a session with
    // a long queue erased); staying there means checkpoints cannot finish.
    if (over_since_ == net::Clock::time_point{}) over_since_ = now;
    if (now - over_since_ >= std::chrono::seconds(10) &&
        (warned_at_ == net::Clock::time_point{} || now - warned_at_ >= std::chrono::minutes(1))) {
        warned_at_ = now;
        spdlog::warn("Persistence: the WAL of {} has stayed above {} MiB for {} s ({} MiB): checkpoints cannot "
                     "complete; is another process reading the file?",
                     path_, wal_limit_bytes >> 20,
                     std::chrono::duration_cast<std::chrono::seconds>(now - over_since_).count(), wal >> 20);
    }
}

// ---- store thread

void SqliteStore::run() {
    // Signals are the reactor's (a signalfd): a SIGTERM delivered to this
    // thread would kill the process before the shutdown ran.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    read_sizes(net::Clock::now());
    std::unique_lock lock(mu_);
    for (;;) {
        if (retry_.empty() && !truncate_due_ && !vacuum_due_) {
            wake_.wait(lock, [&] { return stop_ || !waiting_.empty(); });
        } else {
            // Failing: try again within a second even if nothing new comes.
            // Idle for a second with a log: it goes (sqlite_store.hpp).
            wake_.wait_for(lock, wal_idle_truncate, [&] { return stop_ || !waiting_.empty(); });
        }
        if (waiting_.empty() && retry_.empty()) {
            if (stop_) return;
            if (truncate_due_ || vacuum_due_) {
                lock.unlock();
                idle();
                lock.lock();
                wake_reactor();
            }
            continue;
        }
        std::deque<Batch> batches;
        batches.swap(waiting_);
        const bool stopping = stop_;
        lock.unlock();

        const std::uint64_t last = batches.empty() ? 0 : batches.back().number;
        std::size_t next = 0;     // the batch being taken
        std::size_t next_op = 0;  // its first op not yet in a transaction
        for (;;) {
            // Transactions of about transaction_bytes of WAL: however far the
            // store fell behind, and however big one reactor turn's batch
            // (a flood of PUBACKs after a stall), the log grows by one of
            // them at most between checkpoints. A batch cut in two is
            // durable (and acknowledged) once its last part is committed.
            std::uint64_t group = 0;  // the last batch whose last op is in this transaction
            std::size_t bytes = 0;
            auto room = [&] { return retry_.empty() || wal_estimate(bytes, retry_.size()) < transaction_bytes; };
            while (next < batches.size() && room()) {
                std::vector<Op>& ops = batches[next].ops;
                for (; next_op < ops.size() && room(); ++next_op) {
                    bytes += op_bytes(ops[next_op]);
                    retry_.push_back(std::move(ops[next_op]));
                }
                if (next_op < ops.size()) break;
                group = batches[next].number;
                ++next;
                next_op = 0;
            }
            const std::int64_t frames_before = wal_frames_;
            const std::size_t ops_in_transaction = retry_.size();
            if (commit(retry_)) {
                retry_.clear();
                learn_wal_per_op(wal_frames_ - frames_before, ops_in_transaction);
                if (group != 0) durable_.store(group);
                if (!healthy_.load()) spdlog::info("Persistence: {} is written again.", path_);
                healthy_.store(true);
                // The acknowledgements go out before the checkpoint runs.
                wake_reactor();
                after_commit();
                if (next < batches.size()) continue;
            } else {
                for (; next < batches.size(); ++next, next_op = 0) {
                    std::vector<Op>& ops = batches[next].ops;
                    for (; next_op < ops.size(); ++next_op) retry_.push_back(std::move(ops[next_op]));
                }
                ++failures_;
                if (last != 0) failed_.store(last);
                if (healthy_.load()) spdlog::error("Persistence: cannot write {}: {}", path_, last_error_);
                healthy_.store(false);
            }
            break;
        }
        lock.lock();
        if (last != 0) attempted_ = last;
        idle_.notify_all();
        wake_reactor();
        // Stopping: what still fails is reported by the destructor.
        if (stopping && waiting_.empty()) return;
    }
}

std::size_t SqliteStore::wal_estimate(std::size_t row_bytes, std::size_t ops) const {
    return std::max(row_bytes, static_cast<std::size_t>(static_cast<double>(ops) * wal_bytes_per_op_));
}

void SqliteStore::learn_wal_per_op(std::int64_t frames, std::size_t ops) {
    // What a transaction adds to the WAL is the pages it touches, not the
    // bytes of its rows: with a long backlog spread over many queues each
    // row lands on a page of its own (a WAL of 40 MiB for "2 MiB" of rows
    // was seen in a soak). The last transactions say how many bytes of WAL
    // an op costs now; the next one is sized by it.
    if (frames <= 0 || ops == 0) return;  // a checkpoint restarted the count
    const double per_op = static_cast<double>(frames) * page_size_ / static_cast<double>(ops);
    wal_bytes_per_op_ = wal_bytes_per_op_ == 0 ? per_op : (wal_bytes_per_op_ + per_op) / 2;
}

std::size_t SqliteStore::op_bytes(const Op& op) {
    // Roughly what the op adds to the WAL (a row and its share of a page).
    std::size_t n = 64 + op.client.size() + op.key.size();
    if (op.kind == Op::Kind::put_message) {
        n += op.message->topic.size() + op.message->payload.size() + op.message->properties.size();
    }
    return n;
}

void SqliteStore::wake_reactor() {
    if (!event_fd_) return;
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(event_fd_.get(), &one, sizeof one);
}

// ---- message references (store thread)

std::int64_t SqliteStore::references(std::int64_t id) const {
    auto it = refs_.find(id);
    return it == refs_.end() ? 1 : it->second;
}

void SqliteStore::set_references(std::int64_t id, std::int64_t n) {
    auto it = refs_.find(id);
    refs_undo_.emplace_back(id, it == refs_.end() ? -1 : std::int64_t{it->second});
    if (n == 1 || n < 0) {
        // One reference is what an absent id means; < 0: the message is gone.
        if (it != refs_.end()) refs_.erase(it);
    } else if (it == refs_.end()) {
        refs_.emplace(id, static_cast<std::uint32_t>(n));
    } else {
        it->second = static_cast<std::uint32_t>(n);
    }
}

bool SqliteStore::drop_reference(std::int64_t id) {
    const std::int64_t n = references(id) - 1;
    if (n > 0) {
        set_references(id, n);
        return true;
    }
    // Its last queue or retained row went: so does the message.
    set_references(id, -1);
    Stmt& q = stmts_->erase_message;
    q.bind(1, id);
    return q.run() == SQLITE_DONE;
}

// ---- store thread: the transaction

void SqliteStore::cancel_pairs(std::vector<Op>& ops) {
    // A queue row put and erased within one transaction is never written:
    // its subscriber acknowledged the message before the batch that queued
    // it was committed (QoS 1 goes out without waiting for it), which is
    // what happens when commits fall behind under load. Nor is a message
    // stored in it whose every row went that way.
    pending_.clear();
    fresh_.clear();
    for (std::size_t i = 0; i < ops.size(); ++i) {
        Op& op = ops[i];
        if (op.dead) continue;
        switch (op.kind) {
            case Op::Kind::put_message:
                fresh_[static_cast<std::int64_t>(op.message->store_id)] = Fresh{i, 0, 0};
                break;
            case Op::Kind::put_outbound:
            case Op::Kind::put_retained:
                if (op.message) {
                    auto f = fresh_.find(static_cast<std::int64_t>(op.message->store_id));
                    if (f != fresh_.end()) ++f->second.live;
                }
                if (op.kind == Op::Kind::put_outbound) pending_[PendingKey{op.client, op.number}] = i;
                break;
            case Op::Kind::update_outbound: {
                auto p = pending_.find(PendingKey{op.client, op.number});
                if (p == pending_.end()) break;
                if (op.state == static_cast<std::uint8_t>(OutboundMessage::State::awaiting_pubcomp)) {
                    // Both are written (the update drops the message).
                    pending_.erase(p);
                    break;
                }
                Op& put = ops[p->second];
                put.state = op.state;
                put.packet_id = op.packet_id;
                op.dead = true;
                break;
            }
            case Op::Kind::erase_outbound: {
                auto p = pending_.find(PendingKey{op.client, op.number});
                if (p == pending_.end()) break;
                Op& put = ops[p->second];
                put.dead = true;
                op.dead = true;
                if (put.message) {
                    auto f = fresh_.find(static_cast<std::int64_t>(put.message->store_id));
                    if (f != fresh_.end()) {
                        --f->second.live;
                        ++f->second.cancelled;
                    }
                }
                pending_.erase(p);
                break;
            }
            case Op::Kind::erase_session:
                // A session made again numbers its rows from 1 again.
                pending_.clear();
                break;
            default:
                break;
        }
    }
    for (const auto& [id, f] : fresh_) {
        if (f.live == 0 && f.cancelled != 0) ops[f.op].dead = true;
    }
}

bool SqliteStore::commit(std::vector<Op>& ops) {
    Statements& s = *stmts_;
    cancel_pairs(ops);
    refs_undo_.clear();
    auto fail = [&] {
        last_error_ = db_.message();
        // A failed statement or COMMIT may leave the transaction open
        // (SQLITE_BUSY/FULL); the references counted in it are undone.
        if (!sqlite3_get_autocommit(db_.get())) s.rollback.run();
        for (auto it = refs_undo_.rbegin(); it != refs_undo_.rend(); ++it) {
            if (it->second < 0) {
                refs_.erase(it->first);
            } else {
                refs_[it->first] = static_cast<std::uint32_t>(it->second);
            }
        }
        refs_undo_.clear();
        return false;
    };
    if (s.begin.run() != SQLITE_DONE) return fail();
    for (Op& op : ops) {
        if (!op.dead && !apply(op)) return fail();
    }
    if (s.commit.run() != SQLITE_DONE) return fail();
    refs_undo_.clear();
    return true;
}

namespace {

// Runs a statement whose RETURNING/SELECT gives at most one message id:
// true with `id` (0: none, or NULL) when it worked.
bool run_for_id(Stmt& stmt, std::int64_t& id) {
    id = 0;
    int rc = stmt.step();
    if (rc == SQLITE_ROW) {
        if (!stmt.null(0)) id = stmt.integer(0);
        rc = stmt.run();
    } else {
        stmt.reset();
    }
    return rc == SQLITE_DONE;
}

// Every message id a statement returns (read before the messages change).
bool run_for_ids(Stmt& stmt, std::vector<std::int64_t>& ids) {
    int rc;
    while ((rc = stmt.step()) == SQLITE_ROW) {
        if (!stmt.null(0)) ids.push_back(stmt.integer(0));
    }
    stmt.reset();
    return rc == SQLITE_DONE;
}

}  // namespace

bool SqliteStore::apply(Op& op) {
    Statements& s = *stmts_;
    switch (op.kind) {
        case Op::Kind::put_session: {
            const broker::StoredSession& r = *op.session;
            Stmt& q = s.put_session;
            q.bind_text(1, r.client_id);
            if (r.username) q.bind_text(2, *r.username);
            q.bind(3, r.expiry_interval);
            q.bind(4, r.connected ? 1 : 0);
            q.bind(5, r.expires_at);
            if (r.will) {
                q.bind_text(6, r.will->topic);
                q.bind_blob(7, r.will->payload);
                q.bind_blob(8, r.will->properties);
                q.bind(9, static_cast<int>(r.will->qos));
                q.bind(10, r.will->retain ? 1 : 0);
                if (r.will_expiry) q.bind(11, *r.will_expiry);
                q.bind(12, r.will_delay);
                q.bind(13, r.will_at);
            }
            return q.run() == SQLITE_DONE;
        }
        case Op::Kind::erase_session: {
            std::vector<std::int64_t> ids;
            s.session_messages.bind_text(1, op.client);
            if (!run_for_ids(s.session_messages, ids)) return false;
            for (Stmt* q : {&s.erase_session_queue, &s.erase_session_subs, &s.erase_session_inbound, &s.erase_session}) {
                q->bind_text(1, op.client);
                if (q->run() != SQLITE_DONE) return false;
            }
            for (std::int64_t id : ids) {
                if (!drop_reference(id)) return false;
            }
            return true;
        }
        case Op::Kind::put_subscription: {
            Stmt& q = s.put_subscription;
            q.bind_text(1, op.client);
            q.bind_text(2, op.key);
            q.bind(3, static_cast<int>(op.options.qos));
            q.bind(4, op.options.no_local ? 1 : 0);
            q.bind(5, op.options.retain_as_published ? 1 : 0);
            q.bind(6, op.options.retain_handling);
            q.bind(7, op.options.identifier);
            return q.run() == SQLITE_DONE;
        }
        case Op::Kind::erase_subscription:
            s.erase_subscription.bind_text(1, op.client);
            s.erase_subscription.bind_text(2, op.key);
            return s.erase_subscription.run() == SQLITE_DONE;
        case Op::Kind::put_message: {
            const broker::Message& m = *op.message;
            Stmt& q = s.put_message;
            q.bind(1, static_cast<std::int64_t>(m.store_id));
            q.bind_text(2, m.topic);
            q.bind_blob(3, m.payload);
            q.bind_blob(4, m.properties);
            q.bind(5, static_cast<int>(m.qos));
            q.bind(6, m.retain ? 1 : 0);
            if (op.expires_at != 0) q.bind(7, op.expires_at);
            if (q.run() != SQLITE_DONE) return false;
            set_references(static_cast<std::int64_t>(m.store_id), 0);
            return true;
        }
        case Op::Kind::put_outbound: {
            Stmt& q = s.put_outbound;
            q.bind_text(1, op.client);
            q.bind(2, static_cast<std::int64_t>(op.number));
            if (op.message) q.bind(3, static_cast<std::int64_t>(op.message->store_id));
            q.bind(4, op.qos);
            q.bind(5, op.flag ? 1 : 0);
            q.bind(6, op.state);
            q.bind(7, op.packet_id);
            if (!op.key.empty()) q.bind_blob(8, op.key);
            if (q.run() != SQLITE_DONE) return false;
            if (op.message) add_reference(static_cast<std::int64_t>(op.message->store_id));
            return true;
        }
        case Op::Kind::update_outbound: {
            if (op.state == static_cast<std::uint8_t>(OutboundMessage::State::awaiting_pubcomp)) {
                // PUBREC'd: only the PUBREL is left, the message goes.
                std::int64_t id = 0;
                s.outbound_message.bind_text(1, op.client);
                s.outbound_message.bind(2, static_cast<std::int64_t>(op.number));
                if (!run_for_id(s.outbound_message, id)) return false;
                Stmt& q = s.release_outbound;
                q.bind_text(1, op.client);
                q.bind(2, static_cast<std::int64_t>(op.number));
                q.bind(3, op.state);
                q.bind(4, op.packet_id);
                if (q.run() != SQLITE_DONE) return false;
                return id == 0 || drop_reference(id);
            }
            Stmt& q = s.update_outbound;
            q.bind_text(1, op.client);
            q.bind(2, static_cast<std::int64_t>(op.number));
            q.bind(3, op.state);
            q.bind(4, op.packet_id);
            return q.run() == SQLITE_DONE;
        }
        case Op::Kind::erase_outbound: {
            std::int64_t id = 0;
            s.erase_outbound.bind_text(1, op.client);
            s.erase_outbound.bind(2, static_cast<std::int64_t>(op.number));
            if (!run_for_id(s.erase_outbound, id)) return false;
            return id == 0 || drop_reference(id);
        }
        case Op::Kind::put_retained: {
            std::int64_t old = 0;
            s.retained_message.bind_text(1, op.client);
            if (!run_for_id(s.retained_message, old)) return false;
            const auto id = static_cast<std::int64_t>(op.message->store_id);
            if (old == id) return true;
            s.put_retained.bind_text(1, op.client);
            s.put_retained.bind(2, id);
            if (s.put_retained.run() != SQLITE_DONE) return false;
            add_reference(id);
            return old == 0 || drop_reference(old);
        }
        case Op::Kind::erase_retained: {
            std::int64_t id = 0;
            s.erase_retained.bind_text(1, op.client);
            if (!run_for_id(s.erase_retained, id)) return false;
            return id == 0 || drop_reference(id);
        }
        case Op::Kind::put_inbound:
            s.put_inbound.bind_text(1, op.client);
            s.put_inbound.bind(2, op.packet_id);
            return s.put_inbound.run() == SQLITE_DONE;
        case Op::Kind::erase_inbound:
            s.erase_inbound.bind_text(1, op.client);
            s.erase_inbound.bind(2, op.packet_id);
            return s.erase_inbound.run() == SQLITE_DONE;
        case Op::Kind::put_ban: {
            const broker::Ban& b = *op.ban;
            Stmt& q = s.put_ban;
            q.bind(1, static_cast<std::int64_t>(b.as));
            q.bind_text(2, b.who);
            q.bind_text(3, b.by);
            q.bind_text(4, b.reason);
            q.bind(5, b.at);
            q.bind(6, b.until);
            return q.run() == SQLITE_DONE;
        }
        case Op::Kind::erase_ban:
            s.erase_ban.bind(1, static_cast<std::int64_t>(op.qos));
            s.erase_ban.bind_text(2, op.client);
            return s.erase_ban.run() == SQLITE_DONE;
        case Op::Kind::sweep: {
            std::vector<std::int64_t> ids;
            s.sweep_retained.bind(1, static_cast<std::int64_t>(op.number));
            if (!run_for_ids(s.sweep_retained, ids)) return false;
            for (std::int64_t id : ids) {
                if (!drop_reference(id)) return false;
            }
            return true;
        }
    }
    return false;
}

}  // namespace mqttools::store
