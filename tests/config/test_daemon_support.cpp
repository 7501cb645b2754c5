// The daemon's deployment helpers without a broker: listener planning for
// socket activation, sd_notify over a real datagram socket, the $SYS tree
// and the Prometheus page.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "daemon/metrics_http.hpp"
#include "daemon/sys_topics.hpp"
#include "daemon/systemd_notify.hpp"

using namespace mqttools;
using namespace mqttools::daemon;

namespace {

const SysMessage* find(const std::vector<SysMessage>& v, const std::string& topic) {
    for (const auto& m : v) {
        if (m.topic == topic) return &m;
    }
    return nullptr;
}

config::Listener listener(std::string bind, std::uint16_t port) {
    config::Listener l;
    l.bind = std::move(bind);
    l.port = port;
    return l;
}

}  // namespace

TEST_CASE("plan_listeners: nothing configured, nothing inherited is 127.0.0.1:1883") {
    auto plan = plan_listeners({}, {});
    REQUIRE(plan.size() == 1);
    CHECK(plan[0].listener.bind == "127.0.0.1");
    CHECK(plan[0].listener.port == 1883);
    CHECK(plan[0].inherited_fd == -1);
}

TEST_CASE("plan_listeners: inherited sockets replace the default") {
    auto plan = plan_listeners({}, {{7, "0.0.0.0", 1883}});
    REQUIRE(plan.size() == 1);
    CHECK(plan[0].inherited_fd == 7);
    CHECK(plan[0].listener.bind == "0.0.0.0");
}

TEST_CASE("plan_listeners: configured listeners take matching inherited sockets") {
    auto tls = listener("", 8883);
    tls.certfile = "/c";
    tls.keyfile = "/k";
    auto plan = plan_listeners({listener("127.0.0.1", 1884), tls, listener("::1", 1885)},
                               {{3, "::", 8883}, {4, "127.0.0.1", 1884}, {5, "127.0.0.1", 9999}});
    REQUIRE(plan.size() == 4);
    CHECK(plan[0].inherited_fd == 4);
    CHECK(plan[1].inherited_fd == 3);  // "" is the wildcard, as "::" is
    CHECK(plan[1].listener.tls());     // the configured TLS settings stay
    CHECK(plan[2].inherited_fd == -1); // opened as configured
    CHECK(plan[3].inherited_fd == 5);  // unconfigured inherited socket still served
    CHECK(plan[3].listener.port == 9999);
}

TEST_CASE("plan_listeners: same port on another address does not match") {
    auto plan = plan_listeners({listener("127.0.0.1", 1884)}, {{3, "127.0.0.2", 1884}});
    REQUIRE(plan.size() == 2);
    CHECK(plan[0].inherited_fd == -1);
    CHECK(plan[1].inherited_fd == 3);
}

TEST_CASE("SystemdNotifier sends to NOTIFY_SOCKET") {
    const std::string path = "/tmp/mqttools-notify-" + std::to_string(::getpid());
    ::unlink(path.c_str());
    int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
    ::setenv("WATCHDOG_USEC", "3000000", 1);
    ::unsetenv("WATCHDOG_PID");
    SystemdNotifier n;
    CHECK(n.enabled());
    REQUIRE(n.watchdog_interval().has_value());
    CHECK(n.watchdog_interval()->count() == 1500000);

    auto receive = [&] {
        char buf[512];
        const auto len = ::recv(fd, buf, sizeof buf, 0);
        return len > 0 ? std::string(buf, static_cast<std::size_t>(len)) : std::string();
    };
    n.ready(SystemdNotifier::client_status(0));
    CHECK(receive() == "READY=1\nSTATUS=0 clients connected");
    n.status(SystemdNotifier::client_status(1));
    CHECK(receive() == "STATUS=1 client connected");
    n.watchdog();
    CHECK(receive() == "WATCHDOG=1");
    n.stopping();
    CHECK(receive() == "STOPPING=1\nSTATUS=Shutting down");

    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    SystemdNotifier off;
    CHECK_FALSE(off.enabled());
    CHECK_FALSE(off.watchdog_interval().has_value());
    ::close(fd);
    ::unlink(path.c_str());
}

TEST_CASE("a watchdog meant for another process is ignored") {
    ::setenv("WATCHDOG_USEC", "3000000", 1);
    ::setenv("WATCHDOG_PID", "1", 1);
    SystemdNotifier n;
    CHECK_FALSE(n.watchdog_interval().has_value());
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("WATCHDOG_PID");
}

TEST_CASE("$SYS: Mosquitto's names, everything first, then only changes") {
    const auto t0 = SysTopics::Clock::time_point{} + std::chrono::hours(1);
    SysTopics sys("1.2.3", t0);
    BrokerStats s;
    s.clients_connected = 2;
    s.clients_disconnected = 1;
    s.clients_maximum = 5;
    s.messages_received = 100;
    s.publish_received = 40;
    s.bytes_received = 5000;
    s.subscriptions = 3;
    s.retained_messages = 4;
    auto first = sys.update(s, t0 + std::chrono::seconds(7));
    REQUIRE(find(first, "$SYS/broker/version"));
    CHECK(find(first, "$SYS/broker/version")->payload == "mqttools version 1.2.3");
    CHECK(find(first, "$SYS/broker/uptime")->payload == "7 seconds");
    CHECK(find(first, "$SYS/broker/clients/connected")->payload == "2");
    CHECK(find(first, "$SYS/broker/clients/disconnected")->payload == "1");
    CHECK(find(first, "$SYS/broker/clients/total")->payload == "3");
    CHECK(find(first, "$SYS/broker/clients/maximum")->payload == "5");
    CHECK(find(first, "$SYS/broker/messages/received")->payload == "100");
    CHECK(find(first, "$SYS/broker/publish/messages/received")->payload == "40");
    CHECK(find(first, "$SYS/broker/bytes/received")->payload == "5000");
    CHECK(find(first, "$SYS/broker/subscriptions/count")->payload == "3");
    CHECK(find(first, "$SYS/broker/retained messages/count")->payload == "4");
    CHECK(find(first, "$SYS/broker/load/messages/received/1min")->payload == "0.00");
    CHECK(find(first, "$SYS/broker/load/connections/15min"));

    // 60 more messages in 10 s: 360/min; the 1-minute load moves toward it.
    s.messages_received = 160;
    auto second = sys.update(s, t0 + std::chrono::seconds(17));
    CHECK_FALSE(find(second, "$SYS/broker/version"));          // unchanged: not republished
    CHECK_FALSE(find(second, "$SYS/broker/clients/connected"));
    CHECK(find(second, "$SYS/broker/uptime")->payload == "17 seconds");
    CHECK(find(second, "$SYS/broker/messages/received")->payload == "160");
    const double load = std::stod(find(second, "$SYS/broker/load/messages/received/1min")->payload);
    CHECK(load == Approx(360.0 * (1 - std::exp(-10.0 / 60.0))).epsilon(0.001));

    sys.reset();
    auto third = sys.update(s, t0 + std::chrono::seconds(27));
    CHECK(find(third, "$SYS/broker/version"));
    CHECK(find(third, "$SYS/broker/clients/connected"));
}

TEST_CASE("render_metrics: Prometheus text format") {
    BrokerStats s;
    s.clients_connected = 3;
    s.publish_received = 10;
    s.bytes_sent = 1234;
    s.listeners = {{"127.0.0.1:1883", 7}, {"[::]:8883 \"tls\"", 1}};
    const auto page = render_metrics(s, 12.5, "0.1.0");
    CHECK(page.find("# TYPE mqttools_clients_connected gauge\nmqttools_clients_connected 3\n") != std::string::npos);
    CHECK(page.find("# TYPE mqttools_publish_received_total counter\nmqttools_publish_received_total 10\n") !=
          std::string::npos);
    CHECK(page.find("mqttools_bytes_sent_total 1234\n") != std::string::npos);
    CHECK(page.find("mqttools_uptime_seconds 12.500\n") != std::string::npos);
    CHECK(page.find("mqttools_build_info{version=\"0.1.0\"} 1\n") != std::string::npos);
    CHECK(page.find("mqttools_listener_connections_total{listener=\"127.0.0.1:1883\"} 7\n") != std::string::npos);
    CHECK(page.find("mqttools_listener_connections_total{listener=\"[::]:8883 \\\"tls\\\"\"} 1\n") !=
          std::string::npos);
    // Every sample line is "name[{labels}] value"; every family has HELP and TYPE.
    CHECK(page.back() == '\n');
}

TEST_CASE("http_response") {
    auto body = [] { return std::string("m 1\n"); };
    CHECK_FALSE(http_response("GET /metrics HTTP/1.1\r\nHost: x\r\n", body).has_value());
    auto ok = http_response("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", body);
    REQUIRE(ok);
    CHECK(*ok ==
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
          "Content-Length: 4\r\nConnection: close\r\n\r\nm 1\n");
    auto head = http_response("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n", body);
    REQUIRE(head);
    CHECK(head->find("Content-Length: 4\r\n") != std::string::npos);
    CHECK(head->substr(head->size() - 4) == "\r\n\r\n");
    CHECK(http_response("GET / HTTP/1.1\r\n\r\n", body)->rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
    auto post = http_response("POST /metrics HTTP/1.1\r\n\r\n", body);
    CHECK(post->rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0) == 0);
    CHECK(post->find("Allow: GET, HEAD\r\n") != std::string::npos);
    CHECK(http_response("garbage\r\n\r\n", body)->rfind("HTTP/1.1 400 Bad Request\r\n", 0) == 0);
    CHECK(http_response(std::string(kMaxHttpRequest, 'a'), body)->rfind("HTTP/1.1 431 ", 0) == 0);
}

#include <netinet/in.h>
#include <poll.h>

#include "daemon/services.hpp"

namespace {

std::uint16_t free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

// Runs the services' dispatch as a reactor would until PRED or 3 s.
template <class Pred>
bool run_until(DaemonServices& s, Pred pred) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < end) {
        pollfd p{s.fd(), POLLIN, 0};
        if (::poll(&p, 1, 20) > 0) s.dispatch();
        if (pred()) return true;
    }
    return false;
}

}  // namespace

TEST_CASE("DaemonServices: /metrics over HTTP and $SYS on ready, driven by dispatch()") {
    config::Config cfg;
    cfg.metrics.enabled = true;
    cfg.metrics.port = free_port();
    cfg.sys_interval = 1;
    BrokerStats stats;
    stats.clients_connected = 4;
    stats.publish_received = 17;
    std::vector<SysMessage> published;
    std::string error;
    auto s = DaemonServices::create(
        cfg, {[&] { return stats; }, [&](const SysMessage& m) { published.push_back(m); }, nullptr, nullptr}, error);
    REQUIRE(s);
    CHECK(error.empty());
    CHECK(published.empty());  // nothing before ready()
    s->ready();
    REQUIRE(find(published, "$SYS/broker/clients/connected"));
    CHECK(find(published, "$SYS/broker/clients/connected")->payload == "4");

    int c = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(cfg.metrics.port);
    REQUIRE(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
    REQUIRE(::send(c, req.data(), req.size(), 0) == static_cast<ssize_t>(req.size()));
    std::string reply;
    bool closed = false;
    REQUIRE(run_until(*s, [&] {
        char buf[4096];
        pollfd p{c, POLLIN, 0};
        while (::poll(&p, 1, 0) > 0) {
            const auto n = ::recv(c, buf, sizeof buf, 0);
            if (n <= 0) {
                closed = true;
                break;
            }
            reply.append(buf, static_cast<std::size_t>(n));
        }
        return closed;
    }));
    ::close(c);
    CHECK(reply.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(reply.find("\r\n\r\n# HELP mqttools_build_info") != std::string::npos);
    CHECK(reply.find("mqttools_clients_connected 4\n") != std::string::npos);
    CHECK(reply.find("mqttools_publish_received_total 17\n") != std::string::npos);

    // The next $SYS round (sys_interval = 1) republishes what changed.
    published.clear();
    stats.clients_connected = 5;
    REQUIRE(run_until(*s, [&] { return find(published, "$SYS/broker/clients/connected") != nullptr; }));
    CHECK(find(published, "$SYS/broker/clients/connected")->payload == "5");
    CHECK_FALSE(find(published, "$SYS/broker/version"));
}

TEST_CASE("DaemonServices: a metrics port in use is an error") {
    config::Config cfg;
    cfg.metrics.enabled = true;
    cfg.metrics.port = free_port();
    std::string error;
    auto first = DaemonServices::create(cfg, {}, error);
    REQUIRE(first);
    auto second = DaemonServices::create(cfg, {}, error);
    CHECK_FALSE(second);
    CHECK(error.find("metrics: cannot listen on 127.0.0.1:" + std::to_string(cfg.metrics.port)) == 0);
}

#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <spdlog/spdlog.h>

#include "daemon/logging.hpp"

TEST_CASE("logging: file destination, levels, reload reopens the file") {
    const std::string path = "/tmp/mqttools-log-test-" + std::to_string(::getpid()) + ".log";
    ::unlink(path.c_str());
    config::Config cfg;
    cfg.log_dest = config::LogDest::file;
    cfg.log_file = path;
    REQUIRE_FALSE(setup_logging(cfg, false).has_value());
    CHECK(log_destination_description() == "file " + path);
    spdlog::info("client {} connected", "a");
    spdlog::debug("not at info");
    auto read = [&] {
        std::ifstream in(path);
        std::ostringstream out;
        out << in.rdbuf();
        return out.str();
    };
    CHECK(read().find("info: client a connected\n") != std::string::npos);
    CHECK(read().find("not at info") == std::string::npos);

    // logrotate moved the file away: reload writes to a fresh one.
    const std::string rotated = path + ".1";
    REQUIRE(::rename(path.c_str(), rotated.c_str()) == 0);
    cfg.log_level = config::LogLevel::debug;
    REQUIRE_FALSE(reload_logging(cfg, false).has_value());
    spdlog::debug("now at debug");
    spdlog::default_logger()->flush();
    CHECK(read().find("debug: now at debug\n") != std::string::npos);
    CHECK(read().find("client a connected") == std::string::npos);

    cfg.log_file = "/proc/mqttools-no-such-dir/x.log";
    auto err = reload_logging(cfg, false);
    REQUIRE(err.has_value());
    CHECK(err->rfind("cannot open log_file '/proc/mqttools-no-such-dir/x.log'", 0) == 0);
    ::unlink(path.c_str());
    ::unlink(rotated.c_str());
    config::Config plain;
    REQUIRE_FALSE(setup_logging(plain, false).has_value());
}

TEST_CASE("JOURNAL_STREAM is honoured only when it is our stderr") {
    struct stat st {};
    REQUIRE(::fstat(STDERR_FILENO, &st) == 0);
    const std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
    CHECK(stderr_is_journal());
    ::setenv("JOURNAL_STREAM", "1:2", 1);
    CHECK_FALSE(stderr_is_journal());  // inherited by a child whose stderr was redirected
    ::unsetenv("JOURNAL_STREAM");
    CHECK_FALSE(stderr_is_journal());
}
