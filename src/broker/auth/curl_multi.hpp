// libcurl's multi-socket interface driven by the reactor's epoll: curl
// tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to
// wake it (CURLMOPT_TIMERFUNCTION); the reactor reports readiness back with
// curl_multi_socket_action. No thread, no blocking: the reactor serves
// every client while requests are in flight. Connections are kept alive
// and reused between requests to the same service.
#pragma once

#include <curl/curl.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "net/reactor.hpp"

namespace mqttools::auth {

class CurlMulti {
public:
    struct Response {
        CURLcode code = CURLE_OK;  // transport result (CURLE_OPERATION_TIMEDOUT ...)
        long status = 0;           // HTTP status, 0 without an answer
        std::string body;
        std::string error;         // curl's message when code != CURLE_OK
    };
    using Done = std::function<void(Response&&)>;

    explicit CurlMulti(net::Reactor& reactor);
    ~CurlMulti();  // in-flight requests are dropped without their callbacks
    CurlMulti(const CurlMulti&) = delete;
    CurlMulti& operator=(const CurlMulti&) = delete;

    // Takes `easy` (set up by the caller: URL, method, body, headers,
    // timeouts; `headers` is freed with it); `done` runs on the reactor.
    void start(CURL* easy, curl_slist* headers, Done done);
    std::size_t in_flight() const noexcept { return requests_.size(); }

private:
    struct Request;
    struct Watch;
    static int on_socket(CURL* easy, curl_socket_t fd, int what, void* self, void* watch);
    static int on_timer(CURLM* multi, long timeout_ms, void* self);
    void retire(std::unique_ptr<Watch> w);
    void act(curl_socket_t fd, int events);
    void collect();

    net::Reactor& reactor_;
    CURLM* multi_ = nullptr;
    net::Reactor::TimerId timer_{};
    std::unordered_map<CURL*, std::unique_ptr<Request>> requests_;
    std::unordered_map<curl_socket_t, std::unique_ptr<Watch>> watches_;
    // Watches curl let go of during this turn (retire()).
    std::vector<std::unique_ptr<Watch>> retired_;
    net::Reactor::TimerId sweep_timer_{};
};

}  // namespace mqttools::auth
