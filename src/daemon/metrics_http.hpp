// Prometheus metrics over HTTP: GET /metrics answers in the text exposition
// format (version 0.0.4). The socket side is driven by the broker's reactor
// (no threads); this header holds the parts that need no socket: rendering
// the metrics and answering one HTTP request.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/stats.hpp"

namespace mqttools::daemon {

// The metrics page for STATS, e.g. "mqttools_clients_connected 3".
std::string render_metrics(const BrokerStats& stats, double uptime_seconds, std::string_view version);

// A request head larger than this is refused (431) rather than buffered.
inline constexpr std::size_t kMaxHttpRequest = 8192;

// The complete HTTP/1.1 response (always "Connection: close") for the
// request bytes received so far, or nothing while the head is incomplete.
// BODY is called only for GET/HEAD /metrics.
std::optional<std::string> http_response(std::string_view request,
                                         const std::function<std::string()>& body);

}  // namespace mqttools::daemon
