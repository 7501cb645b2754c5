#include "cluster/nats_tls.hpp"

#include <fcntl.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "cluster/nats_wire.hpp"

namespace mqttools::cluster {

NatsTls::NatsTls(net::UniqueFd fd, std::shared_ptr<const net::TlsContext> context, std::string_view host)
    : transport_(std::move(fd), std::move(context), host) {}

std::unique_ptr<NatsTls> NatsTls::start(int fd, const NatsTlsSettings& settings, const std::string& host,
                                        std::string& error) {
    std::shared_ptr<const net::TlsContext> context;
    try {
        net::TlsClientSettings s;
        s.cafile = settings.cafile;
        s.certfile = settings.certfile;
        s.keyfile = settings.keyfile;
        context = net::TlsContext::make_client(s);
    } catch (const std::exception& e) {
        error = e.what();
        return nullptr;
    }
    net::UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!dup) {
        error = std::string("dup: ") + std::strerror(errno);
        return nullptr;
    }
    auto tls = std::make_unique<NatsTls>(std::move(dup), std::move(context), host);
    if (!tls->transport_.session().valid()) {
        error = tls->transport_.session().last_error();
        return nullptr;
    }
    // The ClientHello goes out now; the rest of the handshake advances as
    // the server's records are read.
    if (tls->transport_.session().handshake() == net::TlsStatus::error || !tls->flush_pending()) {
        error = tls->transport_.session().last_error();
        if (error.empty()) error = tls->error_;
        return nullptr;
    }
    return tls;
}

void NatsTls::set_error(int err) {
    error_ = transport_.session().last_error();
    if (error_.empty()) error_ = err != 0 ? std::strerror(err) : "connection reset";
    // The alert OpenSSL queued (unknown CA, bad certificate) goes out
    // before the socket closes, so the server logs why (best effort).
    (void)transport_.flush();
    errno = EPROTO;
}

ssize_t NatsTls::recv(char* buf, std::size_t len) {
    const net::IoResult r = transport_.read(MutableBytes(reinterpret_cast<std::byte*>(buf), len));
    switch (r.status) {
        case net::IoStatus::ok:
            return static_cast<ssize_t>(r.bytes);
        case net::IoStatus::would_block:
            errno = EAGAIN;
            return -1;
        case net::IoStatus::closed:
            return 0;
        case net::IoStatus::error:
            break;
    }
    set_error(errno);
    return -1;
}

ssize_t NatsTls::send(const char* buf, std::size_t len) {
    iovec iov{const_cast<char*>(buf), std::min(len, send_chunk)};
    const net::IoResult r = transport_.write(&iov, 1);
    if (r.status == net::IoStatus::ok) return static_cast<ssize_t>(r.bytes);
    if (r.status == net::IoStatus::would_block) {
        errno = EAGAIN;
        return -1;
    }
    set_error(errno);
    return -1;
}

bool NatsTls::flush_pending() {
    if (transport_.flush().status != net::IoStatus::error) return true;
    set_error(errno);
    return false;
}

// ---- NatsWire's TLS steps (declared in nats_wire.hpp)

bool NatsWire::start_tls(const nats::ServerInfo& info) {
    const Url& url = urls_[url_index_ % urls_.size()];
    if (!info.tls_required && !info.tls_available) {
        fail("TLS is configured (tls:// or cafile/certfile in [cluster]) but the server at " + url.host + ":" +
             url.port + " does not offer it");
        return false;
    }
    std::string error;
    tls_ = NatsTls::start(fd_.get(), options_.tls, url.host, error);
    if (!tls_) {
        fail("TLS with " + url.host + ":" + url.port + ": " + error);
        return false;
    }
    return true;
}

void NatsWire::flush_tls_pending() {
    if (!tls_->flush_pending()) {
        fail("TLS write: " + tls_->error());
        return;
    }
    want_write(tls_->has_pending());
}

std::string NatsWire::io_error(int err) const {
    if (tls_ && err == EPROTO) {
        const Url& url = urls_[url_index_ % urls_.size()];
        return "TLS with " + url.host + ":" + url.port + ": " + tls_->error();
    }
    return std::strerror(err);
}

void NatsWire::log_tls_up() const {
    const Url& url = urls_[url_index_ % urls_.size()];
    spdlog::info("Cluster: NATS data connection on the reactor to {}:{} over {} (server certificate verified{}).",
                 url.host, url.port, tls_->version(),
                 options_.tls.certfile.empty() ? "" : ", client certificate presented");
}

}  // namespace mqttools::cluster
