// Client::Impl: the state shared by the API calls (any thread) and the I/O
// thread. Everything under `mutex` unless marked "I/O thread only".
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "client/byte_buffer.hpp"
#include "client/transport.hpp"
#include "client/unique_fd.hpp"
#include "mqttools/client.hpp"
#include "mqttools/codec.hpp"

namespace mqttools {

namespace client_detail {

// A QoS 1/2 PUBLISH not yet completed: kept, with its own copies of the
// data, for redelivery on a resumed session ([MQTT-4.4.0-1]).
struct OutboundMessage {
    std::uint16_t packet_id = 0;
    QoS qos = QoS::at_least_once;
    bool retain = false;
    std::string topic;
    std::string payload;
    PublishProperties properties;
    bool released = false;  // QoS 2: PUBREC received, PUBREL sent
};

struct PendingRequest {  // a SUBSCRIBE or UNSUBSCRIBE waiting for its ack
    bool done = false;
    std::vector<ReasonCode> reasons;
};

struct ConnackInfo {
    ReasonCode reason = ReasonCode::success;
    BrokerLimits limits;
    std::optional<std::string> assigned_client_id;
};

// Publishers wait while this much is queued and not yet taken by the I/O
// thread: bounds memory, keeps write() chunks large.
inline constexpr std::size_t max_queued_output = 1024 * 1024;

}  // namespace client_detail

struct Client::Impl {
    using Clock = std::chrono::steady_clock;
    enum class State { idle, connecting, connected };

    explicit Impl(ClientOptions opts);

    // ---- API side (client.cpp)
    void connect_once(bool resume_session);
    void shutdown_io() noexcept;
    void wake_locked();
    void require_connected_locked() const;
    std::uint16_t allocate_packet_id_locked();
    void encode_publish_locked(const client_detail::OutboundMessage& m, bool dup);
    template <class P>
    void encode_locked(const P& packet);
    void wait_locked(std::unique_lock<std::mutex>& lock, Clock::time_point deadline, auto&& done);

    // ---- I/O thread (io_loop.cpp)
    void io_main();
    bool process_input();  // false: the connection must end; stops early when messages is full
    void wake_for_space() noexcept;
    bool handle(const Packet& packet);
    bool handle_publish(const PublishPacket& p);
    void fail(const std::string& why, std::optional<ReasonCode> send_disconnect = std::nullopt);
    template <class P>
    void put(client_detail::ByteBuffer& buffer, const P& packet);
    void refused_locked(const client_detail::OutboundMessage& m, ReasonCode reason);

    ClientOptions options;
    ProtocolVersion version = ProtocolVersion::v5;  // options.protocol_version
    std::shared_ptr<const net::TlsContext> tls;
    std::string server_name;
    MessageQueue messages;

    mutable std::mutex mutex;
    std::condition_variable cv;

    State state = State::idle;
    bool lost = false;     // the I/O thread has ended (or is ending)
    bool stop_io = false;  // asked to flush and end
    std::string io_error;
    std::thread io_thread;
    std::unique_ptr<client_detail::Transport> transport;  // used by the I/O thread while it runs
    client_detail::UniqueFd wake_fd;
    bool wake_pending = false;
    int out_waiters = 0;

    std::string client_id;
    client_detail::ByteBuffer out;  // packets queued by API threads
    std::optional<client_detail::ConnackInfo> connack;
    BrokerLimits limits;
    std::optional<ReasonCode> disconnect_reason;
    std::uint64_t pings_sent = 0;
    std::uint64_t pingresps = 0;
    Clock::time_point ping_wait_start;

    // Session state.
    std::list<client_detail::OutboundMessage> inflight;  // in send order
    std::unordered_map<std::uint16_t, std::list<client_detail::OutboundMessage>::iterator> inflight_by_id;
    std::unordered_map<std::uint16_t, client_detail::PendingRequest> requests;
    std::uint16_t next_packet_id = 1;
    Client::Refusals refusals;

    // Outbound topic aliases: topic -> alias (from options.topic_aliases);
    // alias_sent[a] once the alias is established on this connection.
    std::map<std::string, std::uint16_t, std::less<>> alias_of;
    std::vector<bool> alias_sent;

    // I/O thread only.
    client_detail::ByteBuffer rbuf;
    client_detail::ByteBuffer ctrl;  // acks and pings written by the I/O thread
    std::unordered_map<std::uint16_t, std::string> in_aliases;
    std::unordered_set<std::uint16_t> inbound_qos2;  // PUBREC sent, PUBREL not yet received
    bool got_connack = false;  // the server's first byte has been checked
    std::uint16_t keep_alive_s = 0;
    Clock::time_point last_write;
    std::uint64_t written_marker = 0;
    // messages is full: the socket is not read (TCP flow control pushes back
    // on the broker) until the application takes a message.
    bool input_paused = false;
    // The socket ended (closed or failed) while input was paused: what it
    // sent before is handled first, then the connection ends with read_error.
    bool read_ended = false;
    std::string read_error;
};

}  // namespace mqttools
