// The bridge's connection life cycle: resolve, non-blocking TCP connect,
// optional TLS, CONNECT/CONNACK, keep alive, and the back-off between
// attempts (Mosquitto's restart_timeout: a constant, or base and cap with
// exponential back-off and jitter). Addresses are tried in turn.
#include "bridge/bridge.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"
#include "net/tls.hpp"

namespace mqttools::broker {

namespace {

// Longest a TCP connect plus TLS handshake plus CONNACK may take.
constexpr auto connect_deadline = std::chrono::seconds(20);
constexpr auto resolve_poll = std::chrono::milliseconds(20);
// How long a primary probe's TCP connect may take before it counts as down.
constexpr auto probe_wait = std::chrono::seconds(1);

}  // namespace

struct Bridge::Resolve {
    gaicb request{};
    addrinfo hints{};
    std::string host;
    std::string service;
};

namespace {

// Starts resolving `host` without blocking; null when it cannot start.
template <class R>
std::unique_ptr<R> start_resolve(const std::string& host, std::uint16_t port) {
    auto r = std::make_unique<R>();
    r->host = host;
    r->service = std::to_string(port);
    r->hints.ai_family = AF_UNSPEC;
    r->hints.ai_socktype = SOCK_STREAM;
    r->hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
    r->request.ar_name = r->host.c_str();
    r->request.ar_service = r->service.c_str();
    r->request.ar_request = &r->hints;
    gaicb* requests[] = {&r->request};
    sigevent none{};
    none.sigev_notify = SIGEV_NONE;
    if (getaddrinfo_a(GAI_NOWAIT, requests, 1, &none) != 0) return nullptr;
    return r;
}

// A numeric address needs no lookup: the list, or null for a name.
addrinfo* numeric_address(const std::string& host, std::uint16_t port) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    addrinfo* list = nullptr;
    const std::string service = std::to_string(port);
    if (::getaddrinfo(host.c_str(), service.c_str(), &hints, &list) != 0) return nullptr;
    return list;
}

// A lookup still running owns its request: if it cannot be cancelled it is
// left to finish into memory we no longer look at (one small leak on an
// unusual path beats a write into freed memory).
template <class R>
void abandon(std::unique_ptr<R>& r) {
    if (!r) return;
    if (gai_cancel(&r->request) != EAI_CANCELED && gai_error(&r->request) == EAI_INPROGRESS) {
        (void)r.release();
        return;
    }
    if (r->request.ar_result) freeaddrinfo(r->request.ar_result);
    r.reset();
}

}  // namespace

Bridge::Bridge(Broker& broker, config::Bridge settings)
    : broker_(broker),
      cfg_(std::move(settings)),
      session_(*this, cfg_.local_clientid),
      version_(cfg_.mqtt5 ? ProtocolVersion::v5 : ProtocolVersion::v311),
      keepalive_(cfg_.keepalive_interval) {
    stats_.name = cfg_.name;
    store_key_ = "\xFF" "bridge/" + cfg_.name;  // bridge_store.cpp
}

Bridge::~Bridge() {
    net::Reactor& r = broker_.reactor();
    r.cancel_timer(restart_timer_);
    r.cancel_timer(deadline_timer_);
    r.cancel_timer(keepalive_timer_);
    r.cancel_timer(idle_timer_);
    r.cancel_timer(resolve_timer_);
    abandon(resolve_);
    stop_probe();
    close_socket();
    unsubscribe_local();
}

const std::string& Bridge::address_text() const { return address_text_; }

void Bridge::start() {
    subscribe_local();
    notify_local(false);
    if (cfg_.start_type == config::BridgeStart::lazy) {
        spdlog::info("Bridge {}: lazy start, connecting once {} messages are queued.", cfg_.name, cfg_.threshold);
        return;
    }
    connect_next();
}

void Bridge::stop() {
    broker_.reactor().cancel_timer(restart_timer_);
    restart_timer_ = {};
    if (state_ == State::connected) {
        say_goodbye();
        spdlog::info("Bridge {}: disconnected from {}.", cfg_.name, address_text_);
    }
    // A write that failed just now scheduled a reconnection: not wanted.
    broker_.reactor().cancel_timer(restart_timer_);
    restart_timer_ = {};
    close_socket();
    notify_local(false);
    state_ = State::stopped;
}

void Bridge::say_goodbye() {
    if (cfg_.notifications && !cfg_.notifications_local_only) {
        // A clean DISCONNECT suppresses our will: say 0 ourselves.
        PublishPacket p;
        p.qos = QoS::at_most_once;
        p.retain = remote_retain_;
        p.topic = cfg_.notification_topic;
        p.payload = as_bytes("0");
        send(p);
    }
    send(DisconnectPacket{});
    flush();
}

void Bridge::notify_local(bool up) {
    if (!cfg_.notifications) return;
    broker_.publish_internal(cfg_.notification_topic, up ? "1" : "0", true);
}

void Bridge::connect_next() {
    broker_.reactor().cancel_timer(restart_timer_);
    restart_timer_ = {};
    const config::BridgeAddress& a = cfg_.addresses[address_index_ % cfg_.addresses.size()];
    address_text_ = (a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host) + ":" + std::to_string(a.port);
    // Numeric addresses need no lookup; names go to getaddrinfo_a so the
    // reactor never waits on DNS.
    if (addrinfo* list = numeric_address(a.host, a.port)) {
        resolved(list);
        return;
    }
    resolve_ = start_resolve<Resolve>(a.host, a.port);
    if (!resolve_) {
        fail("cannot start resolving " + a.host);
        return;
    }
    state_ = State::resolving;
    resolve_timer_ = broker_.reactor().add_timer_after(resolve_poll, [this] { poll_resolver(); });
}

void Bridge::poll_resolver() {
    resolve_timer_ = {};
    if (!resolve_) return;
    const int rc = gai_error(&resolve_->request);
    if (rc == EAI_INPROGRESS) {
        resolve_timer_ = broker_.reactor().add_timer_after(resolve_poll, [this] { poll_resolver(); });
        return;
    }
    addrinfo* list = resolve_->request.ar_result;
    const std::string host = resolve_->host;
    resolve_.reset();
    if (rc != 0 || list == nullptr) {
        if (list) freeaddrinfo(list);
        fail("cannot resolve " + host + ": " + gai_strerror(rc));
        return;
    }
    resolved(list);
}

void Bridge::resolved(addrinfo* list) {
    // The first address of the list; the next attempt moves to the next
    // configured address rather than the next record.
    const addrinfo* ai = list;
    sockaddr_storage addr{};
    const socklen_t len = ai->ai_addrlen;
    std::memcpy(&addr, ai->ai_addr, std::min<std::size_t>(len, sizeof addr));
    freeaddrinfo(list);
    start_tcp(reinterpret_cast<const sockaddr*>(&addr), len);
}

void Bridge::start_tcp(const sockaddr* addr, socklen_t len) {
    net::UniqueFd fd(::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
        fail(std::string("socket: ") + std::strerror(errno));
        return;
    }
    const int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!cfg_.bind_address.empty() && !bind_local(fd.get(), addr->sa_family)) return;
    if (::connect(fd.get(), addr, len) != 0 && errno != EINPROGRESS) {
        fail(std::string("connect: ") + std::strerror(errno));
        return;
    }
    state_ = State::connecting;
    connecting_fd_ = fd.get();
    pending_fd_ = std::move(fd);
    if (!broker_.reactor().add(connecting_fd_, EPOLLOUT, this)) {
        fail(std::string("epoll: ") + std::strerror(errno));
        return;
    }
    registered_ = true;
    events_ = EPOLLOUT;
    deadline_timer_ = broker_.reactor().add_timer_after(connect_deadline, [this] {
        deadline_timer_ = {};
        fail("no CONNACK within 20 seconds");
    });
}

bool Bridge::bind_local(int fd, int family) {
    sockaddr_storage local{};
    socklen_t len = 0;
    if (family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&local);
        a->sin_family = AF_INET;
        if (::inet_pton(AF_INET, cfg_.bind_address.c_str(), &a->sin_addr) == 1) len = sizeof *a;
    } else if (family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&local);
        a->sin6_family = AF_INET6;
        if (::inet_pton(AF_INET6, cfg_.bind_address.c_str(), &a->sin6_addr) == 1) len = sizeof *a;
    }
    if (len == 0) {
        fail("bridge_bind_address " + cfg_.bind_address + " is not of the remote's address family", true);
        return false;
    }
    // Port 0: the kernel picks one, as for any outgoing connection.
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&local), len) != 0) {
        fail("bind to bridge_bind_address " + cfg_.bind_address + ": " + std::strerror(errno), true);
        return false;
    }
    return true;
}

void Bridge::tcp_connected() {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(connecting_fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
        fail(std::string("connect: ") + std::strerror(err));
        return;
    }
    if (cfg_.tls()) {
        try {
            // Made per attempt: renewed certificate files are picked up.
            net::TlsClientSettings t;
            t.cafile = cfg_.cafile;
            t.capath = cfg_.capath;
            t.certfile = cfg_.certfile;
            t.keyfile = cfg_.keyfile;
            t.tls_version = cfg_.tls_version;
            t.alpn = cfg_.alpn;
            tls_ = net::TlsContext::make_client(t);
        } catch (const std::exception& e) {
            fail(std::string("TLS: ") + e.what(), true);
            return;
        }
        // bridge_insecure: the chain is still verified, the host name is not.
        const config::BridgeAddress& a = cfg_.addresses[address_index_ % cfg_.addresses.size()];
        transport_ = std::make_unique<net::TlsTransport>(std::move(pending_fd_), tls_,
                                                         cfg_.insecure ? std::string_view{} : std::string_view(a.host));
    } else {
        transport_ = std::make_unique<net::PlainTransport>(std::move(pending_fd_));
    }
    state_ = State::awaiting_connack;
    send_connect();
    flush();
}

void Bridge::send_connect() {
    ConnectPacket c;
    c.version = version_;
    c.clean_start = cfg_.cleansession;
    c.keep_alive = cfg_.keepalive_interval;
    c.client_id = cfg_.remote_clientid;
    if (cfg_.remote_username) c.username = *cfg_.remote_username;
    if (cfg_.remote_password) c.password = as_bytes(*cfg_.remote_password);
    if (cfg_.notifications && !cfg_.notifications_local_only) {
        // The remote publishes 0 for us when we vanish.
        mqttools::Will w;
        w.topic = cfg_.notification_topic;
        w.payload = as_bytes("0");
        w.qos = QoS::at_least_once;
        w.retain = true;
        c.will = w;
    }
    // try_private: protocol level 0x84 tells a Mosquitto-style remote that
    // this is a bridge (it then does not echo our messages back and keeps
    // their retain flags: our 3.1.1 SUBSCRIBE cannot ask for that).
    c.bridge = version_ == ProtocolVersion::v311 && cfg_.try_private;
    const StringPair hello[] = {{bridge_property, broker_.broker_id_text()}};
    if (version_ == ProtocolVersion::v5) {
        // Without cleansession the remote keeps our subscriptions and
        // queues for us while we are away (as a 3.1.1 persistent session).
        if (!cfg_.cleansession) c.properties.session_expiry_interval = 0xFFFFFFFFu;
        // Which broker we are (bridge.hpp): a remote mqttoolsd then never
        // sends back what came from us, even over its own bridge to us.
        if (cfg_.try_private) c.properties.user_properties = hello;
        c.properties.receive_maximum = broker_.config().receive_maximum;
        if (broker_.config().max_packet_size != 0) c.properties.maximum_packet_size = broker_.config().max_packet_size;
    }
    const std::size_t size = encoded_size(c);
    if (size == 0) {
        fail("CONNECT cannot be encoded (a field over 65,535 bytes)", true);
        return;
    }
    const std::size_t at = out_.size();
    out_.resize(at + size);
    encode(c, MutableBytes(out_.data() + at, size));
}

void Bridge::on_connack(const FixedHeader& header, Bytes body) {
    auto decoded = decode_connack(header, body, version_);
    if (!decoded && version_ == ProtocolVersion::v311) {
        // A server that did not accept our protocol level may answer in
        // MQTT 5's form (mqttoolsd before try_private support did for
        // 0x84): read the refusal so the log can say what it was.
        auto v5 = decode_connack(header, body, ProtocolVersion::v5);
        if (v5 && v5->reason != ReasonCode::success) decoded = std::move(v5);
    }
    if (!decoded) {
        fail("malformed CONNACK", true);
        return;
    }
    const ConnackPacket& ack = *decoded;
    if (ack.reason != ReasonCode::success) {
        // A refusal (bad credentials, not authorized, banned...) is an
        // operator problem: an error in the log, and the back-off applies
        // so the remote is not hammered.
        std::string why = std::string("the remote refused the connection: ") +
                          std::string(reason_code_name(ack.reason)) + " (0x" +
                          fmt::format("{:02X}", static_cast<unsigned>(ack.reason)) + ")";
        if (ack.reason == ReasonCode::unsupported_protocol_version && version_ == ProtocolVersion::v311 &&
            cfg_.try_private) {
            why += "; a remote that does not know try_private's bridge flag refuses it: set try_private = false";
        }
        fail(why, true);
        return;
    }
    broker_.reactor().cancel_timer(deadline_timer_);
    deadline_timer_ = {};
    state_ = State::connected;
    failures_ = 0;
    ++stats_.connects;
    if (ever_connected_) ++stats_.reconnects;
    ever_connected_ = true;
    if (!ack.session_present) {
        // A fresh session on the remote: the QoS 2 ids it had not released
        // are gone with the old one, and may be used again.
        inbound_qos2_ = PacketIdSet{};
    }
    const Properties& p = ack.properties;
    // A remote mqttoolsd answers our handshake with its broker id.
    std::uint64_t remote_id = 0;
    if (p.user_property_count != 0) {
        PropertyReader r(p.raw);
        Property prop;
        while (r.next(prop)) {
            if (prop.id == PropertyId::user_property && prop.string == bridge_property) {
                remote_id = parse_broker_id(prop.value);
                break;
            }
        }
    }
    session_.peer_broker = remote_id == broker_.broker_id() ? 0 : remote_id;
    remote_receive_maximum_ = p.receive_maximum.value_or(65535);
    remote_max_packet_ = p.maximum_packet_size.value_or(max_packet_size_limit);
    // bridge_max_packet_size: our own limit on what we send; the smaller wins.
    if (cfg_.max_packet_size != 0) remote_max_packet_ = std::min(remote_max_packet_, cfg_.max_packet_size);
    remote_max_qos_ = p.maximum_qos ? static_cast<QoS>(*p.maximum_qos) : QoS::exactly_once;
    remote_retain_ = p.retain_available.value_or(1) != 0;
    keepalive_ = p.server_keep_alive.value_or(cfg_.keepalive_interval);
    last_received_ = broker_.reactor().now();
    last_activity_ = last_received_;
    spdlog::info("Bridge {}: connected to {} as '{}' ({}{}).", cfg_.name, address_text_, cfg_.remote_clientid,
                 version_ == ProtocolVersion::v5 ? "MQTT 5" : "MQTT 3.1.1",
                 ack.session_present ? ", session present" : "");
    if (keepalive_ != 0) {
        keepalive_timer_ = broker_.reactor().add_timer_after(std::chrono::seconds(keepalive_), [this] { on_keepalive(); });
    }
    if (cfg_.start_type == config::BridgeStart::lazy) {
        idle_timer_ = broker_.reactor().add_timer_after(std::chrono::seconds(cfg_.idle_timeout), [this] { on_idle_check(); });
    }
    subscribe_remote();
    resume_inflight(ack.session_present);
    schedule_primary_probe();
    if (cfg_.notifications && !cfg_.notifications_local_only) {
        auto m = std::make_shared<Message>();
        m->topic = cfg_.notification_topic;
        m->payload = "1";
        m->qos = QoS::at_least_once;
        m->retain = true;
        Outgoing o;
        o.message = std::move(m);
        o.qos = QoS::at_least_once;
        o.retain = true;
        enqueue(std::move(o), true);
    }
    pump();
    notify_local(true);
}

void Bridge::on_keepalive() {
    keepalive_timer_ = {};
    if (state_ != State::connected) return;
    const auto now = broker_.reactor().now();
    // Nothing from the remote for 1.5 keep alive periods: it is gone
    // (the server's own rule, [MQTT-3.1.2-22], applied from our side).
    if (now - last_received_ > std::chrono::milliseconds(keepalive_ * 1500)) {
        fail("no answer from the remote within the keep alive");
        return;
    }
    send(PingreqPacket{});
    keepalive_timer_ = broker_.reactor().add_timer_after(std::chrono::seconds(keepalive_), [this] { on_keepalive(); });
}

void Bridge::on_idle_check() {
    idle_timer_ = {};
    if (state_ != State::connected) return;
    const auto now = broker_.reactor().now();
    const auto idle = std::chrono::seconds(cfg_.idle_timeout);
    if (now - last_activity_ >= idle && queue_.empty() && inflight_.empty()) {
        spdlog::info("Bridge {}: idle for {} s, disconnecting (lazy).", cfg_.name, cfg_.idle_timeout);
        stop();
        return;
    }
    idle_timer_ = broker_.reactor().add_timer_after(idle - (now - last_activity_) + std::chrono::milliseconds(10),
                                                    [this] { on_idle_check(); });
}

void Bridge::fail(const std::string& why, bool log_as_error) {
    const bool was_connected = state_ == State::connected;
    if (log_as_error) {
        spdlog::error("Bridge {}: {}: {}.", cfg_.name, address_text_, why);
    } else {
        spdlog::warn("Bridge {}: {}: {}.", cfg_.name, address_text_, why);
    }
    close_socket();
    if (was_connected) notify_local(false);
    ++failures_;
    if (was_connected && !cfg_.round_robin) {
        address_index_ = 0;  // a lost link: the primary first again
    } else {
        ++address_index_;  // fail over to the next address
    }
    schedule_restart();
}

void Bridge::schedule_restart() {
    if (cfg_.start_type == config::BridgeStart::once) {
        state_ = State::stopped;
        spdlog::warn("Bridge {}: start_type once: not reconnecting.", cfg_.name);
        return;
    }
    if (cfg_.start_type == config::BridgeStart::lazy && queue_.size() < cfg_.threshold) {
        state_ = State::stopped;
        return;
    }
    state_ = State::waiting;
    std::chrono::milliseconds delay(std::uint64_t{cfg_.restart_timeout} * 1000);
    if (cfg_.restart_timeout_cap != 0) {
        // Exponential back-off with full jitter, as Mosquitto's "base cap".
        const std::uint32_t shift = std::min<std::uint32_t>(failures_ > 0 ? failures_ - 1 : 0, 16);
        const std::uint64_t ceiling = std::min<std::uint64_t>(std::uint64_t{cfg_.restart_timeout} << shift,
                                                              cfg_.restart_timeout_cap);
        static thread_local std::minstd_rand rng(std::random_device{}());
        const std::uint64_t lo = cfg_.restart_timeout * 1000ull;
        const std::uint64_t hi = std::max<std::uint64_t>(lo, ceiling * 1000);
        delay = std::chrono::milliseconds(lo + rng() % (hi - lo + 1));
    }
    spdlog::info("Bridge {}: next attempt in {:.1f} s.", cfg_.name, static_cast<double>(delay.count()) / 1000.0);
    restart_timer_ = broker_.reactor().add_timer_after(delay, [this] {
        restart_timer_ = {};
        connect_next();
    });
}

void Bridge::schedule_primary_probe() {
    stop_probe();
    const std::size_t n = cfg_.addresses.size();
    if (cfg_.round_robin || n < 2 || address_index_ % n == 0) return;
    // Mosquitto's rule for round_robin false: while on a secondary, keep
    // trying the primary; every restart_timeout (at least 5 s).
    const auto every = std::chrono::seconds(std::max<std::uint32_t>(cfg_.restart_timeout, 5));
    probe_timer_ = broker_.reactor().add_timer_after(every, [this] {
        probe_timer_ = {};
        probe_primary();
    });
}

void Bridge::probe_primary() {
    if (state_ != State::connected) return;
    const config::BridgeAddress& a = cfg_.addresses.front();
    if (addrinfo* list = numeric_address(a.host, a.port)) {
        probe_resolved(list);
        return;
    }
    probe_resolve_ = start_resolve<Resolve>(a.host, a.port);
    if (!probe_resolve_) {
        schedule_primary_probe();
        return;
    }
    probe_timer_ = broker_.reactor().add_timer_after(resolve_poll, [this] {
        probe_timer_ = {};
        probe_check();
    });
}

void Bridge::probe_resolved(addrinfo* list) {
    net::UniqueFd fd(::socket(list->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    const bool started = fd.valid() && (::connect(fd.get(), list->ai_addr, list->ai_addrlen) == 0 || errno == EINPROGRESS);
    freeaddrinfo(list);
    if (!started) {
        schedule_primary_probe();
        return;
    }
    probe_fd_ = std::move(fd);
    probe_timer_ = broker_.reactor().add_timer_after(probe_wait, [this] {
        probe_timer_ = {};
        probe_check();
    });
}

void Bridge::probe_check() {
    if (state_ != State::connected) {
        stop_probe();
        return;
    }
    if (probe_resolve_) {
        const int rc = gai_error(&probe_resolve_->request);
        if (rc == EAI_INPROGRESS) {
            probe_timer_ = broker_.reactor().add_timer_after(resolve_poll, [this] {
                probe_timer_ = {};
                probe_check();
            });
            return;
        }
        addrinfo* list = probe_resolve_->request.ar_result;
        probe_resolve_.reset();
        if (rc != 0 || list == nullptr) {
            if (list) freeaddrinfo(list);
            schedule_primary_probe();
            return;
        }
        probe_resolved(list);
        return;
    }
    // Connected (writable, no error) within probe_wait: the primary is back.
    pollfd p{probe_fd_.get(), POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    const bool up = ::poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) &&
                    ::getsockopt(probe_fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
    probe_fd_ = net::UniqueFd();
    if (!up) {
        schedule_primary_probe();
        return;
    }
    spdlog::info("Bridge {}: the primary address {}:{} answers again, moving back to it.", cfg_.name,
                 cfg_.addresses.front().host, cfg_.addresses.front().port);
    say_goodbye();
    close_socket();
    notify_local(false);
    address_index_ = 0;
    failures_ = 0;
    connect_next();
}

void Bridge::stop_probe() {
    broker_.reactor().cancel_timer(probe_timer_);
    probe_timer_ = {};
    abandon(probe_resolve_);
    probe_fd_ = net::UniqueFd();
}

void Bridge::close_socket() {
    net::Reactor& r = broker_.reactor();
    r.cancel_timer(deadline_timer_);
    r.cancel_timer(keepalive_timer_);
    r.cancel_timer(idle_timer_);
    deadline_timer_ = keepalive_timer_ = idle_timer_ = {};
    stop_probe();
    if (registered_) {
        r.remove(transport_ ? transport_->fd() : connecting_fd_);
        registered_ = false;
    }
    transport_.reset();
    pending_fd_ = net::UniqueFd();
    connecting_fd_ = -1;
    in_.clear();
    out_.clear();
    out_pos_ = 0;
    subscribe_id_ = 0;
    // In-flight QoS 1/2 stay for the next connection; a QoS 2 PUBREL we
    // owe is sent again on resume.
    if (state_ != State::stopped) state_ = State::waiting;
}

void Bridge::update_events() {
    if (!registered_ || !transport_) return;
    std::uint32_t want = EPOLLIN;
    // During a TLS handshake our output waits for the server's answer (a
    // read), not for the socket: EPOLLOUT then would only spin.
    const bool handshaking = cfg_.tls() && !static_cast<net::TlsTransport&>(*transport_).session().handshake_done();
    if ((out_.size() > out_pos_ && !handshaking) || transport_->wants_write()) want |= EPOLLOUT;
    if (want != events_) {
        broker_.reactor().modify(transport_->fd(), want, this);
        events_ = want;
    }
}

void Bridge::on_io(std::uint32_t events) {
    if (state_ == State::connecting) {
        broker_.reactor().modify(connecting_fd_, EPOLLIN, this);
        events_ = EPOLLIN;
        tcp_connected();
        return;
    }
    if (!transport_) return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        on_readable();
        if (!transport_) return;
    }
    // TLS: a handshake step may have made room for the CONNECT we hold.
    flush();
}

void Bridge::on_readable() {
    std::byte buf[16 * 1024 + 512];
    for (int round = 0; round < 16 && transport_; ++round) {
        const net::IoResult r = transport_->read(MutableBytes(buf, sizeof buf));
        if (r.status == net::IoStatus::would_block) return;
        if (r.status == net::IoStatus::closed) {
            fail("the remote closed the connection");
            return;
        }
        if (r.status == net::IoStatus::error) {
            std::string why = "connection error";
            if (cfg_.tls()) {
                const std::string& tls = static_cast<net::TlsTransport&>(*transport_).session().last_error();
                if (!tls.empty()) why = "TLS: " + tls;
            }
            fail(why, cfg_.tls() && state_ == State::awaiting_connack);
            return;
        }
        last_received_ = broker_.reactor().now();
        in_.insert(in_.end(), buf, buf + r.bytes);
        std::size_t pos = 0;
        while (transport_) {
            const Bytes rest(in_.data() + pos, in_.size() - pos);
            const Frame f = read_frame(rest, broker_.max_packet_size_in());
            if (f.status == FrameStatus::need_more) break;
            if (f.status == FrameStatus::error) {
                fail("malformed packet from the remote", true);
                return;
            }
            const Bytes body(rest.data() + f.header.header_size, f.header.remaining_length);
            pos += f.header.packet_size();
            handle_packet(f.header, body);
        }
        if (!transport_) return;
        in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(pos));
        if (r.bytes < sizeof buf) return;
    }
}

void Bridge::handle_packet(const FixedHeader& header, Bytes body) {
    if (state_ == State::awaiting_connack) {
        if (header.type != PacketType::connack) {
            fail("expected CONNACK, got " + std::string(packet_type_name(header.type)), true);
            return;
        }
        on_connack(header, body);
        return;
    }
    switch (header.type) {
        case PacketType::publish:
            on_remote_publish(header, body);
            return;
        case PacketType::puback:
        case PacketType::pubrec:
        case PacketType::pubrel:
        case PacketType::pubcomp:
            on_ack(header, body);
            return;
        case PacketType::suback: {
            auto s = decode_suback(header, body, version_);
            if (!s) {
                fail("malformed SUBACK", true);
                return;
            }
            std::size_t i = 0;
            for (std::byte b : s->reason_codes) {
                if (std::to_integer<unsigned>(b) >= 0x80) {
                    spdlog::error("Bridge {}: the remote refused subscription {} (0x{:02X}).", cfg_.name, i + 1,
                                  std::to_integer<unsigned>(b));
                }
                ++i;
            }
            return;
        }
        case PacketType::unsuback:
        case PacketType::pingresp:
            return;
        case PacketType::disconnect: {
            auto d = decode_disconnect(header, body, version_, Sender::server);
            fail(std::string("the remote sent DISCONNECT: ") +
                 std::string(reason_code_name(d ? d->reason : ReasonCode::malformed_packet)));
            return;
        }
        default:
            fail("unexpected " + std::string(packet_type_name(header.type)) + " from the remote", true);
            return;
    }
}

}  // namespace mqttools::broker
