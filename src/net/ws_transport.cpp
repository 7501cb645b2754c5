#include "net/ws_transport.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace mqttools::net {

WsTransport::WsTransport(std::unique_ptr<Transport> inner, std::shared_ptr<const ws::ServerSettings> settings,
                         std::uint64_t max_frame, bool secure, std::string peer)
    : inner_(std::move(inner)),
      settings_(std::move(settings)),
      reader_(true, max_frame),
      peer_(std::move(peer)),
      secure_(secure) {}

WsTransport::~WsTransport() {
    if (phase_ != Phase::refused) return;
    // The HTTP error has been handed to the socket. Closing with unread
    // request bytes would make the kernel send a reset that can destroy
    // the answer before the client reads it: end our side and take what
    // has arrived first (bounded; the socket is non-blocking).
    const int fd = inner_->fd();
    ::shutdown(fd, SHUT_WR);
    char sink[4096];
    for (int i = 0; i < 16; ++i) {
        if (::recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0) break;
    }
}

void WsTransport::queue_control(std::string_view bytes) {
    if (control_out_.size() - control_sent_ > max_control_backlog) return;
    control_out_.append(bytes);
}

void WsTransport::queue_close(std::uint16_t code) {
    if (phase_ == Phase::closing || phase_ == Phase::refused) return;
    phase_ = Phase::closing;
    // Always queued, even over the backlog bound: it is the last frame.
    control_out_ += ws::close_frame(code);
}

IoStatus WsTransport::send_control() noexcept {
    while (control_sent_ < control_out_.size()) {
        iovec v{control_out_.data() + control_sent_, control_out_.size() - control_sent_};
        const IoResult r = inner_->write(&v, 1);
        if (r.status == IoStatus::error || r.status == IoStatus::closed) return IoStatus::error;
        if (r.status == IoStatus::would_block || r.bytes == 0) return IoStatus::would_block;
        control_sent_ += r.bytes;
    }
    control_out_.clear();
    control_sent_ = 0;
    return IoStatus::ok;
}

bool WsTransport::has_pending() const noexcept {
    return inner_->has_pending() || (!control_out_.empty() && at_boundary());
}

IoResult WsTransport::flush() noexcept {
    if (inner_->has_pending()) {
        const IoResult r = inner_->flush();
        if (r.status != IoStatus::ok || inner_->has_pending()) return {0, r.status};
    }
    if (!control_out_.empty() && at_boundary()) return {0, send_control()};
    return {};
}

void WsTransport::close_gracefully() noexcept {
    if (phase_ == Phase::handshake) {
        // No complete request before the CONNECT timeout (a slow or stalled
        // client): say so in HTTP.
        phase_ = Phase::refused;
        error_ = "no complete WebSocket upgrade request in time";
        control_out_ = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        control_sent_ = 0;
    } else if (phase_ == Phase::open && at_boundary()) {
        queue_close(ws::close_code::normal);
    }
    // Best effort, as for the caller's last flush: the socket may be full.
    if (has_pending()) (void)flush();
}

IoResult WsTransport::read(MutableBytes out) noexcept {
    switch (phase_) {
        case Phase::handshake:
            return read_handshake(out);
        case Phase::open:
            return read_frames(out, 0);
        case Phase::closing:
            return {0, IoStatus::closed};
        case Phase::refused:
            break;
    }
    return {0, IoStatus::error};
}

IoResult WsTransport::read_handshake(MutableBytes out) noexcept {
    for (int round = 0; round < 4; ++round) {
        // Whole reads (a TLS transport must not be asked for less than a
        // record): parse_request() rejects a head beyond the limit however
        // much was read, so request_ stays below the limit plus one read,
        // and what follows a complete head (a pipelined CONNECT) is decoded
        // as frames below.
        const IoResult r = inner_->read(out);
        if (r.status != IoStatus::ok) return r;
        request_.append(reinterpret_cast<const char*>(out.data()), r.bytes);
        ws::HandshakeResult h = ws::parse_request(request_, *settings_);
        if (h.status == ws::HandshakeStatus::need_more) continue;
        if (h.status == ws::HandshakeStatus::rejected) {
            phase_ = Phase::refused;
            error_ = "WebSocket upgrade refused (" + std::to_string(h.http_status) + "): " + h.reason;
            // 0x10: the fixed header of CONNECT, an MQTT client on this port.
            if (!request_.empty() && request_[0] == '\x10') {
                error_ += " (an MQTT CONNECT: MQTT clients need a listener with protocol = \"mqtt\")";
            }
            control_out_ = std::move(h.response);
            control_sent_ = 0;
            (void)send_control();
            std::string().swap(request_);
            return {0, IoStatus::error};
        }
        phase_ = Phase::open;
        path_ = std::move(h.path);
        control_out_ = std::move(h.response);
        control_sent_ = 0;
        if (send_control() == IoStatus::error) return {0, IoStatus::error};
        // Bytes after the request are already frames.
        const std::size_t extra = request_.size() - h.consumed;
        std::memcpy(out.data(), request_.data() + h.consumed, extra);
        std::string().swap(request_);
        return read_frames(out, extra);
    }
    return {0, IoStatus::would_block};
}

// `have` bytes already sit at the start of `out` (after the handshake).
IoResult WsTransport::read_frames(MutableBytes out, std::size_t have) noexcept {
    // Bounded: a peer sending only pings must not hold the reactor. What
    // stays in the socket wakes the level-triggered reactor again.
    for (int round = 0; round < 8; ++round) {
        std::size_t n = have;
        have = 0;
        if (n == 0) {
            const IoResult r = inner_->read(out);
            if (r.status != IoStatus::ok) return r;
            n = r.bytes;
        }
        std::byte* data = out.data();
        std::size_t rd = 0;
        std::size_t wr = 0;
        while (rd < n) {
            const ws::FrameReader::Step s = reader_.decode(data + rd, n - rd, data + wr);
            rd += s.consumed;
            wr += s.produced;
            switch (s.event) {
                case ws::FrameReader::Event::none:
                case ws::FrameReader::Event::pong:
                    break;
                case ws::FrameReader::Event::ping: {
                    const Bytes p = reader_.control_payload();
                    queue_control(ws::control_frame(ws::Opcode::pong, p));
                    break;
                }
                case ws::FrameReader::Event::close:
                    // Answer with the same code (RFC 6455 5.5.1); the MQTT
                    // bytes before it are still handed up.
                    queue_close(reader_.code());
                    return wr > 0 ? IoResult{wr, IoStatus::ok} : IoResult{0, IoStatus::closed};
                case ws::FrameReader::Event::error:
                    error_ = "WebSocket protocol error (" + std::to_string(reader_.code()) + "): " +
                             std::string(reader_.error());
                    queue_close(reader_.code());
                    return {0, IoStatus::error};
            }
        }
        if (!control_out_.empty() && at_boundary()) {
            if (send_control() == IoStatus::error) return {0, IoStatus::error};
        }
        if (wr > 0) return {wr, IoStatus::ok};
    }
    return {0, IoStatus::would_block};
}

IoResult WsTransport::write(const iovec* iov, int count) noexcept {
    if (phase_ == Phase::handshake) return {0, IoStatus::would_block};
    if (phase_ != Phase::open) return {0, IoStatus::error};  // nothing may follow a Close
    if (!control_out_.empty() && at_boundary()) {
        const IoStatus st = send_control();
        if (st != IoStatus::ok) return {0, st};
    }
    constexpr int max_iov = 64;
    std::size_t taken = 0;  // application bytes written
    int index = 0;          // position in iov
    std::size_t offset = 0;
    for (int round = 0; round < 4 && index < count; ++round) {
        if (at_boundary()) {
            // A new frame over everything offered.
            std::uint64_t total = 0;
            for (int i = index; i < count; ++i) total += iov[i].iov_len;
            total -= offset;
            if (total == 0) break;
            header_len_ = static_cast<std::uint8_t>(
                ws::encode_header(header_, ws::Opcode::binary, true, total, nullptr));
            header_sent_ = 0;
            frame_left_ = total;
        }
        iovec v[max_iov + 1];
        int k = 0;
        std::size_t offered = 0;
        if (header_sent_ < header_len_) {
            v[k++] = {header_ + header_sent_, static_cast<std::size_t>(header_len_ - header_sent_)};
            offered += v[0].iov_len;
        }
        std::uint64_t room = frame_left_;
        std::size_t off = offset;
        for (int i = index; i < count && k <= max_iov && room > 0; ++i) {
            const std::size_t len = std::min<std::uint64_t>(iov[i].iov_len - off, room);
            if (len > 0) {
                v[k++] = {static_cast<char*>(iov[i].iov_base) + off, len};
                offered += len;
                room -= len;
            }
            off = 0;
        }
        const IoResult r = inner_->write(v, k);
        if (r.status == IoStatus::error || r.status == IoStatus::closed) return {0, IoStatus::error};
        std::size_t n = r.status == IoStatus::ok ? r.bytes : 0;
        const std::size_t h = std::min<std::size_t>(n, header_len_ - header_sent_);
        header_sent_ = static_cast<std::uint8_t>(header_sent_ + h);
        n -= h;
        frame_left_ -= n;
        taken += n;
        // Advance through the caller's iovecs.
        while (n > 0 && index < count) {
            const std::size_t rest = iov[index].iov_len - offset;
            if (n < rest) {
                offset += n;
                n = 0;
            } else {
                n -= rest;
                offset = 0;
                ++index;
            }
        }
        while (index < count && iov[index].iov_len == offset) {
            offset = 0;
            ++index;
        }
        if (r.status != IoStatus::ok || r.bytes < offered) break;  // the socket is full
    }
    if (taken == 0) return {0, IoStatus::would_block};
    return {taken, IoStatus::ok};
}

}  // namespace mqttools::net
