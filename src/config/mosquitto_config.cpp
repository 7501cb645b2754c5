// mosquitto.conf read as what it is: spotting one given to mqttoolsd as its
// TOML config, and `mqttools convert-config` (the settings mqttoolsd has,
// written as TOML; every other line listed, never silently dropped).
// mosquitto.conf(5): "key value" per line, '#' comments; `listener PORT
// [ADDRESS]` and `connection NAME` start a listener's or a bridge's lines.
#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_file.hpp"

namespace mqttools::config {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

std::pair<std::string_view, std::string_view> split_word(std::string_view line) {
    const auto blank = line.find_first_of(" \t");
    if (blank == std::string_view::npos) return {line, {}};
    return {line.substr(0, blank), trim(line.substr(blank))};
}

bool is_key_word(std::string_view w) {
    return !w.empty() && std::all_of(w.begin(), w.end(), [](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
    });
}

std::string quoted(std::string_view s) {
    std::string out = "\"";
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\';
        out += ch;
    }
    return out + "\"";
}

// Keys whose value is text even when it looks like a number or a boolean.
bool text_key(std::string_view key) {
    static constexpr std::string_view keys[] = {
        "password_file", "acl_file", "persistence_location", "persistence_file", "log_file", "certfile",
        "keyfile", "cafile", "bind", "remote_clientid", "remote_username", "remote_password", "local_clientid",
        "notification_topic", "bridge_cafile", "bridge_capath", "bridge_certfile", "bridge_keyfile",
        "bridge_tls_version", "bridge_alpn", "bridge_protocol_version", "bridge_bind_address", "start_type",
        "persistent_client_expiration", "protocol", "websockets_origin", "restart_timeout", "name"};
    return std::find(std::begin(keys), std::end(keys), key) != std::end(keys);
}

std::string toml_value(std::string_view key, std::string_view value) {
    if (!text_key(key)) {
        if (value == "true" || value == "false") return std::string(value);
        const std::string_view digits = value.substr(!value.empty() && value.front() == '-' ? 1 : 0);
        if (!digits.empty() && digits.size() < 19 &&
            std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
            return std::string(value);
    }
    return quoted(value);
}

// One TOML table's keys in order, the last of a repeated key winning (as
// in Mosquitto, where a later line overrides an earlier one).
struct Table {
    std::vector<std::pair<std::string, std::string>> keys;
    void set(std::string_view key, std::string value) {
        for (auto& [k, v] : keys) {
            if (k == key) {
                v = std::move(value);
                return;
            }
        }
        keys.emplace_back(std::string(key), std::move(value));
    }
    void write(std::string& out) const {
        for (const auto& [k, v] : keys) out += k + " = " + v + "\n";
    }
};

}  // namespace

std::size_t mosquitto_syntax_line(std::string_view text) {
    std::size_t number = 0;
    while (!text.empty()) {
        const auto nl = text.find('\n');
        const std::string_view raw = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        ++number;
        const std::string_view line = trim(raw);
        if (line.empty() || line.front() == '#' || line.front() == '[') continue;
        const auto [key, rest] = split_word(line);
        // "key value" with no '=': never TOML, always Mosquitto's form.
        if (is_key_word(key) && !rest.empty() && rest.front() != '=' &&
            (known_key("", key) || known_key("listener", key) || known_key("bridge", key) || key == "listener" ||
             key == "connection" || key == "port" || key == "log_type" || key == "include_dir" ||
             key == "per_listener_settings" || key == "user" || key == "pid_file" || key == "autosave_interval"))
            return number;
    }
    return 0;
}

ConvertedConfig convert_mosquitto_config(std::string_view text) {
    ConvertedConfig result;
    Table top;
    std::vector<Table> listeners;
    std::vector<Table> bridges;
    std::vector<std::vector<std::string>> bridge_topics;
    enum class Section { top, listener, bridge } section = Section::top;
    std::optional<std::size_t> default_listener;  // Mosquitto's old `port`
    std::string default_bind;
    bool have_log_dest = false;
    std::size_t number = 0;
    const auto skip = [&](std::string_view line, std::string_view why) {
        result.unsupported.push_back(std::to_string(number) + ": " + std::string(line) +
                                     (why.empty() ? "" : "  (" + std::string(why) + ")"));
    };
    while (!text.empty()) {
        const auto nl = text.find('\n');
        const std::string_view line = trim(text.substr(0, nl));
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        ++number;
        if (line.empty() || line.front() == '#') continue;
        const auto [key, value] = split_word(line);
        if (key == "listener") {
            const auto [port, bind] = split_word(value);
            if (port.empty()) {
                skip(line, "no port");
                continue;
            }
            listeners.emplace_back();
            listeners.back().set("port", toml_value("port", port));
            if (!bind.empty()) listeners.back().set("bind", quoted(bind));
            section = Section::listener;
            continue;
        }
        if (key == "connection") {
            bridges.emplace_back();
            bridge_topics.emplace_back();
            bridges.back().set("name", quoted(value));
            section = Section::bridge;
            continue;
        }
        if (value.empty()) {
            skip(line, "no value");
            continue;
        }
        if (section == Section::bridge) {
            if (key == "topic") {
                bridge_topics.back().push_back(quoted(value));
                continue;
            }
            if (key == "address" || key == "addresses") {
                std::string list;
                std::string_view rest = value;
                std::size_t n = 0;
                while (!rest.empty()) {
                    const auto [one, after] = split_word(rest);
                    list += (n++ ? ", " : "") + quoted(one);
                    rest = after;
                }
                bridges.back().set("address", n == 1 ? list : "[" + list + "]");
                continue;
            }
            if (key == "clientid") {  // Mosquitto's old name
                bridges.back().set("remote_clientid", quoted(value));
                continue;
            }
            if (known_key("bridge", key)) {
                bridges.back().set(key, toml_value(key, value));
                continue;
            }
        }
        if (section == Section::listener && known_key("listener", key) && key != "port") {
            listeners.back().set(key, toml_value(key, value));
            continue;
        }
        if (key == "port") {
            if (!default_listener) {
                default_listener = listeners.size();
                listeners.emplace_back();
            }
            listeners[*default_listener].set("port", toml_value("port", value));
            if (!default_bind.empty()) listeners[*default_listener].set("bind", quoted(default_bind));
            continue;
        }
        if (key == "bind_address" && section == Section::top) {
            default_bind = std::string(value);
            if (default_listener) listeners[*default_listener].set("bind", quoted(value));
            continue;
        }
        if (key == "log_dest") {
            const auto [dest, path] = split_word(value);
            if (have_log_dest) {
                skip(line, "mqttoolsd logs to one destination: the first log_dest is kept");
            } else if (dest == "file" && !path.empty()) {
                top.set("log_dest", quoted("file"));
                top.set("log_file", quoted(path));
                have_log_dest = true;
            } else if (dest == "stderr" || dest == "stdout") {
                top.set("log_dest", quoted("stderr"));
                have_log_dest = true;
            } else if (dest == "syslog") {
                top.set("log_dest", quoted("journal"));
                have_log_dest = true;
            } else {
                skip(line, "no such log destination here (stderr, file, or syslog as the journal)");
            }
            continue;
        }
        if (known_key("", key) && key != "log_dest") {
            top.set(key, toml_value(key, value));
            continue;
        }
        skip(line, "");
    }
    std::string& out = result.toml;
    out = "# Converted from a Mosquitto configuration by `mqttools convert-config`.\n";
    top.write(out);
    for (const Table& l : listeners) {
        out += "\n[[listener]]\n";
        l.write(out);
    }
    for (std::size_t i = 0; i < bridges.size(); ++i) {
        out += "\n[[bridge]]\n";
        bridges[i].write(out);
        if (!bridge_topics[i].empty()) {
            out += "topic = [";
            for (std::size_t t = 0; t < bridge_topics[i].size(); ++t) out += (t ? ", " : "") + bridge_topics[i][t];
            out += "]\n";
        }
    }
    if (!result.unsupported.empty()) {
        out += "\n# Not converted (no equivalent in mqttoolsd):\n";
        for (const auto& u : result.unsupported) out += "#   line " + u + "\n";
    }
    return result;
}

}  // namespace mqttools::config
