// Loading the TOML config file into config::Config. toml++ stays inside
// config_file.cpp: callers see plain structs and plain error strings.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace mqttools::config {

// Either a Config or every problem found in the file, one message per
// problem, each "FILE:LINE:COLUMN: KEY: what is wrong". A bad file never
// yields a partial Config.
struct LoadResult {
    std::optional<Config> config;
    std::vector<std::string> errors;

    bool ok() const { return config.has_value(); }
};

// Reads and checks PATH. Relative paths inside the file (password_file,
// acl_file, certificates, log_file) are resolved against the file's folder,
// so a config works the same whatever the working directory.
LoadResult load_config(const std::string& path);

// Checks TEXT as if it were the content of the file SOURCE (used in error
// messages and to resolve relative paths). With check_files, certificate
// and key files must be readable and the folders of log_file and
// persistence_location must exist, as when mqttoolsd loads it.
LoadResult parse_config(std::string_view text, const std::string& source, bool check_files = true);

// What differs between the running config and a reloaded one that SIGHUP
// cannot apply (listeners, the metrics endpoint): one
// human-readable line each, empty when everything can be applied live.
std::vector<std::string> restart_required_changes(const Config& running, const Config& loaded);

// `mqttoolsd -p PORT`: adds a plain listener on 127.0.0.1:PORT (Mosquitto's
// -p). allow_anonymous keeps the default the file alone implies, so `-p`
// without a listener in the file still allows anonymous clients, as
// Mosquitto does. Apply it again to a config reloaded on SIGHUP.
void add_command_line_port(Config& cfg, std::uint16_t port);

// Whether a table ("" top level, "listener", "bridge") takes KEY.
bool known_key(std::string_view table, std::string_view key);

// A file in Mosquitto's syntax ("listener 1883", "allow_anonymous true")
// given where TOML was expected: the number of its first such line, or 0.
std::size_t mosquitto_syntax_line(std::string_view text);

// `mqttools convert-config`: mosquitto.conf's settings that mqttoolsd has,
// as TOML, and the lines it has no equivalent for ("LINE: text").
struct ConvertedConfig {
    std::string toml;
    std::vector<std::string> unsupported;
};
ConvertedConfig convert_mosquitto_config(std::string_view text);

std::string_view to_string(LogLevel level);
std::string_view to_string(LogDest dest);

// "did you mean" support, exposed for tests: the candidate closest to WORD
// by edit distance, if it is close enough to be a plausible typo.
std::optional<std::string_view> closest_match(std::string_view word,
                                              const std::vector<std::string_view>& candidates);

}  // namespace mqttools::config
