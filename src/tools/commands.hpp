// The mqttools subcommands. Each gets argv with argv[0] = its name and
// returns the exit status; errors are thrown (main prints "error: ...").
#pragma once

namespace mqttools::tools {

int run_subscribe_command(int argc, char** argv);
int run_publish_command(int argc, char** argv);
int run_monitor_command(int argc, char** argv);
int run_broker_command(int argc, char** argv);
int run_convert_config_command(int argc, char** argv);

}  // namespace mqttools::tools
