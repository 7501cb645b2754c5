#include "client/transport.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <cerrno>
#include <cstring>

#include "mqttools/client.hpp"

namespace mqttools::client_detail {

namespace {

std::string endpoint(const std::string& host, std::uint16_t port) {
    return "'" + host + ":" + std::to_string(port) + "'";
}

// Connects one resolved address; returns the socket or sets `err` (errno).
UniqueFd connect_address(const addrinfo& ai, std::chrono::milliseconds timeout, const addrinfo* bind_to, int& err) {
    UniqueFd fd(::socket(ai.ai_family, ai.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai.ai_protocol));
    if (!fd.valid()) {
        err = errno;
        return {};
    }
    if (bind_to != nullptr && ::bind(fd.get(), bind_to->ai_addr, bind_to->ai_addrlen) != 0) {
        err = errno;
        return {};
    }
    if (::connect(fd.get(), ai.ai_addr, ai.ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            err = errno;
            return {};
        }
        pollfd p{fd.get(), POLLOUT, 0};
        int n;
        do {
            n = ::poll(&p, 1, static_cast<int>(timeout.count()));
        } while (n < 0 && errno == EINTR);
        if (n == 0) {
            err = ETIMEDOUT;
            return {};
        }
        int so_error = 0;
        socklen_t len = sizeof so_error;
        if (n < 0 || ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) {
            err = errno;
            return {};
        }
        if (so_error != 0) {
            err = so_error;
            return {};
        }
    }
    // Small packets (acks, pings, single publishes) must not wait for Nagle;
    // bulk publishing batches by itself.
    const int one = 1;
    (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

}  // namespace

UniqueFd tcp_connect(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout,
                     const std::string& bind_address) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* local = nullptr;
    if (!bind_address.empty()) {
        addrinfo bind_hints = hints;
        bind_hints.ai_flags = AI_PASSIVE;
        const int rc = ::getaddrinfo(bind_address.c_str(), "0", &bind_hints, &local);
        if (rc != 0) throw ConnectionError("cannot resolve bind address '" + bind_address + "': " + ::gai_strerror(rc));
        hints.ai_family = local->ai_family;
    }
    struct LocalOwner {
        addrinfo* list;
        ~LocalOwner() {
            if (list) ::freeaddrinfo(list);
        }
    } local_owner{local};
    addrinfo* list = nullptr;
    const std::string service = std::to_string(port);
    const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list);
    if (rc != 0) {
        throw ConnectionError("cannot resolve " + endpoint(host, port) + ": " + ::gai_strerror(rc));
    }
    int err = ECONNREFUSED;
    UniqueFd fd;
    for (const addrinfo* ai = list; ai != nullptr && !fd.valid(); ai = ai->ai_next) {
        fd = connect_address(*ai, timeout, local, err);
    }
    ::freeaddrinfo(list);
    if (!fd.valid()) {
        throw ConnectionError("cannot connect to " + endpoint(host, port) + ": " + std::strerror(err));
    }
    return fd;
}

Transport::Transport(UniqueFd fd, std::shared_ptr<const net::TlsContext> tls, const std::string& server_name,
                     const WebSocketTarget* websocket)
    : fd_(std::move(fd)) {
    if (tls) {
        tls_ = std::make_unique<net::TlsSession>(std::move(tls), server_name);
        // Start the handshake at once: the ClientHello goes out with the
        // first flush().
        (void)tls_->handshake();
        drain_tls_output();
    }
    if (websocket) {
        // Frames from the broker are bounded by what the reader accepts of
        // one MQTT packet and then some (several packets may share a frame).
        ws_ = std::make_unique<WebSocket>(std::uint64_t{1} << 32);
        ws_->key = net::ws::make_key();
        const std::string request = net::ws::make_request(websocket->host, websocket->path, ws_->key);
        ByteBuffer b;
        b.append(as_bytes(request));
        queue_stream(b);
    }
}

Transport::~Transport() = default;

bool Transport::pending() const noexcept {
    return !out_.empty() || (tls_ && tls_->pending_output() > 0);
}

bool Transport::drain_tls_output() {
    while (tls_->pending_output() > 0) {
        const std::size_t want = tls_->pending_output();
        auto room = out_.prepare(want);
        const std::size_t n = tls_->take_output(room);
        out_.commit(n);
        if (n == 0) break;
    }
    return true;
}

void Transport::queue(ByteBuffer& plain) {
    if (plain.empty()) return;
    if (ws_) {
        if (!ws_->open) {
            ws_->held.append(plain.view());  // until the 101
        } else if (!ws_->close_sent) {
            queue_frame(net::ws::Opcode::binary, plain.view());
        }
        plain.clear();
        return;
    }
    queue_stream(plain);
}

void Transport::queue_frame(net::ws::Opcode opcode, Bytes payload) {
    // A fresh unpredictable mask per frame (RFC 6455 5.3, 10.3).
    std::uint8_t mask[4];
    if (RAND_bytes(mask, sizeof mask) != 1) std::memset(mask, 0x5a, sizeof mask);
    ByteBuffer frame;
    auto room = frame.prepare(net::ws::max_header_size + payload.size());
    const std::size_t h = net::ws::encode_header(room.data(), opcode, true, payload.size(), mask);
    net::ws::mask_copy(room.data() + h, payload.data(), payload.size(), mask, 0);
    frame.commit(h + payload.size());
    queue_stream(frame);
}

void Transport::queue_stream(ByteBuffer& plain) {
    if (plain.empty()) return;
    if (!tls_) {
        if (out_.empty()) {
            out_.swap(plain);  // no copy on the bulk path
        } else {
            out_.append(plain.view());
        }
        plain.clear();
        return;
    }
    tls_plain_.append(plain.view());
    plain.clear();
}

bool Transport::flush() {
    if (tls_) {
        if (!tls_plain_.empty()) {
            const net::TlsIo io = tls_->write_plain(tls_plain_.view());
            if (io.status == net::TlsStatus::ok) {
                tls_plain_.consume(io.bytes);
            } else if (io.status != net::TlsStatus::want_read) {
                error_ = "TLS: " + tls_->last_error();
                return false;
            }
        }
        drain_tls_output();
    }
    while (!out_.empty()) {
        const ssize_t n = ::send(fd_.get(), out_.data(), out_.size(), MSG_NOSIGNAL);
        if (n > 0) {
            out_.consume(static_cast<std::size_t>(n));
            written_ += static_cast<std::uint64_t>(n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return true;
        } else {
            error_ = std::string("write failed: ") + std::strerror(errno);
            return false;
        }
    }
    return true;
}

Transport::ReadStatus Transport::read(ByteBuffer& in) {
    return ws_ ? read_websocket(in) : read_stream(in);
}

Transport::ReadStatus Transport::read_websocket(ByteBuffer& in) {
    namespace ws = net::ws;
    const ReadStatus st = read_stream(ws_->raw);
    if (!ws_->open && !ws_->raw.empty()) {
        const std::string_view text(reinterpret_cast<const char*>(ws_->raw.data()), ws_->raw.size());
        const ws::ResponseResult r = ws::parse_response(text, ws_->key);
        if (r.status == ws::HandshakeStatus::rejected) {
            error_ = r.error;
            return ReadStatus::error;
        }
        if (r.status == ws::HandshakeStatus::accepted) {
            ws_->raw.consume(r.consumed);
            ws_->open = true;
            if (!ws_->held.empty()) {
                queue_frame(ws::Opcode::binary, ws_->held.view());
                ws_->held.clear();
            }
        }
    }
    if (ws_->open && !ws_->raw.empty() && !ws_->reader.finished()) {
        const std::size_t n = ws_->raw.size();
        auto out = in.prepare(n);
        std::size_t rd = 0;
        std::size_t wr = 0;
        while (rd < n) {
            const auto s = ws_->reader.decode(ws_->raw.data() + rd, n - rd, out.data() + wr);
            rd += s.consumed;
            wr += s.produced;
            if (s.event == ws::FrameReader::Event::ping) {
                queue_frame(ws::Opcode::pong, ws_->reader.control_payload());
            } else if (s.event == ws::FrameReader::Event::close || s.event == ws::FrameReader::Event::error) {
                in.commit(wr);
                ws_->raw.clear();
                const bool error = s.event == ws::FrameReader::Event::error;
                if (!ws_->close_sent) {
                    ws_->close_sent = true;
                    const std::string c = ws::close_frame(ws_->reader.code());
                    queue_frame(ws::Opcode::close, as_bytes(std::string_view(c).substr(2)));
                }
                error_ = error ? "WebSocket: " + std::string(ws_->reader.error())
                               : "connection closed by the broker (WebSocket close " +
                                     std::to_string(ws_->reader.code()) + ")";
                return error ? ReadStatus::error : ReadStatus::closed;
            }
        }
        in.commit(wr);
        ws_->raw.consume(rd);
    }
    if (st != ReadStatus::ok && !ws_->open && error_.find("closed") != std::string::npos) {
        error_ = "connection closed during the WebSocket upgrade";
    }
    return st;
}

Transport::ReadStatus Transport::read_stream(ByteBuffer& in) {
    // Bounded so that one busy connection cannot starve writing and timers.
    constexpr std::size_t chunk = 256 * 1024;
    for (int round = 0; round < 4; ++round) {
        ssize_t n;
        std::byte* dst;
        ByteBuffer* target = tls_ ? &tls_in_ : &in;
        auto room = target->prepare(chunk);
        dst = room.data();
        do {
            n = ::recv(fd_.get(), dst, chunk, 0);
        } while (n < 0 && errno == EINTR);
        if (n == 0) {
            // Mid-handshake, a close usually means a plain MQTT port that
            // could not parse our ClientHello.
            error_ = tls_ && !tls_->handshake_done()
                         ? "TLS handshake failed: the broker closed the connection (is this a TLS port?)"
                         : "connection closed by the broker";
            return ReadStatus::closed;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return ReadStatus::ok;
            error_ = std::string("read failed: ") + std::strerror(errno);
            return ReadStatus::error;
        }
        target->commit(static_cast<std::size_t>(n));
        if (tls_) {
            tls_->feed(tls_in_.view());
            tls_in_.clear();
            for (;;) {
                auto out = in.prepare(16 * 1024);
                const net::TlsIo io = tls_->read_plain(out);
                if (io.status == net::TlsStatus::ok && io.bytes > 0) {
                    in.commit(io.bytes);
                    continue;
                }
                if (io.status == net::TlsStatus::closed) {
                    error_ = "connection closed by the broker";
                    return ReadStatus::closed;
                }
                if (io.status == net::TlsStatus::error) {
                    error_ = "TLS: " + tls_->last_error();
                    return ReadStatus::error;
                }
                break;
            }
            // The handshake may have produced output (or finished, letting
            // queued plaintext go).
            drain_tls_output();
        }
        if (static_cast<std::size_t>(n) < chunk) return ReadStatus::ok;
    }
    return ReadStatus::ok;
}

void Transport::shutdown() noexcept {
    if (ws_ && ws_->open && !ws_->close_sent) {
        ws_->close_sent = true;
        const std::byte normal[2] = {std::byte{0x03}, std::byte{0xe8}};  // 1000
        queue_frame(net::ws::Opcode::close, Bytes(normal, 2));
    }
    if (tls_) {
        tls_->shutdown();
        drain_tls_output();
    }
}

}  // namespace mqttools::client_detail
