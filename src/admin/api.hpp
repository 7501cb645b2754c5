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

#include "admin/http.hpp"

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

// Sessions visited per reactor turn by a listing: about a millisecond.
inline constexpr std::size_t kScanSlice = 1000;

}  // namespace mqttools::admin
