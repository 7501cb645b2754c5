#include "daemon/deploy_hooks.hpp"

#include <sys/epoll.h>

#include <spdlog/spdlog.h>

#include "admin/server.hpp"
#include "bridge/bridge.hpp"
#include "broker/broker.hpp"
#include "config/config_file.hpp"
#include "daemon/logging.hpp"
#include "daemon/systemd_notify.hpp"
#include "net/socket.hpp"

namespace mqttools::daemon {

namespace {

std::string listener_name(const std::string& bind, std::uint16_t port) {
    const std::string host = bind.empty() ? std::string("*") : bind;
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace

bool open_listeners(broker::Broker& broker, const config::Config& config, admin::AdminServer* admin) {
    std::vector<std::string> rejected;
    const auto inherited = take_inherited_sockets(rejected);
    for (const auto& r : rejected) spdlog::warn("{}", r);
    // Own every inherited descriptor at once, so an early return closes them.
    std::vector<net::UniqueFd> owned;
    for (const auto& s : inherited) owned.emplace_back(s.fd);

    for (const auto& plan : plan_listeners(config.listeners, inherited)) {
        const auto& l = plan.listener;
        net::UniqueFd fd;
        if (plan.inherited_fd >= 0) {
            for (auto& o : owned) {
                if (o.get() == plan.inherited_fd) fd = std::move(o);
            }
        } else {
            std::string error;
            fd = net::listen_tcp(l.bind, l.port, error, l.reuse_port);
            if (!fd) {
                spdlog::error("{}", error);
                return false;
            }
        }
        const std::string name = listener_name(l.bind, net::local_port(fd.get()));
        if (l.http_api()) {
            std::string error;
            if (!admin || !admin->add_listener(std::move(fd), name, l, error)) {
                spdlog::error("{}", admin ? error : "http_api listener " + name + ": no API server");
                return false;
            }
            continue;
        }
        spdlog::info("Opening {}{}listener on {}{}.", l.tls() ? "TLS " : "", l.websockets() ? "websockets " : "", name,
                     plan.inherited_fd >= 0 ? " (socket from systemd)" : "");
        if (!broker.add_listener(std::move(fd), name, l)) return false;
    }
    return true;
}

BrokerStats collect_stats(const broker::Broker& broker) {
    const broker::Counters c = broker.counters();
    BrokerStats s;
    s.clients_connected = c.clients_connected;
    s.clients_disconnected = c.clients_disconnected;
    s.clients_maximum = c.clients_maximum;
    s.clients_expired = c.clients_expired;
    s.connections_total = c.connections_total;
    s.messages_received = c.messages_received;
    s.messages_sent = c.messages_sent;
    s.publish_received = c.publish_received;
    s.publish_sent = c.publish_sent;
    s.publish_dropped = c.publish_dropped;
    s.bytes_received = c.bytes_received;
    s.bytes_sent = c.bytes_sent;
    s.publish_bytes_received = c.publish_bytes_received;
    s.publish_bytes_sent = c.publish_bytes_sent;
    s.websocket_clients_connected = c.websocket_clients_connected;
    s.websocket_connections_total = c.websocket_connections_total;
    s.subscriptions = c.subscriptions;
    s.shared_subscriptions = c.shared_subscriptions;
    s.retained_messages = c.retained_messages;
    s.queued_messages = c.queued_messages;
    s.output_queued_bytes = c.output_queued_bytes;
    s.inflight_messages = c.inflight_messages;
    for (const auto& l : broker.listener_counters()) {
        s.listeners.push_back({l.name, l.connections_total});
    }
    const auto& p = broker.store_counters();
    s.persistence = p.enabled;
    s.persistence_healthy = p.healthy;
    s.persistence_sessions_loaded = p.sessions_loaded;
    s.persistence_messages_loaded = p.messages_loaded;
    s.persistence_retained_loaded = p.retained_loaded;
    s.persistence_commit_failures = p.commit_failures;
    s.persistence_refused = p.refused;
    s.auth_metrics = broker.auth_metrics();
    s.store_database_bytes = p.database_bytes;
    s.store_wal_bytes = p.wal_bytes;
    s.store_wal_checkpoints = p.wal_checkpoints;
    for (const auto& b : broker.bridge_counters()) {
        s.bridges.push_back({b.name, b.state, b.connected, b.messages_sent, b.messages_received, b.bytes_sent,
                             b.bytes_received, b.reconnects, b.queued, b.dropped});
    }
    if (const broker::ClusterLink* link = broker.cluster()) {
        const broker::ClusterCounters k = link->counters();
        s.cluster = ClusterStats{true, link->node_id(), k.links_up, k.links_total, k.messages_out, k.messages_in,
                                 k.messages_lost_out, k.messages_lost_in, k.disconnects, k.reconnects,
                                 k.remote_interest, k.retained_in, k.retained_stored, k.takeovers_in,
                                 k.sessions_sent, k.sessions_received, k.status};
    }
    return s;
}

DeployRuntime::DeployRuntime(net::Reactor& reactor, broker::Broker& broker, const config::Config& config,
                             RunOptions options)
    : reactor_(reactor), broker_(broker), running_(config), options_(std::move(options)) {}

std::unique_ptr<DeployRuntime> DeployRuntime::create(net::Reactor& reactor, broker::Broker& broker,
                                                     const config::Config& config, RunOptions options) {
    std::unique_ptr<DeployRuntime> rt(new DeployRuntime(reactor, broker, config, std::move(options)));
    DaemonServices::Hooks hooks;
    hooks.stats = [&broker] { return collect_stats(broker); };
    hooks.clients_connected = [&broker] { return broker.clients_connected(); };
    hooks.cluster_trouble = [&broker]() -> std::string {
        const broker::ClusterLink* link = broker.cluster();
        if (!link) return "";
        std::string status = link->counters().status;
        return status == "connected" ? "" : status;
    };
    hooks.publish_retained = [&broker](const SysMessage& m) {
        broker.publish_internal(m.topic, m.payload, true);
    };
    std::string error;
    rt->services_ = DaemonServices::create(config, std::move(hooks), error);
    if (!rt->services_) {
        spdlog::error("{}", error);
        return nullptr;
    }
    if (config.metrics.enabled) {
        spdlog::info("Serving Prometheus metrics on http://{}/metrics.",
                     listener_name(config.metrics.bind, config.metrics.port));
    }
    if (!reactor.add(rt->services_->fd(), EPOLLIN, rt.get())) {
        spdlog::error("epoll_ctl: cannot watch the daemon services");
        return nullptr;
    }
    return rt;
}

DeployRuntime::~DeployRuntime() {
    if (services_) reactor_.remove(services_->fd());
}

void DeployRuntime::on_io(std::uint32_t) { services_->dispatch(); }

void DeployRuntime::ready() {
    services_->ready();
    spdlog::info("mqttoolsd ready; logging to {}.", log_destination_description());
}

void DeployRuntime::stopping() { services_->stopping(); }

void DeployRuntime::reload() {
    services_->reloading();
    config::Config next = running_;
    if (!options_.config_path.empty()) {
        spdlog::info("Received SIGHUP, reloading {}.", options_.config_path);
        auto loaded = config::load_config(options_.config_path);
        if (!loaded.ok()) {
            for (const auto& e : loaded.errors) spdlog::error("{}", e);
            spdlog::error("Configuration not reloaded ({} problem{}); the running configuration stays.",
                          loaded.errors.size(), loaded.errors.size() == 1 ? "" : "s");
            services_->reloaded(running_);
            return;
        }
        next = std::move(*loaded.config);
        if (options_.port) config::add_command_line_port(next, *options_.port);
    } else {
        spdlog::info("Received SIGHUP, reloading password, ACL and certificate files.");
    }
    for (const auto& change : config::restart_required_changes(running_, next)) {
        spdlog::warn("{}", change);
    }
    if (auto err = reload_logging(next, options_.verbose)) spdlog::error("{}", *err);
    auto errors = broker_.apply_config(next);
    if (on_reload) {
        for (auto& e : on_reload(next)) errors.push_back(std::move(e));
    }
    // Listeners and [metrics] stay as opened until a restart.
    auto listeners = std::move(running_.listeners);
    auto metrics = running_.metrics;
    running_ = std::move(next);
    running_.listeners = std::move(listeners);
    running_.metrics = metrics;
    services_->reloaded(running_);
    if (errors.empty()) {
        spdlog::info("Configuration reloaded.");
    } else {
        spdlog::error("Configuration reloaded with {} error{} (see above); those parts keep their previous state.",
                      errors.size(), errors.size() == 1 ? "" : "s");
    }
}

}  // namespace mqttools::daemon
