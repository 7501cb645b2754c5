// The client side of mqtt_load: many MQTT 5 connections in one epoll set,
// each connected, CONNACKed and (for subscribers) SUBACKed before traffic.
// Packets are encoded and decoded with the project's codec.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "mqttools/codec.hpp"
#include "net/tls.hpp"
#include "net/websocket.hpp"

namespace bench {

enum class Role : std::uint8_t { publisher, subscriber, idle };
enum class ConnState : std::uint8_t { connecting, wait_connack, wait_suback, ready, closed };

struct Conn {
    UniqueFd fd;
    std::uint32_t index = 0;
    Role role = Role::idle;
    std::uint32_t role_index = 0;
    ConnState state = ConnState::connecting;
    std::string client_id;
    std::string source;  // 127.0.0.x to bind to, or empty
    std::string filter;  // subscriber: the topic it subscribes to
    int sub_qos = 0;
    std::vector<std::byte> in;
    std::size_t in_len = 0;
    std::vector<std::byte> out;
    std::size_t out_off = 0;
    bool want_out = false;
    std::uint16_t receive_maximum = 65535;  // from the CONNACK
    std::uint16_t keep_alive = 600;
    std::uint32_t session_expiry = 0;  // Session Expiry Interval in CONNECT
    int rcvbuf = 0;               // SO_RCVBUF before connect (a stuck consumer's small window); 0: default
    std::uint16_t tree_filters = 0;  // SUBSCRIBE these many tree_filter()s after the CONNACK
    bool stuck = false;           // never read once ready (ClientSet::detach)

    // Publisher state.
    std::vector<std::byte> tmpl;  // encoded PUBLISH, patched per message
    std::size_t payload_off = 0;
    std::size_t packet_id_off = 0;
    std::uint64_t seq = 0;
    std::uint64_t sent = 0;       // total
    std::uint64_t delivered = 0;  // deliveries of its messages seen by subscribers
    std::uint64_t acked = 0;      // PUBACKs
    std::vector<std::uint8_t> id_in_use;
    std::uint16_t next_id = 1;
    std::uint32_t inflight = 0;   // QoS 1 awaiting PUBACK

    // MQTT over WebSocket (ClientSet::set_websocket): the 101 being read,
    // then the frame reader for what the broker sends.
    bool ws_upgrading = false;
    std::string ws_head;
    std::unique_ptr<mqttools::net::ws::FrameReader> ws_reader;
    std::uint32_t ws_mask = 0x9e3779b9u;

    // MQTT over TLS (ClientSet::set_tls): CONNECT goes out once the
    // handshake is done; `in` and `out` hold plaintext and ciphertext
    // respectively around the session.
    std::unique_ptr<mqttools::net::TlsSession> tls;

    std::size_t pending_out() const noexcept { return out.size() - out_off; }
};

// The j-th of connection n's filters in a subscription tree: 8 in 10 exact
// ("tree/N/J/state"), one "tree/N/+/wJ" and one "tree/N/J/#".
std::string tree_filter(std::uint32_t n, std::uint32_t j);

// Called for each packet other than the handshake's: (connection, header,
// whole packet bytes, receive time).
using PacketHandler = std::function<void(Conn&, const mqttools::FixedHeader&, mqttools::Bytes, std::int64_t)>;

class ClientSet {
public:
    ClientSet();

    // Adds a connection (not yet connected). `source` is an IPv4 address in
    // 127.0.0.0/8 to bind to, or empty.
    Conn& add(Role role, std::uint32_t role_index, std::string client_id, std::string source, std::size_t in_size);

    // Starts the TCP connection of conns()[i]; false (and the connection is
    // closed) when the socket cannot even be created.
    bool start_connect(Conn& c, const std::string& host, int port);

    // One epoll_wait of at most timeout_ns, then reads, handshakes, and
    // handler calls for what arrived. Returns the number of events.
    int poll(std::int64_t timeout_ns);

    // Queues bytes on a connection and writes what the socket takes now.
    void send(Conn& c, mqttools::Bytes data);
    // Queues without writing (flush() later): batches several packets.
    void queue(Conn& c, mqttools::Bytes data);
    void flush(Conn& c);
    // Leaves the epoll set for good: nothing is read from it any more (a
    // stuck consumer); its socket stays open.
    void detach(Conn& c);

    std::vector<std::unique_ptr<Conn>>& conns() noexcept { return conns_; }
    // Every connection upgrades to WebSocket first (GET `path`, subprotocol
    // mqtt) and then sends each queued packet as one masked binary frame.
    void set_websocket(std::string path) { ws_path_ = std::move(path); }
    void set_handler(PacketHandler h) { handler_ = std::move(h); }
    // Every connection speaks TLS (no certificate check: loopback benchmarks).
    void set_tls(std::shared_ptr<const mqttools::net::TlsContext> context) { tls_ = std::move(context); }
    // User Name and Password for every CONNECT (empty username: none).
    void set_credentials(std::string username, std::string password) {
        username_ = std::move(username);
        password_ = std::move(password);
    }

    std::size_t ready_count() const noexcept { return ready_; }
    std::size_t closed_count() const noexcept { return closed_; }
    std::size_t handshaking() const noexcept { return handshaking_; }
    std::string last_error() const { return last_error_; }
    std::uint64_t refused() const noexcept { return refused_; }

private:
    void on_event(Conn& c, std::uint32_t events, std::int64_t now);
    void on_connected(Conn& c);
    void read_all(Conn& c, std::int64_t now);
    void dispatch(Conn& c, const mqttools::FixedHeader& h, mqttools::Bytes packet, std::int64_t now);
    void update_events(Conn& c);
    void close(Conn& c, const std::string& why);
    void send_connect(Conn& c);
    // WebSocket: n bytes just read at c.in[at]; returns the MQTT bytes left
    // there after the handshake and frame headers are taken out.
    std::size_t ws_input(Conn& c, std::size_t at, std::size_t n);
    // TLS: the same for n bytes of ciphertext at c.in[at] (the plaintext
    // may be longer: c.in grows).
    std::size_t tls_input(Conn& c, std::size_t at, std::size_t n);
    void tls_output(Conn& c);  // ciphertext from the session to c.out

    std::string ws_path_;  // empty: plain MQTT
    std::shared_ptr<const mqttools::net::TlsContext> tls_;

    UniqueFd ep_;
    std::vector<std::unique_ptr<Conn>> conns_;
    PacketHandler handler_;
    std::size_t ready_ = 0;
    std::size_t closed_ = 0;
    std::size_t handshaking_ = 0;
    std::uint64_t refused_ = 0;
    std::string last_error_;
    std::string username_;
    std::string password_;
};

}  // namespace bench
