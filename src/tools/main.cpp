// mqttools: the companion command-line client of mqttoolsd.
//   mqttools [-l LEVEL] [--version] {subscribe,publish,monitor,broker,passwd,dynsec,convert-config} ...
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>

#include "mqttools_version.h"
#include "tools/args.hpp"
#include "tools/commands.hpp"
#include "tools/common.hpp"
#include "tools/passwd_command.hpp"

namespace {

using mqttools::tools::UsageError;

constexpr const char* usage_text =
    "usage: mqttools [-h] [--log-level LEVEL] [--version] {subscribe,publish,monitor,broker,passwd,dynsec,convert-config} ...\n";

constexpr const char* help_text =
    "\nMQTT 5.0 tools.\n"
    "\n"
    "commands:\n"
    "  subscribe           Subscribe to given topic and print received messages.\n"
    "  publish             Publish given message (or generated ones) to given topic.\n"
    "  monitor             Monitor given topics in a text based user interface.\n"
    "  broker              Run a broker in the foreground.\n"
    "  passwd              Manage a password file (like mosquitto_passwd).\n"
    "  dynsec              Create a dynamic security file (dynsec init FILE USER).\n"
    "  convert-config      Write the TOML equivalent of a mosquitto.conf.\n"
    "\n"
    "options:\n"
    "  -h, --help          Show this help message and exit.\n"
    "  --log-level LEVEL   Log level of the client library: trace, debug, info, warning,\n"
    "                      error, critical or off (default: warning).\n"
    "  --version           Print the version and exit.\n"
    "\n"
    "'mqttools COMMAND --help' lists a command's options; man mqttools(1) has them all.\n";

struct Command {
    std::string_view name;
    int (*run)(int argc, char** argv);
};

// The subcommand table; `passwd` is the security work's command.
constexpr Command commands[] = {
    {"subscribe", mqttools::tools::run_subscribe_command},
    {"publish", mqttools::tools::run_publish_command},
    {"monitor", mqttools::tools::run_monitor_command},
    {"broker", mqttools::tools::run_broker_command},
    {"passwd", mqttools::tools::run_passwd_command},
    {"dynsec", mqttools::tools::run_dynsec_command},
    {"convert-config", mqttools::tools::run_convert_config_command},
};

void set_log_level(const std::string& name) {
    static constexpr std::pair<std::string_view, spdlog::level::level_enum> levels[] = {
        {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
        {"info", spdlog::level::info},   {"warning", spdlog::level::warn},
        {"warn", spdlog::level::warn},   {"error", spdlog::level::err},
        {"critical", spdlog::level::critical}, {"off", spdlog::level::off},
    };
    for (const auto& [n, level] : levels) {
        if (n == name) {
            spdlog::set_level(level);
            return;
        }
    }
    throw UsageError("argument --log-level: invalid choice '" + name +
                     "' (choose from trace, debug, info, warning, error, critical, off)");
}

int run(int argc, char** argv) {
    // Logs go to stderr: stdout carries the commands' output.
    spdlog::set_default_logger(spdlog::stderr_color_mt("mqttools"));
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
    spdlog::set_level(spdlog::level::warn);
    int i = 1;
    for (; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            std::fputs(usage_text, stdout);
            std::fputs(help_text, stdout);
            return 0;
        }
        if (arg == "--version") {
            std::printf("mqttools %s\n", MQTTOOLS_VERSION);
            return 0;
        }
        if (arg == "--log-level") {
            if (i + 1 >= argc) throw UsageError("argument --log-level: expected a value");
            set_log_level(argv[++i]);
            continue;
        }
        if (arg.starts_with("--log-level=")) {
            set_log_level(std::string(arg.substr(12)));
            continue;
        }
        if (arg.starts_with("-")) throw UsageError("unrecognized argument '" + std::string(arg) + "'");
        break;
    }
    if (i >= argc) {
        std::fputs(usage_text, stderr);
        throw UsageError("a command is required");
    }
    for (const Command& c : commands) {
        if (c.name == argv[i]) return c.run(argc - i, argv + i);
    }
    throw UsageError("invalid command '" + std::string(argv[i]) +
                     "' (choose from subscribe, publish, monitor, broker, passwd, dynsec, convert-config)");
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const mqttools::ConnectError& e) {
        std::fflush(stdout);
        if (!mqttools::tools::quiet()) std::fprintf(stderr, "error: %s\n", e.what());
        return mqttools::tools::connack_exit_status(e.reason()).value_or(1);
    } catch (const std::exception& e) {
        std::fflush(stdout);
        // --quiet: no error messages, the exit status tells (mosquitto_pub).
        if (!mqttools::tools::quiet()) std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
