// The mqttools MQTT 5.0 client: the C++ counterpart of the seed's
// mqttools.Client, with QoS 0, 1 and 2, session resume, topic aliases and TLS.
//
// Blocking calls (start, stop, subscribe, unsubscribe, flush) wait for the
// broker's answer for at most `response_timeout`. A background I/O thread
// owns the socket: it reads and dispatches packets, sends keep-alive pings,
// acknowledges incoming QoS 1/2 messages and writes what publish() queued,
// many packets per write(). publish() may be called from any thread.
//
// Received messages go to messages(); when the broker connection drops, a
// message with connection_lost set is pushed (the seed's (None, None)).
// messages() is bounded (ClientOptions::max_queued_messages): when the
// application does not keep up, the I/O thread stops reading the socket and
// TCP flow control makes the broker hold the rest.
//
// Errors are exceptions at this API edge, one type per failure, all derived
// from ClientError.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mqttools/codec.hpp"
#include "mqttools/packets.hpp"
#include "mqttools/reason_code.hpp"

namespace mqttools {

// ---------------------------------------------------------------- errors

class ClientError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The broker refused the CONNECT: what() is the reason code's name, e.g.
// "Not authorized".
class ConnectError : public ClientError {
public:
    explicit ConnectError(ReasonCode reason);
    ReasonCode reason() const noexcept { return reason_; }

private:
    ReasonCode reason_;
};

// start(resume_session = true) connected, but the broker had no session: a
// new, empty one was created (subscriptions must be made again). The client
// is connected when this is thrown.
class SessionResumeError : public ClientError {
public:
    SessionResumeError();
};

class SubscribeError : public ClientError {
public:
    explicit SubscribeError(ReasonCode reason);
    ReasonCode reason() const noexcept { return reason_; }

private:
    ReasonCode reason_;
};

class UnsubscribeError : public ClientError {
public:
    explicit UnsubscribeError(ReasonCode reason);
    ReasonCode reason() const noexcept { return reason_; }

private:
    ReasonCode reason_;
};

// A publish the broker's limits forbid (Maximum Packet Size, Maximum QoS,
// Retain Available) or one the broker answered with an error reason code.
class PublishError : public ClientError {
public:
    PublishError(ReasonCode reason, const std::string& what);
    ReasonCode reason() const noexcept { return reason_; }

private:
    ReasonCode reason_;
};

// The broker did not answer within response_timeout.
class TimeoutError : public ClientError {
public:
    TimeoutError();
};

// No TCP/TLS connection could be made (refused, unreachable, bad
// certificate...), or the connection dropped while waiting for an answer, or
// the client is not started.
class ConnectionError : public ClientError {
public:
    using ClientError::ClientError;
};

// ---------------------------------------------------------------- options

struct SubscriptionRequest {
    std::string topic;
    std::uint8_t retain_handling = 0;  // 0, 1 or 2 (spec 3.8.3.1)
    QoS qos = QoS::at_most_once;       // maximum QoS
    bool no_local = false;             // v5 only (spec 3.8.3.1)
    bool retain_as_published = false;  // v5 only
    // SUBSCRIBE User Properties (v5 only).
    std::vector<std::pair<std::string, std::string>> user_properties{};
};

// Optional PUBLISH properties.
struct PublishProperties {
    std::optional<std::string> response_topic;
    std::optional<std::string> correlation_data;
    std::optional<std::string> content_type;
    std::optional<std::uint8_t> payload_format_indicator;
    std::optional<std::uint32_t> message_expiry_interval;
    std::vector<std::pair<std::string, std::string>> user_properties;
};

// Called for every packet sent or received when set in ClientOptions (the
// CLI's -d): `sent` tells the direction. Runs on the I/O thread or the
// caller's thread, with the client's lock held: it must not call the client.
using PacketTrace = std::function<void(bool sent, const Packet& packet)>;

struct ClientOptions {
    std::string host = "localhost";
    std::uint16_t port = 1883;
    // "" : "mqttools-" + 14 random hex characters. An Assigned Client
    // Identifier from the broker replaces it.
    std::string client_id;

    std::string will_topic;  // "" : no will
    std::string will_message;
    bool will_retain = false;
    QoS will_qos = QoS::at_most_once;
    // Will Properties (v5 only): will_properties' PUBLISH-like fields and the
    // Will Delay Interval (spec 3.1.3.2).
    PublishProperties will_properties;
    std::optional<std::uint32_t> will_delay_interval;

    // MQTT 5.0 (default) or 3.1.1: in 3.1.1 no properties are sent and none
    // of the v5-only options apply.
    ProtocolVersion protocol_version = ProtocolVersion::v5;
    // Local address to bind the socket to before connecting ("" : any).
    std::string bind_address;
    // More CONNECT properties (v5 only).
    std::vector<std::pair<std::string, std::string>> connect_user_properties;
    std::optional<std::uint8_t> request_problem_information;
    std::optional<std::uint8_t> request_response_information;
    // Properties of the DISCONNECT stop() sends (v5 only): a new Session
    // Expiry Interval, User Properties.
    std::optional<std::uint32_t> disconnect_session_expiry_interval;
    std::vector<std::pair<std::string, std::string>> disconnect_user_properties;
    // See PacketTrace.
    PacketTrace packet_trace;

    std::uint16_t keep_alive_s = 60;  // 0 disables keep alive
    std::chrono::milliseconds response_timeout{5000};

    // Topics published with a topic alias instead of the name (as many as
    // the broker's Topic Alias Maximum allows, in this order).
    std::vector<std::string> topic_aliases;
    // Aliases the broker may assign to messages it sends us.
    std::uint16_t topic_alias_maximum = 10;
    std::uint32_t session_expiry_interval = 0;  // 0xffffffff: never expires

    // Subscribed to at the end of every successful start().
    std::vector<SubscriptionRequest> subscriptions;

    // Delays between connection attempts in start(): each is used once, the
    // last one repeatedly. nullopt: 1, 2, 4, 8 s. Empty: one attempt, its
    // error is thrown.
    std::optional<std::vector<std::chrono::milliseconds>> connect_delays;
    // 0: retry until connected (the seed). N: at most N attempts, then the
    // last error is thrown.
    unsigned max_connect_attempts = 0;

    std::optional<std::string> username;
    std::optional<std::string> password;

    // TLS: on when `tls` is set or a CA file is given.
    bool tls = false;
    std::string cafile;        // "" : the system's trusted CAs
    bool check_hostname = true;
    std::string certfile;      // client certificate, optional
    std::string keyfile;
    std::string capath;        // a directory of hashed CA certificates
    std::string tls_version;   // "" (any), "tlsv1.2" or "tlsv1.3": the only version offered

    // MQTT over WebSocket (ws://, or wss:// with `tls`): an HTTP upgrade to
    // `websocket_path` offering subprotocol "mqtt", then binary frames.
    bool websocket = false;
    std::string websocket_path = "/mqtt";

    // Our inbound QoS 1/2 window and largest packet we accept (0: no limit),
    // sent in CONNECT.
    std::uint16_t receive_maximum = 65535;
    std::uint32_t maximum_packet_size = 0;

    // The most received messages messages() holds (0: no limit). When it is
    // full the I/O thread stops reading the socket, so TCP flow control
    // pushes back on the broker instead of memory growing (the broker then
    // holds, or by its own limits drops, what follows, as for any slow
    // consumer); reading resumes as soon as the application takes a message.
    // A QoS 1/2 message is acknowledged only once it is queued, so none is
    // lost. While reading is paused the connection stays up: acks for queued
    // messages and keep-alive PINGREQs are still written, and the keep-alive
    // wait for PINGRESP is suspended (it is behind the unread messages). But
    // nothing else from the broker is read either: subscribe(), unsubscribe()
    // and flush() time out, and a QoS 1/2 publish() waiting for room in the
    // broker's Receive Maximum waits, until the application takes messages.
    // The connection_lost item may come on top of the bound.
    std::size_t max_queued_messages = 10000;
};

// ---------------------------------------------------------------- messages

struct Message {
    std::string topic;
    std::string payload;  // bytes, not necessarily text
    bool retain = false;
    QoS qos = QoS::at_most_once;
    std::uint16_t packet_id = 0;  // as received (0 for QoS 0)
    std::optional<std::string> response_topic;
    std::optional<std::string> correlation_data;
    std::optional<std::string> content_type;
    std::optional<std::uint8_t> payload_format_indicator;
    std::optional<std::uint32_t> message_expiry_interval;
    std::vector<std::pair<std::string, std::string>> user_properties;
    // Set on the item pushed when the broker connection is lost (topic and
    // payload are then empty).
    bool connection_lost = false;
};


// A thread-safe FIFO of received messages. Its capacity is a bound the
// client's I/O thread keeps to (push() itself always accepts): it checks
// full_or_notify() before it reads another message.
class MessageQueue {
public:
    explicit MessageQueue(std::size_t capacity = 0);  // 0: no bound
    void push(Message message);
    // Waits up to `timeout` for a message; nullopt when none arrived.
    std::optional<Message> pop(std::chrono::milliseconds timeout);
    // Waits for ever.
    Message pop();
    std::optional<Message> try_pop();
    std::size_t size() const;
    void clear();

    std::size_t capacity() const noexcept { return capacity_; }
    // The largest size() seen since construction (or reset_high_water()).
    std::size_t high_water() const;
    void reset_high_water();

    // For the client's I/O thread: true when size() >= capacity(); the
    // callback given to on_space() then runs once, on the thread that next
    // takes a message and so makes room (after the queue's lock is released).
    bool full_or_notify();
    void on_space(std::function<void()> callback);

private:
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<Message> items_;
    std::size_t capacity_ = 0;
    std::size_t high_water_ = 0;
    bool notify_on_space_ = false;
    std::function<void()> on_space_;

    // After a pop or clear (lock held): whether on_space_ must run now.
    bool take_notification_locked();
    void notify(bool due);
};

// What the broker granted in CONNACK (spec 3.2.2.3), after defaults.
struct BrokerLimits {
    std::uint16_t receive_maximum = 65535;        // our outbound QoS 1/2 window
    std::uint32_t maximum_packet_size = 0;        // 0: no limit
    std::uint16_t topic_alias_maximum = 0;        // aliases we may use
    std::optional<std::uint16_t> server_keep_alive;
    QoS maximum_qos = QoS::exactly_once;
    bool retain_available = true;
    bool session_present = false;
};

// ---------------------------------------------------------------- client

class Client {
public:
    explicit Client(ClientOptions options);
    ~Client();  // stop()s, without throwing
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Connects, sends CONNECT (clean start unless resume_session), waits for
    // CONNACK, resends unacknowledged QoS 1/2 messages of a resumed session
    // (PUBLISH with DUP set, or PUBREL, [MQTT-4.4.0-1]), then subscribes to
    // options.subscriptions. Throws ConnectionError, TimeoutError,
    // ConnectError, SessionResumeError or SubscribeError (retried with the
    // connect delays first, except SessionResumeError/SubscribeError and
    // refusals that another attempt cannot fix).
    void start(bool resume_session = false);

    // Sends DISCONNECT (Normal disconnection), flushes and closes. The
    // session state (unacknowledged QoS 1/2) is kept for start(true).
    void stop() noexcept;

    // Queues one PUBLISH. QoS 0 returns at once (the I/O thread writes it
    // soon, batched with others); QoS 1/2 first waits for room in the
    // broker's Receive Maximum window. Thread-safe. Throws ConnectionError
    // when not connected, PublishError when the broker's limits forbid it.
    void publish(std::string_view topic, std::string_view payload, bool retain = false,
                 QoS qos = QoS::at_most_once, const PublishProperties& properties = {});

    // Waits until every queued packet has been written and the broker has
    // read it (a PINGREQ/PINGRESP round trip, answered in order after every
    // earlier packet) and every QoS 1/2 publish is complete (PUBACK or
    // PUBCOMP). Throws TimeoutError or ConnectionError.
    void flush(std::chrono::milliseconds timeout);

    // Blocking SUBSCRIBE / UNSUBSCRIBE with one filter. Returns the granted
    // QoS. Throws SubscribeError / UnsubscribeError with the broker's reason,
    // TimeoutError, ConnectionError.
    QoS subscribe(std::string_view topic, std::uint8_t retain_handling = 0, QoS qos = QoS::at_most_once);
    QoS subscribe(const SubscriptionRequest& request);
    void unsubscribe(std::string_view topic);

    // QoS 1/2 publishes the broker refused (an error reason code in PUBACK
    // or PUBREC, spec 3.4.2.1), since construction, and the last refusal.
    struct Refusals {
        std::uint64_t count = 0;
        ReasonCode last_reason = ReasonCode::success;
        std::string last_topic;
    };
    Refusals refusals() const;

    MessageQueue& messages() noexcept;
    std::string client_id() const;
    BrokerLimits broker_limits() const;
    bool connected() const noexcept;
    // QoS 1/2 publishes not yet completed (kept across stop()/start(true)).
    std::size_t inflight() const;

    // The reason code of the broker's DISCONNECT, when it sent one.
    std::optional<ReasonCode> disconnect_reason() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// "mqttools-" + 14 random hex characters.
std::string make_client_id();

}  // namespace mqttools
