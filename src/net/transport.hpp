// The one seam where a connection's bytes meet its socket. The broker's
// Connection reads and writes only through a Transport: PlainTransport is
// TCP; a TLS transport (src/net/tls.*) and WebSockets (ws_transport.*) implement the
// same four calls over their own framing, with no change to the protocol
// code above.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <memory>
#include <string_view>

#include "mqttools/packets.hpp"
#include "net/unique_fd.hpp"

namespace mqttools::net {

enum class IoStatus : std::uint8_t {
    ok,           // `bytes` moved (a read of 0 bytes with ok never happens)
    would_block,  // try again when the socket is ready
    closed,       // orderly end of stream
    error,        // reset, TLS failure...: drop the connection
};

struct IoResult {
    std::size_t bytes = 0;
    IoStatus status = IoStatus::ok;
};

class Transport {
public:
    virtual ~Transport() = default;
    virtual int fd() const noexcept = 0;
    // Application bytes in: at most out.size().
    virtual IoResult read(MutableBytes out) noexcept = 0;
    // Application bytes out, gathered: may take fewer than offered.
    virtual IoResult write(const iovec* iov, int count) noexcept = 0;
    // Bytes the transport still holds after write() (e.g. TLS records that
    // did not fit into the socket): the reactor keeps EPOLLOUT armed and
    // calls flush() until this is false.
    virtual bool has_pending() const noexcept { return false; }
    virtual IoResult flush() noexcept { return {}; }
    // Does the transport want EPOLLOUT even with no application output
    // (a TLS handshake in progress)?
    virtual bool wants_write() const noexcept { return false; }
    // The connection is ending by our choice: queue and try to send what
    // this layer says on an orderly end (a WebSocket Close frame, or an
    // HTTP 408 to an upgrade request that never completed).
    virtual void close_gracefully() noexcept {}
    // "ws" / "wss" for WebSocket clients, "" otherwise (for log lines and
    // metrics).
    virtual std::string_view label() const noexcept { return {}; }
    // Why the last read failed, when the transport knows more than the
    // status says ("WebSocket upgrade refused (400): ..."); "" otherwise.
    virtual std::string_view error() const noexcept { return {}; }
    // The peer's "address:port" recorded at accept, for transports that keep
    // it; "" otherwise (the caller asks getpeername, which fails once the
    // peer has reset the connection).
    virtual std::string_view known_peer() const noexcept { return {}; }
};

class PlainTransport final : public Transport {
public:
    explicit PlainTransport(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
    int fd() const noexcept override { return fd_.get(); }
    IoResult read(MutableBytes out) noexcept override;
    IoResult write(const iovec* iov, int count) noexcept override;

private:
    UniqueFd fd_;
};

}  // namespace mqttools::net
