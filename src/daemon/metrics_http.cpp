#include "daemon/metrics_http.hpp"

#include <cstdio>

namespace mqttools::daemon {

namespace {

class Page {
public:
    void metric(std::string_view name, std::string_view type, std::string_view help, std::uint64_t value) {
        head(name, type, help);
        sample(name, "", std::to_string(value));
    }
    void head(std::string_view name, std::string_view type, std::string_view help) {
        text_ += "# HELP mqttools_";
        text_ += name;
        text_ += ' ';
        text_ += help;
        text_ += "\n# TYPE mqttools_";
        text_ += name;
        text_ += ' ';
        text_ += type;
        text_ += '\n';
    }
    void sample(std::string_view name, std::string_view labels, const std::string& value) {
        text_ += "mqttools_";
        text_ += name;
        if (!labels.empty()) {
            text_ += '{';
            text_ += labels;
            text_ += '}';
        }
        text_ += ' ';
        text_ += value;
        text_ += '\n';
    }
    std::string take() { return std::move(text_); }

private:
    std::string text_;
};

// Label values escape backslash, double quote and newline (exposition format).
std::string label(std::string_view name, std::string_view value) {
    std::string out(name);
    out += "=\"";
    for (char c : value) {
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    out += '"';
    return out;
}

std::string response(std::string_view status, std::string_view content_type, const std::string& body,
                     bool head_only, std::string_view extra_header = {}) {
    std::string out = "HTTP/1.1 ";
    out += status;
    out += "\r\nContent-Type: ";
    out += content_type;
    out += "\r\nContent-Length: " + std::to_string(body.size());
    out += "\r\nConnection: close\r\n";
    out += extra_header;
    out += "\r\n";
    if (!head_only) out += body;
    return out;
}

}  // namespace

std::string render_metrics(const BrokerStats& s, double uptime_seconds, std::string_view version) {
    Page p;
    p.head("build_info", "gauge", "Version of the running mqttoolsd.");
    p.sample("build_info", label("version", version), "1");
    p.head("uptime_seconds", "gauge", "Seconds since mqttoolsd started.");
    char up[32];
    std::snprintf(up, sizeof up, "%.3f", uptime_seconds);
    p.sample("uptime_seconds", "", up);

    p.metric("clients_connected", "gauge", "Clients with a live connection.", s.clients_connected);
    p.metric("clients_disconnected", "gauge", "Persistent sessions without a connection.", s.clients_disconnected);
    p.metric("clients_maximum", "gauge", "Most clients connected at once since start.", s.clients_maximum);
    p.metric("clients_expired_total", "counter", "Sessions removed by expiry.", s.clients_expired);
    p.metric("connections_total", "counter", "TCP connections accepted.", s.connections_total);

    p.metric("messages_received_total", "counter", "MQTT packets received.", s.messages_received);
    p.metric("messages_sent_total", "counter", "MQTT packets sent.", s.messages_sent);
    p.metric("publish_received_total", "counter", "PUBLISH packets received.", s.publish_received);
    p.metric("publish_sent_total", "counter", "PUBLISH packets sent.", s.publish_sent);
    p.metric("publish_dropped_total", "counter",
             "PUBLISH packets not delivered (slow consumer, too large, queue full).", s.publish_dropped);
    p.metric("bytes_received_total", "counter", "Bytes received from clients.", s.bytes_received);
    p.metric("bytes_sent_total", "counter", "Bytes sent to clients.", s.bytes_sent);
    p.metric("publish_bytes_received_total", "counter", "PUBLISH payload bytes received.", s.publish_bytes_received);
    p.metric("publish_bytes_sent_total", "counter", "PUBLISH payload bytes sent.", s.publish_bytes_sent);
    p.metric("websocket_clients_connected", "gauge", "Clients connected over WebSocket (ws and wss).",
             s.websocket_clients_connected);
    p.metric("websocket_connections_total", "counter", "Sockets accepted on WebSocket listeners.",
             s.websocket_connections_total);

    p.metric("subscriptions", "gauge", "Active subscriptions.", s.subscriptions);
    p.metric("shared_subscriptions", "gauge", "Active shared subscriptions.", s.shared_subscriptions);
    p.metric("retained_messages", "gauge", "Retained messages stored.", s.retained_messages);
    p.metric("queued_messages", "gauge", "Messages waiting in session queues.", s.queued_messages);
    p.metric("output_queued_bytes", "gauge", "Bytes waiting in connection output buffers.", s.output_queued_bytes);
    p.metric("inflight_messages", "gauge", "Outbound QoS 1/2 messages not yet acknowledged.", s.inflight_messages);

    if (s.persistence) {
        p.metric("persistence_healthy", "gauge", "1 while the store's commits succeed.", s.persistence_healthy ? 1 : 0);
        p.metric("persistence_loaded_sessions", "gauge", "Sessions loaded from the store at start-up.",
                 s.persistence_sessions_loaded);
        p.metric("persistence_loaded_messages", "gauge", "Queued QoS 1/2 messages loaded at start-up.",
                 s.persistence_messages_loaded);
        p.metric("persistence_loaded_retained", "gauge", "Retained messages loaded at start-up.",
                 s.persistence_retained_loaded);
        p.metric("persistence_commit_failures_total", "counter", "Store commits that failed (disk full, I/O error).",
                 s.persistence_commit_failures);
        p.metric("persistence_refused_total", "counter",
                 "QoS 1/2 and retained PUBLISH refused while the store could not write.", s.persistence_refused);
        p.metric("store_database_bytes", "gauge", "Size of the store's database file.", s.store_database_bytes);
        p.metric("store_wal_bytes", "gauge", "Size of the store's write-ahead log.", s.store_wal_bytes);
        p.metric("store_wal_checkpoints_total", "counter", "WAL checkpoints run by the store.",
                 s.store_wal_checkpoints);
    }
    if (s.cluster.enabled) {
        const ClusterStats& k = s.cluster;
        p.head("cluster_node_info", "gauge", "This node's cluster id.");
        p.sample("cluster_node_info", label("node_id", k.node_id), "1");
        p.metric("cluster_links_up", "gauge", "NATS connections up (of cluster_links_total).", k.links_up);
        p.metric("cluster_links_total", "gauge", "NATS connections this node keeps.", k.links_total);
        p.head("cluster_status_info", "gauge", "Why the NATS link is not up (\"connected\" when it is).");
        p.sample("cluster_status_info", label("status", k.status), "1");
        p.metric("cluster_messages_sent_total", "counter", "Messages handed to NATS for other nodes.", k.messages_out);
        p.metric("cluster_messages_received_total", "counter", "Messages received from other nodes.", k.messages_in);
        p.metric("cluster_messages_lost_sending_total", "counter",
                 "Messages that could not cross to other nodes (NATS down, buffers full).", k.messages_lost_out);
        p.metric("cluster_messages_lost_receiving_total", "counter",
                 "Messages from other nodes dropped here (slow consumer).", k.messages_lost_in);
        p.metric("cluster_disconnects_total", "counter", "NATS connections lost.", k.disconnects);
        p.metric("cluster_reconnects_total", "counter", "NATS connections re-established.", k.reconnects);
        p.metric("cluster_interest", "gauge", "NATS subscriptions held for local filters.", k.remote_interest);
        p.metric("cluster_retained_received_total", "counter", "Retained updates applied from the cluster.",
                 k.retained_in);
        p.metric("cluster_retained_stored_total", "counter",
                 "Retained updates of this node acknowledged by the cluster's stream.", k.retained_stored);
        p.metric("cluster_takeovers_total", "counter", "Local sessions taken over by another node.", k.takeovers_in);
        p.metric("cluster_sessions_sent_total", "counter", "Session states handed over to the node that took them.",
                 k.sessions_sent);
        p.metric("cluster_sessions_received_total", "counter", "Session states taken over from another node.",
                 k.sessions_received);
    }
    if (!s.listeners.empty()) {
        p.head("listener_connections_total", "counter", "TCP connections accepted per listener.");
        for (const auto& l : s.listeners) {
            p.sample("listener_connections_total", label("listener", l.name), std::to_string(l.connections_total));
        }
    }
    if (!s.bridges.empty()) {
        auto each = [&](const char* name, const char* type, const char* help, auto value) {
            p.head(name, type, help);
            for (const auto& b : s.bridges) p.sample(name, label("bridge", b.name), std::to_string(value(b)));
        };
        each("bridge_connected", "gauge", "1 while the bridge is connected to its remote.",
             [](const BridgeStats& b) { return b.connected ? 1 : 0; });
        each("bridge_messages_sent_total", "counter", "PUBLISH packets sent to the remote.",
             [](const BridgeStats& b) { return b.messages_sent; });
        each("bridge_messages_received_total", "counter", "PUBLISH packets received from the remote.",
             [](const BridgeStats& b) { return b.messages_received; });
        each("bridge_bytes_sent_total", "counter", "Payload bytes sent to the remote.",
             [](const BridgeStats& b) { return b.bytes_sent; });
        each("bridge_bytes_received_total", "counter", "Payload bytes received from the remote.",
             [](const BridgeStats& b) { return b.bytes_received; });
        each("bridge_reconnects_total", "counter", "Connections to the remote after the first.",
             [](const BridgeStats& b) { return b.reconnects; });
        each("bridge_queued_messages", "gauge", "QoS 1/2 messages waiting for or in flight to the remote.",
             [](const BridgeStats& b) { return b.queued; });
        each("bridge_dropped_total", "counter", "Messages the bridge dropped (QoS 0 while down, queue full, expired).",
             [](const BridgeStats& b) { return b.dropped; });
    }
    for (const auto& m : s.auth_metrics) p.metric(m.name, m.type, m.help, m.value);
    return p.take();
}

std::optional<std::string> http_response(std::string_view request,
                                         const std::function<std::string()>& body) {
    const auto end = request.find("\r\n\r\n");
    if (end == std::string_view::npos) {
        if (request.size() >= kMaxHttpRequest) {
            return response("431 Request Header Fields Too Large", "text/plain", "request too large\n", false);
        }
        return std::nullopt;
    }
    const auto line_end = request.find("\r\n");
    const std::string_view line = request.substr(0, line_end);
    // "METHOD SP TARGET SP HTTP/x.y"
    const auto sp1 = line.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.substr(sp2 + 1).rfind("HTTP/", 0) != 0) {
        return response("400 Bad Request", "text/plain", "bad request\n", false);
    }
    const std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (const auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    const bool head = method == "HEAD";
    if (method != "GET" && !head) {
        return response("405 Method Not Allowed", "text/plain", "only GET and HEAD\n", false,
                        "Allow: GET, HEAD\r\n");
    }
    if (target != "/metrics") {
        return response("404 Not Found", "text/plain", "try /metrics\n", head);
    }
    return response("200 OK", "text/plain; version=0.0.4; charset=utf-8", body(), head);
}

}  // namespace mqttools::daemon
