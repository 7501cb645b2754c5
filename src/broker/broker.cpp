#include "broker/broker.hpp"
#include "bridge/bridge.hpp"
#include "broker/connect_pending.hpp"

#include <malloc.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "net/socket.hpp"
#include "net/ws_transport.hpp"

namespace mqttools::broker {

namespace {
constexpr std::size_t scratch_size = 128 * 1024;
constexpr auto housekeeping_period = std::chrono::seconds(1);
}  // namespace

struct Broker::Listener final : net::IoHandler {
    Listener(Broker& b, net::UniqueFd f, std::string n) : broker(b), fd(std::move(f)), name(std::move(n)) {}
    void on_io(std::uint32_t) override { broker.accept_from(*this); }
    Broker& broker;
    net::UniqueFd fd;
    std::string name;
    std::uint64_t accepted = 0;  // for /metrics
    config::Listener settings;
    // TLS listeners: swapped for a fresh context on reload (security_hooks.cpp).
    std::shared_ptr<const net::TlsContext> tls;
    // WebSocket listeners: the upgrade rules, swapped on reload.
    std::shared_ptr<const net::ws::ServerSettings> ws;
    // Out of descriptors: the listener stays readable while accept() fails,
    // so it leaves epoll for a moment instead of spinning the reactor.
    net::Reactor::TimerId resume_timer{};
};

Broker::Broker(net::Reactor& reactor, const config::Config& config)
    : reactor_(reactor),
      config_(config),
      max_packet_in_(config.max_packet_size ? config.max_packet_size : max_packet_size_limit),
      deadlines_(reactor.now()),
      scratch_(scratch_size) {
    startup_errors_ = reload_security(config);
    reactor_.set_before_sleep([this] { before_sleep(); });
    reactor_.set_deferred_work([this] { deferred_work(); });
    housekeeping_timer_ = reactor_.add_timer_after(housekeeping_period, [this] { housekeeping(); });
    sync_bridges(config_.bridges);
    packet_debug = spdlog::should_log(spdlog::level::debug);
}

Broker::~Broker() {
    // The sources answer through pending_connects_: they go first.
    auth_chain_.reset();
    pending_connects_.reset();
    if (store_) store_->on_result(nullptr);
    reactor_.set_before_sleep(nullptr);
    reactor_.set_deferred_work(nullptr);
    reactor_.cancel_timer(housekeeping_timer_);
    reactor_.cancel_timer(wheel_timer_);
    sessions_.for_each([this](Session& s) {
        reactor_.cancel_timer(s.expiry_timer);
        reactor_.cancel_timer(s.will_timer);
    });
}

bool Broker::add_listener(net::UniqueFd fd, std::string name, const config::Listener& settings) {
    auto l = std::make_unique<Listener>(*this, std::move(fd), std::move(name));
    l->settings = settings;
    if (settings.tls()) {
        try {
            l->tls = net::TlsContext::make_server(settings);
        } catch (const std::exception& e) {
            spdlog::error("TLS listener {}: {}", l->name, e.what());
            return false;
        }
    }
    if (settings.websockets()) l->ws = websocket_settings(settings);
    if (!reactor_.add(l->fd.get(), EPOLLIN, l.get())) return false;
    listeners_.push_back(std::move(l));
    return true;
}

void Broker::accept_from(Listener& listener) {
    // Bounded so a connection storm cannot starve established clients.
    for (int i = 0; i < 64; ++i) {
        // WebSocket clients keep the address from the accept (a refused
        // upgrade is often logged after the peer reset the connection).
        std::string peer;
        net::UniqueFd fd = listener.ws ? net::accept_tcp(listener.fd.get(), peer) : net::accept_tcp(listener.fd.get());
        if (!fd) {
            if (errno == EMFILE || errno == ENFILE) pause_accepting(listener);
            return;
        }
        std::unique_ptr<net::Transport> transport;
        if (listener.tls) {
            transport = std::make_unique<net::TlsTransport>(std::move(fd), listener.tls);
        } else {
            transport = std::make_unique<net::PlainTransport>(std::move(fd));
        }
        if (listener.ws) {
            // MQTT over WebSocket: frames under the same Connection. A frame
            // may hold several packets, but one larger than the maximum
            // packet size is refused (1009).
            transport = std::make_unique<net::WsTransport>(std::move(transport), listener.ws, max_packet_in_,
                                                           listener.tls != nullptr, std::move(peer));
            ++stats_.websocket_connections_total;
        }
        Connection* conn = adopt(std::move(transport));
        if (!conn) continue;
        conn->identity_as_username = listener.settings.use_identity_as_username;
        ++listener.accepted;
        spdlog::debug("New connection from {} on {}.", conn->peer(), listener.name);
    }
}

void Broker::pause_accepting(Listener& listener) {
    if (listener.resume_timer) return;
    spdlog::warn("accept on {}: {}; pausing new connections for 100 ms.", listener.name, std::strerror(errno));
    reactor_.remove(listener.fd.get());
    listener.resume_timer = reactor_.add_timer_after(std::chrono::milliseconds(100), [this, &listener] {
        listener.resume_timer = {};
        reactor_.add(listener.fd.get(), EPOLLIN, &listener);
    });
}

std::shared_ptr<const net::ws::ServerSettings> Broker::websocket_settings(const config::Listener& l) {
    auto s = std::make_shared<net::ws::ServerSettings>();
    s->headers_size = l.websockets_headers_size;
    s->origins = l.websockets_origin;
    return s;
}

void Broker::reload_websockets(const config::Config& config) {
    // websockets_headers_size and websockets_origin apply to new
    // connections; the protocol of a listener needs a restart.
    for (auto& l : listeners_) {
        if (!l->ws) continue;
        for (const auto& wanted : config.listeners) {
            if (wanted.port == l->settings.port && wanted.bind == l->settings.bind && wanted.websockets()) {
                l->settings.websockets_headers_size = wanted.websockets_headers_size;
                l->settings.websockets_origin = wanted.websockets_origin;
                l->ws = websocket_settings(l->settings);
                break;
            }
        }
    }
}

void Broker::reload_tls(const config::Config& config, std::vector<std::string>& errors) {
    // New connections get a context with re-read certificates and CA files;
    // running sessions keep the one they began with.
    for (auto& l : listeners_) {
        if (!l->tls) continue;
        for (const auto& wanted : config.listeners) {
            if (wanted.port == l->settings.port && wanted.bind == l->settings.bind && wanted.tls()) {
                l->settings = wanted;
                break;
            }
        }
        try {
            l->tls = net::TlsContext::make_server(l->settings);
            spdlog::info("TLS listener {}: certificates reloaded.", l->name);
        } catch (const std::exception& e) {
            errors.push_back("TLS listener " + l->name + ": " + e.what());
        }
    }
}

Connection* Broker::adopt(std::unique_ptr<net::Transport> transport) {
    const int raw = transport->fd();
    auto c = std::make_unique<Connection>(*this, std::move(transport));
    if (!reactor_.add(raw, EPOLLIN, c.get())) return nullptr;
    ++stats_.connections_total;
    Connection* conn = c.get();
    conn->index = static_cast<std::uint32_t>(connections_.size());
    connections_.push_back(std::move(c));
    // A socket that sends no CONNECT in time is closed (spec 3.1.4 says
    // "within a reasonable amount of time").
    schedule_deadline(*conn, reactor_.now() + std::chrono::seconds(config_.connect_timeout));
    return conn;
}

void Broker::schedule_deadline(Connection& c, Clock::time_point when) {
    deadlines_.schedule(c, when);
    // The wheel fires at tick boundaries.
    using Ticks = std::chrono::duration<std::int64_t, std::ratio<1, 10>>;  // DeadlineWheel::tick
    static_assert(std::chrono::milliseconds(Ticks(1)) == DeadlineWheel::tick);
    arm_wheel(Clock::time_point{std::chrono::ceil<Ticks>(when.time_since_epoch())});
}

// One reactor timer for the whole wheel, at its earliest occupied tick: moved
// only when a deadline needs an earlier one.
void Broker::arm_wheel(Clock::time_point at) {
    if (wheel_timer_ && wheel_timer_.when <= at) return;
    reactor_.cancel_timer(wheel_timer_);
    wheel_timer_ = reactor_.add_timer(at, [this] { on_wheel_tick(); });
}

void Broker::on_wheel_tick() {
    wheel_timer_ = {};
    deadlines_.advance(reactor_.now(), [this](DeadlineLink& link) { on_deadline(static_cast<Connection&>(link)); });
    // The callbacks may have armed the timer for a deadline they moved
    // (a keep alive 90 s on) while an earlier one waits: take the earliest.
    const auto next = deadlines_.next_tick();
    if (next != Clock::time_point::max()) arm_wheel(next);
}

void Broker::on_deadline(Connection& c) {
    if (c.state == Connection::State::awaiting_connect) {
        // A socket that sends no CONNECT in time is closed (spec 3.1.4 says
        // "within a reasonable amount of time").
        const auto* ws = dynamic_cast<const net::WsTransport*>(&c.transport());
        if (ws != nullptr && !ws->handshake_done()) {
            spdlog::info("Client {} refused: no complete WebSocket upgrade request within {} s.", c.peer(),
                         config_.connect_timeout);
        } else {
            spdlog::info("Client {} closed: no CONNECT within {} s.", c.peer(), config_.connect_timeout);
        }
        close_connection(c, ReasonCode::maximum_connect_time, false);
        return;
    }
    if (c.state != Connection::State::connected || c.keep_alive == 0) return;
    // One and a half times the keep alive ([MQTT-3.1.2-22]). The deadline
    // is not moved per packet: when it comes early it moves to the real one.
    if (reactor_.now() - c.last_received >= std::chrono::milliseconds(std::uint64_t{c.keep_alive} * 1500)) {
        spdlog::info("Client {} has exceeded timeout, disconnecting.", c.client_id);
        close_connection(c, ReasonCode::keep_alive_timeout, true);
    } else {
        arm_keepalive(c);
    }
}

void Broker::mark_dirty(Connection& c) {
    if (c.dirty) return;
    c.dirty = true;
    dirty_.push_back(&c);
}

void Broker::before_sleep() {
    // Bridges first: a failed write may publish a state message locally.
    for (auto& b : bridges_) {
        if (b->has_output()) b->flush();
    }
    // Then the paced retained deliveries, so their slice goes out in this flush.
    if (!retained_work_.empty()) feed_retained();
    // Flushing can close connections, and closing can publish wills that
    // queue output elsewhere: loop until nothing is left to write.
    while (!dirty_.empty()) {
        std::vector<Connection*> batch;
        batch.swap(dirty_);
        for (Connection* c : batch) {
            c->dirty = false;
            if (c->state != Connection::State::closing) c->flush();
        }
        if (dirty_.capacity() < batch.capacity()) {
            batch.clear();
            dirty_.swap(batch);
        }
    }
    // One turn's changes, one transaction (group commit); the answers they
    // hold go out when the store reports the batch durable.
    if (store_ && store_->submit() != 0) {
        for (Connection* c : held_) c->pause_reads(true);  // until their batch is on disk
    }
    for (Connection* c : closing_) {
        if (c->held) release_held(*c);  // its held output is dropped with it
        // Swap-remove from the table; destroyed (its socket closed) below.
        std::size_t i = c->index;
        closed_.push_back(std::move(connections_[i]));
        if (i + 1 != connections_.size()) {
            connections_[i] = std::move(connections_.back());
            connections_[i]->index = static_cast<std::uint32_t>(i);
        }
        connections_.pop_back();
    }
    closing_.clear();
    destroy_closed();
}

void Broker::destroy_closed() {
    // close(2) of a loopback TCP socket costs about 15 microseconds (the FIN
    // and the peer's state change run in our context): when 10,000 clients
    // leave at once, 250 of them per turn would hold every turn for 4 ms.
    // They are out of epoll already (close_connection), so the rest wait
    // for the next turn at no cost but their memory.
    const auto start = net::Clock::now();
    std::size_t n = 0;
    while (!closed_.empty()) {
        closed_.pop_front();
        // The clock is read every 16 closes only.
        if (++n % 16 == 0 && net::Clock::now() - start >= close_time_per_turn) break;
    }
    if (!closed_.empty()) reactor_.skip_next_wait();
}

// A client that has not published for a housekeeping period (1 s) drops
// its route cache: an idle connection is meant to cost a few hundred bytes,
// and rebuilding the cache on the next burst is one trie walk.
void Broker::release_idle_extras(Connection& c) {
    const auto& aliases = c.extras->aliases;
    const auto& x = *c.extras;  // what the auth sources said at CONNECT stays
    if (aliases.in.empty() && aliases.out.empty() && !x.retained && !c.output_deferred && !x.credentials &&
        !x.superuser && !x.expiry_timer) {
        c.extras.reset();
    } else {
        c.extras->route = RouteCache{};
    }
}

void Broker::housekeeping() {
    housekeeping_timer_ = reactor_.add_timer_after(housekeeping_period, [this] { housekeeping(); });
    // The level may change on reload; a second's lag is fine for logs.
    packet_debug = spdlog::should_log(spdlog::level::debug);
    const auto now = reactor_.now();
    if (store_ && now >= next_sweep_) {
        // Expired retained messages leave the file (queued ones leave it
        // when they come up in pump()).
        next_sweep_ = now + std::chrono::seconds(60);
        store_->sweep_expired(wall_now());
    }
    if (sessions_ended_since_trim_ >= 1000) {
        // Many sessions ended (mass expiry, a client fleet going away): hand
        // the freed memory back to the system instead of keeping the peak.
        sessions_ended_since_trim_ = 0;
        ::malloc_trim(0);
    }
    // A pass still under way (a host too slow for one per second) goes
    // on; otherwise a new one starts, in this turn's deferred work.
    if (housekeeping_next_ == no_housekeeping) housekeeping_next_ = 0;
}

// After the turn's output went out (Reactor::set_deferred_work): the
// paced connection set-ups, then a slice of housekeeping's pass.
void Broker::deferred_work() {
    resume_setups();
    if (housekeeping_next_ == no_housekeeping) return;
    housekeeping_slice();
    // The next slice comes after the sockets ready now; a stuck client
    // closed here leaves in the next turn's before_sleep, not a second on.
    if (housekeeping_next_ >= connections_.size()) housekeeping_next_ = no_housekeeping;
    if (housekeeping_next_ != no_housekeeping || !closing_.empty()) reactor_.skip_next_wait();
}

// One slice of the pass over the connections. A connection that moves
// while the pass is under way (the last one takes a closed one's index) may
// be skipped once: it is looked at a second later.
void Broker::housekeeping_slice() {
    ++housekeeping_slices_;
    const auto now = reactor_.now();
    // A client whose output stays over max_client_output_bytes for
    // stuck_client_timeout is stuck, not slow: Quota Exceeded.
    const auto grace = std::chrono::seconds(config_.stuck_client_timeout);
    const std::size_t end = std::min(connections_.size(), housekeeping_next_ + housekeeping_slice_size);
    for (std::size_t i = housekeeping_next_; i < end && i < connections_.size(); ++i) {
        Connection& c = *connections_[i];
        if (c.state != Connection::State::connected) continue;
        if (c.extras && !c.published_recently) release_idle_extras(c);
        if (c.published_recently) c.published_recently = false;
        if (c.output_bytes() <= config_.max_client_output_bytes) {
            c.over_bound_since = {};
            continue;
        }
        if (c.over_bound_since == Clock::time_point{}) {
            c.over_bound_since = now;
        } else if (config_.stuck_client_timeout != 0 && now - c.over_bound_since >= grace) {
            spdlog::warn("Client {} has not read its output for {} s: disconnecting.", c.client_id,
                         config_.stuck_client_timeout);
            close_connection(c, ReasonCode::quota_exceeded, true);
        }
    }
    housekeeping_next_ = end;
}

void Broker::handle_packet(Connection& c, const FixedHeader& header, Bytes body) {
    if (packet_debug) [[unlikely]] c.log_received(header, body);
    if (!store_) {
        dispatch_packet(c, header, body);
        return;
    }
    // What this packet changed in the durable store is what its answer
    // (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, CONNACK) promises: the
    // connection's output waits until that batch is on disk.
    const std::uint64_t before = store_ops_;
    dispatch_packet(c, header, body);
    if (store_ops_ != before && c.state != Connection::State::closing) hold(c);
}

void Broker::dispatch_packet(Connection& c, const FixedHeader& header, Bytes body) {
    if (c.state == Connection::State::awaiting_connect) {
        // The first packet must be CONNECT [MQTT-3.1.0-1].
        if (header.type != PacketType::connect) {
            spdlog::info("Client {} refused: its first packet is not CONNECT.", c.peer());
            close_connection(c, ReasonCode::protocol_error, false);
            return;
        }
        handle_connect(c, header, body);
        return;
    }
    switch (header.type) {
        case PacketType::publish:
            handle_publish(c, header, body);
            return;
        case PacketType::puback:
        case PacketType::pubrec:
        case PacketType::pubrel:
        case PacketType::pubcomp:
            handle_ack(c, header, body);
            return;
        case PacketType::subscribe:
            handle_subscribe(c, header, body);
            return;
        case PacketType::unsubscribe:
            handle_unsubscribe(c, header, body);
            return;
        case PacketType::pingreq:
            if (header.flags != 0 || header.remaining_length != 0) {
                close_connection(c, ReasonCode::malformed_packet, true);
                return;
            }
            // In a cluster a PINGRESP waits behind the PUBACKs held for
            // NATS: a client that pings to know its publishes are done
            // gets the answer after their acknowledgements (cluster_holds.cpp).
            c.send(PingrespPacket{});
            if (c.held_acks() != 0) hold_pingresp(c);
            return;
        case PacketType::disconnect:
            handle_disconnect(c, header, body);
            return;
        case PacketType::connect:
            // A second CONNECT is a Protocol Error [MQTT-3.1.0-2].
            close_connection(c, ReasonCode::protocol_error, true);
            return;
        case PacketType::auth:
            // No enhanced authentication was started, so AUTH is unexpected
            // (spec 4.12); in 3.1.1 the packet type does not exist.
            close_connection(c, c.version == ProtocolVersion::v5 ? ReasonCode::protocol_error
                                                                 : ReasonCode::malformed_packet,
                             true);
            return;
        default:
            // CONNACK, SUBACK, UNSUBACK, PINGRESP: only servers send them.
            close_connection(c, ReasonCode::protocol_error, true);
            return;
    }
}

void Broker::frame_error(Connection& c, ReasonCode reason) {
    close_connection(c, reason, c.state == Connection::State::connected);
}

void Broker::connection_lost(Connection& c) {
    if (c.state == Connection::State::closing) return;
    if (const std::string_view why = c.transport().error(); !why.empty()) {
        spdlog::info("Client {}: {}.", c.client_id.empty() ? c.peer() : c.client_id, why);
    }
    if (c.state == Connection::State::awaiting_connect) {
        // A failed TLS handshake never becomes a client, so nothing else
        // would say why (a plain MQTT client on the TLS port, an unknown
        // CA...); Mosquitto logs these too.
        if (const auto* tls = dynamic_cast<const net::TlsTransport*>(&c.transport());
            tls != nullptr && !tls->session().handshake_done() && !tls->session().last_error().empty()) {
            spdlog::info("TLS handshake with {} failed: {}", c.peer(), tls->session().last_error());
        }
    }
    c.closed_by_peer = true;
    close_connection(c, ReasonCode::unspecified_error, false);
}

void Broker::close_connection(Connection& c, ReasonCode reason, bool send_disconnect) {
    if (c.state == Connection::State::closing) return;
    if (c.state == Connection::State::connect_pending) {
        abandon_pending_connect(c);
        if (!parked_.empty()) drop_parked(c);
    }
    drop_holds(c);
    if (c.extras && c.extras->retained) drop_retained_backlog(c);
    if (c.extras && c.extras->expiry_timer) reactor_.cancel_timer(c.extras->expiry_timer);
    if (c.setup_queued) {
        // Rare (the peer gave up, or the CONNECT timeout): a linear erase.
        std::erase(setup_queue_, &c);
        c.setup_queued = false;
    }
    const bool was_connected = c.state == Connection::State::connected;
    if (send_disconnect && was_connected && c.version == ProtocolVersion::v5) {
        DisconnectPacket d;
        d.reason = reason;
        c.send(d);
    }
    c.state = Connection::State::closing;
    // Best effort: the DISCONNECT and whatever was queued before it, then
    // the transport's own goodbye (a WebSocket Close frame).
    c.flush();
    c.transport().close_gracefully();
    reactor_.remove(c.fd());
    DeadlineWheel::cancel(c);
    if (was_connected) {
        --clients_connected_;
        if (!c.transport().label().empty()) --websocket_clients_;
        log_close(c, reason, c.closed_by_peer);
        if (observer_) observer_->client_disconnected(c, reason, c.closed_by_peer);
    }
    if (c.session) detach_session(c, !c.will_suppressed);
    closing_.push_back(&c);
}

void Broker::log_close(const Connection& c, ReasonCode reason, bool by_peer) {
    // A close the broker decides names its reason even when it suppresses
    // the will (a node cut off from NATS, a session another node took):
    // "disconnected." alone is the client's own DISCONNECT (the node that
    // dropped a client and the node where it really disconnected printed
    // the same line: one disconnect read as logged twice).
    if (c.sent_disconnect()) {
        spdlog::info("Client {} disconnected.", c.client_id);
    } else if (by_peer) {
        spdlog::info("Client {} closed its connection.", c.client_id);
    } else {
        spdlog::info("Client {} disconnected: {}.", c.client_id, reason_code_name(reason));
    }
}

void Broker::shutdown() {
    if (shutting_down_) return;
    shutting_down_ = true;
    if (store_) {
        // Held acknowledgements first: they go out before the DISCONNECTs.
        store_->submit();
        store_->drain();
    }
    for (auto& l : listeners_) {
        if (l->resume_timer) reactor_.cancel_timer(l->resume_timer);
        reactor_.remove(l->fd.get());
    }
    listeners_.clear();
    // Copy: closing edits nothing in the table until before_sleep, but be
    // explicit about what we walk over.
    std::vector<Connection*> all;
    all.reserve(connections_.size());
    for (auto& c : connections_) all.push_back(c.get());
    // Clients with a will first: their wills then still reach the subscribers
    // that are closed after them, ahead of those subscribers' DISCONNECT.
    std::stable_partition(all.begin(), all.end(), [](const Connection* c) {
        return c->session != nullptr && c->session->will && !c->will_suppressed;
    });
    for (Connection* c : all) close_connection(*c, ReasonCode::server_shutting_down, true);
    // Delayed wills: the server is going away, so the sessions end now and
    // their wills are due ([MQTT-3.1.3-9]: at the latest when the session ends).
    std::vector<Session*> pending;
    sessions_.for_each([&](Session& s) {
        if (s.will && !s.stored) pending.push_back(&s);  // stored ones outlive the stop
    });
    for (Session* s : pending) publish_will(*s);
    for (auto& b : bridges_) b->stop();
    before_sleep();
}

Counters Broker::counters() const {
    Counters c = stats_;
    c.connections = connections_.size();
    c.clients_connected = clients_connected_;
    c.websocket_clients_connected = websocket_clients_;
    c.clients_disconnected = sessions_.size() > clients_connected_ ? sessions_.size() - clients_connected_ : 0;
    c.subscriptions = trie_.size();
    c.shared_subscriptions = trie_.shared_size();
    c.retained_messages = retained_.size();
    std::uint64_t queued = 0;
    std::uint64_t inflight = 0;
    sessions_.for_each([&](const Session& s) {
        if (!s.outbound) return;
        queued += s.outbound->queue.size();
        inflight += s.outbound->inflight.size();
    });
    c.queued_messages = queued;
    c.inflight_messages = inflight;
    std::uint64_t out = 0;
    for (const auto& conn : connections_) out += conn->output_bytes();
    c.output_queued_bytes = out;
    return c;
}

void Broker::publish_internal(std::string_view topic, std::string_view payload, bool retain) {
    MessageView m;
    m.topic = topic;
    m.payload = as_bytes(payload);
    m.retain = retain;
    if (retain) {
        if (payload.empty()) {
            retained_.erase(topic);
        } else {
            m.stored = make_message(m, reactor_.now());
            retained_.set(m.stored);
        }
    }
    route(nullptr, m);
}

std::vector<std::string> Broker::apply_config(const config::Config& config) {
    config_ = config;
    max_packet_in_ = config.max_packet_size ? config.max_packet_size : max_packet_size_limit;
    sync_bridges(config.bridges);
    reload_websockets(config);
    // Password file, ACL, TLS certificates and memory_limit (security_hooks.cpp).
    return reload_security(config);
}

std::vector<Broker::ListenerCounters> Broker::listener_counters() const {
    std::vector<ListenerCounters> out;
    out.reserve(listeners_.size());
    for (const auto& l : listeners_) out.push_back({l->name, l->accepted});
    return out;
}

}  // namespace mqttools::broker
