// The broker's side of persistence, in-process with a recording store
// (no SQLite): which changes it reports, and that the answers depending on
// them wait until the store says the batch is on disk.
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "net/transport.hpp"
#include <spdlog/spdlog.h>

using namespace mqttools;
using namespace mqttools::broker;

namespace {

// Records each change as a word; commits only when the test says so.
class FakeStore final : public Persistence {
public:
    std::vector<std::string> ops;
    std::uint64_t batch = 1;
    std::uint64_t submitted = 0;
    std::function<void(const CommitResult&)> fn;

    void put_session(const StoredSession& s) override { ops.push_back("session " + s.client_id); }
    void erase_session(std::string_view id) override { ops.push_back("end " + std::string(id)); }
    void put_subscription(std::string_view, std::string_view f, const SubscriptionOptions&) override {
        ops.push_back("sub " + std::string(f));
    }
    void erase_subscription(std::string_view, std::string_view f) override { ops.push_back("unsub " + std::string(f)); }
    void put_message(const MessagePtr& m) override { ops.push_back("message " + m->payload); }
    void put_outbound(std::string_view id, std::uint64_t, const OutboundMessage&) override {
        ops.push_back("queue " + std::string(id));
    }
    void update_outbound(std::string_view id, std::uint64_t, OutboundMessage::State, std::uint16_t) override {
        ops.push_back("update " + std::string(id));
    }
    void erase_outbound(std::string_view id, std::uint64_t) override { ops.push_back("done " + std::string(id)); }
    void put_retained(const MessagePtr& m) override { ops.push_back("retain " + m->topic); }
    void erase_retained(std::string_view t) override { ops.push_back("unretain " + std::string(t)); }
    void put_inbound_qos2(std::string_view, std::uint16_t) override { ops.push_back("inbound"); }
    void erase_inbound_qos2(std::string_view, std::uint16_t) override { ops.push_back("released"); }
    void sweep_expired(WallTime) override {}
    std::uint64_t current_batch() const noexcept override { return batch; }
    std::uint64_t submit() override {
        if (ops.size() == counted) return 0;
        counted = ops.size();
        submitted = batch;
        return batch++;
    }
    void on_result(std::function<void(const CommitResult&)> f) override { fn = std::move(f); }
    void drain() override { commit(); }

    void commit() {
        CommitResult r;
        r.durable = submitted;
        if (fn) fn(r);
    }
    void fail() {
        CommitResult r;
        r.failed = submitted;
        r.healthy = false;
        r.failures = 1;
        if (fn) fn(r);
    }

private:
    std::size_t counted = 0;
};

struct Harness {
    net::Reactor reactor;
    config::Config config;
    FakeStore store;
    std::unique_ptr<Broker> broker;

    Harness() {
        spdlog::set_level(spdlog::level::off);
        broker = std::make_unique<Broker>(reactor, config);
        broker->set_persistence(&store, LoadedState{});
    }
    net::UniqueFd client() {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        REQUIRE(broker->adopt(std::make_unique<net::PlainTransport>(net::UniqueFd(sv[0]))) != nullptr);
        return net::UniqueFd(sv[1]);
    }
    void turn(int n = 3) {
        for (int i = 0; i < n; ++i) reactor.run_once(std::chrono::milliseconds(2));
    }
    // The store reports the batch on disk; the held output goes out.
    void commit() {
        store.commit();
        turn();
    }
};

std::string bytes(std::initializer_list<int> b) {
    std::string s;
    for (int x : b) s.push_back(static_cast<char>(x));
    return s;
}

void send(const net::UniqueFd& fd, const std::string& data) {
    REQUIRE(::write(fd.get(), data.data(), data.size()) == static_cast<ssize_t>(data.size()));
}

std::string receive(const net::UniqueFd& fd) {
    char buf[4096];
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

// CONNECT 3.1.1, client id `id` (one letter), Clean Session as given.
std::string connect311(char id, bool clean) {
    return bytes({0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, clean ? 2 : 0, 0, 60, 0, 1, id});
}

bool closed(const net::UniqueFd& fd) {
    char b;
    return ::read(fd.get(), &b, 1) == 0;
}

}  // namespace

TEST_CASE("persistence hooks: CONNACK of a kept session waits for its batch", "[persistence]") {
    Harness h;
    auto fd = h.client();
    send(fd, connect311('s', false));  // Clean Session 0: kept
    h.turn();
    CHECK(h.store.ops == std::vector<std::string>{"session s"});
    CHECK(receive(fd).empty());  // held
    h.commit();
    CHECK(receive(fd) == bytes({0x20, 2, 0, 0}));
}

TEST_CASE("persistence hooks: a clean session and QoS 0 never touch the store", "[persistence]") {
    Harness h;
    auto fd = h.client();
    send(fd, connect311('c', true));
    h.turn();
    CHECK(receive(fd) == bytes({0x20, 2, 0, 0}));
    // SUBSCRIBE "t" QoS 0, PUBLISH "t" QoS 0: answered at once.
    send(fd, bytes({0x82, 6, 0, 1, 0, 1, 't', 0}) + bytes({0x30, 5, 0, 1, 't', 'h', 'i'}));
    h.turn();
    CHECK(receive(fd) == bytes({0x90, 3, 0, 1, 0}) + bytes({0x30, 5, 0, 1, 't', 'h', 'i'}));
    CHECK(h.store.ops.empty());
}

TEST_CASE("persistence hooks: PUBACK waits until the subscriber's queue row is durable", "[persistence]") {
    Harness h;
    auto sub = h.client();
    send(sub, connect311('s', false) + bytes({0x82, 6, 0, 1, 0, 1, 't', 1}));  // SUBSCRIBE t QoS 1
    h.turn();
    CHECK(receive(sub).empty());  // CONNACK and SUBACK held
    h.commit();
    CHECK(receive(sub) == bytes({0x20, 2, 0, 0}) + bytes({0x90, 3, 0, 1, 1}));
    h.store.ops.clear();

    auto pub = h.client();
    send(pub, connect311('p', true));
    h.turn();
    CHECK(receive(pub) == bytes({0x20, 2, 0, 0}));
    send(pub, bytes({0x32, 7, 0, 1, 't', 0, 9, 'h', 'i'}));  // PUBLISH t QoS 1 id 9
    h.turn();
    CHECK(h.store.ops == std::vector<std::string>{"message hi", "queue s", "update s"});
    CHECK(receive(pub).empty());  // no PUBACK before the disk
    // The QoS 1 PUBLISH goes out at once: lost with a crash, it is
    // delivered again (the publisher, never acknowledged, resends it).
    const std::string delivery = receive(sub);
    REQUIRE(delivery.size() == 9);
    CHECK(delivery[0] == 0x32);
    // The subscriber's PUBACK deletes the row, before or after the commit,
    // and holds nothing of the subscriber's.
    send(sub, bytes({0x40, 2, delivery[5], delivery[6]}));
    h.turn();
    CHECK(h.store.ops.back() == "done s");
    CHECK(receive(pub).empty());
    h.commit();
    CHECK(receive(pub) == bytes({0x40, 2, 0, 9}));
}

TEST_CASE("persistence hooks: a QoS 2 PUBLISH waits until its packet id is durable", "[persistence]") {
    Harness h;
    auto sub = h.client();
    send(sub, connect311('s', false) + bytes({0x82, 6, 0, 1, 0, 1, 't', 2}));  // SUBSCRIBE t QoS 2
    h.turn();
    h.commit();
    CHECK(receive(sub) == bytes({0x20, 2, 0, 0}) + bytes({0x90, 3, 0, 1, 2}));
    auto pub = h.client();
    send(pub, connect311('p', true));
    h.turn();
    CHECK(receive(pub) == bytes({0x20, 2, 0, 0}));
    send(pub, bytes({0x34, 7, 0, 1, 't', 0, 9, 'h', 'i'}));  // PUBLISH t QoS 2 id 9
    h.turn();
    CHECK(receive(pub).empty());  // no PUBREC before the disk
    CHECK(receive(sub).empty());  // nor the PUBLISH whose id a redelivery must reuse
    h.commit();
    CHECK(receive(pub) == bytes({0x50, 2, 0, 9}));
    const std::string delivery = receive(sub);
    REQUIRE(delivery.size() == 9);
    CHECK(delivery[0] == 0x34);
}

TEST_CASE("persistence hooks: a failed commit sends no acknowledgement and refuses new QoS 1", "[persistence]") {
    Harness h;
    auto sub = h.client();
    send(sub, connect311('s', false) + bytes({0x82, 6, 0, 1, 0, 1, 't', 1}));
    h.turn();
    h.commit();
    receive(sub);
    // A v5 publisher: CONNECT v5 client id "p", no properties.
    auto pub = h.client();
    send(pub, bytes({0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 60, 0, 0, 1, 'p'}));
    h.turn();
    REQUIRE(receive(pub).size() > 4);
    send(pub, bytes({0x32, 8, 0, 1, 't', 0, 9, 0, 'h', 'i'}));  // PUBLISH t QoS 1 id 9, no properties
    h.turn();
    h.store.fail();
    h.turn();
    CHECK(closed(pub));  // closed without the PUBACK it had earned on paper
    CHECK(h.broker->store_counters().commit_failures == 1);
    CHECK_FALSE(h.broker->store_counters().healthy);

    auto again = h.client();
    send(again, bytes({0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 60, 0, 0, 1, 'q'}));
    h.turn();
    REQUIRE(receive(again).size() > 4);  // served while failing
    send(again, bytes({0x32, 8, 0, 1, 't', 0, 10, 0, 'h', 'i'}));
    h.turn();
    CHECK(receive(again) == bytes({0x40, 3, 0, 10, 0x97}));  // Quota Exceeded, not a false ack
    CHECK(h.broker->store_counters().refused == 1);

    h.store.commit();  // writes work again
    h.turn();
    CHECK(h.broker->store_counters().healthy);
    send(again, bytes({0x32, 8, 0, 1, 't', 0, 11, 0, 'h', 'i'}));
    h.turn();
    CHECK(receive(again).empty());  // held again, as normal
    h.commit();
    CHECK(receive(again) == bytes({0x40, 2, 0, 11}));
}
