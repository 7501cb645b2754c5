#include "daemon/run.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <memory>
#include <cstring>

#include <spdlog/spdlog.h>

#include "admin/api.hpp"
#include "admin/client_events.hpp"
#include "admin/server.hpp"
#include "broker/broker.hpp"
#include "daemon/metrics_http.hpp"
#include "mqttools_version.h"
#include "store/sqlite_store.hpp"
#include "cluster/cluster_admin.hpp"
#include "cluster/nats_cluster.hpp"
#include "net/reactor.hpp"
#include "net/socket.hpp"

namespace mqttools::daemon {

namespace {

// SIGINT/SIGTERM/SIGHUP arrive through a signalfd watched by the reactor, so
// the stop and the reload run on the reactor's thread like everything else.
class SignalHandler final : public net::IoHandler {
public:
    SignalHandler(net::Reactor& reactor, broker::Broker& broker, DeployRuntime& runtime)
        : reactor_(reactor), broker_(broker), runtime_(runtime) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
        sigprocmask(SIG_BLOCK, &set, &old_);
        fd_.reset(signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
        if (fd_) reactor_.add(fd_.get(), EPOLLIN, this);
    }
    ~SignalHandler() {
        if (fd_) reactor_.remove(fd_.get());
        sigprocmask(SIG_SETMASK, &old_, nullptr);
    }
    SignalHandler(const SignalHandler&) = delete;
    SignalHandler& operator=(const SignalHandler&) = delete;

    void on_io(std::uint32_t) override {
        signalfd_siginfo info{};
        while (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
            if (info.ssi_signo == SIGHUP) {
                runtime_.reload();
            } else if (info.ssi_signo == SIGINT || info.ssi_signo == SIGTERM) {
                spdlog::info("Received {}, shutting down.", info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
                runtime_.stopping();
                broker_.shutdown();
                reactor_.stop();
            }
        }
    }

private:
    net::Reactor& reactor_;
    broker::Broker& broker_;
    DeployRuntime& runtime_;
    net::UniqueFd fd_;
    sigset_t old_{};
};

}  // namespace

// Every client is a descriptor: take the soft limit up to the hard one, as a
// broker expecting many clients must (systemd's LimitNOFILE sets the hard one).
static void raise_descriptor_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
        spdlog::warn("cannot raise the open-file limit: {}", std::strerror(errno));
    }
}

// [cluster] node_id, by default HOSTNAME:PORT of the first listener (and
// the process id when that port is shared through reuse_port, since the
// nodes sharing it run on one host).
static std::string cluster_node_id(const config::Config& config) {
    if (!config.cluster.node_id.empty()) return config.cluster.node_id;
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
    const config::Listener first = config.listeners.empty() ? config::Listener{} : config.listeners.front();
    std::string id = std::string(host) + ":" + std::to_string(first.port);
    if (first.reuse_port) id += "-" + std::to_string(::getpid());
    return id;
}

static std::string admin_node_name(const config::Config& config) {
    if (config.cluster.enabled) return cluster_node_id(config);
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
    return std::string("mqttools@") + host;
}

static admin::ApiContext api_context(broker::Broker& broker, const std::string& node) {
    admin::ApiContext ctx;
    ctx.broker = &broker;
    ctx.node = node;
    ctx.version = MQTTOOLS_VERSION;
    ctx.started = std::chrono::steady_clock::now();
    ctx.metrics_text = [&broker, started = ctx.started] {
        const double up = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        return render_metrics(collect_stats(broker), up, MQTTOOLS_VERSION);
    };
    return ctx;
}

int run_broker(const config::Config& config, const RunOptions& options) {
    ::signal(SIGPIPE, SIG_IGN);
    raise_descriptor_limit();
    net::Reactor reactor;
    if (!reactor.valid()) {
        spdlog::error("epoll_create1 failed");
        return 1;
    }
    // The store outlives the broker: the broker's last changes (sessions
    // disconnected at shutdown) are committed when the store closes.
    std::unique_ptr<store::SqliteStore> durable;
    broker::LoadedState loaded;
    if (config.persistence.enabled) {
        store::Options opts;
        opts.path = config.persistence.path();
        if (config.persistence.location.empty()) {
            // No folder configured: systemd's StateDirectory= (the shipped
            // unit sets it), else the working directory.
            if (const char* state = std::getenv("STATE_DIRECTORY"); state && *state) {
                std::string dir(state);
                dir = dir.substr(0, dir.find(':'));  // several: the first
                opts.path = dir + "/" + config.persistence.file;
            }
        }
        opts.sync_full = config.persistence.sync_full;
        std::string error;
        const auto began = std::chrono::steady_clock::now();
        durable = store::SqliteStore::open(reactor, opts, loaded, error);
        if (!durable) {
            std::error_code ec;
            const bool there = std::filesystem::exists(opts.path, ec);
            spdlog::error("{}; not starting{}.", error, there ? " (the file is left as it is)" : "");
            return 1;
        }
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began);
        spdlog::info("Persistence: {} loaded in {} ms: {} sessions, {} queued messages, {} retained messages "
                     "({} stored messages); sync {}.",
                     opts.path, ms.count(), loaded.sessions.size(), loaded.queued, loaded.retained.size(),
                     loaded.messages, opts.sync_full ? "full" : "normal");
    }
    broker::Broker broker(reactor, config);
    if (!broker.startup_errors().empty()) return 1;  // password/ACL file errors, logged by the broker
    if (durable) broker.set_persistence(durable.get(), std::move(loaded));

    // The management API and client events (src/admin) name this node as
    // EMQX does: the cluster's node_id, or mqttools@HOSTNAME.
    const std::string node = admin_node_name(config);
    std::unique_ptr<admin::AdminServer> admin_server;
    if (std::any_of(config.listeners.begin(), config.listeners.end(), [](const auto& l) { return l.http_api(); })) {
        admin_server = std::make_unique<admin::AdminServer>(reactor, api_context(broker, node));
    }
    std::unique_ptr<admin::ClientEvents> client_events;
    if (config.client_events) client_events = std::make_unique<admin::ClientEvents>(reactor, broker, node);

    // Inherited (socket activation) and configured listeners: deploy_hooks.cpp.
    if (!open_listeners(broker, config, admin_server.get())) return 1;
    std::unique_ptr<cluster::NatsCluster> cluster_link;
    if (config.cluster.enabled) {
        std::string error;
        cluster_link = cluster::NatsCluster::start(reactor, broker, config.cluster, cluster_node_id(config), error);
        if (!cluster_link) {
            spdlog::error("{}", error);
            return 1;
        }
        broker.set_cluster(cluster_link.get());
    }
    // Bans, dynamic security and the API across the nodes (issue 27).
    std::unique_ptr<cluster::ClusterAdmin> cluster_admin;
    std::unique_ptr<admin::PeerApi> peer_api;
    if (config.cluster.enabled) {
        std::string error;
        cluster_admin = cluster::ClusterAdmin::start(reactor, broker, config.cluster, cluster_node_id(config), error);
        if (!cluster_admin) {
            spdlog::error("{}", error);
            return 1;
        }
        broker.set_admin_link(cluster_admin.get());
        peer_api = std::make_unique<admin::PeerApi>(reactor, api_context(broker, node), *cluster_admin);
    }
    // Watchdog, STATUS=, $SYS and /metrics, served by this reactor.
    auto runtime = DeployRuntime::create(reactor, broker, config, options);
    if (!runtime) return 1;
    if (admin_server) {
        runtime->on_reload = [&admin_server](const config::Config& next) { return admin_server->reload(next); };
    }

    SignalHandler signals(reactor, broker, *runtime);
    runtime->ready();  // READY=1: every listener is bound and signals are handled
    reactor.run();
    if (durable) durable->drain();
    broker.set_admin_link(nullptr);
    peer_api.reset();
    cluster_admin.reset();
    broker.set_cluster(nullptr);
    cluster_link.reset();  // publishes what shutdown left for NATS (wills), then closes
    spdlog::info("mqttoolsd stopped.");
    return 0;
}

}  // namespace mqttools::daemon
