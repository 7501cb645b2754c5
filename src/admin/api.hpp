// The management API: EMQX v5's paths and JSON shapes over the broker
// (GET /api/v5/clients, DELETE /api/v5/clients/{clientid}, banned,
// retainer, publish, stats, metrics, nodes). Requests come parsed
// (http.hpp) and leave as responses; the server (server.cpp) does the
// sockets and the authentication. Everything runs on the reactor's
// thread: a listing that could take long (100,000 clients) is a Job that
// the server steps once per reactor turn.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "admin/http.hpp"
#include "broker/admin_link.hpp"
#include "net/reactor.hpp"

namespace mqttools::broker {
class Broker;
}

namespace mqttools::admin {

struct ApiContext {
    broker::Broker* broker = nullptr;
    std::string node;     // this node's name ("mqttools@host", the cluster's node_id)
    std::string version;  // mqttoolsd's
    std::chrono::steady_clock::time_point started;
    std::function<std::string()> metrics_text;  // the Prometheus page (/metrics)
};

class Job {
public:
    virtual ~Job() = default;
    // Does a bounded slice of the work; true when `out` holds the answer.
    virtual bool step(http::Response& out) = 0;
    // Waiting for other nodes: stepped again a little later rather than
    // on the next turn.
    virtual bool waiting() const { return false; }
    // Waiting for an event (the store's commit) rather than for time: true
    // when the job keeps `wake` and calls it, on the reactor's thread, once
    // a step would answer; it is not stepped again before.
    virtual bool park(std::function<void()> wake) {
        (void)wake;
        return false;
    }
};

struct Outcome {
    http::Response response;    // when job is null
    std::unique_ptr<Job> job;   // else: step it until it answers
};

// {"code": CODE, "message": MESSAGE} with that status (EMQX's error shape).
http::Response error_response(int status, std::string_view code, std::string_view message);

// Handles one authenticated request for /api/v5/... or /metrics.
Outcome handle_api(ApiContext& ctx, const http::Request& request);

// api_lists.cpp: the paged listings stepped across reactor turns.
std::unique_ptr<Job> clients_job(ApiContext& ctx, const http::Request& request, http::Response& error);
std::unique_ptr<Job> subscriptions_job(ApiContext& ctx, const http::Request& request, http::Response& error);

// api_cluster.cpp: with a cluster (ApiContext::broker->admin_link()),
// the requests that concern every node are answered for all of them; null
// when this one is not such a request.
std::unique_ptr<Job> cluster_job(ApiContext& ctx, const http::Request& request);

// Another node's requests for this node's API (admin_link.hpp), answered
// on this reactor, listings a slice per turn as for HTTP clients.
class PeerApi {
public:
    PeerApi(net::Reactor& reactor, ApiContext context, broker::AdminLink& link);
    ~PeerApi();
    PeerApi(const PeerApi&) = delete;
    PeerApi& operator=(const PeerApi&) = delete;

private:
    struct Running;
    void step(std::uint64_t id);
    net::Reactor& reactor_;
    ApiContext ctx_;
    broker::AdminLink& link_;
    std::unordered_map<std::uint64_t, std::unique_ptr<Running>> running_;
    std::uint64_t next_ = 1;
};

// How long a job waiting for other nodes sleeps between looks.
inline constexpr auto kPeerPoll = std::chrono::milliseconds(2);

// A listing's work per reactor turn (api_lists.cpp): sessions are visited
// kScanChunk at a time until kStepTime is used. Two listings at once then
// add under half a millisecond to a turn.
inline constexpr std::size_t kScanChunk = 64;
inline constexpr auto kStepTime = std::chrono::microseconds(200);

}  // namespace mqttools::admin
