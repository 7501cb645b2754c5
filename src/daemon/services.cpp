#include "daemon/services.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

#include "daemon/metrics_http.hpp"
#include "mqttools_version.h"

namespace mqttools::daemon {

namespace {

using Clock = std::chrono::steady_clock;

// At most this many /metrics requests in flight; more are closed at once.
constexpr std::size_t kMaxHttpClients = 32;
// A scraper that has not finished its request and read the answer in this
// time is dropped (no slowloris on the broker's thread).
constexpr auto kHttpTimeout = std::chrono::seconds(10);

int open_listener(const std::string& bind, std::uint16_t port, std::string& error) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    const std::string service = std::to_string(port);
    const int rc = ::getaddrinfo(bind.empty() ? nullptr : bind.c_str(), service.c_str(), &hints, &res);
    if (rc != 0) {
        error = "metrics: cannot resolve '" + bind + "': " + ::gai_strerror(rc);
        return -1;
    }
    const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error = std::string("metrics: socket: ") + std::strerror(errno);
        ::freeaddrinfo(res);
        return -1;
    }
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
        error = "metrics: cannot listen on " + bind + ":" + service + ": " + std::strerror(errno);
        ::close(fd);
        ::freeaddrinfo(res);
        return -1;
    }
    ::freeaddrinfo(res);
    return fd;
}

}  // namespace

struct DaemonServices::HttpClient {
    int fd = -1;
    std::string in;
    std::string out;
    std::size_t sent = 0;
    Clock::time_point deadline;
};

DaemonServices::DaemonServices(const config::Config& cfg, Hooks hooks)
    : hooks_(std::move(hooks)),
      sys_(MQTTOOLS_VERSION, Clock::now()),
      sys_interval_(cfg.sys_interval),
      start_(Clock::now()) {}

std::unique_ptr<DaemonServices> DaemonServices::create(const config::Config& cfg, Hooks hooks,
                                                       std::string& error) {
    std::unique_ptr<DaemonServices> s(new DaemonServices(cfg, std::move(hooks)));
    s->epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
    s->timer_fd_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->epoll_fd_ < 0 || s->timer_fd_ < 0) {
        error = std::string("epoll/timerfd: ") + std::strerror(errno);
        return nullptr;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = s->timer_fd_;
    ::epoll_ctl(s->epoll_fd_, EPOLL_CTL_ADD, s->timer_fd_, &ev);
    if (cfg.metrics.enabled) {
        s->metrics_fd_ = open_listener(cfg.metrics.bind, cfg.metrics.port, error);
        if (s->metrics_fd_ < 0) return nullptr;
        s->metrics_port_ = cfg.metrics.port;
        ev.data.fd = s->metrics_fd_;
        ::epoll_ctl(s->epoll_fd_, EPOLL_CTL_ADD, s->metrics_fd_, &ev);
    }
    s->arm_timer();
    return s;
}

DaemonServices::~DaemonServices() {
    for (auto& c : clients_) ::close(c->fd);
    if (metrics_fd_ >= 0) ::close(metrics_fd_);
    if (timer_fd_ >= 0) ::close(timer_fd_);
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

void DaemonServices::arm_timer() {
    // One periodic tick drives everything: at most 1 s (STATUS, $SYS,
    // HTTP timeouts), shorter when the watchdog needs it.
    auto period = std::chrono::microseconds(std::chrono::seconds(1));
    if (auto wd = notifier_.watchdog_interval()) period = std::min(period, *wd);
    period = std::max(period, std::chrono::microseconds(1000));
    itimerspec spec{};
    spec.it_interval.tv_sec = static_cast<time_t>(period.count() / 1000000);
    spec.it_interval.tv_nsec = static_cast<long>(period.count() % 1000000) * 1000;
    spec.it_value = spec.it_interval;
    ::timerfd_settime(timer_fd_, 0, &spec, nullptr);
}

void DaemonServices::dispatch() {
    epoll_event events[16];
    const int n = ::epoll_wait(epoll_fd_, events, 16, 0);
    for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == timer_fd_) {
            std::uint64_t expirations = 0;
            if (::read(timer_fd_, &expirations, sizeof expirations) > 0) tick();
        } else if (fd == metrics_fd_) {
            accept_metrics();
        } else {
            auto it = std::find_if(clients_.begin(), clients_.end(), [fd](const auto& c) { return c->fd == fd; });
            if (it != clients_.end()) serve(**it, events[i].events);
        }
    }
}

std::uint64_t DaemonServices::clients() const {
    if (hooks_.clients_connected) return hooks_.clients_connected();
    return hooks_.stats ? hooks_.stats().clients_connected : 0;
}

// "3 clients connected", then why a cluster node cannot reach NATS.
std::string DaemonServices::status_text() const {
    std::string text = SystemdNotifier::client_status(clients());
    if (hooks_.cluster_trouble) {
        if (const std::string t = hooks_.cluster_trouble(); !t.empty()) text += "; cluster: " + t;
    }
    return text;
}

void DaemonServices::ready() {
    ready_ = true;
    last_status_ = status_text();
    notifier_.ready(last_status_);
    const auto now = Clock::now();
    next_watchdog_ = now;
    next_status_ = now + std::chrono::seconds(1);
    if (sys_interval_ > 0) {
        publish_sys();
        next_sys_ = now + std::chrono::seconds(sys_interval_);
    }
}

void DaemonServices::reloading() { notifier_.reloading(); }

void DaemonServices::reloaded(const config::Config& cfg) {
    if (cfg.sys_interval != sys_interval_) {
        sys_interval_ = cfg.sys_interval;
        next_sys_ = Clock::now() + std::chrono::seconds(sys_interval_);
    }
    last_status_ = status_text();
    notifier_.ready(last_status_);
}

void DaemonServices::stopping() {
    notifier_.stopping();
    ready_ = false;
    if (metrics_fd_ >= 0) {
        ::close(metrics_fd_);
        metrics_fd_ = -1;
    }
}

void DaemonServices::publish_sys() {
    if (!hooks_.stats || !hooks_.publish_retained) return;
    for (const auto& m : sys_.update(hooks_.stats(), Clock::now())) hooks_.publish_retained(m);
}

void DaemonServices::tick() {
    const auto now = Clock::now();
    if (auto wd = notifier_.watchdog_interval(); wd && now >= next_watchdog_) {
        notifier_.watchdog();
        next_watchdog_ = now + *wd;
    }
    if (!ready_) return;
    if (notifier_.enabled() && now >= next_status_) {
        // STATUS= only when the count changed: one datagram per second at most.
        if (std::string now_status = status_text(); now_status != last_status_) {
            notifier_.status(now_status);
            last_status_ = std::move(now_status);
        }
        next_status_ = now + std::chrono::seconds(1);
    }
    if (sys_interval_ > 0 && now >= next_sys_) {
        publish_sys();
        next_sys_ = now + std::chrono::seconds(sys_interval_);
    }
    for (std::size_t i = clients_.size(); i-- > 0;) {
        if (now >= clients_[i]->deadline) close_client(clients_[i]->fd);
    }
}

void DaemonServices::accept_metrics() {
    for (;;) {
        const int fd = ::accept4(metrics_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                spdlog::warn("metrics: accept: {}", std::strerror(errno));
            }
            return;
        }
        if (clients_.size() >= kMaxHttpClients) {
            ::close(fd);
            continue;
        }
        auto c = std::make_unique<HttpClient>();
        c->fd = fd;
        c->deadline = Clock::now() + kHttpTimeout;
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
        clients_.push_back(std::move(c));
    }
}

void DaemonServices::serve(HttpClient& c, std::uint32_t events) {
    if (c.out.empty()) {
        char buf[2048];
        for (;;) {
            const auto n = ::read(c.fd, buf, sizeof buf);
            if (n > 0) {
                c.in.append(buf, static_cast<std::size_t>(n));
                if (c.in.size() > kMaxHttpRequest) break;
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0 && errno == EINTR) continue;
            close_client(c.fd);  // EOF or error before a full request
            return;
        }
        auto response = http_response(c.in, [this] {
            const auto stats = hooks_.stats ? hooks_.stats() : BrokerStats{};
            const double up = std::chrono::duration<double>(Clock::now() - start_).count();
            return render_metrics(stats, up, MQTTOOLS_VERSION);
        });
        if (!response) return;
        c.out = std::move(*response);
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.fd = c.fd;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
    } else if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) {
        return;
    }
    while (c.sent < c.out.size()) {
        const auto n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) {
            c.sent += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // EPOLLOUT brings us back
        break;
    }
    close_client(c.fd);
}

void DaemonServices::close_client(int fd) {
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    ::shutdown(fd, SHUT_WR);
    ::close(fd);
    clients_.erase(std::remove_if(clients_.begin(), clients_.end(), [fd](const auto& c) { return c->fd == fd; }),
                   clients_.end());
}

}  // namespace mqttools::daemon
