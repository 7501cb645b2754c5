// MQTT over WebSocket for the broker: a Transport over another Transport
// (plain TCP for ws, TLS for wss), so the Connection, its streaming MQTT
// decoder and its output queue are the same as for any client.
//
// In: the upgrade request is read and answered (101, or an HTTP error and
// a close); then frames are decoded in the caller's read buffer, unmasked
// in place, and only MQTT bytes are handed up (net/websocket.hpp).
// Out: one unmasked binary frame covers everything the caller offers in
// one write (often several queued packets); its header goes in front of
// the caller's iovecs in the same gathered write, so no payload is copied
// per subscriber. A frame the socket takes only partly is continued, with
// no new header, on the next write: the caller's queue still starts with
// the rest of it. Control frames (101, pong, close) wait for a frame
// boundary.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "net/transport.hpp"
#include "net/websocket.hpp"

namespace mqttools::net {

class WsTransport final : public Transport {
public:
    // max_frame: the largest data frame payload accepted (the broker's
    // maximum packet size): 1009 beyond it. secure: wss (for log lines).
    // peer: "address:port" from the accept, kept for log lines.
    WsTransport(std::unique_ptr<Transport> inner, std::shared_ptr<const ws::ServerSettings> settings,
                std::uint64_t max_frame, bool secure, std::string peer);
    ~WsTransport() override;

    int fd() const noexcept override { return inner_->fd(); }
    IoResult read(MutableBytes out) noexcept override;
    IoResult write(const iovec* iov, int count) noexcept override;
    bool has_pending() const noexcept override;
    IoResult flush() noexcept override;
    bool wants_write() const noexcept override { return inner_->wants_write() || has_pending(); }
    void close_gracefully() noexcept override;
    std::string_view label() const noexcept override { return secure_ ? "wss" : "ws"; }
    std::string_view error() const noexcept override { return error_; }
    // A refused upgrade is logged after its answer went out, often after
    // the peer reset the connection: the address is kept from the accept.
    std::string_view known_peer() const noexcept override { return peer_; }

    Transport& inner() noexcept { return *inner_; }
    bool handshake_done() const noexcept { return phase_ != Phase::handshake && phase_ != Phase::refused; }
    const std::string& path() const noexcept { return path_; }

    // Control frames waiting above this size are not added to (a peer
    // pinging faster than it reads gets answers for some pings only,
    // which RFC 6455 5.5.3 allows).
    static constexpr std::size_t max_control_backlog = 4096;

private:
    enum class Phase : std::uint8_t {
        handshake,  // reading the upgrade request
        open,       // frames both ways
        closing,    // a Close frame is queued or sent: no more data frames
        refused,    // an HTTP error is queued: then the connection ends
    };

    IoResult read_handshake(MutableBytes out) noexcept;
    IoResult read_frames(MutableBytes out, std::size_t have) noexcept;
    void queue_control(std::string_view bytes);
    void queue_close(std::uint16_t code);
    IoStatus send_control() noexcept;
    bool at_boundary() const noexcept { return frame_left_ == 0 && header_sent_ == header_len_; }

    std::unique_ptr<Transport> inner_;
    std::shared_ptr<const ws::ServerSettings> settings_;
    ws::FrameReader reader_;
    std::string request_;      // the upgrade request while it is incomplete
    std::string control_out_;  // HTTP answers and control frames, whole
    std::size_t control_sent_ = 0;
    std::string path_;
    std::string error_;
    std::string peer_;
    std::uint64_t frame_left_ = 0;  // payload of the outgoing frame not yet written
    std::byte header_[ws::max_header_size] = {};
    std::uint8_t header_len_ = 0;
    std::uint8_t header_sent_ = 0;
    Phase phase_ = Phase::handshake;
    bool secure_;
};

}  // namespace mqttools::net
