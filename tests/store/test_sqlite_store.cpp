// The SQLite store against real temporary database files: round trips of
// every kind of row, messages stored once and deleted with their last
// reference, and files that are not ours refused and left untouched.
#include <sqlite3.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "store/sqlite_store.hpp"

using namespace mqttools;
using namespace mqttools::broker;
using mqttools::store::SqliteStore;

namespace {

struct TempDir {
    std::filesystem::path path;
    TempDir() {
        char tmpl[] = "/tmp/mqttools-store-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string file(const char* name = "test.db") const { return (path / name).string(); }
};

std::unique_ptr<SqliteStore> open_store(net::Reactor& reactor, const std::string& path, LoadedState& loaded,
                                        std::string& error) {
    store::Options o;
    o.path = path;
    o.sync_full = false;
    return SqliteStore::open(reactor, o, loaded, error);
}

MessagePtr message(std::uint64_t id, std::string topic, std::string payload, QoS qos = QoS::at_least_once) {
    auto m = std::make_shared<Message>();
    m->topic = std::move(topic);
    m->payload = std::move(payload);
    m->properties = std::string("\x01\x01", 2);  // Payload Format Indicator = 1
    m->qos = qos;
    m->store_id = id;
    return m;
}

OutboundMessage outbound(MessagePtr m, std::vector<std::uint32_t> ids = {}) {
    OutboundMessage o;
    o.message = std::move(m);
    o.qos = QoS::at_least_once;
    o.subscription_ids = std::move(ids);
    return o;
}

std::int64_t count(const std::string& path, const char* table) {
    sqlite3* db = nullptr;
    sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    // The store may be checkpointing (its idle TRUNCATE locks readers out
    // for a moment).
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* st = nullptr;
    const std::string sql = std::string("SELECT count(*) FROM ") + table;
    sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr);
    std::int64_t n = -1;
    if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
}

}  // namespace

TEST_CASE("store: a new file is created, reopened empty", "[store]") {
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    {
        auto s = open_store(reactor, dir.file(), loaded, error);
        REQUIRE(s);
        CHECK(error.empty());
    }
    auto s = open_store(reactor, dir.file(), loaded, error);
    REQUIRE(s);
    CHECK(loaded.sessions.empty());
    CHECK(loaded.retained.empty());
    CHECK(loaded.next_message_id == 1);
}

TEST_CASE("store: sessions, subscriptions, queue, inbound ids and retained round trip", "[store]") {
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    {
        auto s = open_store(reactor, dir.file(), loaded, error);
        REQUIRE(s);
        std::uint64_t durable = 0;
        s->on_result([&](const CommitResult& r) { durable = r.durable; });

        StoredSession row;
        row.client_id = "dev-1";
        row.username = "alice";
        row.expiry_interval = 3600;
        row.expires_at = 1'900'000'000'000;
        row.will = message(0, "dev/1/status", "offline", QoS::exactly_once);
        row.will_expiry = 60;
        row.will_delay = 30;
        row.will_at = 1'800'000'000'000;
        s->put_session(row);
        SubscriptionOptions o;
        o.qos = QoS::exactly_once;
        o.no_local = true;
        o.retain_as_published = true;
        o.retain_handling = 2;
        o.identifier = 42;
        s->put_subscription("dev-1", "cmd/#", o);
        s->put_subscription("dev-1", "gone/+", o);
        s->erase_subscription("dev-1", "gone/+");

        auto a = message(1, "cmd/a", "first");
        auto b = message(2, "cmd/b", std::string("se\0cond", 7));
        auto c = message(3, "cmd/c", "third");
        for (auto& m : {a, b, c}) s->put_message(m);
        s->put_outbound("dev-1", 1, outbound(a, {42, 7}));
        s->put_outbound("dev-1", 2, outbound(b));
        s->put_outbound("dev-1", 3, outbound(c));
        s->update_outbound("dev-1", 1, OutboundMessage::State::awaiting_puback, 17);
        s->update_outbound("dev-1", 2, OutboundMessage::State::awaiting_pubcomp, 18);
        s->put_inbound_qos2("dev-1", 5);
        s->put_inbound_qos2("dev-1", 6);
        s->erase_inbound_qos2("dev-1", 5);

        auto r = message(4, "status/x", "on", QoS::at_most_once);
        s->put_message(r);
        s->put_retained(r);
        CHECK(s->current_batch() == 1);
        CHECK(s->submit() == 1);
        CHECK(s->submit() == 0);  // nothing new: no batch
        s->drain();
        CHECK(durable == 1);
        CHECK(s->healthy());
    }
    LoadedState back;
    auto s = open_store(reactor, dir.file(), back, error);
    REQUIRE(s);
    CHECK(back.next_message_id == 5);
    REQUIRE(back.sessions.size() == 1);
    const LoadedSession& ls = back.sessions[0];
    CHECK(ls.session.client_id == "dev-1");
    CHECK(ls.session.username == std::optional<std::string>("alice"));
    CHECK(ls.session.expiry_interval == 3600);
    CHECK(ls.session.expires_at == 1'900'000'000'000);
    REQUIRE(ls.session.will);
    CHECK(ls.session.will->topic == "dev/1/status");
    CHECK(ls.session.will->payload == "offline");
    CHECK(ls.session.will->qos == QoS::exactly_once);
    CHECK(ls.session.will_expiry == std::optional<std::uint32_t>(60));
    CHECK(ls.session.will_delay == 30);
    CHECK(ls.session.will_at == 1'800'000'000'000);
    REQUIRE(ls.subscriptions.size() == 1);
    CHECK(ls.subscriptions[0].first == "cmd/#");
    CHECK(ls.subscriptions[0].second.qos == QoS::exactly_once);
    CHECK(ls.subscriptions[0].second.no_local);
    CHECK(ls.subscriptions[0].second.retain_as_published);
    CHECK(ls.subscriptions[0].second.retain_handling == 2);
    CHECK(ls.subscriptions[0].second.identifier == 42);
    REQUIRE(ls.outbound.size() == 3);
    std::vector<const OutboundMessage*> out;
    for (const OutboundMessage& o : ls.outbound) out.push_back(&o);
    CHECK(out[0]->store_seq == 1);
    CHECK(out[0]->state == OutboundMessage::State::awaiting_puback);
    CHECK(out[0]->packet_id == 17);
    CHECK(out[0]->message->payload == "first");
    CHECK(out[0]->message->properties == std::string("\x01\x01", 2));
    CHECK(out[0]->subscription_ids == std::vector<std::uint32_t>{42, 7});
    CHECK(out[1]->state == OutboundMessage::State::awaiting_pubcomp);
    CHECK(out[1]->packet_id == 18);
    CHECK(out[1]->message == nullptr);  // PUBREC'd: only the PUBREL is left
    CHECK(out[2]->state == OutboundMessage::State::queued);
    CHECK(out[2]->message->payload == "third");
    CHECK(ls.inbound_qos2 == std::vector<std::uint16_t>{6});
    REQUIRE(back.retained.size() == 1);
    CHECK(back.retained[0]->topic == "status/x");
    CHECK(back.retained[0]->payload == "on");
    CHECK(back.messages == 3);  // "second" went with its PUBREC
}

TEST_CASE("store: a message is kept once and deleted with its last reference", "[store]") {
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    auto s = open_store(reactor, dir.file(), loaded, error);
    REQUIRE(s);
    auto m = message(1, "t", "shared");
    s->put_message(m);
    for (const char* id : {"a", "b", "c"}) {
        StoredSession row;
        row.client_id = id;
        row.expiry_interval = 60;
        s->put_session(row);
        s->put_outbound(id, 1, outbound(m));
    }
    s->drain();
    CHECK(count(s->path(), "messages") == 1);
    CHECK(count(s->path(), "queue") == 3);
    s->erase_outbound("a", 1);
    s->erase_session("b");
    s->drain();
    CHECK(count(s->path(), "messages") == 1);
    s->erase_outbound("c", 1);
    s->drain();
    CHECK(count(s->path(), "messages") == 0);
    CHECK(count(s->path(), "queue") == 0);

    // Retained: replaced and deleted messages go too.
    auto r1 = message(2, "r", "one");
    auto r2 = message(3, "r", "two");
    s->put_message(r1);
    s->put_retained(r1);
    s->drain();
    s->put_message(r2);
    s->put_retained(r2);
    s->drain();
    CHECK(count(s->path(), "messages") == 1);
    s->erase_retained("r");
    s->drain();
    CHECK(count(s->path(), "messages") == 0);
    CHECK(count(s->path(), "retained") == 0);
}

TEST_CASE("store: expired retained messages are swept", "[store]") {
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    auto s = open_store(reactor, dir.file(), loaded, error);
    REQUIRE(s);
    auto old = message(1, "a", "old");
    auto keep = message(2, "b", "keep");
    auto m = std::const_pointer_cast<Message>(old);
    m->expires_at = Clock::now() + std::chrono::seconds(1);
    s->put_message(old);
    s->put_retained(old);
    s->put_message(keep);
    s->put_retained(keep);
    s->drain();
    s->sweep_expired(wall_now() + 5000);
    s->drain();
    CHECK(count(s->path(), "retained") == 1);
    CHECK(count(s->path(), "messages") == 1);
}

TEST_CASE("store: files that are not ours are refused and left untouched", "[store]") {
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    const std::string path = dir.file();

    SECTION("random bytes") {
        std::mt19937 rng(7);
        std::string bytes(8192, '\0');
        for (char& ch : bytes) ch = static_cast<char>(rng());
        write_all(path, bytes);
        CHECK_FALSE(open_store(reactor, path, loaded, error));
        CHECK(error.find(path) != std::string::npos);
        CHECK(error.find("not an SQLite database") != std::string::npos);
        CHECK(read_all(path) == bytes);
    }
    SECTION("empty") {
        write_all(path, "");
        CHECK_FALSE(open_store(reactor, path, loaded, error));
        CHECK(error.find("empty") != std::string::npos);
    }
    SECTION("another program's SQLite file") {
        sqlite3* db = nullptr;
        sqlite3_open(path.c_str(), &db);
        sqlite3_exec(db, "CREATE TABLE contacts(name TEXT); INSERT INTO contacts VALUES('bob');", nullptr, nullptr,
                     nullptr);
        sqlite3_close(db);
        const std::string before = read_all(path);
        CHECK_FALSE(open_store(reactor, path, loaded, error));
        CHECK(error.find("not an mqttoolsd database") != std::string::npos);
        CHECK(read_all(path) == before);
    }
    SECTION("a newer schema version") {
        { REQUIRE(open_store(reactor, path, loaded, error)); }
        sqlite3* db = nullptr;
        sqlite3_open(path.c_str(), &db);
        sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr);
        sqlite3_close(db);
        const std::string before = read_all(path);
        CHECK_FALSE(open_store(reactor, path, loaded, error));
        CHECK(error.find("schema version 99") != std::string::npos);
        CHECK(read_all(path) == before);
    }
    SECTION("truncated") {
        {
            auto s = open_store(reactor, path, loaded, error);
            REQUIRE(s);
            for (std::uint64_t i = 1; i <= 2000; ++i) {
                auto m = message(i, "t/" + std::to_string(i), std::string(200, 'x'));
                s->put_message(m);
                s->put_retained(m);
            }
        }
        const auto size = std::filesystem::file_size(path);
        REQUIRE(size > 100'000);
        std::filesystem::resize_file(path, size / 2);
        const std::string before = read_all(path);
        CHECK_FALSE(open_store(reactor, path, loaded, error));
        CHECK(error.find(path) != std::string::npos);
        CHECK(read_all(path) == before);
    }
    SECTION("a directory") {
        std::filesystem::create_directory(path);
        CHECK_FALSE(open_store(reactor, path, loaded, error));
        CHECK(error.find("not a regular file") != std::string::npos);
    }
}

TEST_CASE("store: a queue row put and erased in one transaction is never written", "[store]") {
    // A connected subscriber's PUBACK that arrives before the batch that
    // queued its message was committed: neither the row nor a message left
    // without rows reaches the file.
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    auto s = open_store(reactor, dir.file(), loaded, error);
    REQUIRE(s);
    for (const char* id : {"a", "b"}) {
        StoredSession row;
        row.client_id = id;
        row.expiry_interval = 60;
        s->put_session(row);
    }
    auto alone = message(1, "t", "only a");
    auto shared = message(2, "t", "a and b");
    s->put_message(alone);
    s->put_outbound("a", 1, outbound(alone));
    s->update_outbound("a", 1, OutboundMessage::State::awaiting_puback, 7);
    s->put_message(shared);
    s->put_outbound("a", 2, outbound(shared));
    s->put_outbound("b", 1, outbound(shared));
    s->update_outbound("a", 2, OutboundMessage::State::awaiting_puback, 8);
    s->erase_outbound("a", 1);
    s->erase_outbound("a", 2);
    s->drain();
    CHECK(s->healthy());
    CHECK(count(s->path(), "messages") == 1);
    CHECK(count(s->path(), "queue") == 1);
    // The message left with b's row is deleted with it later.
    s->erase_outbound("b", 1);
    s->drain();
    CHECK(count(s->path(), "messages") == 0);
    CHECK(count(s->path(), "queue") == 0);
}

TEST_CASE("store: references are counted again after a restart", "[store]") {
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    {
        auto s = open_store(reactor, dir.file(), loaded, error);
        REQUIRE(s);
        auto m = message(1, "t", "shared");
        s->put_message(m);
        s->put_retained(m);
        for (const char* id : {"a", "b"}) {
            StoredSession row;
            row.client_id = id;
            row.expiry_interval = 60;
            s->put_session(row);
            s->put_outbound(id, 1, outbound(m));
        }
    }
    LoadedState back;
    auto s = open_store(reactor, dir.file(), back, error);
    REQUIRE(s);
    CHECK(back.messages == 1);
    CHECK(back.queued == 2);
    s->erase_outbound("a", 1);
    s->erase_retained("t");
    s->drain();
    CHECK(count(s->path(), "messages") == 1);
    s->erase_session("b");
    s->drain();
    CHECK(count(s->path(), "messages") == 0);
}

TEST_CASE("store: a second store on the same file is refused", "[store]") {
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    auto first = open_store(reactor, dir.file(), loaded, error);
    REQUIRE(first);
    LoadedState other;
    CHECK_FALSE(open_store(reactor, dir.file(), other, error));
    CHECK(error.find(dir.file()) != std::string::npos);
    CHECK(error.find("in use by another process") != std::string::npos);
    first.reset();
    CHECK(open_store(reactor, dir.file(), other, error));
}

TEST_CASE("store: a version 1 file is upgraded in place", "[store]") {
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    const std::string path = dir.file();
    {
        auto s = open_store(reactor, path, loaded, error);
        REQUIRE(s);
        auto m = message(1, "r", "kept");
        s->put_message(m);
        s->put_retained(m);
    }
    // What version 1 had beyond version 2: two indexes.
    sqlite3* db = nullptr;
    sqlite3_open(path.c_str(), &db);
    REQUIRE(sqlite3_exec(db,
                         "CREATE INDEX queue_msg ON queue(msg_id); CREATE INDEX retained_msg ON retained(msg_id); "
                         "PRAGMA user_version=1;",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    {
        LoadedState back;
        auto s = open_store(reactor, path, back, error);
        REQUIRE(s);
        CHECK(back.retained.size() == 1);
    }
    CHECK(count(path, "sqlite_schema WHERE type = 'index' AND name IN ('queue_msg', 'retained_msg')") == 0);
    sqlite3_open(path.c_str(), &db);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK(sqlite3_column_int(st, 0) == store::schema_version);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

TEST_CASE("store: the WAL is checkpointed and rewritten from its start, a backlog in several transactions",
          "[store]") {
    // Issue 31: the WAL used to grow until a clean stop.
    TempDir dir;
    net::Reactor reactor;
    LoadedState loaded;
    std::string error;
    auto s = open_store(reactor, dir.file(), loaded, error);
    REQUIRE(s);
    std::uint64_t durable = 0;
    s->on_result([&](const CommitResult& r) { durable = r.durable; });
    const std::string payload(1000, 'x');
    std::uint64_t last = 0;
    // 20 MiB of retained messages, submitted faster than they are
    // committed: the thread takes a backlog at a time.
    for (std::uint64_t i = 1; i <= 20000; ++i) {
        auto m = message(i, "t/" + std::to_string(i), payload);
        s->put_message(m);
        s->put_retained(m);
        last = s->submit();
    }
    s->drain();
    CHECK(durable == last);
    CHECK(s->healthy());
    CHECK(s->checkpoints() >= 3);
    // 20 MiB went through it; the file (truncated only at
    // journal_size_limit or when idle, so its size is its peak) stayed small.
    const auto wal = std::filesystem::file_size(dir.file() + "-wal");
    CHECK(wal <= static_cast<std::uintmax_t>(store::wal_limit_bytes / 2));
    CHECK(count(dir.file(), "retained") == 20000);
    // Idle, the log goes.
    for (int i = 0; i < 600 && std::filesystem::file_size(dir.file() + "-wal") != 0; ++i) ::usleep(50'000);
    CHECK(std::filesystem::file_size(dir.file() + "-wal") == 0);
}
