// TCP sockets for the reactor: non-blocking listeners and accept4 with
// TCP_NODELAY (MQTT packets are small and latency matters; the broker
// batches writes itself, once per reactor turn).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "net/unique_fd.hpp"

namespace mqttools::net {

// Binds and listens on bind:port ("" binds every address, IPv6 dual-stack
// when available). On failure returns an invalid fd and sets `error`.
// reuse_port: SO_REUSEPORT, so several processes (cluster nodes on one
// host) can listen on the same port and the kernel spreads connections.
UniqueFd listen_tcp(std::string_view bind, std::uint16_t port, std::string& error, bool reuse_port = false);

// The port a socket is bound to (for port 0 listeners in tests).
std::uint16_t local_port(int fd) noexcept;

// accept4(SOCK_NONBLOCK | SOCK_CLOEXEC) + TCP_NODELAY; invalid when nothing
// is pending (EAGAIN) or on error (errno tells which). `peer` gets
// "address:port".
UniqueFd accept_tcp(int listen_fd, std::string& peer);
UniqueFd accept_tcp(int listen_fd);

// Makes an inherited socket non-blocking.
bool set_nonblocking(int fd) noexcept;

std::string format_address(const sockaddr_storage& addr);
// The connected peer of `fd` as "address:port", formatted when asked (for
// log lines) so a connection does not carry the string: "unknown" when
// the socket has none.
std::string peer_address(int fd);

}  // namespace mqttools::net
