// Runs the broker in the foreground: used by mqttoolsd's main and by the
// `mqttools broker` subcommand.
#pragma once

#include "config/config.hpp"
#include "daemon/deploy_hooks.hpp"

namespace mqttools::daemon {

// Opens the configured listeners (127.0.0.1:1883 when there are none) and
// serves until SIGINT or SIGTERM, then stops gracefully (DISCONNECT 0x8B to
// MQTT 5 clients, wills published). Returns the process exit status: 0
// after a clean stop, 1 when a listener cannot be opened.
// `options` (from mqttoolsd's command line) lets SIGHUP re-read the file.
int run_broker(const config::Config& config, const RunOptions& options = {});

}  // namespace mqttools::daemon
