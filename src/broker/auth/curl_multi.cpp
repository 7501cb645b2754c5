#include "broker/auth/curl_multi.hpp"

#include <sys/epoll.h>

#include <stdexcept>

namespace mqttools::auth {

struct CurlMulti::Request {
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string body;
    char error[CURL_ERROR_SIZE] = {};
    Done done;
    ~Request() {
        curl_easy_cleanup(easy);
        curl_slist_free_all(headers);
    }
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

namespace {

std::size_t append_body(char* data, std::size_t size, std::size_t n, void* out) {
    auto* body = static_cast<std::string*>(out);
    // An auth answer is small: a service sending megabytes is cut off.
    if (body->size() + size * n > 64 * 1024) return 0;
    body->append(data, size * n);
    return size * n;
}

}  // namespace

CurlMulti::CurlMulti(net::Reactor& reactor) : reactor_(reactor) {
    static const bool initialised = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    if (!initialised) throw std::runtime_error("curl_global_init failed");
    multi_ = curl_multi_init();
    if (!multi_) throw std::runtime_error("curl_multi_init failed");
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &CurlMulti::on_socket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &CurlMulti::on_timer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    // A storm of CONNECTs queues here rather than opening thousands of
    // connections to the service (a request's timeout counts its queueing).
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, 64L);
}

CurlMulti::~CurlMulti() {
    reactor_.cancel_timer(timer_);
    reactor_.cancel_timer(sweep_timer_);
    for (auto& [easy, r] : requests_) curl_multi_remove_handle(multi_, easy);
    requests_.clear();
    for (auto& [fd, w] : watches_) {
        if (w->added) reactor_.remove(fd);
    }
    curl_multi_cleanup(multi_);
}

void CurlMulti::start(CURL* easy, curl_slist* headers, Done done) {
    auto r = std::make_unique<Request>();
    r->easy = easy;
    r->headers = headers;
    r->done = std::move(done);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &append_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, r->error);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    if (headers) curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    Request* raw = r.get();
    requests_.emplace(easy, std::move(r));
    if (curl_multi_add_handle(multi_, easy) != CURLM_OK) {
        Response resp;
        resp.code = CURLE_FAILED_INIT;
        resp.error = "curl_multi_add_handle failed";
        Done d = std::move(raw->done);
        requests_.erase(easy);
        // Never answer inside the caller's call: on the next turn.
        reactor_.add_timer_after(net::Clock::duration::zero(), [d = std::move(d), resp]() mutable { d(std::move(resp)); });
    }
    // curl asks for a timer at once (CURLMOPT_TIMERFUNCTION with 0): the
    // transfer starts on the next reactor turn.
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
    if (timeout_ms < 0) return 0;
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
    if (!sweep_timer_) {
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
        Done done = std::move(r->done);
        r.reset();
        done(std::move(resp));
    }
}

}  // namespace mqttools::auth
