// mqtt_load --scenario idle: many connections held open, the broker's (or
// each cluster node's) RSS growth per connection.
#pragma once

#include <memory>

#include "load_options.hpp"
#include "net/tls.hpp"

namespace bench {

// Opens o.conns connections from several 127.0.0.x source addresses (one
// address' ephemeral ports would run out), in worker processes of at most
// RLIMIT_NOFILE connections each (and at least o.procs of them), spread
// over o.ports when given (connection n to ports[n % size]). Reads VmRSS
// and CPU time of every node (o.node_pids, else o.broker_pid) and of
// o.extra_pids before the first connection, after the last CONNACK (and
// SUBACK with --subs-per-conn) and after the hold. One JSON object on
// stdout; exit status 0 when every connection was held throughout.
int run_idle(const LoadOptions& o, std::shared_ptr<const mqttools::net::TlsContext> tls);

}  // namespace bench
