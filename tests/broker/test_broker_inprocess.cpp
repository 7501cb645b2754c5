// The broker driven in-process: a socketpair end is adopted as a client
// connection and the test speaks MQTT bytes on the other end, turning the
// reactor by hand. No listener, no threads.
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "net/transport.hpp"
#include <spdlog/spdlog.h>

using namespace mqttools;

namespace {

struct Harness {
    net::Reactor reactor;
    config::Config config;
    std::unique_ptr<broker::Broker> broker;

    Harness() {
        spdlog::set_level(spdlog::level::warn);
        broker = std::make_unique<broker::Broker>(reactor, config);
    }

    // A client: returns our end of the socketpair.
    net::UniqueFd client() {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        REQUIRE(broker->adopt(std::make_unique<net::PlainTransport>(net::UniqueFd(sv[0]))) != nullptr);
        return net::UniqueFd(sv[1]);
    }

    void turn(int n = 3) {
        for (int i = 0; i < n; ++i) reactor.run_once(std::chrono::milliseconds(5));
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

// CONNECT v3.1.1, client id "c", clean session, keep alive 60.
const std::string connect311 = bytes({0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, 'c'});

}  // namespace

TEST_CASE("in-process: CONNECT, SUBSCRIBE, PUBLISH to self, PING", "[broker]") {
    Harness h;
    auto fd = h.client();
    send(fd, connect311);
    h.turn();
    CHECK(receive(fd) == bytes({0x20, 2, 0, 0}));
    // SUBSCRIBE id 1 to "t" QoS 0, then PUBLISH "t" "hi", then PINGREQ, in one write.
    send(fd, bytes({0x82, 6, 0, 1, 0, 1, 't', 0}) + bytes({0x30, 5, 0, 1, 't', 'h', 'i'}) + bytes({0xC0, 0}));
    h.turn();
    CHECK(receive(fd) == bytes({0x90, 3, 0, 1, 0}) + bytes({0x30, 5, 0, 1, 't', 'h', 'i'}) + bytes({0xD0, 0}));
    auto c = h.broker->counters();
    CHECK(c.clients_connected == 1);
    CHECK(c.subscriptions == 1);
    CHECK(c.publish_received == 1);
    CHECK(c.publish_sent == 1);
}

TEST_CASE("in-process: garbage closes only its own connection", "[broker]") {
    Harness h;
    auto good = h.client();
    auto bad = h.client();
    send(good, connect311);
    send(bad, bytes({0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, 'd'}));
    h.turn();
    CHECK(receive(good).size() == 4);
    CHECK(receive(bad).size() == 4);
    send(bad, bytes({0x00, 0x00, 0xFF}));
    h.turn();
    char buf[16];
    CHECK(::read(bad.get(), buf, sizeof buf) == 0);  // closed
    send(good, bytes({0xC0, 0}));
    h.turn();
    CHECK(receive(good) == bytes({0xD0, 0}));
    CHECK(h.broker->counters().clients_connected == 1);
}

TEST_CASE("in-process: shutdown sends DISCONNECT 0x8B to MQTT 5 clients", "[broker]") {
    Harness h;
    auto fd = h.client();
    // CONNECT v5, client id "v", no properties.
    send(fd, bytes({0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 60, 0, 0, 1, 'v'}));
    h.turn();
    std::string connack = receive(fd);
    REQUIRE(connack.size() > 4);
    CHECK(connack[0] == 0x20);
    h.broker->shutdown();
    CHECK(receive(fd) == bytes({0xE0, 1, 0x8B}));
}

// Issue 26: the per-second look at every connection goes in slices, one per
// reactor turn, so that thousands of connections do not hold one turn.
TEST_CASE("in-process: housekeeping looks at many connections a slice per turn", "[broker]") {
    rlimit lim{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &lim) == 0);
    const std::size_t n = 2 * broker::Broker::housekeeping_slice_size + 100;
    if (lim.rlim_cur < 2 * n + 64 && lim.rlim_max >= 2 * n + 64) {
        lim.rlim_cur = 2 * n + 64;
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &lim) == 0);
    }
    if (lim.rlim_cur < 2 * n + 64) {
        WARN("not enough file descriptors: skipped");
        return;
    }
    Harness h;
    std::vector<net::UniqueFd> clients;
    for (std::size_t i = 0; i < n; ++i) clients.push_back(h.client());
    // The pass starts a second after the broker did.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (h.broker->housekeeping_slices() == 0 && std::chrono::steady_clock::now() < deadline) h.turn(1);
    REQUIRE(h.broker->housekeeping_slices() == 1);  // the turn that started it looked at one slice only
    h.turn(1);
    CHECK(h.broker->housekeeping_slices() == 2);
    h.turn(1);
    CHECK(h.broker->housekeeping_slices() == 3);
    h.turn(3);
    CHECK(h.broker->housekeeping_slices() == 3);  // n connections: three slices, then the pass is over
}
