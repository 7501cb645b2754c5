#include "daemon/systemd_notify.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace mqttools::daemon {

SystemdNotifier::SystemdNotifier() {
    const char* socket = std::getenv("NOTIFY_SOCKET");
    enabled_ = socket != nullptr && socket[0] != '\0';
    std::uint64_t usec = 0;
    // 0: keep WATCHDOG_USEC in the environment; the check includes WATCHDOG_PID.
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        watchdog_interval_ = std::chrono::microseconds(usec / 2);
    }
}

void SystemdNotifier::send(const std::string& message) {
    if (enabled_) sd_notify(0, message.c_str());
}

std::string SystemdNotifier::client_status(std::uint64_t clients) {
    return std::to_string(clients) + (clients == 1 ? " client connected" : " clients connected");
}

void SystemdNotifier::ready(std::string_view status) {
    send("READY=1\nSTATUS=" + std::string(status));
}

void SystemdNotifier::status(std::string_view status) { send("STATUS=" + std::string(status)); }

void SystemdNotifier::reloading() { send("RELOADING=1\nSTATUS=Reloading configuration"); }

void SystemdNotifier::stopping() { send("STOPPING=1\nSTATUS=Shutting down"); }

void SystemdNotifier::watchdog() { send("WATCHDOG=1"); }

std::vector<InheritedSocket> take_inherited_sockets(std::vector<std::string>& rejected) {
    std::vector<InheritedSocket> out;
    // 1: unset LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES so nothing we spawn sees them.
    const int n = sd_listen_fds(1);
    if (n <= 0) return out;
    for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; ++fd) {
        if (sd_is_socket_inet(fd, 0, SOCK_STREAM, 1, 0) <= 0) {
            rejected.push_back("inherited fd " + std::to_string(fd) +
                               " is not a listening TCP socket; closed");
            ::close(fd);
            continue;
        }
        ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        sockaddr_storage addr{};
        socklen_t len = sizeof addr;
        InheritedSocket s;
        s.fd = fd;
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
            char text[INET6_ADDRSTRLEN] = {};
            if (addr.ss_family == AF_INET) {
                const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
                ::inet_ntop(AF_INET, &a->sin_addr, text, sizeof text);
                s.port = ntohs(a->sin_port);
            } else if (addr.ss_family == AF_INET6) {
                const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
                ::inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof text);
                s.port = ntohs(a->sin6_port);
            }
            s.bind = text;
        }
        out.push_back(std::move(s));
    }
    return out;
}

namespace {

bool wildcard(const std::string& bind) { return bind.empty() || bind == "0.0.0.0" || bind == "::"; }

bool same_address(const std::string& configured, const std::string& actual) {
    if (wildcard(configured)) return wildcard(actual);
    if (configured == actual) return true;
    // Compare parsed forms so "::1" and "0:0::1" are equal.
    unsigned char a[sizeof(in6_addr)] = {};
    unsigned char b[sizeof(in6_addr)] = {};
    if (inet_pton(AF_INET6, configured.c_str(), a) == 1 && inet_pton(AF_INET6, actual.c_str(), b) == 1) {
        return std::memcmp(a, b, sizeof a) == 0;
    }
    return false;
}

}  // namespace

std::vector<ListenerPlan> plan_listeners(const std::vector<config::Listener>& configured,
                                         const std::vector<InheritedSocket>& inherited) {
    std::vector<ListenerPlan> plan;
    std::vector<bool> used(inherited.size(), false);
    // No listener configured and none inherited: Mosquitto 2's safe default,
    // 127.0.0.1:1883 (config::Listener's defaults).
    const std::vector<config::Listener> fallback(configured.empty() && inherited.empty() ? 1 : 0);
    for (const auto& l : configured.empty() ? fallback : configured) {
        ListenerPlan p{l, -1};
        for (std::size_t i = 0; i < inherited.size(); ++i) {
            if (!used[i] && inherited[i].port == l.port && same_address(l.bind, inherited[i].bind)) {
                used[i] = true;
                p.inherited_fd = inherited[i].fd;
                break;
            }
        }
        plan.push_back(std::move(p));
    }
    for (std::size_t i = 0; i < inherited.size(); ++i) {
        if (used[i]) continue;
        config::Listener l;
        l.port = inherited[i].port;
        l.bind = inherited[i].bind;
        plan.push_back({l, inherited[i].fd});
    }
    return plan;
}

}  // namespace mqttools::daemon
