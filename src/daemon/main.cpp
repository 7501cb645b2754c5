// mqttoolsd [-c FILE] [-p PORT] [-v]: the MQTT broker daemon.
#include <signal.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

#include "config/config_file.hpp"
#include "daemon/logging.hpp"
#include "daemon/run.hpp"
#include "net/tls.hpp"
#include "mqttools_version.h"

namespace {

int usage(int status) {
    std::fprintf(status ? stderr : stdout,
                 "Usage: mqttoolsd [-c FILE] [-p PORT] [-v]\n"
                 "  -c FILE   read the TOML configuration FILE\n"
                 "  -p PORT   listen on 127.0.0.1:PORT\n"
                 "  -v        verbose logging\n"
                 "  --version print the version\n");
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    // The stop signals are blocked before anything else, and so before any
    // thread exists (the auth workers, the store, libnats, libcurl's
    // resolver): a thread inherits its creator's mask, and a SIGTERM the
    // kernel hands to a thread that does not block it kills the process by
    // the default action instead of reaching the reactor's signalfd (seen:
    // nodes "exited with -15" when stopped during start-up). One that comes
    // during start-up waits for the signalfd, then stops the broker cleanly.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    mqttools::net::keep_openssl_until_exit();
    std::string config_path;
    long port = -1;
    bool verbose = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if ((arg == "-c" || arg == "--config-file") && i + 1 < argc) {
            config_path = argv[++i];
        } else if ((arg == "-p" || arg == "--port") && i + 1 < argc) {
            char* end = nullptr;
            port = std::strtol(argv[++i], &end, 10);
            if (*end != '\0' || port < 0 || port > 65535) {
                std::fprintf(stderr, "error: invalid port '%s'\n", argv[i]);
                return 1;
            }
        } else if (arg == "-v" || arg == "--verbose") {
            verbose = true;
        } else if (arg == "-h" || arg == "--help") {
            return usage(0);
        } else if (arg == "--version") {
            std::printf("mqttoolsd %s\n", MQTTOOLS_VERSION);
            return 0;
        } else {
            std::fprintf(stderr, "error: unknown argument '%s'\n", arg.c_str());
            return usage(1);
        }
    }

    mqttools::config::Config config;
    if (!config_path.empty()) {
        auto loaded = mqttools::config::load_config(config_path);
        if (!loaded.ok()) {
            for (const auto& e : loaded.errors) std::fprintf(stderr, "%s\n", e.c_str());
            return 1;
        }
        config = std::move(*loaded.config);
    }
    if (port >= 0) mqttools::config::add_command_line_port(config, static_cast<std::uint16_t>(port));

    if (auto error = mqttools::daemon::setup_logging(config, verbose)) {
        std::fprintf(stderr, "error: %s\n", error->c_str());
        return 1;
    }
    spdlog::info("mqttoolsd {} starting.", MQTTOOLS_VERSION);
    mqttools::daemon::RunOptions options;
    options.config_path = config_path;
    if (port >= 0) options.port = static_cast<std::uint16_t>(port);
    options.verbose = verbose;
    return mqttools::daemon::run_broker(config, options);
}
