// Command line of mqtt_load and the shape of one scenario.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mqttools/packets.hpp"

namespace bench {

enum class Scenario { pairs, fanin, fanout, idle, retained };

struct LoadOptions {
    std::string host = "127.0.0.1";
    int port = 1883;
    int sub_port = 0;           // subscribers' broker port (bridge benchmarks); 0: --port
    Scenario scenario = Scenario::pairs;
    std::string label;          // copied into the JSON result
    int pubs = 1;               // publishers (pairs: number of pairs)
    int subs = 1;               // subscribers (pairs: equal to pubs)
    double rate = 10000;        // published messages per second, all publishers; 0 = saturated
    int qos = 0;
    int size = 64;              // payload bytes (at least 16: timestamp, publisher, sequence)
    double warmup_s = 1.0;
    double duration_s = 5.0;    // measured window
    double drain_s = 2.0;       // wait for the last deliveries
    int window = 64;            // saturated: messages in flight per publisher
    int broker_pid = 0;         // CPU and RSS readings when > 0
    // idle scenario
    int conns = 10000;
    int src_addrs = 4;          // 127.0.0.2 .. 127.0.0.(1+src_addrs)
    double hold_s = 2.0;
    int keep_alive = 0;         // seconds in CONNECT (idle clients send PINGREQ only if > 0)
    long long session_expiry = 0;  // subscribers' Session Expiry Interval (persistence benches)
    double connect_timeout_s = 60.0;
    int handshake_window = 256;  // connections whose CONNACK is pending at once
    // CONNECT credentials (every connection), e.g. for a password-file storm.
    std::string username;
    std::string password;
    // retained scenario: `topics` retained messages, then `subs` clients
    // subscribe to `#` one after another.
    int topics = 100000;
    std::string websocket_path;  // non-empty: MQTT over WebSocket to this path (--websocket PATH)
    std::string extra_pids;     // "PID,PID": their CPU adds to the broker's (cluster nodes, nats-server)
    // Traffic scenarios: this many more subscribers to every topic (PREFIX
    // "bench/#") that stop reading once subscribed (slow/stuck consumers).
    int stuck = 0;
    // Idle scenario: each connection subscribes to this many filters (a
    // subscription tree: see tree_filter()) before it counts as connected.
    int subs_per_conn = 0;
    std::string tls;            // "1.2" / "1.3": every connection over TLS of that version; "": plain
    std::string topic_prefix;   // traffic topics: PREFIX + "bench/..." (e.g. "tree/" to publish into a tree)
    // Idle scenario over several brokers (cluster nodes): connection n goes
    // to ports[n % ports.size()]; node_pids (same order) are the processes
    // whose RSS and CPU are read per node. Empty: --port and --broker-pid.
    std::vector<int> ports;
    std::vector<int> node_pids;
    // Generator processes: traffic scenarios split their clients over this
    // many forked processes (latency histograms merged); the idle scenario
    // uses at least this many workers.
    int procs = 1;
    // Traffic with --procs > 1: a process holding only subscribers reads at
    // most every this many µs (0: as soon as data arrives). Each read then
    // finds several messages; their latency includes up to this delay.
    int read_batch_us = 0;
};

// "1,2,3" -> {1, 2, 3}; false when an item is not a positive integer.
bool parse_int_list(const std::string& text, std::vector<int>& out);

// --mqtt-version 4|5: the protocol every connection speaks (4 = 3.1.1, to
// compare with brokers that speak only that, e.g. nats-server's MQTT).
inline mqttools::ProtocolVersion wire_version = mqttools::ProtocolVersion::v5;

// Parses argv; prints usage and returns false on error.
bool parse_load_options(int argc, char** argv, LoadOptions& out);

const char* scenario_name(Scenario s) noexcept;

}  // namespace bench
