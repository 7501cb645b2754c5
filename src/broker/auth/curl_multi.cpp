#include "broker/auth/curl_multi.hpp"

#include <sys/epoll.h>

#include <openssl/crypto.h>

#include <stdexcept>

namespace mqttools::auth {

struct CurlMulti::Request {
    CURL* easy = nullptr;  // returned to idle_easy_ (or cleaned up) by its owner
    curl_slist* headers = nullptr;
    std::string body;
    char error[CURL_ERROR_SIZE] = {};
    Done done;
    ~Request() { curl_slist_free_all(headers); }
};

struct CurlMulti::Watch final : net::IoHandler {
    Watch(CurlMulti& m, curl_socket_t f) : multi(m), fd(f) {}
    void on_io(std::uint32_t events) override {
        // Retired within this turn: the event was fetched before curl let
        // go of the socket (its number may already belong to a new one).
        if (retired) return;
        int flags = 0;
        if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) flags |= CURL_CSELECT_IN;
        if (events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
        if (events & EPOLLERR) flags |= CURL_CSELECT_ERR;
        multi.act(fd, flags);
    }
    CurlMulti& multi;
    curl_socket_t fd;
    bool added = false;
    bool retired = false;
};

CurlMulti::Queued::Queued(Queued&& o) noexcept
    : call(std::move(o.call)), done(std::move(o.done)), deadline(o.deadline) {
    o.call.headers = nullptr;
}

CurlMulti::Queued& CurlMulti::Queued::operator=(Queued&& o) noexcept {
    if (this != &o) {
        curl_slist_free_all(call.headers);
        call = std::move(o.call);
        done = std::move(o.done);
        deadline = o.deadline;
        o.call.headers = nullptr;
    }
    return *this;
}

CurlMulti::Queued::~Queued() {
    // The body may carry a password.
    if (!call.body.empty()) OPENSSL_cleanse(call.body.data(), call.body.size());
    curl_slist_free_all(call.headers);
}

namespace {

std::size_t append_body(char* data, std::size_t size, std::size_t n, void* out) {
    auto* body = static_cast<std::string*>(out);
    // An auth answer is small: a service sending megabytes is cut off.
    if (body->size() + size * n > 64 * 1024) return 0;
    body->append(data, size * n);
    return size * n;
}

}  // namespace

CurlMulti::CurlMulti(net::Reactor& reactor, std::size_t max_in_flight)
    : reactor_(reactor), max_in_flight_(std::max<std::size_t>(max_in_flight, 1)) {
    static const bool initialised = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!initialised) throw std::runtime_error("curl_global_init failed");
    multi_ = curl_multi_init();
    if (!multi_) throw std::runtime_error("curl_multi_init failed");
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &CurlMulti::on_socket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &CurlMulti::on_timer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    const long connections = static_cast<long>(max_in_flight_);
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, connections);
    // Kept open between bursts: libcurl's default cache is 4 per handle
    // added, so it shrank (closing connections) as a storm's last
    // answers came in, and the next burst connected again.
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, connections);
}

CurlMulti::~CurlMulti() {
    closing_ = true;  // curl's callbacks from here on add nothing to the reactor
    for (auto& [easy, r] : requests_) {
        curl_multi_remove_handle(multi_, easy);
        curl_easy_cleanup(easy);
    }
    requests_.clear();
    queue_.clear();
    for (CURL* easy : idle_easy_) curl_easy_cleanup(easy);
    for (auto& [fd, w] : watches_) {
        if (w->added) reactor_.remove(fd);
    }
    curl_multi_cleanup(multi_);
    reactor_.cancel_timer(timer_);
    reactor_.cancel_timer(queue_timer_);
    reactor_.cancel_timer(sweep_timer_);
}

void CurlMulti::start(Call call, Done done) {
    Queued q;
    q.deadline = net::Clock::now() + call.timeout;
    q.call = std::move(call);
    call.headers = nullptr;
    q.done = std::move(done);
    queue_.push_back(std::move(q));
    pump();
}

void CurlMulti::pump() {
    if (pumping_) return;  // a callback's start() while handing over: the loop below takes it
    pumping_ = true;
    const auto now = net::Clock::now();
    while (!queue_.empty()) {
        // One timeout per source, so the queue's deadlines are in order.
        if (queue_.front().deadline <= now) {
            Done done = std::move(queue_.front().done);
            queue_.pop_front();
            fail_later(std::move(done), CURLE_OPERATION_TIMEDOUT,
                       "no answer within the timeout (all connections to the service were busy)");
            continue;
        }
        if (requests_.size() >= max_in_flight_) break;
        Queued q = std::move(queue_.front());
        queue_.pop_front();
        hand_over(std::move(q));
    }
    // Waiting requests time out even when no answer frees a connection.
    const bool armed = static_cast<bool>(queue_timer_);
    if (queue_.empty()) {
        if (armed) reactor_.cancel_timer(queue_timer_);
        queue_timer_ = {};
    } else if (!armed || queue_timer_.when != queue_.front().deadline) {
        reactor_.cancel_timer(queue_timer_);
        queue_timer_ = reactor_.add_timer(queue_.front().deadline, [this] {
            queue_timer_ = {};
            pump();
        });
    }
    pumping_ = false;
}

void CurlMulti::hand_over(Queued q) {
    CURL* easy = nullptr;
    if (!idle_easy_.empty()) {
        easy = idle_easy_.back();
        idle_easy_.pop_back();
    } else {
        easy = curl_easy_init();
    }
    if (!easy) {
        fail_later(std::move(q.done), CURLE_FAILED_INIT, "curl_easy_init failed");
        return;
    }
    auto r = std::make_unique<Request>();
    r->easy = easy;
    r->headers = q.call.headers;
    q.call.headers = nullptr;
    r->done = std::move(q.done);
    const Call& c = q.call;
    curl_easy_setopt(easy, CURLOPT_URL, c.url.c_str());
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &append_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, r->error);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    if (r->headers) curl_easy_setopt(easy, CURLOPT_HTTPHEADER, r->headers);
    if (c.with_body) {
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(c.body.size()));
        curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, c.body.c_str());
    } else {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    }
    if (!c.method.empty()) curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, c.method.c_str());
    // What is left of the timeout after waiting in the queue.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(q.deadline - net::Clock::now());
    const long ms = std::max<long>(1, static_cast<long>(left.count()));
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, ms);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, ms);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, c.verify_peer ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, c.verify_peer ? 2L : 0L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    Request* raw = r.get();
    requests_.emplace(easy, std::move(r));
    if (curl_multi_add_handle(multi_, easy) != CURLM_OK) {
        Done done = std::move(raw->done);
        requests_.erase(easy);
        curl_easy_cleanup(easy);
        fail_later(std::move(done), CURLE_FAILED_INIT, "curl_multi_add_handle failed");
    }
    // curl asks for a timer at once (CURLMOPT_TIMERFUNCTION with 0): the
    // transfer starts on the next reactor turn.
}

void CurlMulti::fail_later(Done done, CURLcode code, std::string why) {
    Response resp;
    resp.code = code;
    resp.error = std::move(why);
    // Never answer inside the caller's call: on the next turn.
    reactor_.add_timer_after(net::Clock::duration::zero(),
                             [d = std::move(done), resp = std::move(resp)]() mutable { d(std::move(resp)); });
}

int CurlMulti::on_socket(CURL*, curl_socket_t fd, int what, void* self_ptr, void*) {
    auto& self = *static_cast<CurlMulti*>(self_ptr);
    if (what == CURL_POLL_REMOVE) {
        auto it = self.watches_.find(fd);
        if (it != self.watches_.end()) {
            self.retire(std::move(it->second));
            self.watches_.erase(it);
        }
        return 0;
    }
    if (self.closing_) return 0;
    auto& w = self.watches_[fd];
    if (!w) w = std::make_unique<Watch>(self, fd);
    std::uint32_t events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= EPOLLOUT;
    if (w->added) {
        self.reactor_.modify(fd, events, w.get());
    } else {
        w->added = self.reactor_.add(fd, events, w.get());
    }
    return 0;
}

int CurlMulti::on_timer(CURLM*, long timeout_ms, void* self_ptr) {
    auto& self = *static_cast<CurlMulti*>(self_ptr);
    self.reactor_.cancel_timer(self.timer_);
    self.timer_ = {};
    if (timeout_ms < 0 || self.closing_) return 0;
    self.timer_ = self.reactor_.add_timer_after(std::chrono::milliseconds(timeout_ms), [&self] {
        self.timer_ = {};
        self.act(CURL_SOCKET_TIMEOUT, 0);
    });
    return 0;
}

void CurlMulti::retire(std::unique_ptr<Watch> w) {
    if (w->added) reactor_.remove(w->fd);
    // The reactor may still hold an event for it in this turn's batch (a
    // socket closed while another's event was handled): it is freed on the
    // next turn, before the next epoll_wait, never under that event.
    w->retired = true;
    retired_.push_back(std::move(w));
    if (!sweep_timer_ && !closing_) {
        sweep_timer_ = reactor_.add_timer_after(net::Clock::duration::zero(), [this] {
            sweep_timer_ = {};
            retired_.clear();
        });
    }
}

void CurlMulti::act(curl_socket_t fd, int events) {
    int running = 0;
    curl_multi_socket_action(multi_, fd, events, &running);
    collect();
}

void CurlMulti::collect() {
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
        if (msg->msg != CURLMSG_DONE) continue;
        CURL* easy = msg->easy_handle;
        const CURLcode code = msg->data.result;
        auto it = requests_.find(easy);
        curl_multi_remove_handle(multi_, easy);
        if (it == requests_.end()) continue;
        std::unique_ptr<Request> r = std::move(it->second);
        requests_.erase(it);
        Response resp;
        resp.code = code;
        if (code == CURLE_OK) {
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &resp.status);
            resp.body = std::move(r->body);
        } else {
            resp.error = r->error[0] ? r->error : curl_easy_strerror(code);
        }
        // The handle serves the next request (its options cleared; the
        // connection stays in the multi handle's cache).
        curl_easy_reset(easy);
        if (idle_easy_.size() < max_in_flight_) {
            idle_easy_.push_back(easy);
        } else {
            curl_easy_cleanup(easy);
        }
        Done done = std::move(r->done);
        r.reset();
        done(std::move(resp));
    }
    pump();
}

}  // namespace mqttools::auth
