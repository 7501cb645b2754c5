#include "daemon/sys_topics.hpp"

#include <cmath>
#include <cstdio>

namespace mqttools::daemon {

SysTopics::SysTopics(std::string version, Clock::time_point start)
    : version_(std::move(version)), start_(start), last_update_(start) {}

void SysTopics::reset() {
    published_.clear();
    first_ = true;
}

void SysTopics::add(std::vector<SysMessage>& out, const std::string& topic, std::string payload) {
    auto [it, inserted] = published_.try_emplace(topic, payload);
    if (!inserted) {
        if (it->second == payload) return;
        it->second = payload;
    }
    out.push_back({topic, std::move(payload)});
}

void SysTopics::add_load(std::vector<SysMessage>& out, const std::string& name, Load& load,
                         std::uint64_t count, double seconds) {
    // Mosquitto: the interval's rate scaled to per minute, then
    // new = rate + exp(-dt/period) * (old - rate), printed with 2 decimals.
    const double rate = count >= load.last_count && seconds > 0
                            ? static_cast<double>(count - load.last_count) * 60.0 / seconds
                            : 0.0;
    load.last_count = count;
    auto step = [&](double& value, double period) {
        value = rate + std::exp(-seconds / period) * (value - rate);
    };
    step(load.one, 60.0);
    step(load.five, 300.0);
    step(load.fifteen, 900.0);
    auto text = [](double v) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2f", v);
        return std::string(buf);
    };
    const std::string base = "$SYS/broker/load/" + name + "/";
    add(out, base + "1min", text(load.one));
    add(out, base + "5min", text(load.five));
    add(out, base + "15min", text(load.fifteen));
}

std::vector<SysMessage> SysTopics::update(const BrokerStats& s, Clock::time_point now) {
    std::vector<SysMessage> out;
    const auto n = [](std::uint64_t v) { return std::to_string(v); };
    const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(now - start_).count();
    const double seconds = std::chrono::duration<double>(now - last_update_).count();

    add(out, "$SYS/broker/version", "mqttools version " + version_);
    add(out, "$SYS/broker/uptime", std::to_string(uptime) + " seconds");

    add(out, "$SYS/broker/clients/connected", n(s.clients_connected));
    add(out, "$SYS/broker/clients/active", n(s.clients_connected));  // Mosquitto's deprecated alias
    add(out, "$SYS/broker/clients/disconnected", n(s.clients_disconnected));
    add(out, "$SYS/broker/clients/inactive", n(s.clients_disconnected));  // deprecated alias
    add(out, "$SYS/broker/clients/total", n(s.clients_total()));
    add(out, "$SYS/broker/clients/maximum", n(s.clients_maximum));
    add(out, "$SYS/broker/clients/expired", n(s.clients_expired));
    add(out, "$SYS/broker/clients/websockets", n(s.websocket_clients_connected));

    add(out, "$SYS/broker/messages/received", n(s.messages_received));
    add(out, "$SYS/broker/messages/sent", n(s.messages_sent));
    add(out, "$SYS/broker/messages/stored", n(s.retained_messages + s.queued_messages));
    add(out, "$SYS/broker/store/messages/count", n(s.retained_messages + s.queued_messages));
    add(out, "$SYS/broker/publish/messages/received", n(s.publish_received));
    add(out, "$SYS/broker/publish/messages/sent", n(s.publish_sent));
    add(out, "$SYS/broker/publish/messages/dropped", n(s.publish_dropped));
    add(out, "$SYS/broker/publish/bytes/received", n(s.publish_bytes_received));
    add(out, "$SYS/broker/publish/bytes/sent", n(s.publish_bytes_sent));
    add(out, "$SYS/broker/bytes/received", n(s.bytes_received));
    add(out, "$SYS/broker/bytes/sent", n(s.bytes_sent));

    add(out, "$SYS/broker/subscriptions/count", n(s.subscriptions));
    add(out, "$SYS/broker/shared_subscriptions/count", n(s.shared_subscriptions));
    add(out, "$SYS/broker/retained messages/count", n(s.retained_messages));
    if (s.persistence) {
        add(out, "$SYS/broker/persistence/healthy", s.persistence_healthy ? "1" : "0");
        add(out, "$SYS/broker/persistence/loaded/sessions", n(s.persistence_sessions_loaded));
        add(out, "$SYS/broker/persistence/loaded/messages", n(s.persistence_messages_loaded));
        add(out, "$SYS/broker/persistence/loaded/retained", n(s.persistence_retained_loaded));
        add(out, "$SYS/broker/persistence/commit_failures", n(s.persistence_commit_failures));
        add(out, "$SYS/broker/persistence/refused", n(s.persistence_refused));
        // The file's size beside Mosquitto's store/messages/{count,bytes}.
        add(out, "$SYS/broker/store/database/bytes", n(s.store_database_bytes));
        add(out, "$SYS/broker/store/wal/bytes", n(s.store_wal_bytes));
        add(out, "$SYS/broker/store/wal/checkpoints", n(s.store_wal_checkpoints));
    }
    // Per bridge (Mosquitto has only the notification state topic).
    for (const auto& b : s.bridges) {
        const std::string base = "$SYS/broker/bridge/" + b.name + "/";
        add(out, base + "state", b.state);
        add(out, base + "connected", b.connected ? "1" : "0");
        add(out, base + "messages/sent", n(b.messages_sent));
        add(out, base + "messages/received", n(b.messages_received));
        add(out, base + "bytes/sent", n(b.bytes_sent));
        add(out, base + "bytes/received", n(b.bytes_received));
        add(out, base + "reconnects", n(b.reconnects));
        add(out, base + "queued", n(b.queued));
        add(out, base + "dropped", n(b.dropped));
    }
    if (s.cluster.enabled) {
        const ClusterStats& k = s.cluster;
        add(out, "$SYS/broker/cluster/node_id", k.node_id);
        add(out, "$SYS/broker/cluster/links/up", n(k.links_up));
        add(out, "$SYS/broker/cluster/links/total", n(k.links_total));
        add(out, "$SYS/broker/cluster/status", k.status);
        add(out, "$SYS/broker/cluster/messages/sent", n(k.messages_out));
        add(out, "$SYS/broker/cluster/messages/received", n(k.messages_in));
        add(out, "$SYS/broker/cluster/messages/lost_sending", n(k.messages_lost_out));
        add(out, "$SYS/broker/cluster/messages/lost_receiving", n(k.messages_lost_in));
        add(out, "$SYS/broker/cluster/disconnects", n(k.disconnects));
        add(out, "$SYS/broker/cluster/reconnects", n(k.reconnects));
        add(out, "$SYS/broker/cluster/interest/count", n(k.remote_interest));
        add(out, "$SYS/broker/cluster/retained/received", n(k.retained_in));
        add(out, "$SYS/broker/cluster/retained/stored", n(k.retained_stored));
        add(out, "$SYS/broker/cluster/takeovers", n(k.takeovers_in));
        add(out, "$SYS/broker/cluster/sessions/sent", n(k.sessions_sent));
        add(out, "$SYS/broker/cluster/sessions/received", n(k.sessions_received));
    }

    // Loads need an interval; the first call only records the baselines.
    if (first_) {
        loads_["messages/received"].last_count = s.messages_received;
        loads_["messages/sent"].last_count = s.messages_sent;
        loads_["publish/received"].last_count = s.publish_received;
        loads_["publish/sent"].last_count = s.publish_sent;
        loads_["publish/dropped"].last_count = s.publish_dropped;
        loads_["bytes/received"].last_count = s.bytes_received;
        loads_["bytes/sent"].last_count = s.bytes_sent;
        loads_["connections"].last_count = s.connections_total;
        loads_["sockets"].last_count = s.connections_total;
    }
    const double dt = first_ ? 0.0 : seconds;
    add_load(out, "messages/received", loads_["messages/received"], s.messages_received, dt);
    add_load(out, "messages/sent", loads_["messages/sent"], s.messages_sent, dt);
    add_load(out, "publish/received", loads_["publish/received"], s.publish_received, dt);
    add_load(out, "publish/sent", loads_["publish/sent"], s.publish_sent, dt);
    add_load(out, "publish/dropped", loads_["publish/dropped"], s.publish_dropped, dt);
    add_load(out, "bytes/received", loads_["bytes/received"], s.bytes_received, dt);
    add_load(out, "bytes/sent", loads_["bytes/sent"], s.bytes_sent, dt);
    add_load(out, "connections", loads_["connections"], s.connections_total, dt);
    add_load(out, "sockets", loads_["sockets"], s.connections_total, dt);

    first_ = false;
    last_update_ = now;
    return out;
}

}  // namespace mqttools::daemon
