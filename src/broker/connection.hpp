// One client's network connection: its transport, the bytes read but not
// yet decoded, its output queue, and the protocol state of the connection
// (spec 4.1: the session is separate and outlives it). The Broker holds the
// logic; the Connection does the I/O: read up to 64 KiB, decode every
// complete packet in place, keep the partial tail, and write what is
// queued once per reactor turn.
#pragma once

#include <sys/epoll.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "broker/deadline_wheel.hpp"
#include "broker/outbound_aliases.hpp"
#include "broker/retained_backlog.hpp"
#include "broker/route_cache.hpp"
#include "broker/session.hpp"
#include "mqttools/codec.hpp"
#include "net/output_queue.hpp"
#include "net/reactor.hpp"
#include "net/socket.hpp"
#include "net/transport.hpp"

namespace mqttools::broker {

class Broker;

// Per-packet debug lines, like `mosquitto -v`: true while the log level is
// debug or trace (refreshed by the broker every housekeeping pass), so at
// info a packet costs one predictable branch and nothing else.
inline bool packet_debug = false;

class Connection final : public net::IoHandler, public DeadlineLink {
public:
    // connect_pending: CONNECT taken, CONNACK waits for work off the reactor
    // (a password hash on the AuthPool). Reading pauses meanwhile: what the
    // client sent after CONNECT stays unprocessed until the CONNACK is out
    // ([MQTT-3.1.4-5] forbids processing it if the CONNECT is refused).
    enum class State : std::uint8_t { awaiting_connect, connect_pending, connected, closing };

    Connection(Broker& broker, std::unique_ptr<net::Transport> transport);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    void on_io(std::uint32_t events) override;

    // Encodes a packet into this connection's output. False when it cannot
    // be encoded or is larger than the client's Maximum Packet Size
    // ([MQTT-3.1.2-24]): then nothing is queued.
    template <class P>
    bool send(const P& packet) {
        const std::size_t size = encoded_size(packet, version);
        if (size == 0 || size > max_packet_size_out) return false;
        net::OutputQueue& out = sink();
        auto space = out.reserve(size);
        out.commit(encode(packet, version, space));
        if (packet_debug) [[unlikely]] log_packet(false, Packet(packet));
        queued_packet();
        return true;
    }
    // send(), ahead of what collects during a deferral (begin_deferral).
    template <class P>
    bool send_now(const P& packet) {
        const bool deferred = output_deferred;
        output_deferred = false;
        const bool queued = send(packet);
        output_deferred = deferred;
        return queued;
    }
    // A PUBLISH whose payload is queued by reference to `payload` (a big
    // stored message's bytes, shared by every subscriber's output): only the
    // head is encoded here. False as for send().
    bool send_publish(const PublishPacket& packet, const net::BufferRef& payload);
    // "Received PUBLISH from ID (d0, q1, ...)" / "Sending ... to ID": never
    // payloads or passwords (describe.hpp).
    void log_packet(bool received, const Packet& packet) const;
    void log_received(const FixedHeader& header, Bytes body) const;
    // Queues an already encoded packet shared with other connections.
    void send_shared(const net::BufferRef& buffer, std::uint32_t size);

    // Writes queued output (writev); arms EPOLLOUT only when the socket is
    // full. Returns false when the connection failed and was closed.
    bool flush();
    std::size_t output_bytes() const noexcept {
        return output_deferred ? output_.bytes() + extras->deferred->bytes() : output_.bytes();
    }
    // While a SUBACK or a PUBACK waits for the cluster (cluster_holds.cpp),
    // what is sent to the connection collects aside so that nothing
    // overtakes it: a client whose SUBACK is late gets it before the
    // messages its new subscription matched, as from a single node. end_deferral() stops
    // collecting and returns what was collected; append_output() queues it.
    void begin_deferral();
    std::unique_ptr<net::OutputQueue> end_deferral();
    void append_output(net::OutputQueue& collected);
    // Stops decoding input: bytes read after the current packet are kept
    // and epoll watches only for a hang-up (EPOLLRDHUP), which closes the
    // connection as lost. resume_reading() decodes what was kept and reads on.
    void pause_reading();
    void resume_reading();
    // The packet being handled waits for an answer (an ACL check off the
    // reactor): it stays at the front of the input, reading pauses, and
    // resume_reading() hands it to the broker again, then what followed it.
    void hold_packet() {
        replay_packet_ = true;
        pause_reading();
    }
    bool acl_held = false;  // hold_packet() for an ACL answer (Broker::hold_for_acl)
    int fd() const noexcept { return transport_->fd(); }
    net::Transport& transport() noexcept { return *transport_; }
    // "address:port", for log lines (not stored: see net::peer_address);
    // "address:port (ws)" for WebSocket clients.
    std::string peer() const {
        const std::string_view over = transport_->label();
        const std::string_view kept = transport_->known_peer();
        std::string address = kept.empty() ? net::peer_address(fd()) : std::string(kept);
        return over.empty() ? address : address + " (" + std::string(over) + ")";
    }

    // ---- protocol state, owned by the Broker's protocol code.
    // Members are ordered by size so an idle connection wastes no padding:
    // with 10,000+ idle clients every word counts (docs/benchmarks.md).
    Session* session = nullptr;
    std::string client_id;
    std::string username;
    Clock::time_point last_received;

    // What only some connections need, allocated on first use: an idle
    // client pays one pointer for it.
    struct TopicAliases {
        // Client -> broker: index = alias (1..topic_alias_maximum).
        std::vector<std::string> in;
        // Broker -> client, within the client's Topic Alias Maximum.
        OutboundAliases out;
    };
    struct Extras {
        TopicAliases aliases;
        RouteCache route;  // the last topic this client published to
        std::uint64_t connect_ticket = 0;  // while State::connect_pending
        std::unique_ptr<RetainedBacklog> retained;  // on the broker's retained_work_ list
        std::unique_ptr<net::OutputQueue> deferred;  // with output_deferred
        std::uint32_t acks_held = 0;  // Broker::held_acks_ entries for this connection
        std::uint32_t pings_held = 0;  // of them, PINGRESP marks
        // What the AuthChain said at CONNECT (security_hooks.cpp): kept to
        // bind the rules again after a reload.
        std::shared_ptr<const auth::ClientRules> credentials;
        bool superuser = false;
        bool verified = false;  // credentials checked (a parked CONNECT goes on)
        // The rules bound at CONNECT, until the session takes them.
        std::unique_ptr<auth::ClientAuthz> authz;
        net::Reactor::TimerId expiry_timer{};  // the credentials expire (JWT exp)
    };
    std::unique_ptr<Extras> extras;
    Extras& more() {
        if (!extras) extras = std::make_unique<Extras>();
        return *extras;
    }
    TopicAliases& topic_aliases() { return more().aliases; }
    std::uint32_t held_acks() const noexcept { return extras ? extras->acks_held : 0; }

    // Slow consumer accounting (drops are counted broker-wide in $SYS).
    Clock::time_point over_bound_since{};

    // What the client announced in CONNECT.
    std::uint32_t max_packet_size_out = max_packet_size_limit;
    std::uint32_t index = 0;  // in the broker's connection table
    std::uint16_t receive_maximum_out = 65535;
    std::uint16_t topic_alias_maximum_out = 0;
    std::uint16_t keep_alive = 0;  // negotiated, seconds

    State state = State::awaiting_connect;
    ProtocolVersion version = ProtocolVersion::v5;
    bool request_problem_information = true;
    bool has_username = false;  // CONNECT had a User Name (possibly empty)
    bool mqtt31 = false;        // MQTT 3.1 ("MQIsdp"), otherwise spoken as 3.1.1
    bool clean_start = true;
    // No will when it closes: a normal DISCONNECT arrived, or the broker
    // closes it for a cluster that decides the will (cluster_fence.cpp).
    bool will_suppressed = false;
    bool dirty = false;            // on the broker's flush list
    bool closed_by_peer = false;
    // The client ended with a normal DISCONNECT (not 0x04 "with will"),
    // not the broker on its own account: the log's "disconnected." and
    // EMQX's "normal" disconnect reason.
    bool sent_disconnect() const { return closed_by_peer && will_suppressed; }
    bool identity_as_username = false;  // TLS listener with use_identity_as_username
    bool drop_logged = false;
    bool published_recently = false;  // since the last housekeeping pass (route cache)
    // A Mosquitto-style 3.1.1 bridge (try_private's protocol level 0x84):
    // its subscriptions get No Local and Retain As Published.
    bool bridge_peer = false;
    bool output_deferred = false;  // see begin_deferral()

    // Output waits for a store batch (broker/persistence.hpp) to reach the
    // disk: what it acknowledges must be durable first.
    bool held = false;
    // While its batch is being committed the connection is not read: what
    // it sends next would need a later batch, and holding its output for
    // ever later batches could starve it under steady traffic.
    bool reads_paused = false;
    void pause_reads(bool pause);
    // In the broker's queue of connections being set up (TLS handshake,
    // WebSocket upgrade, CONNECT; Broker::setup_readable): not read until
    // its turn comes; read_setup() is that turn.
    bool setup_queued = false;
    void queue_setup(bool queued);
    void read_setup();
    // The epoll interest besides EPOLLOUT: EPOLLRDHUP while waiting for
    // credentials, nothing while a commit holds the connection or while it
    // waits in the set-up queue, else EPOLLIN.
    std::uint32_t input_events() const noexcept {
        return reading_paused_ ? std::uint32_t{EPOLLRDHUP}
               : (reads_paused || setup_queued) ? 0u
                                                : std::uint32_t{EPOLLIN};
    }

private:
    bool want_write_ = false;  // EPOLLOUT armed (declared here to pack with the flags)
    bool reading_paused_ = false;
    bool replay_packet_ = false;

public:
    std::uint32_t held_batch = 0;  // with held: the batch (mod 2^32) it waits for

private:
    void on_readable();
    // Decodes every complete packet in data; returns the bytes consumed.
    std::size_t process(std::byte* data, std::size_t size);
    void queued_packet();
    void update_events(bool force = false);
    net::OutputQueue& sink() noexcept { return output_deferred ? *extras->deferred : output_; }

    Broker& broker_;
    std::unique_ptr<net::Transport> transport_;
    net::OutputQueue output_;
    // The partial packet left over from the last read: usually empty, so
    // an idle connection costs no read buffer.
    std::vector<std::byte> pending_;
};

}  // namespace mqttools::broker
