// libcurl's multi-socket interface driven by the reactor's epoll: curl
// tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to
// wake it (CURLMOPT_TIMERFUNCTION); the reactor reports readiness back with
// curl_multi_socket_action. No thread, no blocking: the reactor serves
// every client while requests are in flight. Connections are kept alive
// and reused between requests to the same service.
//
// At most `max_in_flight` requests are handed to libcurl at once (one per
// connection it may open); the rest wait here, in the order they came. A
// storm of CONNECTs used to give libcurl thousands of handles at once: it
// parked all but 64 on its pending list, and every finished transfer
// walked that list (curl_multi_remove_handle in 7.88), so the reactor's
// turns grew to tens of milliseconds. Easy handles are kept and reused.
#pragma once

#include <curl/curl.h>

#include <chrono>
#include <deque>
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

    // One request; the easy handle is set up from it when its turn comes.
    struct Call {
        std::string url;
        std::string method;  // CUSTOMREQUEST when not the default (GET, or POST with a body)
        bool with_body = false;
        std::string body;    // sent when with_body; wiped once handed to curl
        curl_slist* headers = nullptr;  // taken: freed when the request ends
        std::chrono::milliseconds timeout{5000};  // from start(): queueing counts
        bool verify_peer = true;
    };

    explicit CurlMulti(net::Reactor& reactor, std::size_t max_in_flight = 64);
    ~CurlMulti();  // requests not answered yet are dropped without their callbacks
    CurlMulti(const CurlMulti&) = delete;
    CurlMulti& operator=(const CurlMulti&) = delete;

    // `done` runs on the reactor, never inside this call.
    void start(Call call, Done done);
    // Handed to libcurl and waiting in the queue.
    std::size_t in_flight() const noexcept { return requests_.size() + queue_.size(); }

private:
    struct Request;
    struct Watch;
    struct Queued {
        Call call;
        Done done;
        net::Clock::time_point deadline;
        Queued() = default;
        Queued(Queued&&) noexcept;
        Queued& operator=(Queued&&) noexcept;
        ~Queued();
    };
    static int on_socket(CURL* easy, curl_socket_t fd, int what, void* self, void* watch);
    static int on_timer(CURLM* multi, long timeout_ms, void* self);
    // Hands queued requests to libcurl while there is room; fails those
    // whose time ran out while they waited.
    void pump();
    void hand_over(Queued q);
    void fail_later(Done done, CURLcode code, std::string why);
    void retire(std::unique_ptr<Watch> w);
    void act(curl_socket_t fd, int events);
    void collect();

    net::Reactor& reactor_;
    const std::size_t max_in_flight_;
    CURLM* multi_ = nullptr;
    net::Reactor::TimerId timer_{};
    std::unordered_map<CURL*, std::unique_ptr<Request>> requests_;
    std::deque<Queued> queue_;
    net::Reactor::TimerId queue_timer_{};  // the queue's first deadline
    bool pumping_ = false;
    bool closing_ = false;  // in the destructor
    std::vector<CURL*> idle_easy_;  // finished handles, reset, for the next requests
    std::unordered_map<curl_socket_t, std::unique_ptr<Watch>> watches_;
    // Watches curl let go of during this turn (retire()).
    std::vector<std::unique_ptr<Watch>> retired_;
    net::Reactor::TimerId sweep_timer_{};
};

}  // namespace mqttools::auth
