// The http_api listeners (Mosquitto 2.1's `protocol = "http_api"`): HTTP/1.1
// on the broker's reactor, plain or TLS with the listener's certfile and
// keyfile. Every request but the dashboard's static files needs HTTP Basic
// credentials found in the listener's api_key_file (a Mosquitto password
// file); then api.cpp answers. An HTTP client can neither hold the reactor
// nor use much memory: bounded connections, request sizes and times, and
// listings stepped a slice per turn.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "admin/api.hpp"
#include "config/config.hpp"
#include "net/reactor.hpp"
#include "net/unique_fd.hpp"

namespace mqttools::admin {

struct ServerLimits {
    std::size_t max_clients = 64;                         // more are closed at accept
    std::size_t max_head = 8192;                          // 431 beyond
    std::size_t max_body = 1024 * 1024;                   // 413 beyond
    std::chrono::seconds request_timeout{10};             // first byte to complete request: 408
    std::chrono::seconds idle_timeout{60};                // keep-alive between requests
    std::chrono::seconds write_timeout{30};               // a reader that does not read is dropped
};

class AdminServer {
public:
    AdminServer(net::Reactor& reactor, ApiContext context, ServerLimits limits = {});
    ~AdminServer();
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;

    // Serves a bound, listening socket. False, with `error` set, when its
    // certificates or its api_key_file cannot be loaded.
    bool add_listener(net::UniqueFd fd, std::string name, const config::Listener& settings, std::string& error);
    // SIGHUP: re-reads every listener's api_key_file and certificates; a
    // file that fails keeps the previous keys. Returns the problems.
    std::vector<std::string> reload(const config::Config& config);

    std::size_t clients() const noexcept { return clients_.size(); }

private:
    struct Listener;
    struct Client;
    friend struct Listener;
    friend struct Client;

    void accept_from(Listener& l);
    void on_client(Client& c, std::uint32_t events);
    void process(Client& c);
    void respond(Client& c, http::Response response, bool close_after = false);
    void run_job(Client& c);
    bool authorized(Listener& l, const http::Request& req);
    void write(Client& c);
    void update_events(Client& c);
    void close(Client& c);
    void sweep();

    net::Reactor& reactor_;
    ApiContext ctx_;
    ServerLimits limits_;
    std::vector<std::unique_ptr<Listener>> listeners_;
    std::unordered_map<Client*, std::unique_ptr<Client>> clients_;
    std::vector<std::unique_ptr<Client>> closed_;  // destroyed after the turn
    net::Reactor::TimerId sweep_timer_{};
};

}  // namespace mqttools::admin
