// Client API: connecting (with retries), publishing, subscribing. The I/O
// thread is in io_loop.cpp.
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "client/client_impl.hpp"

namespace mqttools {

using client_detail::OutboundMessage;
using client_detail::UniqueFd;
using Clock = std::chrono::steady_clock;

namespace {

// Refusals another attempt may fix; the others (bad credentials, banned,
// not authorized...) fail at once.
bool retryable(ReasonCode reason) {
    switch (reason) {
        case ReasonCode::server_unavailable:
        case ReasonCode::server_busy:
        case ReasonCode::quota_exceeded:
        case ReasonCode::connection_rate_exceeded:
        case ReasonCode::unspecified_error:
        case ReasonCode::implementation_specific_error:
            return true;
        default:
            return false;
    }
}

// Fills the PUBLISH properties from the caller's optional values; `pairs`
// holds the user property views (heap only when there are any).
void fill_properties(const PublishProperties& in, Properties& out, std::vector<StringPair>& pairs) {
    if (in.response_topic) out.response_topic = *in.response_topic;
    if (in.correlation_data) out.correlation_data = as_bytes(*in.correlation_data);
    if (in.content_type) out.content_type = *in.content_type;
    out.payload_format_indicator = in.payload_format_indicator;
    out.message_expiry_interval = in.message_expiry_interval;
    if (!in.user_properties.empty()) {
        pairs.reserve(in.user_properties.size());
        for (const auto& [k, v] : in.user_properties) pairs.push_back({k, v});
        out.user_properties = pairs;
    }
}

// The string pairs of a User Property list as codec views.
std::vector<StringPair> pair_views(const std::vector<std::pair<std::string, std::string>>& in) {
    std::vector<StringPair> out;
    out.reserve(in.size());
    for (const auto& [k, v] : in) out.push_back({k, v});
    return out;
}

}  // namespace

Client::Impl::Impl(ClientOptions opts)
    : options(std::move(opts)), version(options.protocol_version), messages(options.max_queued_messages) {
    messages.on_space([this] { wake_for_space(); });
    client_id = options.client_id.empty() ? make_client_id() : options.client_id;
    if (options.tls || !options.cafile.empty() || !options.capath.empty()) {
        net::TlsClientSettings settings;
        settings.cafile = options.cafile;
        settings.certfile = options.certfile;
        settings.keyfile = options.keyfile.empty() ? options.certfile : options.keyfile;
        settings.verify_peer = true;
        settings.capath = options.capath;
        settings.tls_version = options.tls_version;
        try {
            tls = net::TlsContext::make_client(settings);
        } catch (const std::exception& e) {
            throw ConnectionError(e.what());
        }
        // The name is both SNI and the certificate check; without the check
        // the chain is still verified against the CA file.
        if (options.check_hostname) server_name = options.host;
    }
    for (const auto& topic : options.topic_aliases) {
        if (alias_of.size() >= 0xffff) break;
        alias_of.emplace(topic, static_cast<std::uint16_t>(alias_of.size() + 1));
    }
}

void Client::Impl::wake_locked() {
    if (wake_pending || !wake_fd.valid()) return;
    wake_pending = true;
    const std::uint64_t one = 1;
    // The I/O thread drains the counter; a full counter cannot happen.
    (void)!::write(wake_fd.get(), &one, sizeof one);
}

void Client::Impl::wake_for_space() noexcept {
    // Runs on the application's thread, after a pop made room; the I/O
    // thread then resumes reading. Not through wake_pending: that flag is
    // about the output queue.
    std::lock_guard lock(mutex);
    if (!wake_fd.valid()) return;
    const std::uint64_t one = 1;
    (void)!::write(wake_fd.get(), &one, sizeof one);
}

void Client::Impl::require_connected_locked() const {
    if (state != State::connected || lost) {
        throw ConnectionError(lost && !io_error.empty() ? "not connected: " + io_error : "not connected");
    }
}

std::uint16_t Client::Impl::allocate_packet_id_locked() {
    // The caller keeps fewer than 65535 identifiers in use, so this ends.
    for (;;) {
        const std::uint16_t id = next_packet_id;
        next_packet_id = static_cast<std::uint16_t>(next_packet_id == 0xffff ? 1 : next_packet_id + 1);
        if (!inflight_by_id.contains(id) && !requests.contains(id)) return id;
    }
}

template <class P>
void Client::Impl::encode_locked(const P& packet) {
    std::size_t size;
    if constexpr (std::is_same_v<P, ConnectPacket>) {
        size = encoded_size(packet);
    } else {
        size = encoded_size(packet, version);
    }
    if (size == 0) throw PublishError(ReasonCode::packet_too_large, "packet too large to encode");
    auto room = out.prepare(size);
    if constexpr (std::is_same_v<P, ConnectPacket>) {
        (void)encode(packet, room);
    } else {
        (void)encode(packet, version, room);
    }
    out.commit(size);
    if (options.packet_trace) options.packet_trace(true, Packet(packet));
}

void Client::Impl::encode_publish_locked(const OutboundMessage& m, bool dup) {
    PublishPacket p;
    p.dup = dup;
    p.qos = m.qos;
    p.retain = m.retain;
    p.topic = m.topic;
    p.packet_id = m.packet_id;
    p.payload = as_bytes(m.payload);
    std::vector<StringPair> pairs;
    fill_properties(m.properties, p.properties, pairs);
    encode_locked(p);
}

void Client::Impl::wait_locked(std::unique_lock<std::mutex>& lock, Clock::time_point deadline, auto&& done) {
    cv.wait_until(lock, deadline, [&] { return lost || done(); });
}

void Client::Impl::connect_once(bool resume_session) {
    UniqueFd fd =
        client_detail::tcp_connect(options.host, options.port, options.response_timeout, options.bind_address);
    std::optional<client_detail::WebSocketTarget> ws;
    if (options.websocket) {
        // Host header: the name as given, IPv6 literals in brackets.
        const bool v6 = options.host.find(':') != std::string::npos;
        ws = client_detail::WebSocketTarget{
            (v6 ? "[" + options.host + "]" : options.host) + ":" + std::to_string(options.port),
            options.websocket_path.empty() ? "/" : options.websocket_path};
    }
    auto t = std::make_unique<client_detail::Transport>(std::move(fd), tls, server_name, ws ? &*ws : nullptr);
    UniqueFd efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!efd.valid()) throw ConnectionError("eventfd failed");

    std::string will_topic = options.will_topic;
    ConnectPacket c;
    c.version = version;
    std::vector<StringPair> will_pairs;
    std::vector<StringPair> connect_pairs = pair_views(options.connect_user_properties);
    c.clean_start = !resume_session;
    c.keep_alive = options.keep_alive_s;
    {
        std::lock_guard lock(mutex);
        c.client_id = client_id;
        if (!options.will_topic.empty()) {
            Will w;
            w.topic = options.will_topic;
            w.payload = as_bytes(options.will_message);
            w.qos = options.will_qos;
            w.retain = options.will_retain;
            fill_properties(options.will_properties, w.properties, will_pairs);
            w.properties.will_delay_interval = options.will_delay_interval;
            c.will = w;
        }
        if (options.username) c.username = *options.username;
        if (options.password) c.password = as_bytes(*options.password);
        if (options.session_expiry_interval != 0) {
            c.properties.session_expiry_interval = options.session_expiry_interval;
        }
        if (options.receive_maximum != 65535 && options.receive_maximum != 0) {
            c.properties.receive_maximum = options.receive_maximum;
        }
        if (options.topic_alias_maximum != 0) c.properties.topic_alias_maximum = options.topic_alias_maximum;
        if (options.maximum_packet_size != 0) c.properties.maximum_packet_size = options.maximum_packet_size;
        c.properties.request_problem_information = options.request_problem_information;
        c.properties.request_response_information = options.request_response_information;
        if (!connect_pairs.empty()) c.properties.user_properties = connect_pairs;

        state = State::connecting;
        lost = false;
        stop_io = false;
        io_error.clear();
        connack.reset();
        disconnect_reason.reset();
        out.clear();
        wake_pending = false;
        pings_sent = pingresps = 0;
        requests.clear();
        alias_sent.assign(alias_of.size() + 1, false);
        encode_locked(c);
        transport = std::move(t);
        wake_fd = std::move(efd);
        rbuf.clear();
        ctrl.clear();
        in_aliases.clear();  // aliases live for one connection ([MQTT-3.3.2-7])
        got_connack = false;
        input_paused = false;
        read_ended = false;
        read_error.clear();
        keep_alive_s = options.keep_alive_s;
        io_thread = std::thread([this] { io_main(); });
        wake_locked();
    }
    spdlog::debug("connecting to '{}:{}' as '{}'", options.host, options.port, client_id);

    std::unique_lock lock(mutex);
    const auto deadline = Clock::now() + options.response_timeout;
    wait_locked(lock, deadline, [&] { return connack.has_value(); });
    if (!connack) {
        const bool was_lost = lost;
        std::string why = io_error;
        if (options.websocket && !tls && why.find("WebSocket upgrade") != std::string::npos) {
            // A plain MQTT listener reads "GET / HTTP/1.1" as a bad packet
            // and closes: not a TLS matter.
            why += ": is this a WebSocket port? (a plain MQTT listener closes an HTTP upgrade; use mqtt:// "
                   "for it, or the broker's protocol = \"websockets\" listener)";
        } else if (!tls && (why.starts_with("connection closed") || why.starts_with("read failed"))) {
            // What a TLS listener does to a plain CONNECT.
            why += " before CONNACK (if this port expects TLS, use --cafile, --capath or an mqtts:// URL)";
        }
        lock.unlock();
        shutdown_io();
        if (!was_lost) throw TimeoutError();
        throw ConnectionError("cannot connect to '" + options.host + ":" + std::to_string(options.port) +
                              "': " + why);
    }
    if (is_error(connack->reason)) {
        const ReasonCode reason = connack->reason;
        lock.unlock();
        shutdown_io();
        throw ConnectError(reason);
    }
    limits = connack->limits;
    if (connack->assigned_client_id) client_id = *connack->assigned_client_id;
    state = State::connected;
    const bool session_present = limits.session_present;
    if (session_present) {
        // Resend what the old connection left unacknowledged, in order, with
        // DUP set; PUBREL for QoS 2 messages already PUBREC'd [MQTT-4.4.0-1].
        for (const OutboundMessage& m : inflight) {
            if (m.released) {
                encode_locked(AckPacket{PacketType::pubrel, m.packet_id, ReasonCode::success, {}});
            } else {
                encode_publish_locked(m, true);
            }
        }
    } else {
        // A new session: nothing to redeliver [MQTT-4.1.0-2 analogue for the
        // client: its state must match the server's].
        inflight.clear();
        inflight_by_id.clear();
    }
    wake_locked();
    lock.unlock();
    spdlog::debug("connected (session present: {})", session_present);
    if (resume_session && !session_present) throw SessionResumeError();
}

void Client::Impl::shutdown_io() noexcept {
    {
        std::lock_guard lock(mutex);
        stop_io = true;
        wake_pending = false;
        wake_locked();
    }
    if (io_thread.joinable()) io_thread.join();
    std::lock_guard lock(mutex);
    transport.reset();
    wake_fd.reset();
    state = State::idle;
    lost = true;
    cv.notify_all();
}

// ---------------------------------------------------------------- Client

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Client::~Client() { stop(); }

void Client::start(bool resume_session) {
    Impl& d = *impl_;
    {
        std::lock_guard lock(d.mutex);
        if (d.state == Impl::State::connected && !d.lost) throw ClientError("already started");
    }
    d.shutdown_io();  // the previous connection's thread, if it ended by itself

    const std::vector<std::chrono::milliseconds> default_delays{std::chrono::seconds(1), std::chrono::seconds(2),
                                                                 std::chrono::seconds(4), std::chrono::seconds(8)};
    const auto& delays = d.options.connect_delays ? *d.options.connect_delays : default_delays;
    std::size_t delay_index = 0;
    for (unsigned attempt = 1;; ++attempt) {
        const bool last = delays.empty() ||
                          (d.options.max_connect_attempts != 0 && attempt >= d.options.max_connect_attempts);
        try {
            d.connect_once(resume_session);
            break;
        } catch (const ConnectError& e) {
            if (last || !retryable(e.reason())) throw;
            spdlog::debug("connect attempt {} refused: {}", attempt, e.what());
        } catch (const ConnectionError& e) {
            if (last) throw;
            spdlog::debug("connect attempt {} failed: {}", attempt, e.what());
        } catch (const TimeoutError& e) {
            if (last) throw;
            spdlog::debug("connect attempt {} failed: {}", attempt, e.what());
        }
        std::this_thread::sleep_for(delays[delay_index]);
        if (delay_index + 1 < delays.size()) ++delay_index;
    }
    for (const auto& s : d.options.subscriptions) subscribe(s);
}

void Client::stop() noexcept {
    Impl& d = *impl_;
    {
        std::lock_guard lock(d.mutex);
        if (!d.io_thread.joinable()) return;
        if (d.state == Impl::State::connected && !d.lost) {
            try {
                DisconnectPacket p;
                const auto pairs = pair_views(d.options.disconnect_user_properties);
                p.properties.session_expiry_interval = d.options.disconnect_session_expiry_interval;
                if (!pairs.empty()) p.properties.user_properties = pairs;
                d.encode_locked(p);
            } catch (...) {
                // Out of memory: the close alone still ends the connection.
            }
        }
    }
    d.shutdown_io();
}

void Client::publish(std::string_view topic, std::string_view payload, bool retain, QoS qos,
                     const PublishProperties& properties) {
    Impl& d = *impl_;
    std::unique_lock lock(d.mutex);
    d.require_connected_locked();
    if (static_cast<int>(qos) > static_cast<int>(d.limits.maximum_qos)) {
        throw PublishError(ReasonCode::qos_not_supported,
                           "QoS " + std::to_string(static_cast<int>(qos)) + " is not supported by the broker");
    }
    if (retain && !d.limits.retain_available) {
        throw PublishError(ReasonCode::retain_not_supported, "the broker does not support retained messages");
    }
    if (d.out.size() >= client_detail::max_queued_output) {
        ++d.out_waiters;
        d.cv.wait(lock, [&] { return d.lost || d.out.size() < client_detail::max_queued_output; });
        --d.out_waiters;
        d.require_connected_locked();
    }

    PublishPacket p;
    p.qos = qos;
    p.retain = retain;
    p.topic = topic;
    p.payload = as_bytes(payload);
    std::vector<StringPair> pairs;
    fill_properties(properties, p.properties, pairs);
    const std::size_t full_size = encoded_size(p, d.version);

    // A topic alias (spec 3.3.2.3.4): the first use carries the name, later
    // ones only the alias.
    std::uint16_t alias = 0;
    if (!d.alias_of.empty()) {
        if (auto it = d.alias_of.find(topic); it != d.alias_of.end() && it->second <= d.limits.topic_alias_maximum) {
            alias = it->second;
            p.properties.topic_alias = alias;
            if (d.alias_sent[alias]) p.topic = {};
        }
    }
    const std::size_t size = alias ? encoded_size(p, d.version) : full_size;
    if (size == 0 || (d.limits.maximum_packet_size != 0 && std::max(size, full_size) > d.limits.maximum_packet_size)) {
        // [MQTT-3.1.2-24]: never send more than the broker's Maximum Packet
        // Size. (A redelivery carries the name, hence full_size too.)
        throw PublishError(ReasonCode::packet_too_large, "message too large for the broker's maximum packet size");
    }

    if (qos != QoS::at_most_once) {
        // The broker's Receive Maximum bounds our unacknowledged QoS 1/2
        // publishes [MQTT-3.3.4-7]; wait for room.
        const std::size_t window = std::min<std::size_t>(d.limits.receive_maximum, 65000);
        d.cv.wait(lock, [&] { return d.lost || d.inflight.size() < window; });
        d.require_connected_locked();
        OutboundMessage m;
        m.packet_id = d.allocate_packet_id_locked();
        m.qos = qos;
        m.retain = retain;
        m.topic = std::string(topic);
        m.payload = std::string(payload);
        m.properties = properties;
        p.packet_id = m.packet_id;
        d.inflight.push_back(std::move(m));
        d.inflight_by_id[p.packet_id] = std::prev(d.inflight.end());
    }
    if (alias) d.alias_sent[alias] = true;
    auto room = d.out.prepare(size);
    (void)encode(p, d.version, room);
    d.out.commit(size);
    if (d.options.packet_trace) d.options.packet_trace(true, Packet(p));
    d.wake_locked();
}

void Client::flush(std::chrono::milliseconds timeout) {
    Impl& d = *impl_;
    std::unique_lock lock(d.mutex);
    d.require_connected_locked();
    d.encode_locked(PingreqPacket{});
    if (d.pings_sent == d.pingresps) d.ping_wait_start = Clock::now();
    const std::uint64_t target = ++d.pings_sent;
    d.wake_locked();
    d.wait_locked(lock, Clock::now() + timeout, [&] { return d.pingresps >= target && d.inflight.empty(); });
    if (d.pingresps >= target && d.inflight.empty()) return;
    if (d.lost) throw ConnectionError("connection lost: " + d.io_error);
    throw TimeoutError();
}

QoS Client::subscribe(std::string_view topic, std::uint8_t retain_handling, QoS qos) {
    SubscriptionRequest request;
    request.topic = std::string(topic);
    request.retain_handling = retain_handling;
    request.qos = qos;
    return subscribe(request);
}

QoS Client::subscribe(const SubscriptionRequest& request) {
    Impl& d = *impl_;
    std::unique_lock lock(d.mutex);
    d.require_connected_locked();
    const std::uint16_t id = d.allocate_packet_id_locked();
    d.requests[id] = {};
    const Subscription s{request.topic, request.qos, request.no_local, request.retain_as_published,
                         request.retain_handling};
    SubscribePacket p;
    p.packet_id = id;
    p.subscriptions = SubscriptionList(std::span<const Subscription>(&s, 1));
    const auto pairs = pair_views(request.user_properties);
    if (!pairs.empty()) p.properties.user_properties = pairs;
    d.encode_locked(p);
    d.wake_locked();
    d.wait_locked(lock, Clock::now() + d.options.response_timeout, [&] { return d.requests[id].done; });
    const client_detail::PendingRequest req = std::move(d.requests[id]);
    d.requests.erase(id);
    if (!req.done) {
        if (d.lost) throw ConnectionError("connection lost: " + d.io_error);
        throw TimeoutError();
    }
    if (req.reasons.empty()) throw SubscribeError(ReasonCode::protocol_error);
    if (is_error(req.reasons[0])) throw SubscribeError(req.reasons[0]);
    return static_cast<QoS>(req.reasons[0]);
}

void Client::unsubscribe(std::string_view topic) {
    Impl& d = *impl_;
    std::unique_lock lock(d.mutex);
    d.require_connected_locked();
    const std::uint16_t id = d.allocate_packet_id_locked();
    d.requests[id] = {};
    UnsubscribePacket p;
    p.packet_id = id;
    p.filters = FilterList(std::span<const std::string_view>(&topic, 1));
    d.encode_locked(p);
    d.wake_locked();
    d.wait_locked(lock, Clock::now() + d.options.response_timeout, [&] { return d.requests[id].done; });
    const client_detail::PendingRequest req = std::move(d.requests[id]);
    d.requests.erase(id);
    if (!req.done) {
        if (d.lost) throw ConnectionError("connection lost: " + d.io_error);
        throw TimeoutError();
    }
    // A 3.1.1 UNSUBACK carries no reason codes (spec 3.11 of 3.1.1).
    if (req.reasons.empty() && d.version == ProtocolVersion::v311) return;
    if (req.reasons.empty()) throw UnsubscribeError(ReasonCode::protocol_error);
    if (is_error(req.reasons[0])) throw UnsubscribeError(req.reasons[0]);
}

Client::Refusals Client::refusals() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->refusals;
}

MessageQueue& Client::messages() noexcept { return impl_->messages; }

std::string Client::client_id() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->client_id;
}

BrokerLimits Client::broker_limits() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->limits;
}

bool Client::connected() const noexcept {
    std::lock_guard lock(impl_->mutex);
    return impl_->state == Impl::State::connected && !impl_->lost;
}

std::size_t Client::inflight() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->inflight.size();
}

std::optional<ReasonCode> Client::disconnect_reason() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->disconnect_reason;
}

}  // namespace mqttools
