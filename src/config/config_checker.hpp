// The config checker shared by the section parsers (config_file.cpp and
// the config_<area>.cpp files): typed getters that record every problem
// with FILE:LINE:COLUMN and the key, sorted back into file order at the end.
// Internal to src/config: like toml++, it is seen by no other layer.
#pragma once

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>
#include <toml++/toml.h>

#include "config/config_file.hpp"

namespace mqttools::config::detail {

inline std::string_view type_name(toml::node_type type) {
    switch (type) {
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a floating-point number";
        case toml::node_type::boolean: return "a boolean";
        case toml::node_type::date: return "a date";
        case toml::node_type::time: return "a time";
        case toml::node_type::date_time: return "a date-time";
        case toml::node_type::array: return "an array";
        case toml::node_type::table: return "a table";
        case toml::node_type::none: break;
    }
    return "nothing";
}

inline bool valid_address(const std::string& text) {
    if (text.empty() || text == "localhost") return true;
    unsigned char buf[sizeof(in6_addr)];
    return inet_pton(AF_INET, text.c_str(), buf) == 1 || inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

// Collects problems while walking the parsed document.
class Checker {
public:
    Checker(std::string source, std::filesystem::path base_dir)
        : source_(std::move(source)), base_dir_(std::move(base_dir)) {}

    // toml++ iterates tables in key order; errors are sorted back into file
    // order (stable, so problems at one position keep their order).
    std::vector<std::string> sorted_errors() {
        std::stable_sort(errors_.begin(), errors_.end(), [](const auto& a, const auto& b) {
            return std::pair(a.line, a.column) < std::pair(b.line, b.column);
        });
        std::vector<std::string> out;
        for (auto& e : errors_) out.push_back(std::move(e.text));
        return out;
    }
    bool failed() const { return !errors_.empty(); }

    void error(const toml::source_region& at, std::string_view key, const std::string& what) {
        std::ostringstream out;
        out << where(at);
        if (!key.empty()) out << key << ": ";
        out << what;
        errors_.push_back({at.begin.line, at.begin.column, out.str()});
    }

    std::string where(const toml::source_region& at) const {
        std::ostringstream out;
        out << (source_.empty() ? "<config>" : source_);
        if (at.begin) out << ':' << at.begin.line << ':' << at.begin.column;
        out << ": ";
        return out.str();
    }

    void unknown_key(const toml::key& key, std::string_view table,
                     const std::vector<std::string_view>& known) {
        std::string msg = "unknown key '" + std::string(key.str()) + "'";
        if (!table.empty()) msg += " in " + std::string(table);
        if (auto near = closest_match(key.str(), known)) {
            msg += " (did you mean '" + std::string(*near) + "'?)";
        }
        error(key.source(), "", msg);
    }

    bool wrong_type(const toml::node& node, std::string_view key, std::string_view expected) {
        error(node.source(), key,
              "expected " + std::string(expected) + ", got " + std::string(type_name(node.type())));
        return false;
    }

    bool get(const toml::node& node, std::string_view key, bool& out) {
        auto v = node.value_exact<bool>();
        if (!v) return wrong_type(node, key, "a boolean (true or false)");
        out = *v;
        return true;
    }

    bool get(const toml::node& node, std::string_view key, std::string& out) {
        auto v = node.value_exact<std::string>();
        if (!v) return wrong_type(node, key, "a string");
        out = *v;
        return true;
    }

    // An integer in [lo, hi], stored into any integer type wide enough.
    template <class T>
    bool get_int(const toml::node& node, std::string_view key, std::int64_t lo, std::int64_t hi,
                 T& out) {
        auto v = node.value_exact<std::int64_t>();
        if (!v) return wrong_type(node, key, "an integer");
        if (*v < lo || *v > hi) {
            error(node.source(), key,
                  std::to_string(*v) + " is out of range (" + std::to_string(lo) + " to " +
                      std::to_string(hi) + ")");
            return false;
        }
        out = static_cast<T>(*v);
        return true;
    }

    // A file name; relative ones are taken from the config file's folder.
    bool get_path(const toml::node& node, std::string_view key, std::string& out) {
        std::string text;
        if (!get(node, key, text)) return false;
        if (text.empty()) {
            out.clear();
            return true;
        }
        out = resolve(text);
        return true;
    }

    // A certificate, key or CA file: readable now, or an error at its line
    // naming the resolved path and why (not an OpenSSL stack when the
    // listener or bridge first opens).
    void check_readable(const toml::node& node, std::string_view key, const std::string& path) {
        if (path.empty() || !check_files) return;
        if (::access(path.c_str(), R_OK) != 0) {
            error(node.source(), key, "cannot read '" + path + "': " + std::strerror(errno));
        }
    }

    // A file this config names in a folder that must exist (log_file,
    // persistence_location): mqttoolsd creates neither folder, as Mosquitto.
    void check_folder(const toml::node& node, std::string_view key, const std::filesystem::path& folder) {
        std::error_code ec;
        if (!check_files || folder.empty() || std::filesystem::is_directory(folder, ec)) return;
        error(node.source(), key,
              std::filesystem::exists(folder, ec)
                  ? "'" + folder.string() + "' is not a folder"
                  : "the folder '" + folder.string() + "' does not exist (mqttoolsd does not create it)");
    }

    // False: the files and folders named are not looked at (unit tests of
    // a config's meaning with made-up paths).
    bool check_files = true;

    std::string resolve(const std::string& text) const {
        std::filesystem::path p(text);
        if (p.is_relative() && !base_dir_.empty()) p = base_dir_ / p;
        return p.lexically_normal().string();
    }

    // One of WORDS, with a "did you mean" for near misses.
    bool get_word(const toml::node& node, std::string_view key,
                  const std::vector<std::string_view>& words, std::string& out) {
        std::string text;
        if (!get(node, key, text)) return false;
        if (std::find(words.begin(), words.end(), text) != words.end()) {
            out = text;
            return true;
        }
        std::string msg = "'" + text + "' is not one of ";
        for (std::size_t i = 0; i < words.size(); ++i) {
            msg += (i ? ", " : "") + std::string(words[i]);
        }
        if (auto near = closest_match(text, words)) msg += " (did you mean '" + std::string(*near) + "'?)";
        error(node.source(), key, msg);
        return false;
    }

    bool get_address(const toml::node& node, std::string_view key, std::string& out) {
        std::string text;
        if (!get(node, key, text)) return false;
        if (!valid_address(text)) {
            error(node.source(), key, "'" + text + "' is not an IPv4 or IPv6 address");
            return false;
        }
        out = text == "localhost" ? "127.0.0.1" : text;
        return true;
    }

    // Seconds as an integer, or Mosquitto's duration form "<n>h|d|w|m|y".
    bool get_duration(const toml::node& node, std::string_view key, std::uint32_t& out) {
        if (node.is_integer()) return get_int(node, key, 0, std::int64_t{std::numeric_limits<std::uint32_t>::max()}, out);
        auto text = node.value_exact<std::string>();
        if (!text) return wrong_type(node, key, "an integer (seconds) or a duration string like \"2d\"");
        const std::string& s = *text;
        std::size_t digits = 0;
        while (digits < s.size() && s[digits] >= '0' && s[digits] <= '9') ++digits;
        std::int64_t unit = 0;
        if (digits > 0 && digits + 1 == s.size() && digits <= 9) {
            switch (s.back()) {
                case 's': unit = 1; break;
                case 'h': unit = 3600; break;
                case 'd': unit = 86400; break;
                case 'w': unit = 7 * 86400; break;
                case 'm': unit = 30 * 86400; break;
                case 'y': unit = 365 * 86400; break;
                default: break;
            }
        }
        if (unit == 0) {
            error(node.source(), key,
                  "'" + s + "' is not a duration (a number followed by s, h, d, w, m or y)");
            return false;
        }
        std::int64_t seconds = std::stoll(s.substr(0, digits)) * unit;
        if (seconds > std::int64_t{std::numeric_limits<std::uint32_t>::max()}) {
            error(node.source(), key, "'" + s + "' is out of range (at most 4294967295 seconds)");
            return false;
        }
        out = static_cast<std::uint32_t>(seconds);
        return true;
    }

private:
    struct Error {
        toml::source_index line;
        toml::source_index column;
        std::string text;
    };
    std::string source_;
    std::filesystem::path base_dir_;
    std::vector<Error> errors_;
};

}  // namespace mqttools::config::detail

namespace mqttools::config {

// Section parsers in their own files, called from check_top().
// config_bridge.cpp: the [[bridge]] tables.
void check_bridges(detail::Checker& c, const toml::node& value, Config& cfg);
// A key a [[bridge]] table takes (for known_key()).
bool bridge_key(std::string_view key);

}  // namespace mqttools::config
