// A snapshot of the broker's counters, taken by the daemon every
// sys_interval (for $SYS) and on each GET /metrics. Plain data so that
// sys_topics and metrics_http don't depend on the broker's internals.
// Names follow Mosquitto's $SYS tree: "messages" are MQTT packets of any
// type, "publish" are PUBLISH packets only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "broker/auth/auth_source.hpp"

namespace mqttools::daemon {

struct ListenerStats {
    std::string name;                    // "127.0.0.1:1883", "[::]:8883 (TLS)"
    std::uint64_t connections_total = 0;  // sockets accepted since start
};

// One [[bridge]] (bridge/bridge.hpp has the meaning of each field).
struct BridgeStats {
    std::string name;
    std::string state;  // connected, connecting, waiting, stopped
    bool connected = false;
    std::uint64_t messages_sent = 0;
    std::uint64_t messages_received = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t reconnects = 0;
    std::uint64_t queued = 0;
    std::uint64_t dropped = 0;
};

// A cluster node's link (issue 13); enabled only with a [cluster] table.
struct ClusterStats {
    bool enabled = false;
    std::string node_id;
    std::uint64_t links_up = 0;          // NATS connections up
    std::uint64_t links_total = 0;
    std::uint64_t messages_out = 0;      // handed to NATS for other nodes
    std::uint64_t messages_in = 0;       // received from other nodes
    std::uint64_t messages_lost_out = 0; // could not cross (NATS down and its buffer full, queue bound)
    std::uint64_t messages_lost_in = 0;  // dropped on the way in (slow consumer)
    std::uint64_t disconnects = 0;
    std::uint64_t reconnects = 0;
    std::uint64_t remote_interest = 0;   // NATS subscriptions for local filters
    std::uint64_t retained_in = 0;       // retained updates applied from the cluster
    std::uint64_t retained_stored = 0;   // this node's retained updates the stream acknowledged
    std::uint64_t takeovers_in = 0;      // local sessions taken over by other nodes
    std::uint64_t sessions_sent = 0;     // session states handed over to other nodes
    std::uint64_t sessions_received = 0; // session states taken over from other nodes
    std::string status;                  // "connected", or why NATS is not reachable
};

struct BrokerStats {
    std::uint64_t clients_connected = 0;     // sessions with a live connection
    std::uint64_t clients_disconnected = 0;  // persistent sessions without one
    std::uint64_t clients_maximum = 0;       // highest clients_connected seen
    std::uint64_t clients_expired = 0;       // sessions removed by expiry
    std::uint64_t connections_total = 0;     // sockets accepted since start
    std::uint64_t websocket_clients_connected = 0;   // clients_connected over WebSocket
    std::uint64_t websocket_connections_total = 0;   // sockets accepted on WebSocket listeners

    std::uint64_t messages_received = 0;  // MQTT packets in
    std::uint64_t messages_sent = 0;      // MQTT packets out
    std::uint64_t publish_received = 0;
    std::uint64_t publish_sent = 0;
    std::uint64_t publish_dropped = 0;    // QoS 0 dropped for slow consumers, too large, …
    std::uint64_t bytes_received = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t publish_bytes_received = 0;  // PUBLISH payload bytes
    std::uint64_t publish_bytes_sent = 0;

    std::uint64_t subscriptions = 0;
    std::uint64_t shared_subscriptions = 0;
    std::uint64_t retained_messages = 0;
    std::uint64_t queued_messages = 0;     // messages waiting in session queues
    std::uint64_t output_queued_bytes = 0;  // bytes waiting in connection output buffers
    std::uint64_t inflight_messages = 0;   // outbound QoS 1/2 not yet acknowledged

    std::vector<ListenerStats> listeners;
    std::vector<BridgeStats> bridges;
    ClusterStats cluster;

    // Persistence (only reported when it is on).
    bool persistence = false;
    bool persistence_healthy = true;
    std::uint64_t persistence_sessions_loaded = 0;
    std::uint64_t persistence_messages_loaded = 0;
    std::uint64_t persistence_retained_loaded = 0;
    std::uint64_t persistence_commit_failures = 0;
    std::uint64_t persistence_refused = 0;
    std::vector<auth::SourceMetric> auth_metrics;  // the auth sources' numbers
    std::uint64_t store_database_bytes = 0;
    std::uint64_t store_wal_bytes = 0;
    std::uint64_t store_wal_checkpoints = 0;

    std::uint64_t clients_total() const { return clients_connected + clients_disconnected; }
};

}  // namespace mqttools::daemon
