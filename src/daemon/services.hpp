// The deployment side of mqttoolsd, bundled for the broker's reactor:
// systemd notifications (READY/STATUS/WATCHDOG/STOPPING), $SYS updates and
// the Prometheus /metrics endpoint. Everything it waits on (its timer, the
// metrics listening socket and HTTP connections) sits in one inner epoll
// set whose descriptor the reactor watches for readability like any socket
// and then calls dispatch(): no threads, and the watchdog ping proves the
// reactor is turning.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "daemon/stats.hpp"
#include "daemon/sys_topics.hpp"
#include "daemon/systemd_notify.hpp"

namespace mqttools::daemon {

class DaemonServices {
public:
    struct Hooks {
        // A snapshot of the broker's counters ($SYS, /metrics, STATUS=).
        std::function<BrokerStats()> stats;
        // Publish a retained message into the broker (for $SYS).
        std::function<void(const SysMessage&)> publish_retained;
        // Cheap connected-client count for STATUS= (falls back to stats).
        std::function<std::uint64_t()> clients_connected;
        // "" or why the cluster's NATS link is not up (appended to STATUS=).
        std::function<std::string()> cluster_trouble;
    };

    // Opens the [metrics] socket if configured. Returns an error text when
    // that fails (the caller exits 1, like for a listener).
    static std::unique_ptr<DaemonServices> create(const config::Config& cfg, Hooks hooks,
                                                  std::string& error);
    ~DaemonServices();
    DaemonServices(const DaemonServices&) = delete;
    DaemonServices& operator=(const DaemonServices&) = delete;

    // The descriptor the reactor watches for EPOLLIN (level-triggered is fine).
    int fd() const { return epoll_fd_; }

    // Handles whatever is ready: timer ticks (watchdog, STATUS, $SYS), metrics
    // connections. Never blocks.
    void dispatch();

    // Every listener is bound and accepting: READY=1 (Type=notify) and the
    // first $SYS round.
    void ready();
    // SIGHUP: before and after the broker re-applies its config.
    void reloading();
    void reloaded(const config::Config& cfg);
    // Shutdown begins: STOPPING=1; the metrics endpoint closes.
    void stopping();

    SystemdNotifier& notifier() { return notifier_; }
    std::uint16_t metrics_port() const { return metrics_port_; }

private:
    DaemonServices(const config::Config& cfg, Hooks hooks);
    struct HttpClient;

    void tick();
    void arm_timer();
    void accept_metrics();
    void serve(HttpClient& client, std::uint32_t events);
    void close_client(int fd);
    void publish_sys();
    std::uint64_t clients() const;

    Hooks hooks_;
    SystemdNotifier notifier_;
    SysTopics sys_;
    std::uint32_t sys_interval_;
    std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point next_sys_;
    std::chrono::steady_clock::time_point next_watchdog_;
    std::chrono::steady_clock::time_point next_status_;
    std::string last_status_;
    std::string status_text() const;
    bool ready_ = false;

    int epoll_fd_ = -1;
    int timer_fd_ = -1;
    int metrics_fd_ = -1;
    std::uint16_t metrics_port_ = 0;
    std::vector<std::unique_ptr<HttpClient>> clients_;
};

}  // namespace mqttools::daemon
