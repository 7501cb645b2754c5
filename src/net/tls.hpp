// TLS for the reactor, on OpenSSL 3, with no threads and no blocking.
//
// TlsContext wraps one SSL_CTX (certificates, CA store, verification mode,
// TLS 1.2 minimum). A listener holds a shared_ptr to its context; reload
// builds a fresh context from the files and swaps the pointer, so new
// connections use the new certificates while running sessions keep theirs
// (every SSL holds a reference to the SSL_CTX it was made from).
//
// TlsSession is one connection's TLS state over two memory BIOs: it never
// touches the socket. The reactor does the socket I/O it already does:
//   readable:  n = read(fd, buf); session.feed(buf[0..n]);
//              while session.read_plain(out) gives bytes: hand them to the
//              packet decoder;
//   to send:   session.write_plain(packet bytes);
//   always:    while session.pending_output(): write(fd, take_output(...))
//              and watch for writability while some remains unwritten.
// read_plain/write_plain also drive the handshake; until it completes
// write_plain reports want_read and the caller keeps its plaintext queued.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mqttools/packets.hpp"
#include "net/transport.hpp"
#include "net/unique_fd.hpp"

using SSL_CTX = struct ssl_ctx_st;
using SSL = struct ssl_st;
using BIO = struct bio_st;

namespace mqttools::config {
struct Listener;
}

namespace mqttools::net {

struct TlsServerSettings {
    std::string certfile;
    std::string keyfile;
    std::string cafile;                // CA bundle for client certificates
    bool require_certificate = false;  // clients must present a valid certificate
};

struct TlsClientSettings {
    std::string cafile;        // "" : the system default verify paths
    std::string certfile;      // client certificate, optional
    std::string keyfile;
    bool verify_peer = true;   // false = --insecure: no certificate check at all
    std::string capath{};      // a directory of hashed CA certificates (with or instead of cafile)
    std::string tls_version{};  // "" : TLS 1.2 or 1.3; "tlsv1.2" / "tlsv1.3": only that one
    std::string alpn{};         // one ALPN protocol to offer (1 to 255 bytes); "" : none
};

// Called first in main(), before anything uses OpenSSL: OpenSSL's own
// clean-up at exit is left out. libnats' exit handler frees libssl's
// compression-method list itself (nats.c, _finalCleanup); when OpenSSL's
// handler was registered before libnats' (OpenSSL first used by the reactor
// or a TLS listener, libnats later), it ran after it and freed the list a
// second time: a crash at exit. The process ends anyway; nothing is lost.
void keep_openssl_until_exit() noexcept;

class TlsContext {
public:
    // Both throw std::runtime_error naming the file and OpenSSL's reason:
    // they run at startup and at reload, where the caller reports it.
    static std::shared_ptr<const TlsContext> make_server(const TlsServerSettings& settings);
    static std::shared_ptr<const TlsContext> make_server(const config::Listener& listener);
    static std::shared_ptr<const TlsContext> make_client(const TlsClientSettings& settings);

    ~TlsContext();
    TlsContext(const TlsContext&) = delete;
    TlsContext& operator=(const TlsContext&) = delete;

    SSL_CTX* native() const noexcept { return ctx_; }
    bool is_server() const noexcept { return server_; }

private:
    TlsContext(SSL_CTX* ctx, bool server) noexcept : ctx_(ctx), server_(server) {}
    SSL_CTX* ctx_;
    bool server_;
};

enum class TlsStatus {
    ok,          // progress made (n bytes moved; n may be 0 for write of nothing)
    want_read,   // nothing more until more ciphertext is fed
    closed,      // the peer sent close_notify
    error,       // handshake or protocol failure: see last_error(), drop the connection
};

struct TlsIo {
    std::size_t bytes = 0;
    TlsStatus status = TlsStatus::ok;
};

class TlsSession {
public:
    // server_name (clients only): sent as SNI and checked against the
    // server's certificate when the context verifies peers.
    explicit TlsSession(std::shared_ptr<const TlsContext> context,
                        std::string_view server_name = {});
    ~TlsSession();
    TlsSession(const TlsSession&) = delete;
    TlsSession& operator=(const TlsSession&) = delete;

    // False when OpenSSL could not allocate the session (then every call
    // reports error).
    bool valid() const noexcept { return ssl_ != nullptr; }

    // Ciphertext that arrived from the socket.
    void feed(Bytes ciphertext);

    // Decrypted application data into `out`. bytes > 0 with ok; want_read
    // when everything fed so far is consumed; closed / error are final.
    TlsIo read_plain(MutableBytes out);

    // Encrypts all of `plaintext` (bytes = plaintext.size()) or, before the
    // handshake has completed, nothing (want_read).
    TlsIo write_plain(Bytes plaintext);

    // Advances the handshake without application data: ok once complete.
    TlsStatus handshake();
    bool handshake_done() const noexcept;

    // Ciphertext waiting for the socket.
    std::size_t pending_output() const noexcept;
    std::size_t take_output(MutableBytes out) noexcept;

    // Queues close_notify (then flush pending_output()).
    void shutdown() noexcept;

    // The Common Name of a verified peer certificate, for
    // use_identity_as_username; nullopt without one.
    std::optional<std::string> peer_common_name() const;
    std::string_view version() const noexcept;  // "TLSv1.3"
    const std::string& last_error() const noexcept { return error_; }

private:
    TlsStatus fail(int ret);

    std::shared_ptr<const TlsContext> context_;
    SSL* ssl_ = nullptr;
    BIO* in_ = nullptr;   // network -> SSL (owned by ssl_)
    BIO* out_ = nullptr;  // SSL -> network (owned by ssl_)
    std::string error_;
    bool failed_ = false;
};

// A TLS connection as the broker's Transport: the same calls as plain TCP,
// with records, the handshake and close_notify handled underneath. Nothing
// blocks: a read that needs more ciphertext says would_block; ciphertext the
// socket did not take stays here (has_pending) until flush() moves it.
class TlsTransport final : public Transport {
public:
    // server_name (client contexts): SNI, and the host name the peer's
    // certificate must match when the context verifies peers.
    TlsTransport(UniqueFd fd, std::shared_ptr<const TlsContext> context, std::string_view server_name = {});

    int fd() const noexcept override { return fd_.get(); }
    IoResult read(MutableBytes out) noexcept override;
    IoResult write(const iovec* iov, int count) noexcept override;
    bool has_pending() const noexcept override;
    IoResult flush() noexcept override;
    bool wants_write() const noexcept override { return has_pending(); }

    TlsSession& session() noexcept { return session_; }
    const TlsSession& session() const noexcept { return session_; }

    // Ciphertext held for the socket above which write() accepts no more
    // plaintext: the broker's per-client output bound then sees the backlog.
    static constexpr std::size_t max_pending = 64 * 1024;

private:
    // Moves ciphertext from the session to the socket until either is empty.
    IoStatus send_pending() noexcept;

    UniqueFd fd_;
    TlsSession session_;
    // Ciphertext goes out through one staging buffer per thread; only what
    // a partial send left behind is kept here (empty, no heap, when idle:
    // a per-connection 16 KiB stage made an idle TLS client cost 1.7x
    // Mosquitto's memory).
    std::vector<std::byte> unsent_;
    std::size_t unsent_begin_ = 0;
    std::size_t unsent() const noexcept { return unsent_.size() - unsent_begin_; }
    // send() what fits; false on an error other than a full socket. Sets
    // `sent`.
    bool send_some(const std::byte* data, std::size_t size, std::size_t& sent) noexcept;
    std::byte header_[5] = {};     // the TLS record header being read
    std::size_t header_have_ = 0;
    std::size_t record_left_ = 0;  // body bytes of the current record still in the socket
    bool peer_closed_ = false;
};

}  // namespace mqttools::net
