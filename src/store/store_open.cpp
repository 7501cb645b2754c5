// Opening the store: a new file gets the schema; an existing one is checked
// (SQLite header, application_id, schema version, readable and writable)
// before SQLite is allowed to write to it, so a file that is not ours is
// never touched, and then loaded completely before the broker serves.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "store/sqlite_store.hpp"

namespace mqttools::store {

namespace {

using broker::LoadedSession;
using broker::LoadedState;
using broker::Message;
using broker::MessagePtr;

// Messages are stored once; queue rows and retained rows refer to them
// (the store counts the references in memory: no index on msg_id).
// Deadlines are wall-clock milliseconds (0 or NULL: none).
const char* const schema_sql = R"sql(
CREATE TABLE messages(
  id INTEGER PRIMARY KEY,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  properties BLOB NOT NULL,
  qos INTEGER NOT NULL,
  retain INTEGER NOT NULL,
  expires_at INTEGER);
CREATE TABLE retained(
  topic TEXT PRIMARY KEY,
  msg_id INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE sessions(
  client_id TEXT PRIMARY KEY,
  username TEXT,
  expiry_interval INTEGER NOT NULL,
  connected INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  will_topic TEXT,
  will_payload BLOB,
  will_properties BLOB,
  will_qos INTEGER,
  will_retain INTEGER,
  will_expiry INTEGER,
  will_delay INTEGER,
  will_at INTEGER) WITHOUT ROWID;
CREATE TABLE subscriptions(
  client_id TEXT NOT NULL,
  filter TEXT NOT NULL,
  qos INTEGER NOT NULL,
  no_local INTEGER NOT NULL,
  retain_as_published INTEGER NOT NULL,
  retain_handling INTEGER NOT NULL,
  identifier INTEGER NOT NULL,
  PRIMARY KEY(client_id, filter)) WITHOUT ROWID;
CREATE TABLE queue(
  client_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  msg_id INTEGER,
  qos INTEGER NOT NULL,
  retain INTEGER NOT NULL,
  state INTEGER NOT NULL,
  packet_id INTEGER NOT NULL,
  subscription_ids BLOB,
  PRIMARY KEY(client_id, seq)) WITHOUT ROWID;
CREATE TABLE inbound_qos2(
  client_id TEXT NOT NULL,
  packet_id INTEGER NOT NULL,
  PRIMARY KEY(client_id, packet_id)) WITHOUT ROWID;
)sql";

// The management API's bans (broker/admin_view.hpp): kind 0 clientid,
// 1 username, 2 peerhost; times in Unix seconds, until 0 = for ever.
const char* const banned_sql = R"sql(
CREATE TABLE IF NOT EXISTS banned(
  kind INTEGER NOT NULL,
  who TEXT NOT NULL,
  by TEXT NOT NULL,
  reason TEXT NOT NULL,
  at INTEGER NOT NULL,
  until INTEGER NOT NULL,
  PRIMARY KEY(kind, who)) WITHOUT ROWID;
)sql";

const char* const tables[] = {"messages", "retained", "sessions", "subscriptions", "queue", "inbound_qos2"};

std::int64_t pragma_int(const Db& db, const char* sql, std::string& error) {
    Stmt q;
    if (q.prepare(db, sql) != SQLITE_OK) {
        error = db.message();
        return -1;
    }
    const int rc = q.step();
    if (rc != SQLITE_ROW) {
        error = db.message();
        return -1;
    }
    return q.integer(0);
}

// The first 16 bytes of every SQLite 3 database (sqlite.org/fileformat.html 1.3).
bool has_sqlite_header(const std::string& path, std::string& error) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error = std::string("cannot read it: ") + std::strerror(errno);
        return false;
    }
    char header[16] = {};
    const ssize_t n = ::read(fd, header, sizeof header);
    ::close(fd);
    if (n == 0) {
        error = "the file is empty (truncated?)";
        return false;
    }
    if (n != 16 || std::memcmp(header, "SQLite format 3", 16) != 0) {
        error = "not an SQLite database (corrupt, or another program's file)";
        return false;
    }
    return true;
}

bool create_schema(Db& db, std::string& error) {
    // auto_vacuum before the first table: the store can give free pages back.
    const std::string sql = std::string("PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; BEGIN; ") + schema_sql +
                            "PRAGMA application_id=" + std::to_string(application_id) +
                            "; PRAGMA user_version=" + std::to_string(schema_version) + "; COMMIT;";
    if (!db.exec(sql.c_str())) {
        error = "cannot create the database: " + db.message();
        return false;
    }
    return true;
}

bool check_existing(Db& db, std::string& error) {
    const std::int64_t app = pragma_int(db, "PRAGMA application_id", error);
    if (app < 0) return false;
    if (app != application_id) {
        error = "not an mqttoolsd database (application_id " + std::to_string(app) + "; another program's SQLite file?)";
        return false;
    }
    const std::int64_t version = pragma_int(db, "PRAGMA user_version", error);
    if (version < 0) return false;
    if (version != schema_version && version != 1) {
        error = "schema version " + std::to_string(version) + ", this mqttoolsd reads version " +
                std::to_string(schema_version);
        return false;
    }
    for (const char* table : tables) {
        Stmt q;
        q.prepare(db, "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1");
        q.bind_text(1, table);
        const int rc = q.step();
        if (rc != SQLITE_ROW) {
            error = rc == SQLITE_DONE ? std::string("table '") + table + "' is missing" : db.message();
            return false;
        }
    }
    if (sqlite3_db_readonly(db.get(), "main") == 1) {
        error = "the file is read-only";
        return false;
    }
    if (version == 1 &&
        !db.exec("BEGIN; DROP INDEX IF EXISTS queue_msg; DROP INDEX IF EXISTS retained_msg; "
                 "PRAGMA user_version=2; COMMIT;")) {
        // Version 1 had indexes for finding a message's references; the
        // store counts them in memory now.
        error = "cannot upgrade from schema version 1: " + db.message();
        return false;
    }
    return true;
}

// Bans that ended while the broker was down are not loaded (nor kept).
bool load_bans(Db& db, std::vector<broker::Ban>& out, std::string& error) {
    const std::int64_t now = broker::wall_now() / 1000;
    Stmt q;
    if (q.prepare(db, "SELECT kind, who, by, reason, at, until FROM banned") != SQLITE_OK) {
        error = db.message();
        return false;
    }
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) {
        const std::int64_t kind = q.integer(0);
        if (kind < 0 || kind > 2) {
            error = "banned: bad kind " + std::to_string(kind);
            return false;
        }
        broker::Ban b;
        b.as = static_cast<broker::Ban::Kind>(kind);
        b.who.assign(q.text(1));
        b.by.assign(q.text(2));
        b.reason.assign(q.text(3));
        b.at = q.integer(4);
        b.until = q.integer(5);
        if (b.until != 0 && b.until <= now) continue;
        out.push_back(std::move(b));
    }
    if (rc != SQLITE_DONE) {
        error = db.message();
        return false;
    }
    const std::string sweep = "DELETE FROM banned WHERE until != 0 AND until <= " + std::to_string(now);
    if (!db.exec(sweep.c_str())) {
        error = db.message();
        return false;
    }
    return true;
}

// Column checks while loading: a value out of range means the file was
// damaged or edited; refuse rather than guess.
bool valid_qos(std::int64_t q, bool zero_ok) { return q >= (zero_ok ? 0 : 1) && q <= 2; }

// Also counts each message's queue and retained rows: `refs` gets those
// with more than one, `orphans` those with none (not written since
// version 2; deleted before the store starts).
bool load(Db& db, LoadedState& out, std::unordered_map<std::int64_t, std::uint32_t>& refs,
          std::vector<std::int64_t>& orphans, std::string& error) {
    const auto now = net::Clock::now();
    const broker::WallTime wall = broker::wall_now();
    auto fail = [&](const std::string& what) {
        error = what;
        return false;
    };
    auto sql_error = [&] { return fail(db.message()); };
    Stmt q;

    // Messages.
    struct Stored {
        MessagePtr message;
        std::uint32_t refs = 0;
    };
    std::unordered_map<std::int64_t, Stored> messages;
    if (q.prepare(db, "SELECT count(*), coalesce(max(id), 0) FROM messages") != SQLITE_OK || q.step() != SQLITE_ROW)
        return sql_error();
    messages.reserve(static_cast<std::size_t>(q.integer(0)));
    out.next_message_id = static_cast<std::uint64_t>(q.integer(1)) + 1;
    if (q.prepare(db, "SELECT id, topic, payload, properties, qos, retain, expires_at FROM messages") != SQLITE_OK)
        return sql_error();
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) {
        auto m = std::make_shared<Message>();
        m->store_id = static_cast<std::uint64_t>(q.integer(0));
        m->topic.assign(q.text(1));
        m->payload.assign(q.blob(2));
        m->properties.assign(q.blob(3));
        if (!valid_qos(q.integer(4), true)) return fail("messages: bad qos in row " + std::to_string(q.integer(0)));
        m->qos = static_cast<QoS>(q.integer(4));
        m->retain = q.integer(5) != 0;
        if (!q.null(6)) m->expires_at = broker::from_wall(q.integer(6), now, wall);
        messages.emplace(q.integer(0), Stored{std::move(m), 0});
    }
    if (rc != SQLITE_DONE) return sql_error();
    out.messages = messages.size();
    auto message = [&](std::int64_t id) -> MessagePtr {
        auto it = messages.find(id);
        if (it == messages.end()) return nullptr;
        ++it->second.refs;
        return it->second.message;
    };

    // Retained.
    if (q.prepare(db, "SELECT topic, msg_id FROM retained") != SQLITE_OK) return sql_error();
    while ((rc = q.step()) == SQLITE_ROW) {
        MessagePtr m = message(q.integer(1));
        if (!m) return fail("retained: topic '" + std::string(q.text(0)) + "' refers to a missing message");
        out.retained.push_back(std::move(m));
    }
    if (rc != SQLITE_DONE) return sql_error();

    // Sessions, then their rows in client id order.
    std::unordered_map<std::string, std::size_t> index;
    if (q.prepare(db,
                  "SELECT client_id, username, expiry_interval, connected, expires_at, will_topic, will_payload, "
                  "will_properties, will_qos, will_retain, will_expiry, will_delay, will_at FROM sessions") != SQLITE_OK)
        return sql_error();
    while ((rc = q.step()) == SQLITE_ROW) {
        LoadedSession ls;
        broker::StoredSession& s = ls.session;
        s.client_id.assign(q.text(0));
        if (!q.null(1)) s.username = std::string(q.text(1));
        s.expiry_interval = static_cast<std::uint32_t>(q.integer(2));
        s.connected = q.integer(3) != 0;
        s.expires_at = q.integer(4);
        if (!q.null(5)) {
            auto w = std::make_shared<Message>();
            w->topic.assign(q.text(5));
            w->payload.assign(q.blob(6));
            w->properties.assign(q.blob(7));
            if (!valid_qos(q.integer(8), true)) return fail("sessions: bad will qos for '" + s.client_id + "'");
            w->qos = static_cast<QoS>(q.integer(8));
            w->retain = q.integer(9) != 0;
            s.will = std::move(w);
            if (!q.null(10)) s.will_expiry = static_cast<std::uint32_t>(q.integer(10));
            s.will_delay = static_cast<std::uint32_t>(q.integer(11));
            s.will_at = q.integer(12);
        }
        index.emplace(s.client_id, out.sessions.size());
        out.sessions.push_back(std::move(ls));
    }
    if (rc != SQLITE_DONE) return sql_error();
    auto session = [&](std::string_view id) -> LoadedSession* {
        auto it = index.find(std::string(id));
        return it == index.end() ? nullptr : &out.sessions[it->second];
    };

    if (q.prepare(db,
                  "SELECT client_id, filter, qos, no_local, retain_as_published, retain_handling, identifier "
                  "FROM subscriptions") != SQLITE_OK)
        return sql_error();
    while ((rc = q.step()) == SQLITE_ROW) {
        LoadedSession* ls = session(q.text(0));
        if (!ls) continue;  // an orphan row (never written that way): ignored
        broker::SubscriptionOptions o;
        if (!valid_qos(q.integer(2), true) || q.integer(5) < 0 || q.integer(5) > 2)
            return fail("subscriptions: bad options for '" + std::string(q.text(0)) + "'");
        o.qos = static_cast<QoS>(q.integer(2));
        o.no_local = q.integer(3) != 0;
        o.retain_as_published = q.integer(4) != 0;
        o.retain_handling = static_cast<std::uint8_t>(q.integer(5));
        o.identifier = static_cast<std::uint32_t>(q.integer(6));
        ls->subscriptions.emplace_back(std::string(q.text(1)), o);
    }
    if (rc != SQLITE_DONE) return sql_error();

    if (q.prepare(db,
                  "SELECT client_id, seq, msg_id, qos, retain, state, packet_id, subscription_ids FROM queue "
                  "ORDER BY client_id, seq") != SQLITE_OK)
        return sql_error();
    LoadedSession* current = nullptr;
    std::string current_id;
    while ((rc = q.step()) == SQLITE_ROW) {
        if (!current || q.text(0) != current_id) {
            current_id.assign(q.text(0));
            current = session(current_id);
        }
        // Each column read once (a million rows: the calls add up). A NULL
        // msg_id reads 0, which no message has.
        const std::int64_t msg_id = q.integer(2);
        if (!current) {
            // A row without its session (never written that way) is not
            // loaded, but its reference still counts.
            if (msg_id != 0) message(msg_id);
            continue;
        }
        const std::int64_t qos = q.integer(3);
        const std::int64_t state = q.integer(5);
        const std::int64_t packet_id = q.integer(6);
        if (!valid_qos(qos, false) || state < 0 || state > 3 || packet_id < 0 || packet_id > 65535)
            return fail("queue: bad row for '" + current_id + "'");
        broker::OutboundMessage& o = current->outbound.emplace_back();
        o.store_seq = static_cast<std::uint64_t>(q.integer(1));
        o.qos = static_cast<QoS>(qos);
        o.retain = q.integer(4) != 0;
        o.state = static_cast<broker::OutboundMessage::State>(state);
        o.packet_id = static_cast<std::uint16_t>(packet_id);
        if (msg_id != 0) {
            o.message = message(msg_id);
            if (!o.message) return fail("queue: a row of '" + current_id + "' refers to a missing message");
        }
        const std::string_view ids = q.blob(7);
        if (ids.size() >= 4) {
            o.subscription_ids.resize(ids.size() / 4);
            std::memcpy(o.subscription_ids.data(), ids.data(), o.subscription_ids.size() * 4);
        }
        ++out.queued;
    }
    if (rc != SQLITE_DONE) return sql_error();

    if (q.prepare(db, "SELECT client_id, packet_id FROM inbound_qos2") != SQLITE_OK) return sql_error();
    while ((rc = q.step()) == SQLITE_ROW) {
        if (LoadedSession* ls = session(q.text(0))) ls->inbound_qos2.push_back(static_cast<std::uint16_t>(q.integer(1)));
    }
    if (rc != SQLITE_DONE) return sql_error();
    for (const auto& [id, stored] : messages) {
        if (stored.refs == 0) {
            orphans.push_back(id);
        } else if (stored.refs > 1) {
            refs.emplace(id, stored.refs);
        }
    }
    out.messages -= orphans.size();
    return true;
}

}  // namespace

int Db::open(const std::string& path, int flags) {
    close();
    const int rc = sqlite3_open_v2(path.c_str(), &db_, flags | SQLITE_OPEN_NOMUTEX, nullptr);
    if (db_) sqlite3_extended_result_codes(db_, 1);
    return rc;
}

void Db::close() noexcept {
    if (db_) sqlite3_close_v2(db_);
    db_ = nullptr;
}

bool Db::exec(const char* sql) { return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) == SQLITE_OK; }

std::unique_ptr<SqliteStore> SqliteStore::open(net::Reactor& reactor, const Options& options,
                                               LoadedState& loaded, std::string& error) {
    const std::string& path = options.path;
    auto failed = [&](const std::string& what) -> std::unique_ptr<SqliteStore> {
        error = "persistence file " + path + ": " + what;
        return nullptr;
    };
    struct stat st {};
    bool exists = ::stat(path.c_str(), &st) == 0;
    if (!exists && errno != ENOENT) return failed(std::strerror(errno));
    if (exists && !S_ISREG(st.st_mode)) return failed("not a regular file");
    // One broker per file: SQLite would let a second one share it (WAL
    // works across processes), and each would overwrite the state the other
    // keeps in memory. An exclusive flock held for the store's life; flock,
    // not fcntl, because SQLite's own POSIX locks on the file vanish
    // whenever any descriptor of it closes, and flock locks do not interact
    // with them. A missing file is created here, empty (SQLite takes an
    // empty file for a new database), so the lock covers making it too.
    net::UniqueFd lock;
    if (!exists) {
        lock.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (!lock && errno == ENOENT) {
            return failed("cannot create it: the folder '" + std::filesystem::path(path).parent_path().string() +
                          "' does not exist (mqttoolsd does not create it)");
        }
        if (!lock && errno != EEXIST) return failed(std::string("cannot create it: ") + std::strerror(errno));
        exists = !lock;  // made meanwhile by someone else: checked as any existing file
    }
    if (exists) {
        lock.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!lock) return failed(std::string("cannot read it: ") + std::strerror(errno));
    }
    if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            return failed("in use by another process (another mqttoolsd with the same persistence_location and "
                          "persistence_file?)");
        }
        return failed(std::string("cannot lock it: ") + std::strerror(errno));
    }
    Db db;
    if (exists) {
        std::string why;
        if (!has_sqlite_header(path, why)) return failed(why);
        if (db.open(path, SQLITE_OPEN_READWRITE) != SQLITE_OK) return failed(db.message());
        if (!check_existing(db, why)) return failed(why);
    } else {
        if (db.open(path, SQLITE_OPEN_READWRITE) != SQLITE_OK) {
            const std::string why = db.message();
            db.close();
            ::unlink(path.c_str());  // ours, just made, empty
            return failed(why);
        }
        std::string why;
        if (!create_schema(db, why)) {
            db.close();
            ::unlink(path.c_str());  // ours, just made, unusable
            return failed(why);
        }
    }
    // synchronous FULL: the WAL is synced on every commit (survives power
    // loss); NORMAL: only at checkpoints (survives a crash of the process).
    const std::string pragmas = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") +
                                (options.sync_full ? "FULL" : "NORMAL") +
                                "; PRAGMA journal_size_limit=" + std::to_string(wal_limit_bytes) + "; PRAGMA cache_size=-16384;";
    if (!db.exec(pragmas.c_str())) return failed(db.message());
    {
        Stmt mode;
        if (mode.prepare(db, "PRAGMA journal_mode") != SQLITE_OK || mode.step() != SQLITE_ROW || mode.text(0) != "wal")
            return failed("cannot use WAL mode: " + db.message());
    }
    // The banned list (issue 27) came after schema version 2: older files
    // get the table here; an older mqttoolsd ignores it.
    if (!db.exec(banned_sql)) return failed("cannot add the banned table: " + db.message());
    std::string why;
    std::unordered_map<std::int64_t, std::uint32_t> refs;
    std::vector<std::int64_t> orphans;
    if (!load(db, loaded, refs, orphans, why)) return failed(why);
    if (!load_bans(db, loaded.bans, why)) return failed(why);
    if (pragma_int(db, "PRAGMA auto_vacuum", why) == 0) {
        // A file made before issue 31 cannot give free pages back until it
        // is rewritten once with auto_vacuum on.
        const auto start = std::chrono::steady_clock::now();
        if (db.exec("PRAGMA auto_vacuum=INCREMENTAL; VACUUM")) {
            spdlog::info("Persistence: {} rewritten with auto_vacuum = incremental in {} ms.", path,
                         std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start)
                             .count());
        } else {
            spdlog::warn("Persistence: {} could not be rewritten with auto_vacuum (it keeps its largest size): {}",
                         path, db.message());
        }
    }
    if (!orphans.empty()) {
        Stmt del;
        if (!db.exec("BEGIN") || del.prepare(db, "DELETE FROM messages WHERE id = ?1") != SQLITE_OK)
            return failed(db.message());
        for (std::int64_t id : orphans) {
            del.bind(1, id);
            if (del.run() != SQLITE_DONE) return failed(db.message());
        }
        if (!db.exec("COMMIT")) return failed(db.message());
        spdlog::info("Persistence: {} deleted {} messages nothing referred to.", path, orphans.size());
    }

    std::unique_ptr<SqliteStore> store(new SqliteStore(reactor, std::move(db), path));
    store->lock_fd_ = std::move(lock);
    store->refs_ = std::move(refs);
    if (!store->prepare_statements(why)) return failed(why);
    store->event_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!store->event_fd_ || !reactor.add(store->event_fd_.get(), EPOLLIN, store.get()))
        return failed(std::string("eventfd: ") + std::strerror(errno));
    // The store thread checkpoints itself (sqlite_store.cpp, issue 31): the
    // hook replaces SQLite's automatic checkpoint, which would run inside
    // COMMIT; the busy timeout is for other processes opening the file.
    if (!store->db_.exec("PRAGMA busy_timeout=5000")) return failed(store->db_.message());
    store->page_size_ = static_cast<int>(pragma_int(store->db_, "PRAGMA page_size", why));
    if (store->page_size_ <= 0) return failed(why);
    store->auto_vacuum_ = pragma_int(store->db_, "PRAGMA auto_vacuum", why) == 2;
    sqlite3_wal_hook(store->db_.get(), &SqliteStore::on_wal, store.get());
    store->thread_ = std::thread([s = store.get()] { s->run(); });
    return store;
}

}  // namespace mqttools::store
