// A bridge to another broker (Mosquitto's `connection`): an outbound MQTT
// client that lives on the broker's reactor. Locally it is a special
// subscriber: its Session sits in the subscription trie with the `out`
// topics (No Local, Retain As Published), and Broker::deliver hands it the
// matching messages instead of queueing them for a Connection. Remotely it
// subscribes to the `in` topics and routes what arrives as if a local
// client had published it (from its own session, so No Local keeps those
// messages from going straight back out).
//
// Nothing blocks: the TCP connect is non-blocking, TLS runs through
// net::TlsTransport, host names are resolved with getaddrinfo_a, and the
// output is written once per reactor turn (Broker::before_sleep).
// bridge.cpp: connection life cycle and packet I/O; bridge_flow.cpp: the
// messages in both directions (topic mapping, QoS 1/2, the queue).
#pragma once

#include <netdb.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "broker/message.hpp"
#include "broker/session.hpp"
#include "config/config.hpp"
#include "mqttools/codec.hpp"
#include "net/reactor.hpp"
#include "net/transport.hpp"

namespace mqttools::net {
class TlsContext;
}

namespace mqttools::broker {

class Broker;
class Bridge;

// The bridge handshake between mqttoolsd brokers (MQTT 5): the bridge's
// CONNECT and the remote's CONNACK each carry this User Property with the
// broker's id (16 hex digits), so each side knows which broker a bridge
// link leads to and never routes a message back to the broker it came
// from (Broker::bridge_loop). Other brokers ignore it.
inline constexpr std::string_view bridge_property = "mqttools-bridge";
// 0 when `hex` is not 16 hex digits.
std::uint64_t parse_broker_id(std::string_view hex) noexcept;

// The bridge's local session: Session::bridge is set, so the router knows
// to cast and call owner.forward().
struct BridgeSession final : Session {
    BridgeSession(Bridge& b, std::string id) : Session(std::move(id)), owner(b) { bridge = true; }
    Bridge& owner;
};

struct BridgeCounters {
    std::string name;
    std::string state;  // "connected", "connecting", "waiting", "stopped"
    bool connected = false;
    std::string address;  // the remote in use or last tried
    std::uint64_t messages_sent = 0;      // local -> remote PUBLISH packets
    std::uint64_t messages_received = 0;  // remote -> local
    std::uint64_t bytes_sent = 0;         // payload bytes
    std::uint64_t bytes_received = 0;
    std::uint64_t connects = 0;           // CONNACKs with success
    std::uint64_t reconnects = 0;         // connects after the first
    std::uint64_t queued = 0;             // QoS 1/2 waiting or in flight
    std::uint64_t dropped = 0;            // QoS 0 while down, queue overflow, expired, too large
};

class Bridge final : public net::IoHandler {
public:
    enum class State : std::uint8_t { stopped, waiting, resolving, connecting, awaiting_connack, connected };

    Bridge(Broker& broker, config::Bridge settings);
    ~Bridge();
    Bridge(const Bridge&) = delete;
    Bridge& operator=(const Bridge&) = delete;

    // Subscribes the out topics locally and connects (automatic, once) or
    // waits for `threshold` queued messages (lazy).
    void start();
    // Broker shutdown: state 0 to the remote, DISCONNECT, close.
    void stop();

    const config::Bridge& settings() const noexcept { return cfg_; }
    // The remote's broker id (bridge_property), 0 when it did not say.
    std::uint64_t remote_broker() const noexcept { return session_.peer_broker; }
    // Broker::set_cluster: the out topics subscribed before the link existed.
    void add_cluster_interest();
    // One of the out topics matches this local topic.
    bool sends(std::string_view local) const;
    BridgeCounters counters() const;

    // bridge_flow.cpp. The router: a message matched one of the out topics.
    void forward(MessageView& m, QoS qos, bool retain);
    // Before the reactor sleeps: write what is queued.
    void flush();
    bool has_output() const noexcept { return out_.size() > out_pos_ || (transport_ && transport_->has_pending()); }

    void on_io(std::uint32_t events) override;

    // bridge_store.cpp: with persistence on, the outbound QoS 1/2 queue is
    // stored like a client's, under a key no client id can be (so it
    // survives a restart); these move it between Bridge objects.
    const std::string& store_key() const noexcept { return store_key_; }
    static bool is_store_key(std::string_view client_id) noexcept;
    // Start-up: the session the broker restored under store_key().
    void adopt_stored(Session& restored);
    // The configuration of this bridge changed (same name): the new one
    // takes the old one's queue (and its stored rows).
    void take_queue(Bridge& old);
    // Removed from the configuration: its stored rows go.
    void forget_stored();

private:
    struct Outgoing {
        enum class Step : std::uint8_t { queued, puback, pubrec, pubcomp };
        MessagePtr message;   // released once PUBREC arrived
        std::string topic;    // the remote topic; empty: message->topic
        QoS qos = QoS::at_least_once;
        bool retain = false;
        Step step = Step::queued;
        std::uint16_t packet_id = 0;
        std::uint64_t store_seq = 0;  // its row in the durable store; 0 = none
    };

    // bridge.cpp: life cycle.
    void connect_next();
    void resolved(addrinfo* list);
    void poll_resolver();
    void start_tcp(const sockaddr* addr, socklen_t len);
    bool bind_local(int fd, int family);  // bridge_bind_address; false: failed (and said so)
    void tcp_connected();
    void send_connect();
    void on_connack(const FixedHeader& header, Bytes body);
    void fail(const std::string& why, bool log_as_error = false);
    void close_socket();
    void schedule_restart();
    void on_keepalive();
    void on_idle_check();
    // round_robin = false: while on a secondary address, probe the primary
    // (a TCP connect, checked a second later) and go back once it answers.
    void schedule_primary_probe();
    void probe_primary();
    void probe_resolved(addrinfo* list);
    void probe_check();
    void stop_probe();
    void notify_local(bool up);
    void say_goodbye();  // state 0 to the remote (notifications), DISCONNECT
    void update_events();
    void on_readable();
    void handle_packet(const FixedHeader& header, Bytes body);
    const std::string& address_text() const;

    // bridge_flow.cpp: messages.
    void subscribe_local();
    void unsubscribe_local();
    void subscribe_remote();
    void on_remote_publish(const FixedHeader& header, Bytes body);
    void on_ack(const FixedHeader& header, Bytes body);
    std::size_t route_in(MessageView& m);  // sessions it reached
    void enqueue(Outgoing&& o, bool front = false);
    void pump();
    void resume_inflight(bool session_present);
    bool send_publish(Outgoing& o, bool dup);
    std::uint16_t next_packet_id();
    void drop(const char* why);
    // bridge_store.cpp: the queue's rows (no-ops without persistence).
    void store_enqueued(Outgoing& o);
    void store_state(const Outgoing& o);
    void store_done(Outgoing& o);
    bool requeue(Outgoing& o);  // remote topic under the current topics; false: not bridged any more
    // local topic -> remote topic (out) and back (in): false when no topic
    // entry maps it.
    bool map_out(std::string_view local, std::string& remote) const;
    bool map_in(std::string_view remote, std::string& local) const;
    template <class P>
    bool send(const P& packet);
    std::size_t window() const noexcept;
    std::size_t queued_bytes() const noexcept { return queued_bytes_; }

    Broker& broker_;
    config::Bridge cfg_;
    BridgeSession session_;
    State state_ = State::stopped;
    ProtocolVersion version_;
    std::size_t address_index_ = 0;
    std::string address_text_;
    std::unique_ptr<net::Transport> transport_;
    int connecting_fd_ = -1;  // owned by pending_fd_ until the transport takes it
    net::UniqueFd pending_fd_;
    bool registered_ = false;
    std::uint32_t events_ = 0;
    std::shared_ptr<const net::TlsContext> tls_;

    // Host name resolution in flight (getaddrinfo_a), polled by a timer.
    struct Resolve;
    std::unique_ptr<Resolve> resolve_;

    std::vector<std::byte> in_;
    std::vector<std::byte> out_;
    std::size_t out_pos_ = 0;

    net::Reactor::TimerId restart_timer_ = {};
    net::Reactor::TimerId deadline_timer_ = {};   // connect + CONNACK
    net::Reactor::TimerId keepalive_timer_ = {};
    net::Reactor::TimerId idle_timer_ = {};
    net::Reactor::TimerId resolve_timer_ = {};
    net::Reactor::TimerId probe_timer_ = {};
    net::UniqueFd probe_fd_;
    std::unique_ptr<Resolve> probe_resolve_;
    std::uint32_t failures_ = 0;  // consecutive, for the back-off
    bool ever_connected_ = false;
    Clock::time_point last_received_{};
    Clock::time_point last_activity_{};  // lazy: a message either way

    // What the remote announced in CONNACK.
    std::uint16_t remote_receive_maximum_ = 65535;
    std::uint32_t remote_max_packet_ = max_packet_size_limit;
    QoS remote_max_qos_ = QoS::exactly_once;
    bool remote_retain_ = true;
    std::uint16_t keepalive_ = 60;

    // Local filters subscribed in the trie (the out topics).
    std::vector<std::string> local_filters_;

    // Outbound QoS 1/2.
    std::deque<Outgoing> queue_;
    std::deque<Outgoing> inflight_;
    PacketIdSet inflight_ids_;
    std::size_t queued_bytes_ = 0;
    std::uint16_t last_packet_id_ = 0;
    std::uint16_t subscribe_id_ = 0;
    bool drop_logged_ = false;

    // Topic scratch, reused per message.
    std::string out_topic_;
    std::string in_topic_;

    // Inbound QoS 2 ids received and not yet released by PUBREL.
    PacketIdSet inbound_qos2_;

    // The durable store's rows of the queue (bridge_store.cpp).
    std::string store_key_;
    bool stored_ = false;  // the session row is written
    std::uint64_t next_store_seq_ = 1;

    BridgeCounters stats_;
};

}  // namespace mqttools::broker
