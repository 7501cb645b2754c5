// One client connection's byte pipe: a non-blocking TCP socket, optionally
// with TLS (net::TlsSession over memory BIOs), optionally carrying MQTT in
// WebSocket frames (MQTT 5 chapter 6: an HTTP upgrade, then masked binary
// frames out and binary frames in). Used by the I/O thread only, after
// tcp_connect() made the socket in start().
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "client/byte_buffer.hpp"
#include "client/unique_fd.hpp"
#include "net/tls.hpp"
#include "net/websocket.hpp"

namespace mqttools::client_detail {

// Resolves host and connects to the first address that accepts within
// `timeout`. Returns a non-blocking socket with TCP_NODELAY; throws
// ConnectionError ("cannot connect to 'host:port': Connection refused").
// A non-empty `bind_address` is bound first (mosquitto_pub's -A); only
// addresses of its family are tried.
UniqueFd tcp_connect(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout,
                     const std::string& bind_address = {});

// MQTT over WebSocket: the Host header value and the request path.
struct WebSocketTarget {
    std::string host;  // "broker.example.com:8080"
    std::string path;  // "/mqtt"
};

class Transport {
public:
    // tls == nullptr: plain TCP. server_name: SNI and hostname check ("" for
    // none). websocket: upgrade first, then frames.
    Transport(UniqueFd fd, std::shared_ptr<const net::TlsContext> tls, const std::string& server_name,
              const WebSocketTarget* websocket = nullptr);
    ~Transport();

    int fd() const noexcept { return fd_.get(); }

    // Takes every byte of `plain` (leaving it empty) to send in order.
    void queue(ByteBuffer& plain);
    // Writes queued bytes until the socket would block. False on error.
    bool flush();
    // Bytes not yet handed to the kernel.
    bool pending() const noexcept;

    enum class ReadStatus { ok, closed, error };
    // Reads what the socket has (bounded) and appends the plaintext to `in`.
    ReadStatus read(ByteBuffer& in);

    // TLS close_notify (queued; flush() sends it).
    void shutdown() noexcept;

    const std::string& error() const noexcept { return error_; }
    // Bytes handed to the kernel so far (for the keep-alive timer).
    std::uint64_t bytes_written() const noexcept { return written_; }

private:
    bool drain_tls_output();
    // The byte stream under the WebSocket layer (or the only one).
    void queue_stream(ByteBuffer& bytes);
    ReadStatus read_stream(ByteBuffer& in);
    // WebSocket: frames `payload` (masked, RFC 6455 5.3) onto the stream.
    void queue_frame(net::ws::Opcode opcode, Bytes payload);
    ReadStatus read_websocket(ByteBuffer& in);

    struct WebSocket {
        explicit WebSocket(std::uint64_t max_frame) : reader(false, max_frame) {}
        std::string key;
        bool open = false;       // the 101 arrived
        bool close_sent = false;
        ByteBuffer raw;          // stream bytes not yet decoded
        ByteBuffer held;         // MQTT bytes queued before the 101
        net::ws::FrameReader reader;
    };
    std::unique_ptr<WebSocket> ws_;

    UniqueFd fd_;
    std::unique_ptr<net::TlsSession> tls_;
    ByteBuffer out_;        // bytes for the socket (ciphertext with TLS)
    ByteBuffer tls_plain_;  // plaintext waiting for the TLS handshake
    ByteBuffer tls_in_;     // ciphertext read, before it is fed
    std::string error_;
    std::uint64_t written_ = 0;
};

}  // namespace mqttools::client_detail
