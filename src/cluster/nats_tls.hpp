// TLS on the reactor's own NATS connection (issue 26). NATS' order: the
// server's INFO arrives in plaintext (tls_required), then the client starts
// TLS on the same socket and sends CONNECT inside it. nats-server 2.9
// (Debian 12) has no `handshake_first` (TLS before INFO; 2.10.4+), so the
// plaintext INFO is the only way in.
//
// OpenSSL runs through net::TlsTransport: memory BIOs, nothing blocks, the
// handshake advances as the reactor reads. Its reads take records from the
// socket one at a time, and only with room for a whole record's plaintext,
// so no plaintext is left inside OpenSSL while the socket is empty (epoll is
// level-triggered: nothing would wake NatsWire for it). The caller keeps at
// least `read_room` bytes free in each read.
//
// The server's certificate is verified against cafile (the system's CAs
// without one) and the URL's host (a DNS name, or an address against the
// certificate's IP entries); SNI carries a DNS name. certfile/keyfile are
// presented for mutual TLS. A context is made per attempt, so renewed
// certificate files are picked up at the next reconnect.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "net/tls.hpp"

namespace mqttools::cluster {

struct NatsTlsSettings {
    bool on = false;       // a tls:// URL, or cafile/certfile set in [cluster]
    std::string cafile;    // "" : the system's default CAs
    std::string certfile;  // our certificate (mutual TLS) and its key
    std::string keyfile;
};

class NatsTls {
public:
    // Starts the client handshake on `fd` (NatsWire keeps owning it; the
    // transport holds a duplicate). Null with `error` set when the CA or
    // certificate files cannot be loaded.
    static std::unique_ptr<NatsTls> start(int fd, const NatsTlsSettings& settings, const std::string& host,
                                          std::string& error);

    // recv(2)/send(2)'s conventions: > 0 bytes; 0 the server closed; -1
    // with errno EAGAIN (more ciphertext needed, or the socket is full, or
    // the handshake is not done: send keeps the plaintext with the caller)
    // or EPROTO (then error() says why: OpenSSL's reason, the certificate
    // check's).
    ssize_t recv(char* buf, std::size_t len);
    ssize_t send(const char* buf, std::size_t len);
    // Ciphertext the socket did not take (EPOLLOUT until it has): false
    // on an error, true otherwise.
    bool flush_pending();
    bool has_pending() const { return transport_.has_pending(); }
    bool handshake_done() const { return transport_.session().handshake_done(); }
    std::string_view version() const { return transport_.session().version(); }
    const std::string& error() const { return error_; }

    // One TLS record's plaintext.
    static constexpr std::size_t read_room = 16 * 1024;
    // Plaintext encrypted per send(): the ciphertext waiting in OpenSSL
    // stays about this size when the socket is full.
    static constexpr std::size_t send_chunk = 64 * 1024;

    NatsTls(net::UniqueFd fd, std::shared_ptr<const net::TlsContext> context, std::string_view host);

private:
    void set_error(int err);

    net::TlsTransport transport_;
    std::string error_;
};

}  // namespace mqttools::cluster
