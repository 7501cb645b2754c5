// `mqttools broker` in a build without the broker (daemon_dep) available.
#include "tools/commands.hpp"
#include "tools/args.hpp"

namespace mqttools::tools {

int run_broker_command(int, char**) { throw UsageError("this mqttools was built without the broker"); }

}  // namespace mqttools::tools
