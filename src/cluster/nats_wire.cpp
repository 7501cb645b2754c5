#include "cluster/nats_wire.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <spdlog/spdlog.h>

#include "mqttools_version.h"

namespace mqttools::cluster {

namespace {

// Keepalive: a PING every 30 s while up; two unanswered: the server is gone
// (a half-open connection would otherwise hold the node cut off unnoticed).
constexpr auto ping_interval = std::chrono::seconds(30);
constexpr int max_pings_out = 2;
constexpr auto handshake_timeout = std::chrono::seconds(10);
// Reads per wake-up, so that a burst from NATS does not starve clients
// (level-triggered epoll comes back for the rest).
constexpr std::size_t read_budget = 4u << 20;
constexpr std::size_t initial_in = 256u << 10;
// Larger than any max_payload nats-server accepts (64 MiB): a MSG above it
// is a broken stream.
constexpr std::size_t max_in_payload = (64u << 20) + 4096;

std::string strip_scheme(std::string_view url, std::string& user, std::string& pass) {
    if (const auto p = url.find("://"); p != url.npos) url.remove_prefix(p + 3);
    if (const auto at = url.rfind('@'); at != url.npos) {
        const std::string_view info = url.substr(0, at);
        const auto colon = info.find(':');
        user.assign(info.substr(0, colon));
        if (colon != info.npos) pass.assign(info.substr(colon + 1));
        url.remove_prefix(at + 1);
    }
    while (!url.empty() && url.back() == '/') url.remove_suffix(1);
    return std::string(url);
}

}  // namespace

NatsWire::NatsWire(net::Reactor& reactor, Events& events, Options options)
    : reactor_(reactor), events_(events), options_(std::move(options)) {
    for (const std::string& u : options_.urls) {
        Url url;
        std::string hostport = strip_scheme(u, url.user, url.pass);
        url.port = "4222";
        if (!hostport.empty() && hostport.front() == '[') {
            const auto close = hostport.find(']');
            url.host = hostport.substr(1, close == hostport.npos ? hostport.npos : close - 1);
            if (close != hostport.npos && close + 1 < hostport.size() && hostport[close + 1] == ':') {
                url.port = hostport.substr(close + 2);
            }
        } else if (const auto colon = hostport.rfind(':'); colon != hostport.npos) {
            url.host = hostport.substr(0, colon);
            url.port = hostport.substr(colon + 1);
        } else {
            url.host = hostport;
        }
        urls_.push_back(std::move(url));
    }
    if (urls_.empty()) urls_.push_back({"127.0.0.1", "4222", {}, {}});
}

NatsWire::~NatsWire() {
    reactor_.cancel_timer(retry_timer_);
    reactor_.cancel_timer(ping_timer_);
    if (fd_) reactor_.remove(fd_.get());
}

void NatsWire::start() { attempt(); }

void NatsWire::attempt() {
    retry_timer_ = {};
    const Url& url = urls_[url_index_ % urls_.size()];
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* list = nullptr;
    // A host name resolves synchronously (rare: at start and on reconnects);
    // addresses, the common case on one host, do not block.
    const int rc = ::getaddrinfo(url.host.empty() ? "127.0.0.1" : url.host.c_str(), url.port.c_str(), &hints, &list);
    if (rc != 0) {
        fail(std::string("cannot resolve: ") + ::gai_strerror(rc));
        return;
    }
    int err = 0;
    for (addrinfo* ai = list; ai; ai = ai->ai_next) {
        net::UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) {
            err = errno;
            continue;
        }
        const int one = 1;
        ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            err = errno;
            continue;
        }
        fd_ = std::move(fd);
        break;
    }
    ::freeaddrinfo(list);
    if (!fd_) {
        fail(std::strerror(err ? err : ECONNREFUSED));
        return;
    }
    state_ = State::connecting;
    writing_ = true;
    if (!reactor_.add(fd_.get(), EPOLLOUT, this)) {
        fail(std::string("epoll: ") + std::strerror(errno));
        return;
    }
    // A server that accepts but never completes INFO, TLS and CONNECT (a
    // wrong port, a stuck handshake) must not hold the node forever.
    retry_timer_ = reactor_.add_timer_after(handshake_timeout, [this] {
        retry_timer_ = {};
        if (state_ != State::up) fail("no INFO/TLS/CONNECT answer within 10 s");
    });
}

void NatsWire::connected_socket() {
    state_ = State::handshake;
    connect_sent_ = false;
    writing_ = false;
    reactor_.modify(fd_.get(), EPOLLIN, this);
    if (in_.size() < initial_in) in_.resize(initial_in);
    in_begin_ = in_end_ = 0;
}

void NatsWire::close_socket() {
    tls_.reset();
    if (fd_) {
        reactor_.remove(fd_.get());
        fd_.reset();
    }
    reactor_.cancel_timer(ping_timer_);
    ping_timer_ = {};
    out_.clear();  // stale publishes never go out after a reconnect (docs/cluster.md: lost_sending)
    out_pos_ = 0;
    joinable_at_ = std::string::npos;
    in_begin_ = in_end_ = 0;
    pings_.clear();
    keepalives_out_ = 0;
    writing_ = false;
    lingering_ = urgent_ = false;
}

void NatsWire::fail(const std::string& why) {
    const bool was_up = state_ == State::up;
    const Url& url = urls_[url_index_ % urls_.size()];
    close_socket();
    state_ = State::idle;
    last_error_ = why;
    if (!ever_up_) {
        std::string where;
        for (const std::string& u : options_.urls) where += (where.empty() ? "" : ", ") + u;
        if (where.empty()) where = "nats://" + url.host + ":" + url.port;
        if (unreachable_.empty()) {
            spdlog::warn("Cluster: cannot reach NATS at {}: {}; retrying in the background (until then this node "
                         "serves only its own clients).",
                         where, why);
        }
        unreachable_ = where + ": " + why;
    } else if (was_up) {
        spdlog::warn("Cluster: lost the connection to NATS ({}); serving local clients, reconnecting.", why);
    } else if ((attempts_ & (attempts_ - 1)) == 0) {
        spdlog::debug("Cluster: NATS reconnect attempt {} to {}:{} failed: {}", attempts_, url.host, url.port, why);
    }
    schedule_reconnect();
    if (was_up) events_.on_wire_down();
}

void NatsWire::schedule_reconnect() {
    // 100 ms doubling to 5 s, with jitter so that N nodes do not hit a
    // restarted server at the same moment; the next URL each time.
    const int shift = std::min(attempts_, 6);
    const auto base = std::min<std::int64_t>(100LL << shift, 5000);
    const auto jitter = static_cast<std::int64_t>(
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) % 100);
    ++attempts_;
    ++url_index_;
    reactor_.cancel_timer(retry_timer_);
    retry_timer_ = reactor_.add_timer_after(std::chrono::milliseconds(base + jitter), [this] { attempt(); });
}

void NatsWire::want_write(bool on) {
    if (writing_ == on || !fd_) return;
    writing_ = on;
    reactor_.modify(fd_.get(), EPOLLIN | (on ? EPOLLOUT : 0u), this);
}

void NatsWire::on_io(std::uint32_t events) {
    if (state_ == State::connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        if (::getsockopt(fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        if (err != 0) {
            fail(std::strerror(err));
            return;
        }
        connected_socket();
        return;
    }
    if (!fd_) return;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (!read_some()) return;
    }
    // TLS: a read may finish the handshake (CONNECT waits for it) or leave
    // handshake records for a full socket.
    if (fd_ && ((events & EPOLLOUT) || (tls_ && (state_ != State::up || tls_->has_pending())))) flush();
}

bool NatsWire::read_some() {
    std::size_t total = 0;
    while (total < read_budget) {
        // TLS reads whole records only with room for one (nats_tls.hpp).
        const std::size_t min_room = tls_ ? NatsTls::read_room : 1;
        if (in_.size() - in_end_ < min_room) {
            if (in_begin_ > 0) {
                std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
                in_end_ -= in_begin_;
                in_begin_ = 0;
            }
            if (in_.size() - in_end_ < min_room) in_.resize(in_.size() * 2);
        }
        char* const at = in_.data() + in_end_;
        const std::size_t room = in_.size() - in_end_;
        const ssize_t n = tls_ ? tls_->recv(at, room) : ::recv(fd_.get(), at, room, 0);
        if (n == 0) {
            fail("connection closed by the server");
            return false;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            fail(io_error(errno));
            return false;
        }
        in_end_ += static_cast<std::size_t>(n);
        total += static_cast<std::size_t>(n);
        // Every complete message, in place.
        while (in_begin_ < in_end_) {
            const std::string_view avail(in_.data() + in_begin_, in_end_ - in_begin_);
            const nats::ParseResult r = nats::parse_server(avail, nats::default_max_control_line, max_in_payload);
            if (r.status == nats::ParseStatus::incomplete) break;
            if (r.status == nats::ParseStatus::malformed) {
                fail(std::string("protocol error from the server: ") + r.error);
                return false;
            }
            in_begin_ += r.consumed;
            handle(r.message);
            if (!fd_) return false;  // handle() dropped the connection
        }
        if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
        if (static_cast<std::size_t>(n) < in_.size() / 2) break;  // drained, most likely
    }
    // A buffer grown for one large message goes back to its usual size.
    if (in_begin_ == in_end_ && in_.size() > (4u << 20)) {
        in_.assign(initial_in, 0);
        in_.shrink_to_fit();
    }
    return true;
}

void NatsWire::handle(const nats::ServerMessage& m) {
    switch (m.op) {
        case nats::ServerOp::msg:
        case nats::ServerOp::hmsg:
            if (state_ == State::up) events_.on_wire_message(m);
            break;
        case nats::ServerOp::ping:
            nats::encode_pong(out_);
            urgent_ = true;
            if (state_ != State::up) flush();
            break;
        case nats::ServerOp::pong:
            if (state_ == State::handshake) {
                // The PING after CONNECT: the server accepted us and has
                // every SUB sent before it.
                state_ = State::up;
                reactor_.cancel_timer(retry_timer_);
                retry_timer_ = {};
                const bool again = ever_up_;
                ever_up_ = true;
                attempts_ = 0;
                unreachable_.clear();
                if (tls_) log_tls_up();
                ping_timer_ = reactor_.add_timer_after(ping_interval, [this] { keepalive(); });
                events_.on_wire_up(again);
                break;
            }
            keepalives_out_ = 0;  // any answer says the server is alive
            if (!pings_.empty()) {
                const bool reported = pings_.front();
                pings_.pop_front();
                if (reported) events_.on_wire_pong();
            }
            break;
        case nats::ServerOp::info: {
            nats::ServerInfo info;
            if (!nats::parse_info(m.text, info)) {
                fail("malformed INFO");
                return;
            }
            info_ = info;
            if (state_ != State::handshake || connect_sent_) break;  // an update (cluster topology)
            if (info.tls_required && !options_.tls.on) {
                fail("the server requires TLS (use a tls:// URL, or set cafile in [cluster])");
                return;
            }
            if (options_.tls.on && !start_tls(info)) return;
            const Url& url = urls_[url_index_ % urls_.size()];
            nats::ConnectOptions o;
            o.name = options_.name;
            o.user = !url.user.empty() ? std::string_view(url.user) : std::string_view(options_.user);
            o.pass = !url.user.empty() ? std::string_view(url.pass) : std::string_view(options_.pass);
            o.version = MQTTOOLS_VERSION;
            o.echo = options_.echo;
            o.tls = tls_ != nullptr;
            nats::encode_connect(out_, o);
            connect_sent_ = true;
            for (const auto& [sid, sub] : subs_) nats::encode_sub(out_, sub.subject, sub.queue, sid);
            nats::encode_ping(out_);
            flush();
            break;
        }
        case nats::ServerOp::err:
            if (state_ != State::up) {
                fail("refused: " + std::string(m.text));
                return;
            }
            // Permission errors leave the connection open; others are
            // followed by the server closing it.
            spdlog::warn("Cluster: NATS error: {}", std::string(m.text));
            break;
        case nats::ServerOp::ok:
            break;
    }
}

void NatsWire::keepalive() {
    ping_timer_ = {};
    if (state_ != State::up) return;
    if (keepalives_out_ >= max_pings_out) {
        fail("no PONG to " + std::to_string(max_pings_out) + " PINGs: stale connection");
        return;
    }
    ++keepalives_out_;
    pings_.push_back(false);
    nats::encode_ping(out_);
    flush();
    if (state_ == State::up) ping_timer_ = reactor_.add_timer_after(ping_interval, [this] { keepalive(); });
}

void NatsWire::subscribe(std::uint64_t sid, std::string subject, std::string queue) {
    if (sending()) {
        nats::encode_sub(out_, subject, queue, sid);
        urgent_ = true;
    }
    subs_[sid] = Sub{std::move(subject), std::move(queue)};
}

void NatsWire::unsubscribe(std::uint64_t sid) {
    if (subs_.erase(sid) != 0 && sending()) {
        nats::encode_unsub(out_, sid);
        urgent_ = true;
    }
}

bool NatsWire::publish(std::string_view subject, std::string_view reply, std::string_view payload) {
    if (state_ != State::up || !room()) return false;
    urgent_ = true;
    return nats::encode_pub(out_, subject, reply, payload);
}

bool NatsWire::publish_trusted(std::string_view subject, std::string_view reply, std::string_view payload,
                               bool joinable) {
    if (state_ != State::up || !room()) return false;
    if (!lingering_ && options_.linger.count() > 0) {
        lingering_ = true;
        linger_since_ = reactor_.now();
    }
    const std::size_t at = out_.size();
    nats::encode_pub_trusted(out_, subject, reply, payload);
    joinable_at_ = std::string::npos;
    if (joinable) {
        joinable_at_ = at;
        joinable_subject_ = subject.size();
        joinable_end_ = out_.size();
        payload_at_ = joinable_end_ - 2 - payload.size();
        size_at_ = out_.rfind(' ', payload_at_ - 3) + 1;
        joined_ = false;
    }
    return true;
}

bool NatsWire::join_last(std::string_view subject, std::string_view payload, char marker, std::size_t limit) {
    // "PUB " SUBJECT " " REPLY " " SIZE "\r\n" PAYLOAD "\r\n"; a joined
    // message's SIZE is zero-padded to a fixed width (nats-server reads and
    // forwards it as it is), so that each join rewrites it in place.
    constexpr std::size_t join_digits = 7;
    if (joinable_at_ == std::string::npos || joinable_end_ != out_.size() || joinable_at_ < out_pos_ ||
        subject.size() != joinable_subject_ || state_ != State::up || !room() ||
        std::string_view(out_).substr(joinable_at_ + 4, subject.size()) != subject) {
        return false;
    }
    std::size_t size = joinable_end_ - 2 - payload_at_ + payload.size() + (joined_ ? 0 : 1);
    if (size > limit || size > 9'999'999) return false;
    if (!joined_) {
        char tail[join_digits + 3];
        std::memset(tail, '0', join_digits);
        tail[join_digits] = '\r';
        tail[join_digits + 1] = '\n';
        tail[join_digits + 2] = marker;
        out_.replace(size_at_, payload_at_ - size_at_, tail, sizeof tail);
        payload_at_ = size_at_ + join_digits + 2;
        joined_ = true;
    }
    // Over the payload's CRLF: the new payload, then the CRLF again.
    const std::size_t at = out_.size() - 2;
    out_.resize(at + payload.size() + 2);
    char* const w = out_.data() + at;
    std::memcpy(w, payload.data(), payload.size());
    std::memcpy(w + payload.size(), "\r\n", 2);
    joinable_end_ = out_.size();
    for (std::size_t i = join_digits; i > 0; --i, size /= 10) out_[size_at_ + i - 1] = static_cast<char>('0' + size % 10);
    return true;
}

bool NatsWire::publish_headers(std::string_view subject, std::string_view reply, std::string_view headers,
                               std::string_view payload) {
    if (state_ != State::up || !room()) return false;
    urgent_ = true;
    return nats::encode_hpub(out_, subject, reply, headers, payload);
}

bool NatsWire::publish2(std::string_view subject, std::string_view reply, std::string_view a, std::string_view b) {
    if (state_ != State::up) return false;
    if (!nats::encode_pub_line(out_, subject, reply, a.size() + b.size())) return false;
    out_.append(a).append(b).append("\r\n");
    urgent_ = true;
    return true;
}

bool NatsWire::ping() {
    if (state_ != State::up) return false;
    pings_.push_back(true);
    nats::encode_ping(out_);
    urgent_ = true;
    return true;
}

void NatsWire::flush_or_linger() {
    // Live messages wait for company as long as nothing else is queued
    // (a SUB, a PING barrier, a claim, a QoS 1/2 batch barrier: those go
    // now and take the messages with them), the batch is small and the
    // socket takes writes; the first one's age bounds the wait.
    if (lingering_ && !urgent_ && !writing_ && state_ == State::up &&
        out_.size() - out_pos_ < options_.linger_bytes) {
        const net::Clock::time_point due = linger_since_ + options_.linger;
        if (net::Clock::now() < due) {
            reactor_.wake_by(due);
            return;
        }
    }
    flush();
}

void NatsWire::flush() {
    lingering_ = urgent_ = false;
    joinable_at_ = std::string::npos;  // what follows goes in the next send
    if (!fd_ || state_ == State::connecting) return;
    if (out_pos_ == out_.size()) {
        if (tls_ && tls_->has_pending()) flush_tls_pending();
        return;
    }
    while (out_pos_ < out_.size()) {
        const char* const at = out_.data() + out_pos_;
        const std::size_t left = out_.size() - out_pos_;
        const ssize_t n = tls_ ? tls_->send(at, left) : ::send(fd_.get(), at, left, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            out_pos_ += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            // The rest when the socket takes it; TLS before the end of its
            // handshake: when the server's next records are read.
            want_write(!tls_ || tls_->has_pending());
            return;
        }
        fail("write: " + io_error(errno));
        return;
    }
    out_pos_ = 0;
    if (out_.capacity() > (8u << 20)) {
        std::string().swap(out_);
    } else {
        out_.clear();
    }
    want_write(tls_ && tls_->has_pending());
}

void NatsWire::flush_blocking(int ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    const auto unsent = [this] { return out_pos_ < out_.size() || (tls_ && tls_->has_pending()); };
    while (fd_ && state_ == State::up && unsent()) {
        flush();
        if (!fd_ || !unsent()) break;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{fd_.get(), POLLOUT, 0};
        ::poll(&p, 1, static_cast<int>(left.count()));
    }
}

}  // namespace mqttools::cluster
