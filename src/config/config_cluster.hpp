// The [cluster] table (config_cluster.cpp), checked with the helpers of
// config_file.cpp's checker so its errors read like every other one
// (FILE:LINE:COLUMN: cluster.KEY: what is wrong). Internal to src/config.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "config/config.hpp"

namespace mqttools::config {

struct SectionChecker {
    std::function<void(const toml::source_region& at, std::string_view key, const std::string& what)> error;
    std::function<void(const toml::key& key, std::string_view table, const std::vector<std::string_view>& known)>
        unknown_key;
    std::function<std::string(const std::string& path)> resolve;  // relative to the config file
};

void check_cluster(const toml::table& table, Cluster& out, const SectionChecker& c);
// A string value, or an error "expected a string" at the key (false).
bool get_string(const toml::node& node, std::string_view key, std::string& out, const SectionChecker& c);

}  // namespace mqttools::config
