// A scripted broker for the client tests: listens on 127.0.0.1, accepts one
// connection at a time, and lets the test read the client's packets and
// write the broker's, byte-exact, with the codec.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mqttools/codec.hpp"

namespace test_support {

using namespace std::chrono_literals;

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() { reset(); }
    Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = o.fd_;
            o.fd_ = -1;
        }
        return *this;
    }
    int get() const { return fd_; }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

struct RawPacket {
    mqttools::FixedHeader header;
    std::vector<std::byte> data;  // the whole packet
    mqttools::Bytes body() const {
        return mqttools::Bytes(data).subspan(header.header_size, header.remaining_length);
    }
    // Views into `data`: keep the RawPacket alive while using them.
    mqttools::Packet decode() const {
        auto r = mqttools::decode_packet(header, body(), mqttools::ProtocolVersion::v5, mqttools::Sender::client);
        if (!r) throw std::runtime_error("client sent a bad packet");
        return std::move(r).value();
    }
    template <class P>
    P as() const {
        return std::get<P>(decode());
    }
};

class FakeBroker {
public:
    FakeBroker() {
        listener_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            ::listen(listener_.get(), 8) != 0) {
            throw std::runtime_error("listen failed");
        }
        socklen_t len = sizeof a;
        ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
    }

    std::uint16_t port() const { return port_; }

    void accept(std::chrono::milliseconds timeout = 5s) {
        pollfd p{listener_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) throw std::runtime_error("no connection");
        conn_ = Fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        buffer_.clear();
    }

    // A complete packet at the front of the buffer, removed from it;
    // nullopt when the buffer holds only part of one.
    std::optional<RawPacket> take_buffered() {
        const mqttools::Frame f = mqttools::read_frame(mqttools::Bytes(buffer_));
        if (f.status == mqttools::FrameStatus::error) throw std::runtime_error("bad frame");
        if (f.status != mqttools::FrameStatus::complete) return std::nullopt;
        RawPacket p;
        p.header = f.header;
        p.data.assign(buffer_.begin(), buffer_.begin() + f.header.packet_size());
        buffer_.erase(buffer_.begin(), buffer_.begin() + f.header.packet_size());
        return p;
    }

    // The next packet from the client; throws on timeout or close.
    RawPacket read(std::chrono::milliseconds timeout = 5s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (auto p = take_buffered()) return std::move(*p);
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) throw std::runtime_error("timed out waiting for a packet");
            pollfd p{conn_.get(), POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) != 1) continue;
            std::byte chunk[65536];
            const ssize_t n = ::recv(conn_.get(), chunk, sizeof chunk, 0);
            if (n <= 0) throw std::runtime_error("connection closed");
            buffer_.insert(buffer_.end(), chunk, chunk + n);
        }
    }

    // True when the client closes the connection within `timeout`
    // (packets still arriving are skipped).
    bool wait_closed(std::chrono::milliseconds timeout = 5s) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd p{conn_.get(), POLLIN, 0};
            if (::poll(&p, 1, 50) != 1) continue;
            std::byte chunk[65536];
            if (::recv(conn_.get(), chunk, sizeof chunk, 0) <= 0) return true;
        }
        return false;
    }

    template <class P>
    void send(const P& packet) {
        std::vector<std::byte> out(mqttools::encoded_size(packet, mqttools::ProtocolVersion::v5));
        mqttools::encode(packet, mqttools::ProtocolVersion::v5, out);
        send_raw(out);
    }

    void send_raw(const std::vector<std::byte>& bytes) {
        if (::send(conn_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(bytes.size())) {
            throw std::runtime_error("send failed");
        }
    }

    void connack(mqttools::ReasonCode reason = mqttools::ReasonCode::success, bool session_present = false,
                 mqttools::Properties properties = {}) {
        mqttools::ConnackPacket c;
        c.reason = reason;
        c.session_present = session_present;
        c.properties = properties;
        send(c);
    }

    // Accepts, reads the CONNECT and answers CONNACK; returns the CONNECT.
    RawPacket handshake(mqttools::Properties properties = {}, bool session_present = false) {
        accept();
        RawPacket p = read();
        if (p.header.type != mqttools::PacketType::connect) throw std::runtime_error("expected CONNECT");
        connack(mqttools::ReasonCode::success, session_present, properties);
        return p;
    }

    void close_client() { conn_.reset(); }

    // The accepted connection, for tests that write without blocking.
    int fd() const { return conn_.get(); }

    // A packet already buffered, or completed by one non-blocking recv;
    // nullopt when none is complete yet. Throws when the client closed.
    std::optional<RawPacket> read_nowait() {
        for (int round = 0; round < 2; ++round) {
            if (auto p = take_buffered()) return p;
            if (round == 1) break;
            std::byte chunk[65536];
            const ssize_t n = ::recv(conn_.get(), chunk, sizeof chunk, MSG_DONTWAIT);
            if (n == 0) throw std::runtime_error("connection closed");
            if (n < 0) return std::nullopt;
            buffer_.insert(buffer_.end(), chunk, chunk + n);
        }
        return std::nullopt;
    }

private:
    Fd listener_;
    Fd conn_;
    std::uint16_t port_ = 0;
    std::vector<std::byte> buffer_;
};

}  // namespace test_support
