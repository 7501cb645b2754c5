// The deployment side of run_broker(): listeners from the config and from
// systemd socket activation, the DaemonServices fd (watchdog, STATUS=, $SYS,
// /metrics) in the broker's reactor, SIGHUP reload and the STOPPING=1 of a
// graceful stop. run.cpp calls these at the matching points.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>
#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "daemon/services.hpp"
#include "daemon/stats.hpp"
#include "net/reactor.hpp"

namespace mqttools::broker {
class Broker;
}
namespace mqttools::admin {
class AdminServer;
}

namespace mqttools::daemon {

// How mqttoolsd was started, so SIGHUP can re-read the same file and
// re-apply the same command line.
struct RunOptions {
    std::string config_path;            // "" without -c: SIGHUP re-reads only the files it names
    std::optional<std::uint16_t> port;  // -p PORT
    bool verbose = false;               // -v
};

// Opens every listener: sockets inherited from systemd (LISTEN_FDS) first,
// matched to the configured [[listener]]s by address and port, then the
// configured ones nobody passed in (127.0.0.1:1883 when none). False, with
// the reason logged, when one cannot be opened.
// `protocol = "http_api"` listeners go to `admin` (src/admin).
bool open_listeners(broker::Broker& broker, const config::Config& config, admin::AdminServer* admin = nullptr);

// The broker's counters as daemon::BrokerStats.
BrokerStats collect_stats(const broker::Broker& broker);

class DeployRuntime final : public net::IoHandler {
public:
    // nullptr (reason logged) when the [metrics] port cannot be opened.
    static std::unique_ptr<DeployRuntime> create(net::Reactor& reactor, broker::Broker& broker,
                                                 const config::Config& config, RunOptions options);
    ~DeployRuntime();
    DeployRuntime(const DeployRuntime&) = delete;
    DeployRuntime& operator=(const DeployRuntime&) = delete;

    // Every listener is bound and signals are handled: READY=1.
    void ready();
    // SIGHUP: re-read the config file (and through it password/ACL files and
    // TLS certificates); a bad file changes nothing. No client is dropped.
    void reload();
    // SIGTERM/SIGINT, before the broker's shutdown: STOPPING=1.
    void stopping();

    void on_io(std::uint32_t events) override;
    // Called by reload() with the new configuration (the http_api
    // listeners' keys and certificates); returns the problems found.
    std::function<std::vector<std::string>(const config::Config&)> on_reload;

private:
    DeployRuntime(net::Reactor& reactor, broker::Broker& broker, const config::Config& config,
                  RunOptions options);

    net::Reactor& reactor_;
    broker::Broker& broker_;
    config::Config running_;
    RunOptions options_;
    std::unique_ptr<DaemonServices> services_;
};

}  // namespace mqttools::daemon
