#include "load_options.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace bench {

namespace {

void usage() {
    std::fprintf(stderr,
                 "usage: mqtt_load --port PORT --scenario pairs|fanin|fanout|idle|retained [options]\n"
                 "  --host ADDR         broker address (127.0.0.0/8 only; default 127.0.0.1)\n"
                 "  --sub-port PORT     subscribers connect here (another broker: bridges); default --port\n"
                 "  --pubs N --subs N   publishers and subscribers (pairs: --pairs N)\n"
                 "  --rate R            published msg/s over all publishers, 0 = saturated\n"
                 "  --qos 0|1 --size B  QoS and payload size (default 0, 64)\n"
                 "  --warmup S --duration S --drain S   phase lengths in seconds\n"
                 "  --window N          saturated: messages in flight per publisher\n"
                 "  --broker-pid PID    read the broker's CPU time and RSS\n"
                 "  --conns N --src-addrs K --hold S   idle: connections, source addresses, hold time\n"
                 "  --keep-alive S      idle: Keep Alive in CONNECT (default 0)\n"
                 "  --session-expiry S  subscribers' Session Expiry Interval (default 0)\n"
                 "  --handshake-window N  idle: CONNECTs awaiting CONNACK at once (a storm: = --conns)\n"
                 "  --username U --password P   credentials in every CONNECT\n"
                 "  --topics N          retained: retained topics, then --subs clients subscribe to #\n"
                 "  --websocket PATH    MQTT over WebSocket (ws://HOST:PORT/PATH), a frame per packet\n"
                 "  --extra-pids P,Q    processes whose CPU time counts with the broker's\n"
                 "  --mqtt-version 4|5  protocol of every connection (default 5)\n"
                 "  --stuck N           traffic: N more subscribers to every topic that stop reading\n"
                 "  --subs-per-conn K   idle: each connection subscribes to K filters (exact and wildcard)\n"
                 "  --topic-prefix P    traffic: topics start with P\n"
                 "  --tls 1.2|1.3       every connection over TLS (certificates not checked)\n"
                 "  --ports P,Q,...     idle: connection n goes to the n-th port modulo their number (cluster nodes)\n"
                 "  --node-pids A,B,... idle: the broker process of each --ports entry (RSS and CPU per node)\n"
                 "  --procs N           generator processes (traffic: clients split, histograms merged; idle: workers)\n"
                 "  --read-batch-us U   traffic with --procs > 1: subscriber-only processes read at most every U µs\n"
                 "  --connect-timeout S --label NAME\n");
}

}  // namespace

bool parse_int_list(const std::string& text, std::vector<int>& out) {
    out.clear();
    std::size_t start = 0;
    while (start <= text.size()) {
        std::size_t comma = text.find(',', start);
        if (comma == std::string::npos) comma = text.size();
        const std::string item = text.substr(start, comma - start);
        char* end = nullptr;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || v <= 0 || v > 0x7fffffff) return false;
        out.push_back(static_cast<int>(v));
        start = comma + 1;
    }
    return !out.empty();
}

const char* scenario_name(Scenario s) noexcept {
    switch (s) {
    case Scenario::pairs: return "pairs";
    case Scenario::fanin: return "fanin";
    case Scenario::fanout: return "fanout";
    case Scenario::idle: return "idle";
    case Scenario::retained: return "retained";
    }
    return "?";
}

bool parse_load_options(int argc, char** argv, LoadOptions& o) {
    bool pairs_set = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        if (i + 1 >= argc) {
            usage();
            return false;
        }
        const char* v = argv[++i];
        if (a == "--host") o.host = v;
        else if (a == "--port") o.port = std::atoi(v);
        else if (a == "--sub-port") o.sub_port = std::atoi(v);
        else if (a == "--label") o.label = v;
        else if (a == "--scenario") {
            std::string_view s = v;
            if (s == "pairs") o.scenario = Scenario::pairs;
            else if (s == "fanin") o.scenario = Scenario::fanin;
            else if (s == "fanout") o.scenario = Scenario::fanout;
            else if (s == "idle") o.scenario = Scenario::idle;
            else if (s == "retained") o.scenario = Scenario::retained;
            else {
                usage();
                return false;
            }
        } else if (a == "--pairs") {
            o.pubs = o.subs = std::atoi(v);
            pairs_set = true;
        } else if (a == "--pubs") o.pubs = std::atoi(v);
        else if (a == "--subs") o.subs = std::atoi(v);
        else if (a == "--rate") o.rate = std::atof(v);
        else if (a == "--qos") o.qos = std::atoi(v);
        else if (a == "--size") o.size = std::atoi(v);
        else if (a == "--warmup") o.warmup_s = std::atof(v);
        else if (a == "--duration") o.duration_s = std::atof(v);
        else if (a == "--drain") o.drain_s = std::atof(v);
        else if (a == "--window") o.window = std::atoi(v);
        else if (a == "--broker-pid") o.broker_pid = std::atoi(v);
        else if (a == "--conns") o.conns = std::atoi(v);
        else if (a == "--src-addrs") o.src_addrs = std::atoi(v);
        else if (a == "--hold") o.hold_s = std::atof(v);
        else if (a == "--keep-alive") o.keep_alive = std::atoi(v);
        else if (a == "--session-expiry") o.session_expiry = std::atoll(v);
        else if (a == "--connect-timeout") o.connect_timeout_s = std::atof(v);
        else if (a == "--handshake-window") o.handshake_window = std::atoi(v);
        else if (a == "--extra-pids") o.extra_pids = v;
        else if (a == "--mqtt-version") {
            const int level = std::atoi(v);
            if (level != 4 && level != 5) {
                usage();
                return false;
            }
            wire_version = level == 4 ? mqttools::ProtocolVersion::v311 : mqttools::ProtocolVersion::v5;
        }
        else if (a == "--username") o.username = v;
        else if (a == "--password") o.password = v;
        else if (a == "--topics") o.topics = std::atoi(v);
        else if (a == "--websocket") o.websocket_path = v;
        else if (a == "--stuck") o.stuck = std::atoi(v);
        else if (a == "--subs-per-conn") o.subs_per_conn = std::atoi(v);
        else if (a == "--topic-prefix") o.topic_prefix = v;
        else if (a == "--procs") o.procs = std::atoi(v);
        else if (a == "--read-batch-us") o.read_batch_us = std::atoi(v);
        else if (a == "--ports" || a == "--node-pids") {
            if (!parse_int_list(v, a == "--ports" ? o.ports : o.node_pids)) {
                usage();
                return false;
            }
        }
        else if (a == "--tls") {
            o.tls = v;
            if (o.tls != "1.2" && o.tls != "1.3") {
                usage();
                return false;
            }
        }
        else {
            usage();
            return false;
        }
    }
    if (o.scenario == Scenario::pairs && !pairs_set) o.subs = o.pubs;
    if (o.host.rfind("127.", 0) != 0) {
        std::fprintf(stderr, "mqtt_load: only 127.0.0.0/8 addresses are allowed\n");
        return false;
    }
    // Every load loop is bounded in count and time.
    if (o.pubs < 1 || o.subs < 1 || o.pubs > 5000 || o.subs > 20000 * o.procs || o.qos < 0 || o.qos > 1 || o.size < 16 ||
        o.size > (64 << 20) || o.rate < 0 || o.rate > 5e6 || o.duration_s <= 0 || o.duration_s > 600 ||
        o.warmup_s < 0 || o.warmup_s > 60 || o.drain_s < 0 || o.drain_s > 60 || o.window < 1 ||
        o.window > 60000 || o.conns < 1 || o.conns > 200000 || o.src_addrs < 1 || o.src_addrs > 250 ||
        o.hold_s < 0 || o.hold_s > 600 || o.keep_alive < 0 || o.keep_alive > 65535 || o.session_expiry < 0 || o.session_expiry > 0xFFFFFFFFLL || o.connect_timeout_s <= 0 || o.connect_timeout_s > 600 ||
        o.handshake_window < 1 || o.stuck < 0 || o.stuck > 1000 || o.subs_per_conn < 0 ||
        o.subs_per_conn > 1000 || o.port <= 0 || o.port > 65535 || o.sub_port < 0 || o.sub_port > 65535 || o.procs < 1 || o.procs > 64 ||
        o.read_batch_us < 0 || o.read_batch_us > 100000 || o.ports.size() > 64 ||
        std::any_of(o.ports.begin(), o.ports.end(), [](int p) { return p > 65535; }) ||
        (!o.node_pids.empty() && o.node_pids.size() != o.ports.size())) {
        std::fprintf(stderr, "mqtt_load: option out of range\n");
        return false;
    }
    return true;
}

}  // namespace bench
