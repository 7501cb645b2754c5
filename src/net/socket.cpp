#include "net/socket.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace mqttools::net {

std::string format_address(const sockaddr_storage& addr) {
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (addr.ss_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
        ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
        return std::string(host) + ":" + std::to_string(port);
    }
    if (addr.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
        ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        // Appended piecewise: `"[" + std::string(...)` trips gcc 12's false
        // -Wrestrict at -O3 (release builds, scripts/dev bench).
        std::string out = "[";
        out += host;
        out += "]:";
        out += std::to_string(port);
        return out;
    }
    return "unix";
}

UniqueFd listen_tcp(std::string_view bind, std::uint16_t port, std::string& error, bool reuse_port) {
    std::string host(bind);
    if (host == "*") host.clear();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* list = nullptr;
    const std::string service = std::to_string(port);
    int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &list);
    if (rc != 0) {
        error = "cannot resolve '" + host + "': " + ::gai_strerror(rc);
        return UniqueFd{};
    }
    // Prefer IPv6 for the wildcard address: with IPV6_V6ONLY off it takes
    // IPv4 connections too.
    addrinfo* chosen = list;
    if (host.empty()) {
        for (addrinfo* ai = list; ai; ai = ai->ai_next) {
            if (ai->ai_family == AF_INET6) chosen = ai;
        }
    }
    std::vector<addrinfo*> order{chosen};
    for (addrinfo* ai = list; ai; ai = ai->ai_next) {
        if (ai != chosen) order.push_back(ai);
    }
    UniqueFd result;
    for (addrinfo* ai : order) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) {
            error = std::string("socket: ") + std::strerror(errno);
            continue;
        }
        int one = 1;
        ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (reuse_port && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
            error = std::string("SO_REUSEPORT: ") + std::strerror(errno);
            continue;
        }
        if (ai->ai_family == AF_INET6 && host.empty()) {
            int zero = 0;
            ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        }
        if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
            error = "cannot bind " + (host.empty() ? std::string("*") : host) + ":" + service + ": " +
                    std::strerror(errno);
            continue;
        }
        if (::listen(fd.get(), SOMAXCONN) != 0) {
            error = std::string("listen: ") + std::strerror(errno);
            continue;
        }
        result = std::move(fd);
        break;
    }
    ::freeaddrinfo(list);
    if (result) error.clear();
    return result;
}

std::uint16_t local_port(int fd) noexcept {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
    if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    return 0;
}

UniqueFd accept_tcp(int listen_fd, std::string& peer) {
    // The address accept() reports, not getpeername's: a client that sent
    // its bytes and reset the connection before we accepted it has none
    // any more.
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    UniqueFd fd(::accept4(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) return fd;
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    peer = format_address(addr);
    return fd;
}

UniqueFd accept_tcp(int listen_fd) {
    UniqueFd fd(::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) return fd;
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

std::string peer_address(int fd) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "unknown";
    return format_address(addr);
}

bool set_nonblocking(int fd) noexcept {
    int flags = ::fcntl(fd, F_GETFL);
    return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

}  // namespace mqttools::net
