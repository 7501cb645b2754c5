// The service manager protocol without systemd as a hard requirement:
// sd_notify messages (READY, STATUS, WATCHDOG, RELOADING, STOPPING) when
// NOTIFY_SOCKET is set, and socket activation (LISTEN_FDS/LISTEN_PID).
// Everything here is a no-op when the broker was not started by systemd.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace mqttools::daemon {

class SystemdNotifier {
public:
    // Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID once.
    SystemdNotifier();

    bool enabled() const { return enabled_; }

    // READY=1 must come only after every listener is bound (Type=notify
    // means "clients may connect now").
    void ready(std::string_view status);
    void status(std::string_view status);
    void reloading();  // RELOADING=1; follow it with ready() when done
    void stopping();   // STOPPING=1
    void watchdog();   // WATCHDOG=1

    // How often to send WATCHDOG=1: half of WATCHDOG_USEC (sd_watchdog_enabled(3)
    // recommends pinging at half the timeout), or nothing when no watchdog.
    std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_interval_; }

    // "N clients connected" style STATUS text shared by ready() and status().
    static std::string client_status(std::uint64_t clients);

private:
    void send(const std::string& message);

    bool enabled_ = false;
    std::optional<std::chrono::microseconds> watchdog_interval_;
};

// A listening socket handed over by the service manager (fd 3 onwards).
struct InheritedSocket {
    int fd = -1;           // owned by the caller from now on
    std::string bind;      // numeric address it is bound to ("0.0.0.0", "::", "127.0.0.1")
    std::uint16_t port = 0;
};

// Takes the sockets passed with LISTEN_FDS/LISTEN_PID (sd_listen_fds(3)),
// unsets those variables so children don't inherit them, and marks the fds
// close-on-exec. Non-TCP or non-listening fds are closed and reported in
// REJECTED (one line each) rather than silently used.
std::vector<InheritedSocket> take_inherited_sockets(std::vector<std::string>& rejected);

// Which listener gets which inherited socket. A configured listener whose
// port and address equal an inherited socket's uses it (a wildcard address
// "", "0.0.0.0" or "::" matches the same wildcard); configured listeners
// without a match are opened by the broker; inherited sockets without a
// configured listener are served as plain MQTT listeners too. With nothing
// configured and nothing inherited the plan is the default 127.0.0.1:1883.
struct ListenerPlan {
    config::Listener listener;
    int inherited_fd = -1;  // -1: open it as configured
};
std::vector<ListenerPlan> plan_listeners(const std::vector<config::Listener>& configured,
                                         const std::vector<InheritedSocket>& inherited);

}  // namespace mqttools::daemon
