// `mqttools convert-config mosquitto.conf [-o FILE]`: the settings of a
// Mosquitto configuration that mqttoolsd has, as the TOML mqttoolsd reads
// (stdout or FILE), and on stderr every line that has no equivalent. The
// result is checked as mqttoolsd would load it (relative paths against
// FILE's folder), so a value mqttoolsd refuses is reported here, not at start.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "config/config_file.hpp"
#include "tools/args.hpp"
#include "tools/commands.hpp"

namespace mqttools::tools {

int run_convert_config_command(int argc, char** argv) {
    std::string input;
    std::string output;
    ArgParser parser("mqttools convert-config",
                     "Write the mqttoolsd TOML equivalent of a mosquitto.conf; list what has none.");
    parser.string("--output", output, "Write the TOML here instead of stdout.");
    parser.alias("-o", "--output");
    parser.positional("mosquitto.conf", input, true, "The Mosquitto configuration file to convert.");
    if (!parser.parse(argc, argv, 1)) return 0;
    std::ifstream in(input, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read '" + input + "'");
    std::ostringstream text;
    text << in.rdbuf();
    const config::ConvertedConfig converted = config::convert_mosquitto_config(text.str());
    // Checked as the file it becomes (relative paths resolve from there).
    const auto checked = config::parse_config(converted.toml, output.empty() ? input + ".toml" : output);
    if (output.empty()) {
        std::fwrite(converted.toml.data(), 1, converted.toml.size(), stdout);
        std::fflush(stdout);
    } else {
        std::ofstream out(output, std::ios::binary | std::ios::trunc);
        out << converted.toml;
        if (!out.flush()) throw std::runtime_error("cannot write '" + output + "'");
    }
    for (const auto& u : converted.unsupported) std::fprintf(stderr, "%s:%s\n", input.c_str(), u.c_str());
    if (!converted.unsupported.empty()) {
        std::fprintf(stderr, "%zu line(s) not converted: mqttoolsd has no equivalent (see docs/configuration.md).\n",
                     converted.unsupported.size());
    }
    for (const auto& e : checked.errors) std::fprintf(stderr, "warning: mqttoolsd would refuse: %s\n", e.c_str());
    return checked.ok() ? 0 : 1;
}

}  // namespace mqttools::tools
