// The broker's counters in one plain struct, for $SYS and /metrics (the
// daemon copies it into daemon::BrokerStats). "messages" are MQTT packets
// of any type, "publish" PUBLISH packets only, as in Mosquitto's $SYS tree.
#pragma once

#include <cstdint>

namespace mqttools::broker {

struct Counters {
    // Running totals, kept by the broker as things happen.
    std::uint64_t connections_total = 0;  // sockets accepted
    std::uint64_t clients_maximum = 0;    // highest clients_connected seen
    std::uint64_t clients_expired = 0;    // sessions removed by expiry
    std::uint64_t messages_received = 0;
    std::uint64_t messages_sent = 0;
    std::uint64_t publish_received = 0;
    std::uint64_t publish_sent = 0;
    std::uint64_t publish_dropped = 0;  // slow consumer, too large, queue full, expired
    std::uint64_t bytes_received = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t publish_bytes_received = 0;
    std::uint64_t publish_bytes_sent = 0;
    std::uint64_t websocket_connections_total = 0;  // sockets accepted on WebSocket listeners

    // Gauges, filled in by Broker::counters().
    std::uint64_t connections = 0;          // open sockets
    std::uint64_t clients_connected = 0;    // sessions with a live connection
    std::uint64_t websocket_clients_connected = 0;  // of those, over WebSocket (ws or wss)
    std::uint64_t clients_disconnected = 0; // sessions without one
    std::uint64_t subscriptions = 0;
    std::uint64_t shared_subscriptions = 0;
    std::uint64_t retained_messages = 0;
    std::uint64_t queued_messages = 0;
    std::uint64_t output_queued_bytes = 0;
    std::uint64_t inflight_messages = 0;
};

}  // namespace mqttools::broker
