#include "net/transport.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace mqttools::net {

IoResult PlainTransport::read(MutableBytes out) noexcept {
    for (;;) {
        ssize_t n = ::read(fd_.get(), out.data(), out.size());
        if (n > 0) return {static_cast<std::size_t>(n), IoStatus::ok};
        if (n == 0) return {0, IoStatus::closed};
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return {0, IoStatus::would_block};
        return {0, IoStatus::error};
    }
}

IoResult PlainTransport::write(const iovec* iov, int count) noexcept {
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(iov);
    msg.msg_iovlen = static_cast<std::size_t>(count);
    for (;;) {
        // sendmsg with MSG_NOSIGNAL: a peer that went away must not SIGPIPE us.
        ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
        if (n >= 0) return {static_cast<std::size_t>(n), IoStatus::ok};
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return {0, IoStatus::would_block};
        return {0, IoStatus::error};
    }
}

}  // namespace mqttools::net
