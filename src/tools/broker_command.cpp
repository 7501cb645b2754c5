// `mqttools broker`: the same broker as mqttoolsd, in the foreground, with
// the seed's options. Like the seed's broker it needs no credentials.
#include <cstdio>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "config/config.hpp"
#include "config/config_file.hpp"
#include "daemon/run.hpp"
#include "tools/args.hpp"
#include "tools/commands.hpp"

namespace mqttools::tools {

int run_broker_command(int argc, char** argv) {
    std::string host = "localhost";
    std::int64_t port = 1883;
    std::int64_t secure_port = 8883;
    std::string cafile;
    std::string certfile;
    std::string keyfile;
    std::string config_path;
    bool port_given = false;
    bool verbose = false;
    ArgParser parser("mqttools broker", "Run a broker in the foreground (the same one as mqttoolsd).");
    parser.string("--host", host, "Broker host to listen on (default: localhost).");
    parser.custom("--port", "PORT", [&](int argc_, char** argv_, int i) {
        if (i + 1 >= argc_) throw UsageError("argument --port: expected a value");
        port = parse_integer(argv_[i + 1], 0, 65535, "--port");
        port_given = true;
        return i + 1;
    }, "Broker port (default: 1883; with --config-file, added to the file's listeners as mqttoolsd -p).");
    parser.string("--config-file", config_path, "Read this TOML configuration file, as mqttoolsd -c "
                                                "(mqttoolsd.toml(5)).");
    parser.flag("--verbose", verbose, "Log every packet (debug), as mqttoolsd -v.");
    parser.alias("-p", "--port");
    parser.alias("-c", "--config-file");
    parser.alias("-v", "--verbose");
    parser.integer("--secure-port", 0, 65535, secure_port,
                   "Secure broker port, used with --certfile and --keyfile (default: 8883).");
    parser.string("--cafile", cafile, "CA file of client certificates.");
    parser.string("--certfile", certfile, "Broker certificate file.");
    parser.string("--keyfile", keyfile, "Broker key file.");
    if (!parser.parse(argc, argv, 1)) return 0;
    if (certfile.empty() != keyfile.empty()) throw UsageError("--certfile and --keyfile go together");

    if (verbose) spdlog::set_level(spdlog::level::debug);
    if (!config_path.empty()) {
        // mqttoolsd's meaning: the file, plus -p's port on 127.0.0.1.
        auto loaded = config::load_config(config_path);
        if (!loaded.ok()) {
            std::string all;
            for (const auto& e : loaded.errors) all += (all.empty() ? "" : "\n") + e;
            throw std::runtime_error(all);
        }
        config::Config config = std::move(*loaded.config);
        if (port_given) config::add_command_line_port(config, static_cast<std::uint16_t>(port));
        std::printf("Starting a broker with '%s'.\n", config_path.c_str());
        std::fflush(stdout);
        return daemon::run_broker(config);
    }
    config::Config config;
    config::Listener plain;
    plain.bind = host;
    plain.port = static_cast<std::uint16_t>(port);
    config.listeners.push_back(plain);
    std::printf("Starting a broker at '%s:%d'.\n", host.c_str(), static_cast<int>(port));
    if (!certfile.empty()) {
        config::Listener secure;
        secure.bind = host;
        secure.port = static_cast<std::uint16_t>(secure_port);
        secure.certfile = certfile;
        secure.keyfile = keyfile;
        secure.cafile = cafile;
        config.listeners.push_back(secure);
        std::printf("Starting a secure broker at '%s:%d'.\n", host.c_str(), static_cast<int>(secure_port));
        std::printf("Certfile: '%s'\n", certfile.c_str());
        std::printf("Keyfile:  '%s'\n", keyfile.c_str());
        std::printf("CA File:  '%s'\n", cafile.c_str());
    }
    std::fflush(stdout);
    // The seed's broker has no authentication; keep that for its users.
    config.allow_anonymous = true;
    return daemon::run_broker(config);
}

}  // namespace mqttools::tools
