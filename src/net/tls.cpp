#include "net/tls.hpp"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <stdexcept>

#include "config/config.hpp"

namespace mqttools::net {
namespace {

// Everything on OpenSSL's (thread-local) error queue as one line, emptying it.
std::string drain_errors() {
    std::string out;
    while (const unsigned long code = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(code, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out;
}

[[noreturn]] void throw_tls(const std::string& what) {
    std::string why = drain_errors();
    throw std::runtime_error(why.empty() ? what : what + ": " + why);
}

struct CtxOwner {
    SSL_CTX* ctx;
    ~CtxOwner() { SSL_CTX_free(ctx); }
    SSL_CTX* release() {
        SSL_CTX* c = ctx;
        ctx = nullptr;
        return c;
    }
};

void common_setup(SSL_CTX* ctx) {
    // TLS 1.2 is the floor: 1.0/1.1 are deprecated (RFC 8996).
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        throw_tls("cannot set the minimum TLS version");
    }
    // Client-initiated renegotiation costs the server a handshake per
    // request: refuse it. Memory BIOs grow, so partial writes never happen,
    // but the moving-buffer mode keeps a retried write legal.
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
}

void load_identity(SSL_CTX* ctx, const std::string& certfile, const std::string& keyfile) {
    if (SSL_CTX_use_certificate_chain_file(ctx, certfile.c_str()) != 1) {
        throw_tls("cannot load certificate '" + certfile + "'");
    }
    const std::string& key = keyfile.empty() ? certfile : keyfile;
    if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
        throw_tls("cannot load private key '" + key + "'");
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        throw_tls("private key '" + key + "' does not match certificate '" + certfile + "'");
    }
}

}  // namespace

void keep_openssl_until_exit() noexcept {
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr);
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

std::shared_ptr<const TlsContext> TlsContext::make_server(const TlsServerSettings& s) {
    ERR_clear_error();
    if (s.certfile.empty() || s.keyfile.empty()) {
        throw std::runtime_error("a TLS listener needs both certfile and keyfile");
    }
    CtxOwner owner{SSL_CTX_new(TLS_server_method())};
    if (!owner.ctx) throw_tls("cannot create a TLS context");
    common_setup(owner.ctx);
    load_identity(owner.ctx, s.certfile, s.keyfile);
    if (!s.cafile.empty()) {
        if (SSL_CTX_load_verify_locations(owner.ctx, s.cafile.c_str(), nullptr) != 1) {
            throw_tls("cannot load CA file '" + s.cafile + "'");
        }
        // Tell clients which CAs we accept, so they pick the right certificate.
        if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(s.cafile.c_str())) {
            SSL_CTX_set_client_CA_list(owner.ctx, names);
        }
    } else if (s.require_certificate) {
        throw std::runtime_error("require_certificate needs a cafile to verify clients against");
    }
    SSL_CTX_set_verify(owner.ctx,
                       s.require_certificate ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                             : SSL_VERIFY_NONE,
                       nullptr);
    // Session resumption with client certificates needs an id context.
    static constexpr unsigned char sid[] = "mqttoolsd";
    SSL_CTX_set_session_id_context(owner.ctx, sid, sizeof sid - 1);
    return std::shared_ptr<const TlsContext>(new TlsContext(owner.release(), true));
}

std::shared_ptr<const TlsContext> TlsContext::make_server(const config::Listener& listener) {
    return make_server(TlsServerSettings{listener.certfile, listener.keyfile, listener.cafile,
                                         listener.require_certificate});
}

std::shared_ptr<const TlsContext> TlsContext::make_client(const TlsClientSettings& s) {
    ERR_clear_error();
    CtxOwner owner{SSL_CTX_new(TLS_client_method())};
    if (!owner.ctx) throw_tls("cannot create a TLS context");
    common_setup(owner.ctx);
    if (!s.tls_version.empty()) {
        const int v = s.tls_version == "tlsv1.3" ? TLS1_3_VERSION : s.tls_version == "tlsv1.2" ? TLS1_2_VERSION : 0;
        if (v == 0) throw std::runtime_error("unsupported TLS version '" + s.tls_version + "'");
        SSL_CTX_set_min_proto_version(owner.ctx, v);
        SSL_CTX_set_max_proto_version(owner.ctx, v);
    }
    if (s.verify_peer) {
        const bool given = !s.cafile.empty() || !s.capath.empty();
        const int ok = !given ? SSL_CTX_set_default_verify_paths(owner.ctx)
                              : SSL_CTX_load_verify_locations(owner.ctx, s.cafile.empty() ? nullptr : s.cafile.c_str(),
                                                              s.capath.empty() ? nullptr : s.capath.c_str());
        if (ok != 1) throw_tls(s.capath.empty() ? "cannot load CA file '" + s.cafile + "'"
                                                : "cannot load CA path '" + s.capath + "'");
        SSL_CTX_set_verify(owner.ctx, SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(owner.ctx, SSL_VERIFY_NONE, nullptr);
    }
    if (!s.certfile.empty()) load_identity(owner.ctx, s.certfile, s.keyfile);
    if (!s.alpn.empty()) {
        if (s.alpn.size() > 255) throw std::runtime_error("ALPN protocol name over 255 bytes");
        // The wire form: a length byte, then the name (RFC 7301, 3.1).
        std::string wire(1, static_cast<char>(s.alpn.size()));
        wire += s.alpn;
        // Returns 0 on success (unlike most of OpenSSL).
        if (SSL_CTX_set_alpn_protos(owner.ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                                    static_cast<unsigned>(wire.size())) != 0) {
            throw_tls("cannot set ALPN '" + s.alpn + "'");
        }
    }
    return std::shared_ptr<const TlsContext>(new TlsContext(owner.release(), false));
}

TlsSession::TlsSession(std::shared_ptr<const TlsContext> context, std::string_view server_name)
    : context_(std::move(context)) {
    ERR_clear_error();
    ssl_ = SSL_new(context_->native());
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    if (!ssl_ || !in_ || !out_) {
        SSL_free(ssl_);
        BIO_free(in_);
        BIO_free(out_);
        ssl_ = nullptr;
        in_ = out_ = nullptr;
        error_ = "cannot create a TLS session: " + drain_errors();
        failed_ = true;
        return;
    }
    // An empty memory BIO means "no data yet", not end of file.
    BIO_set_mem_eof_return(in_, -1);
    SSL_set_bio(ssl_, in_, out_);  // ssl_ owns both from here
    if (context_->is_server()) {
        SSL_set_accept_state(ssl_);
    } else {
        SSL_set_connect_state(ssl_);
        if (!server_name.empty()) {
            const std::string name(server_name);
            // An address is checked against the certificate's IP entries and
            // never sent as SNI (RFC 6066, 3: "Literal IPv4 and IPv6
            // addresses are not permitted"); a name against its DNS entries.
            in6_addr any{};
            const bool address = ::inet_pton(AF_INET, name.c_str(), &any) == 1 ||
                                 ::inet_pton(AF_INET6, name.c_str(), &any) == 1;
            if (!address) SSL_set_tlsext_host_name(ssl_, name.c_str());
            if (SSL_CTX_get_verify_mode(context_->native()) & SSL_VERIFY_PEER) {
                if (address) {
                    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name.c_str());
                } else {
                    SSL_set1_host(ssl_, name.c_str());
                }
            }
        }
    }
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

TlsStatus TlsSession::fail(int ret) {
    const int err = SSL_get_error(ssl_, ret);
    switch (err) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:  // memory BIOs never fill, but be safe
            return TlsStatus::want_read;
        case SSL_ERROR_ZERO_RETURN:
            return TlsStatus::closed;
        default: {
            failed_ = true;
            error_ = drain_errors();
            if (const long verify = SSL_get_verify_result(ssl_); verify != X509_V_OK) {
                error_ += error_.empty() ? "" : "; ";
                error_ += X509_verify_cert_error_string(verify);
            }
            if (error_.empty()) error_ = "TLS error " + std::to_string(err);
            return TlsStatus::error;
        }
    }
}

void TlsSession::feed(Bytes ciphertext) {
    if (!ssl_ || ciphertext.empty()) return;
    // A memory BIO takes everything (it grows); the caller feeds at most
    // one socket read at a time and drains plaintext right after.
    while (!ciphertext.empty()) {
        const int chunk = static_cast<int>(std::min<std::size_t>(ciphertext.size(), INT_MAX));
        const int n = BIO_write(in_, ciphertext.data(), chunk);
        if (n <= 0) {
            failed_ = true;
            error_ = "out of memory buffering TLS input";
            return;
        }
        ciphertext = ciphertext.subspan(static_cast<std::size_t>(n));
    }
}

TlsIo TlsSession::read_plain(MutableBytes out) {
    if (!ssl_ || failed_) return {0, TlsStatus::error};
    if (out.empty()) return {0, TlsStatus::ok};
    ERR_clear_error();
    std::size_t n = 0;
    const int ret = SSL_read_ex(ssl_, out.data(), out.size(), &n);
    if (ret == 1) return {n, TlsStatus::ok};
    return {0, fail(ret)};
}

TlsIo TlsSession::write_plain(Bytes plaintext) {
    if (!ssl_ || failed_) return {0, TlsStatus::error};
    if (plaintext.empty()) return {0, TlsStatus::ok};
    if (!SSL_is_init_finished(ssl_)) {
        // Drive the handshake first; plaintext waits in the caller's queue.
        const TlsStatus st = handshake();
        if (st != TlsStatus::ok) return {0, st};
    }
    ERR_clear_error();
    std::size_t n = 0;
    const int ret = SSL_write_ex(ssl_, plaintext.data(), plaintext.size(), &n);
    if (ret == 1) return {n, TlsStatus::ok};
    return {0, fail(ret)};
}

TlsStatus TlsSession::handshake() {
    if (!ssl_ || failed_) return TlsStatus::error;
    if (SSL_is_init_finished(ssl_)) return TlsStatus::ok;
    ERR_clear_error();
    const int ret = SSL_do_handshake(ssl_);
    if (ret == 1) return TlsStatus::ok;
    return fail(ret);
}

bool TlsSession::handshake_done() const noexcept {
    return ssl_ && SSL_is_init_finished(ssl_);
}

std::size_t TlsSession::pending_output() const noexcept {
    return out_ ? BIO_ctrl_pending(out_) : 0;
}

std::size_t TlsSession::take_output(MutableBytes out) noexcept {
    if (!out_ || out.empty()) return 0;
    const int chunk = static_cast<int>(std::min<std::size_t>(out.size(), INT_MAX));
    const int n = BIO_read(out_, out.data(), chunk);
    return n > 0 ? static_cast<std::size_t>(n) : 0;
}

void TlsSession::shutdown() noexcept {
    if (!ssl_ || failed_ || !SSL_is_init_finished(ssl_)) return;
    ERR_clear_error();
    (void)SSL_shutdown(ssl_);  // queues close_notify; we do not wait for the reply
    ERR_clear_error();
}

std::optional<std::string> TlsSession::peer_common_name() const {
    if (!ssl_ || SSL_get_verify_result(ssl_) != X509_V_OK) return std::nullopt;
    X509* cert = SSL_get0_peer_certificate(ssl_);
    if (!cert) return std::nullopt;
    X509_NAME* subject = X509_get_subject_name(cert);
    const int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (index < 0) return std::nullopt;
    ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
    unsigned char* utf8 = nullptr;
    const int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len < 0) return std::nullopt;
    std::string cn(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(len));
    OPENSSL_free(utf8);
    // A NUL inside a CN is an attack on C-string consumers: refuse it.
    if (cn.find('\0') != std::string::npos || cn.empty()) return std::nullopt;
    return cn;
}

std::string_view TlsSession::version() const noexcept {
    return ssl_ ? SSL_get_version(ssl_) : "";
}

// ---- TlsTransport

namespace {
constexpr std::size_t stage_size = 16 * 1024 + 512;  // one TLS record and then some

// Every transport on a thread stages through the same buffer: it only
// holds ciphertext between take_output() and send().
std::byte* stage_buffer() {
    thread_local std::unique_ptr<std::byte[]> buffer;
    if (!buffer) buffer.reset(new std::byte[stage_size]);
    return buffer.get();
}
}  // namespace

TlsTransport::TlsTransport(UniqueFd fd, std::shared_ptr<const TlsContext> context, std::string_view server_name)
    : fd_(std::move(fd)), session_(std::move(context), server_name) {}

bool TlsTransport::has_pending() const noexcept { return unsent() > 0 || session_.pending_output() > 0; }

bool TlsTransport::send_some(const std::byte* data, std::size_t size, std::size_t& sent) noexcept {
    sent = 0;
    while (sent < size) {
        const ssize_t n = ::send(fd_.get(), data + sent, size - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return true;
}

IoStatus TlsTransport::send_pending() noexcept {
    std::size_t sent = 0;
    if (unsent() > 0) {
        if (!send_some(unsent_.data() + unsent_begin_, unsent(), sent)) return IoStatus::error;
        unsent_begin_ += sent;
        if (unsent() > 0) return IoStatus::would_block;
        std::vector<std::byte>().swap(unsent_);
        unsent_begin_ = 0;
    }
    std::byte* stage = stage_buffer();
    while (true) {
        const std::size_t size = session_.take_output(MutableBytes(stage, stage_size));
        if (size == 0) return IoStatus::ok;
        if (!send_some(stage, size, sent)) return IoStatus::error;
        if (sent < size) {
            // The socket is full: keep the rest (at most one stage) here.
            unsent_.assign(stage + sent, stage + size);
            return IoStatus::would_block;
        }
    }
}

IoResult TlsTransport::flush() noexcept {
    const IoStatus st = send_pending();
    return {0, st};
}

// The reactor is level-triggered and the broker stops reading once a read
// returns less than it asked for. So a read must never leave a complete
// record buffered inside OpenSSL with the socket empty: nothing would wake
// us for it. Records are therefore taken from the socket one at a time
// (header, then exactly its body), and only while `out` has room for a
// whole record's plaintext; what stays behind stays in the socket, where
// epoll sees it.
IoResult TlsTransport::read(MutableBytes out) noexcept {
    constexpr std::size_t max_record_plain = 16 * 1024;
    std::byte cipher[16 * 1024 + 512];
    std::size_t total = 0;
    while (true) {
        if (total > 0 && out.size() - total < max_record_plain) return {total, IoStatus::ok};
        const TlsIo io = session_.read_plain(out.subspan(total));
        // Handshake messages, tickets and alerts the session produced go out now.
        if (send_pending() == IoStatus::error) return {0, IoStatus::error};
        if (io.status == TlsStatus::ok && io.bytes > 0) {
            total += io.bytes;
            continue;
        }
        if (io.status == TlsStatus::error) return {0, IoStatus::error};
        if (io.status == TlsStatus::closed || peer_closed_) {
            return total > 0 ? IoResult{total, IoStatus::ok} : IoResult{0, IoStatus::closed};
        }
        // want_read: the next record header, or the rest of this record.
        std::byte* dst = cipher;
        std::size_t want = 0;
        if (record_left_ == 0) {
            dst = header_ + header_have_;
            want = sizeof header_ - header_have_;
        } else {
            want = std::min(record_left_, sizeof cipher);
        }
        const ssize_t n = ::read(fd_.get(), dst, want);
        if (n > 0) {
            const auto got = static_cast<std::size_t>(n);
            session_.feed(Bytes(dst, got));
            if (record_left_ > 0) {
                record_left_ -= got;
            } else if ((header_have_ += got) == sizeof header_) {
                header_have_ = 0;
                record_left_ = (std::to_integer<std::size_t>(header_[3]) << 8) |
                               std::to_integer<std::size_t>(header_[4]);
            }
            continue;
        }
        if (n == 0) {
            // EOF without close_notify: the stream just ends here.
            peer_closed_ = true;
            return total > 0 ? IoResult{total, IoStatus::ok} : IoResult{0, IoStatus::closed};
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return total > 0 ? IoResult{total, IoStatus::ok} : IoResult{0, IoStatus::would_block};
        }
        return {0, IoStatus::error};
    }
}

IoResult TlsTransport::write(const iovec* iov, int count) noexcept {
    // Push out what is already encrypted first; hold back new plaintext
    // while the socket is backed up, so buffered ciphertext stays bounded.
    IoStatus st = send_pending();
    if (st == IoStatus::error) return {0, IoStatus::error};
    std::size_t taken = 0;
    for (int i = 0; i < count; ++i) {
        if (session_.pending_output() + unsent() >= max_pending) break;
        const auto* base = static_cast<const std::byte*>(iov[i].iov_base);
        const TlsIo io = session_.write_plain(Bytes(base, iov[i].iov_len));
        if (io.status == TlsStatus::error) return {0, IoStatus::error};
        if (io.status != TlsStatus::ok) break;  // handshake not finished: keep it queued
        taken += io.bytes;
        if (io.bytes < iov[i].iov_len) break;
    }
    st = send_pending();
    if (st == IoStatus::error) return {0, IoStatus::error};
    if (taken == 0) return {0, IoStatus::would_block};
    return {taken, IoStatus::ok};
}

}  // namespace mqttools::net
