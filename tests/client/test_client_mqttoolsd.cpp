// The client library against the real broker: mqttoolsd is started from the
// build tree next to this test binary (build/src/daemon/mqttoolsd).
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <filesystem>
#include <thread>

#include "fake_broker.hpp"
#include "mqttools/client.hpp"

extern char** environ;

using namespace mqttools;
using namespace std::chrono_literals;

namespace {

std::filesystem::path mqttoolsd_path() {
    // This binary is build/tests/client/test_client.
    return std::filesystem::read_symlink("/proc/self/exe").parent_path() / ".." / ".." / "src" / "daemon" /
           "mqttoolsd";
}

class Mqttoolsd {
public:
    Mqttoolsd() {
        {
            test_support::FakeBroker probe;  // a free port
            port_ = probe.port();
        }
        const std::string exe = mqttoolsd_path().string();
        const std::string port = std::to_string(port_);
        const char* argv[] = {exe.c_str(), "-p", port.c_str(), nullptr};
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
        const int rc = posix_spawn(&pid_, exe.c_str(), &actions, nullptr, const_cast<char**>(argv), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (rc != 0) throw std::runtime_error("cannot start " + exe);
        wait_listening();
    }
    ~Mqttoolsd() {
        ::kill(pid_, SIGTERM);
        int status = 0;
        ::waitpid(pid_, &status, 0);
    }
    Mqttoolsd(const Mqttoolsd&) = delete;
    Mqttoolsd& operator=(const Mqttoolsd&) = delete;
    std::uint16_t port() const { return port_; }

private:
    void wait_listening() {
        for (int i = 0; i < 500; ++i) {
            test_support::Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(port_);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return;
            std::this_thread::sleep_for(10ms);
        }
        throw std::runtime_error("mqttoolsd did not start listening");
    }
    pid_t pid_ = -1;
    std::uint16_t port_ = 0;
};

ClientOptions options_for(const Mqttoolsd& broker, std::string id = {}) {
    ClientOptions o;
    o.host = "127.0.0.1";
    o.port = broker.port();
    o.client_id = std::move(id);
    o.connect_delays.emplace();
    o.response_timeout = 3s;
    return o;
}

}  // namespace

TEST_CASE("mqttoolsd: QoS 0, 1 and 2 round trips with retained messages") {
    REQUIRE(std::filesystem::exists(mqttoolsd_path()));
    Mqttoolsd broker;
    ClientOptions so = options_for(broker);
    so.subscriptions = {{"rt/#", 0, QoS::exactly_once}};
    Client sub(so);
    sub.start();
    Client pub(options_for(broker));
    pub.start();
    pub.publish("rt/0", "zero");
    pub.publish("rt/1", "one", false, QoS::at_least_once);
    pub.publish("rt/2", "two", true, QoS::exactly_once);
    pub.flush(3s);
    CHECK(pub.inflight() == 0);
    for (const auto& [topic, payload, qos] : {std::tuple{"rt/0", "zero", QoS::at_most_once},
                                              std::tuple{"rt/1", "one", QoS::at_least_once},
                                              std::tuple{"rt/2", "two", QoS::exactly_once}}) {
        auto m = sub.messages().pop(3s);
        REQUIRE(m);
        CHECK(m->topic == topic);
        CHECK(m->payload == payload);
        CHECK(m->qos == qos);
    }
    // The retained one reaches a later subscriber, flagged.
    Client late(options_for(broker));
    late.start();
    CHECK(late.subscribe("rt/2", 0, QoS::exactly_once) == QoS::exactly_once);
    auto r = late.messages().pop(3s);
    REQUIRE(r);
    CHECK(r->retain);
    CHECK(r->payload == "two");
    late.unsubscribe("rt/2");
}

TEST_CASE("mqttoolsd: a resumed session gets the QoS 1 messages sent while away") {
    REQUIRE(std::filesystem::exists(mqttoolsd_path()));
    Mqttoolsd broker;
    ClientOptions so = options_for(broker, "resume-me");
    so.session_expiry_interval = 60;
    Client sub(so);
    sub.start();
    sub.subscribe("away/#", 0, QoS::at_least_once);
    sub.stop();

    Client pub(options_for(broker));
    pub.start();
    pub.publish("away/t", "while you were out", false, QoS::at_least_once);
    pub.flush(3s);

    sub.start(true);  // no SessionResumeError: the broker kept the session
    auto m = sub.messages().pop(3s);
    REQUIRE(m);
    CHECK(m->topic == "away/t");
    CHECK(m->payload == "while you were out");
    sub.stop();

    // A clean start drops the session; resuming afterwards fails.
    Client fresh(options_for(broker, "resume-me"));
    fresh.start();
    fresh.stop();
    Client again(so);
    CHECK_THROWS_AS(again.start(true), SessionResumeError);
}

TEST_CASE("mqttoolsd: a broker going away is a connection-lost message") {
    REQUIRE(std::filesystem::exists(mqttoolsd_path()));
    auto broker = std::make_unique<Mqttoolsd>();
    Client c(options_for(*broker));
    c.start();
    broker.reset();  // SIGTERM: the broker disconnects everyone
    auto m = c.messages().pop(5s);
    REQUIRE(m);
    CHECK(m->connection_lost);
    CHECK_FALSE(c.connected());
}
