// The TOML config parser: the only file that sees toml++ types. Every
// problem is collected (not just the first), each with FILE:LINE:COLUMN and
// the key, so an operator fixes a file in one pass; a file with any problem
// yields no Config at all, so the broker never half-starts.
#include "config/config_file.hpp"
#include "config/config_cluster.hpp"
#include "config/config_auth.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <toml++/toml.h>

#include "config/config_checker.hpp"

namespace mqttools::config {

namespace {

constexpr std::int64_t kMaxPacket = 268'435'455;  // largest Remaining Length, MQTT 5 §1.5.5
constexpr std::int64_t kU32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::int64_t kI64 = std::numeric_limits<std::int64_t>::max();

const std::vector<std::string_view> kTopKeys = {
    "allow_anonymous",   "password_file",
    "acl_file",          "max_connections",
    "max_packet_size",   "message_size_limit",
    "max_keepalive",     "max_inflight_messages",
    "max_queued_messages", "max_queued_bytes",
    "retain_available",  "sys_interval",
    "persistent_client_expiration", "topic_alias_maximum",
    "receive_maximum",   "log_level",
    "log_dest",          "log_file",
    "max_subscriptions_per_client", "max_topic_levels",
    "max_client_output_bytes", "stuck_client_timeout", "memory_limit",
    "connect_timeout",   "listener",
    "metrics",           "cluster",           "auth_http",         "auth_jwt",
    "persistence", "persistence_location", "persistence_file", "persistence_sync",
    "bridge",            "client_events",
    "dynamic_security_file",
};
const std::vector<std::string_view> kPersistenceSync = {"full", "normal"};
const std::vector<std::string_view> kListenerKeys = {
    "port",    "bind",   "bind_address",        "certfile",
    "keyfile", "cafile", "require_certificate", "use_identity_as_username",
    "protocol", "websockets_headers_size", "websockets_origin",
    "reuse_port",      "api_key_file",
};
const std::vector<std::string_view> kMetricsKeys = {"enabled", "port", "bind"};
const std::vector<std::string_view> kLogLevels = {"trace", "debug", "info", "warning", "error"};
const std::vector<std::string_view> kLogDests = {"stderr", "journal", "file"};

using detail::Checker;
using detail::valid_address;

// protocol, websockets_headers_size, websockets_origin (Mosquitto's names).
void check_listener_websockets(Checker& c, const std::string& k, const toml::node& value,
                               const std::string& qk, Listener& l) {
    if (k == "protocol") {
        std::string p;
        if (!c.get(value, qk, p)) return;
        if (p == "mqtt") {
            l.protocol = Listener::Protocol::mqtt;
        } else if (p == "websockets") {
            l.protocol = Listener::Protocol::websockets;
        } else if (p == "http_api") {
            l.protocol = Listener::Protocol::http_api;
        } else {
            c.error(value.source(), qk,
                    "'" + p + "' is not a protocol (use \"mqtt\", \"websockets\" or \"http_api\")");
        }
    } else if (k == "websockets_headers_size") {
        c.get_int(value, qk, 64, 65535, l.websockets_headers_size);
    } else if (auto* arr = value.as_array()) {
        for (const auto& item : *arr) {
            auto text = item.value_exact<std::string>();
            if (!text || text->empty()) {
                c.wrong_type(item, qk, "a list of origins like \"https://app.example.com\"");
                return;
            }
            l.websockets_origin.push_back(*text);
        }
    } else if (auto text = value.value_exact<std::string>(); text && !text->empty()) {
        l.websockets_origin.push_back(*text);
    } else {
        c.wrong_type(value, qk, "an origin like \"https://app.example.com\" or a list of them");
    }
}

struct ListenerSeen {
    std::string bind;
    std::uint16_t port;
};

void check_listener(Checker& c, const toml::table& table, std::size_t index, Config& cfg,
                    std::vector<ListenerSeen>& seen) {
    const std::string name = "listener[" + std::to_string(index) + "]";
    Listener l;
    bool have_port = false;
    const toml::node* port_node = nullptr;
    std::vector<std::pair<std::string, const toml::node*>> ws_nodes;
    const toml::node* api_key_node = nullptr;
    for (auto&& [key, value] : table) {
        const std::string k(key.str());
        const std::string qk = name + "." + k;
        if (k == "port") {
            have_port = true;  // when invalid, that is reported; don't also say "missing"
            if (c.get_int(value, qk, 1, 65535, l.port)) port_node = &value;
        } else if (k == "bind" || k == "bind_address") {
            c.get_address(value, qk, l.bind);
        } else if (k == "certfile") {
            if (c.get_path(value, qk, l.certfile)) c.check_readable(value, qk, l.certfile);
        } else if (k == "keyfile") {
            if (c.get_path(value, qk, l.keyfile)) c.check_readable(value, qk, l.keyfile);
        } else if (k == "cafile") {
            if (c.get_path(value, qk, l.cafile)) c.check_readable(value, qk, l.cafile);
        } else if (k == "require_certificate") {
            c.get(value, qk, l.require_certificate);
        } else if (k == "use_identity_as_username") {
            c.get(value, qk, l.use_identity_as_username);
        } else if (k == "protocol" || k == "websockets_headers_size" || k == "websockets_origin") {
            check_listener_websockets(c, k, value, qk, l);
            ws_nodes.push_back({k, &value});
        } else if (k == "reuse_port") {
            c.get(value, qk, l.reuse_port);
        } else if (k == "api_key_file") {
            if (c.get_path(value, qk, l.api_key_file)) api_key_node = &value;
        } else {
            c.unknown_key(key, "[[listener]]", kListenerKeys);
        }
    }
    for (const auto& [k, node] : ws_nodes) {
        if (k != "protocol" && !l.websockets()) {
            c.error(node->source(), name + "." + k, "needs protocol = \"websockets\" on this listener");
        }
    }
    if (api_key_node != nullptr && !l.http_api()) {
        c.error(api_key_node->source(), name + ".api_key_file", "needs protocol = \"http_api\" on this listener");
    }
    if (l.http_api() && l.api_key_file.empty()) {
        c.error(table.source(), name, "protocol = \"http_api\" needs api_key_file (make one with mqttools passwd)");
    }
    if (!have_port) c.error(table.source(), name, "missing required key 'port'");
    if (!l.certfile.empty() && l.keyfile.empty()) {
        c.error(table.source(), name, "certfile is set but keyfile is not (TLS needs both)");
    }
    if (l.certfile.empty() && !l.keyfile.empty()) {
        c.error(table.source(), name, "keyfile is set but certfile is not (TLS needs both)");
    }
    if (l.require_certificate && l.cafile.empty()) {
        c.error(table.source(), name, "require_certificate needs cafile to verify client certificates");
    }
    if (l.use_identity_as_username && !l.require_certificate) {
        c.error(table.source(), name, "use_identity_as_username needs require_certificate = true");
    }
    if (port_node != nullptr) {
        for (std::size_t i = 0; i < seen.size(); ++i) {
            if (seen[i].port == l.port && seen[i].bind == l.bind) {
                c.error(port_node->source(), name + ".port",
                        "port " + std::to_string(l.port) + " on '" + l.bind +
                            "' is already used by listener[" + std::to_string(i) + "]");
            }
        }
        seen.push_back({l.bind, l.port});
    }
    cfg.listeners.push_back(std::move(l));
}

void check_metrics(Checker& c, const toml::table& table, Config& cfg) {
    cfg.metrics.enabled = true;
    for (auto&& [key, value] : table) {
        const std::string k(key.str());
        const std::string qk = "metrics." + k;
        if (k == "enabled") {
            c.get(value, qk, cfg.metrics.enabled);
        } else if (k == "port") {
            c.get_int(value, qk, 1, 65535, cfg.metrics.port);
        } else if (k == "bind") {
            c.get_address(value, qk, cfg.metrics.bind);
        } else {
            c.unknown_key(key, "[metrics]", kMetricsKeys);
        }
    }
}

void check_top(Checker& c, const toml::table& root, Config& cfg) {
    std::vector<ListenerSeen> seen;
    const toml::node* log_dest_node = nullptr;
    const toml::node* log_file_node = nullptr;
    const toml::node* location_node = nullptr;
    bool have_log_dest = false;
    // The helpers the config_<area>.cpp tables check with.
    auto section_checker = [&c] {
        return SectionChecker{
            [&c](const toml::source_region& at, std::string_view kk, const std::string& w) { c.error(at, kk, w); },
            [&c](const toml::key& kk, std::string_view t2, const std::vector<std::string_view>& known) {
                c.unknown_key(kk, t2, known);
            },
            [&c](const std::string& p) { return c.resolve(p); }};
    };
    for (auto&& [key, value] : root) {
        const std::string k(key.str());
        if (k == "listener") {
            if (auto* arr = value.as_array(); arr != nullptr && arr->is_array_of_tables()) {
                std::size_t i = 0;
                for (auto& item : *arr) check_listener(c, *item.as_table(), i++, cfg, seen);
            } else if (auto* one = value.as_table()) {
                // [listener] instead of [[listener]]: accept it as the only one.
                check_listener(c, *one, 0, cfg, seen);
            } else {
                c.wrong_type(value, k, "[[listener]] tables");
            }
        } else if (k == "bridge") {
            check_bridges(c, value, cfg);
        } else if (k == "metrics") {
            if (auto* t = value.as_table()) {
                check_metrics(c, *t, cfg);
            } else {
                c.wrong_type(value, k, "a [metrics] table");
            }
        } else if (k == "auth_http" || k == "auth_jwt") {
            if (auto* t = value.as_table()) {
                const SectionChecker sc = section_checker();
                if (k == "auth_http") check_auth_http(*t, cfg.auth_http, sc);
                else check_auth_jwt(*t, cfg.auth_jwt, sc);
            } else {
                c.wrong_type(value, k, k == "auth_http" ? "an [auth_http] table" : "an [auth_jwt] table");
            }
        } else if (k == "cluster") {
            if (auto* t = value.as_table()) {
                const SectionChecker sc = section_checker();
                check_cluster(*t, cfg.cluster, sc);
            } else {
                c.wrong_type(value, k, "a [cluster] table");
            }
        } else if (k == "allow_anonymous") {
            bool b = false;
            if (c.get(value, k, b)) cfg.allow_anonymous = b;
        } else if (k == "password_file") {
            c.get_path(value, k, cfg.password_file);
        } else if (k == "acl_file") {
            c.get_path(value, k, cfg.acl_file);
        } else if (k == "dynamic_security_file") {
            c.get_path(value, k, cfg.dynamic_security_file);
        } else if (k == "max_connections") {
            // Mosquitto spells "unlimited" as -1; 0 means the same here.
            std::int64_t v = 0;
            if (c.get_int(value, k, -1, kU32, v)) cfg.max_connections = v < 0 ? 0 : static_cast<std::uint32_t>(v);
        } else if (k == "max_packet_size") {
            std::int64_t v = 0;
            if (c.get_int(value, k, 0, kMaxPacket, v)) {
                if (v != 0 && v < 20) {
                    c.error(value.source(), k,
                            std::to_string(v) + " is too small (0 for no limit, or at least 20)");
                } else {
                    cfg.max_packet_size = static_cast<std::uint32_t>(v);
                }
            }
        } else if (k == "message_size_limit") {
            c.get_int(value, k, 0, kMaxPacket, cfg.message_size_limit);
        } else if (k == "max_keepalive") {
            c.get_int(value, k, 0, 65535, cfg.max_keepalive);
        } else if (k == "max_inflight_messages") {
            c.get_int(value, k, 0, 65535, cfg.max_inflight_messages);
        } else if (k == "max_queued_messages") {
            c.get_int(value, k, 0, kU32, cfg.max_queued_messages);
        } else if (k == "max_queued_bytes") {
            c.get_int(value, k, 0, kI64, cfg.max_queued_bytes);
        } else if (k == "retain_available") {
            c.get(value, k, cfg.retain_available);
        } else if (k == "client_events") {
            c.get(value, k, cfg.client_events);
        } else if (k == "sys_interval") {
            c.get_int(value, k, 0, 86400, cfg.sys_interval);
        } else if (k == "persistent_client_expiration") {
            std::uint32_t v = 0;
            if (c.get_duration(value, k, v)) cfg.persistent_client_expiration = v;
        } else if (k == "topic_alias_maximum") {
            c.get_int(value, k, 0, 65535, cfg.topic_alias_maximum);
        } else if (k == "receive_maximum") {
            // 0 is a Protocol Error in CONNACK [MQTT-3.2.2.3.3].
            c.get_int(value, k, 1, 65535, cfg.receive_maximum);
        } else if (k == "log_level") {
            std::string w;
            if (c.get_word(value, k, kLogLevels, w)) {
                const auto i = std::find(kLogLevels.begin(), kLogLevels.end(), w) - kLogLevels.begin();
                cfg.log_level = static_cast<LogLevel>(i);
            }
        } else if (k == "log_dest") {
            log_dest_node = &value;
            have_log_dest = true;
            // Mosquitto writes "file /path/to/log"; accept that form too.
            auto text = value.value_exact<std::string>();
            if (text && text->rfind("file ", 0) == 0) {
                cfg.log_dest = LogDest::file;
                if (cfg.log_file.empty()) cfg.log_file = c.resolve(text->substr(5));
            } else {
                std::string w;
                if (c.get_word(value, k, kLogDests, w)) {
                    cfg.log_dest = w == "journal" ? LogDest::journal
                                   : w == "file"  ? LogDest::file
                                                  : LogDest::stderr_;
                }
            }
        } else if (k == "log_file") {
            if (c.get_path(value, k, cfg.log_file)) log_file_node = &value;
        } else if (k == "max_subscriptions_per_client") {
            c.get_int(value, k, 0, kU32, cfg.max_subscriptions_per_client);
        } else if (k == "max_topic_levels") {
            c.get_int(value, k, 0, kU32, cfg.max_topic_levels);
        } else if (k == "max_client_output_bytes") {
            c.get_int(value, k, 4096, kI64, cfg.max_client_output_bytes);
        } else if (k == "stuck_client_timeout") {
            c.get_int(value, k, 0, 86400, cfg.stuck_client_timeout);
        } else if (k == "memory_limit") {
            c.get_int(value, k, 0, kI64, cfg.memory_limit);
        } else if (k == "persistence") {
            c.get(value, k, cfg.persistence.enabled);
        } else if (k == "persistence_location") {
            if (c.get_path(value, k, cfg.persistence.location)) location_node = &value;
        } else if (k == "persistence_file") {
            std::string f;
            if (c.get(value, k, f)) {
                if (f.empty() || f.find('/') != std::string::npos) {
                    c.error(value.source(), k, "'" + f + "' must be a file name (the folder is persistence_location)");
                } else {
                    cfg.persistence.file = f;
                }
            }
        } else if (k == "persistence_sync") {
            std::string w;
            if (c.get_word(value, k, kPersistenceSync, w)) cfg.persistence.sync_full = w == "full";
        } else if (k == "connect_timeout") {
            c.get_int(value, k, 1, 3600, cfg.connect_timeout);
        } else {
            c.unknown_key(key, "", kTopKeys);
        }
    }
    if (have_log_dest && cfg.log_dest == LogDest::file && cfg.log_file.empty()) {
        c.error(log_dest_node->source(), "log_dest", "\"file\" needs log_file = \"/path/to/log\"");
    }
    // One rule for both folders: they must exist (neither is created).
    if (cfg.log_dest == LogDest::file && !cfg.log_file.empty()) {
        const toml::node* at = log_file_node ? log_file_node : log_dest_node;
        if (at) c.check_folder(*at, at == log_file_node ? "log_file" : "log_dest",
                               std::filesystem::path(cfg.log_file).parent_path());
    }
    if (cfg.persistence.enabled && location_node && !cfg.persistence.location.empty()) {
        c.check_folder(*location_node, "persistence_location", cfg.persistence.location);
    }
    if (cfg.metrics.enabled) {
        for (std::size_t i = 0; i < cfg.listeners.size(); ++i) {
            if (cfg.listeners[i].port == cfg.metrics.port && cfg.listeners[i].bind == cfg.metrics.bind) {
                const auto* m = root.get("metrics");
                c.error(m->source(), "metrics.port",
                        "port " + std::to_string(cfg.metrics.port) + " is already used by listener[" +
                            std::to_string(i) + "]");
            }
        }
    }
}

}  // namespace

std::optional<std::string_view> closest_match(std::string_view word,
                                              const std::vector<std::string_view>& candidates) {
    // Optimal string alignment distance (Levenshtein plus adjacent swaps).
    auto distance = [](std::string_view a, std::string_view b) {
        std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
        for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
        for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
        for (std::size_t i = 1; i <= a.size(); ++i) {
            for (std::size_t j = 1; j <= b.size(); ++j) {
                const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
                    d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
                }
            }
        }
        return d[a.size()][b.size()];
    };
    std::optional<std::string_view> best;
    std::size_t best_distance = std::numeric_limits<std::size_t>::max();
    for (auto candidate : candidates) {
        const std::size_t dist = distance(word, candidate);
        if (dist < best_distance) {
            best_distance = dist;
            best = candidate;
        }
    }
    // One slip ("prot" for "port") is the likeliest intent, then an
    // abbreviation ("warn" for "warning"; "prot" is also one of "protocol").
    if (best_distance <= 1) return best;
    if (word.size() >= 3) {
        for (auto candidate : candidates) {
            if (candidate.size() > word.size() && candidate.substr(0, word.size()) == word) return candidate;
        }
    }
    // Plausible typos only: a third of the word, at least 2 edits.
    const std::size_t allowed = std::max<std::size_t>(2, word.size() / 3);
    if (!best || best_distance > allowed) return std::nullopt;
    return best;
}

LoadResult parse_config(std::string_view text, const std::string& source, bool check_files) {
    LoadResult result;
    toml::table root;
    try {
        root = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        Checker c(source, {});
        if (const std::size_t line = mosquitto_syntax_line(text); line != 0) {
            // "listener 1883": Mosquitto's syntax, not a TOML typo.
            std::string_view first = text;
            for (std::size_t i = 1; i < line; ++i) first = first.substr(first.find('\n') + 1);
            first = first.substr(0, first.find('\n'));
            result.errors.push_back(source + ":" + std::to_string(line) + ": this is a Mosquitto config ('" +
                                    std::string(first) + "'); mqttoolsd reads TOML: `mqttools convert-config " +
                                    source + "` writes the equivalent (and lists what has none)");
            return result;
        }
        c.error(e.source(), "", std::string("syntax error: ") + std::string(e.description()));
        result.errors = c.sorted_errors();
        return result;
    }
    Checker c(source, std::filesystem::path(source).parent_path());
    c.check_files = check_files;
    Config cfg;
    cfg.source = source;
    check_top(c, root, cfg);
    if (c.failed()) {
        result.errors = c.sorted_errors();
    } else {
        result.config = std::move(cfg);
    }
    return result;
}

LoadResult load_config(const std::string& path) {
    LoadResult result;
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
        result.errors.push_back("cannot read config file '" + path + "': Is a directory");
        return result;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        result.errors.push_back("cannot read config file '" + path + "': " + std::strerror(errno));
        return result;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parse_config(text.str(), path);
}

std::vector<std::string> restart_required_changes(const Config& running, const Config& loaded) {
    std::vector<std::string> out;
    auto endpoint = [](const Listener& l) {
        return (l.bind.find(':') != std::string::npos ? "[" + l.bind + "]" : l.bind) + ":" +
               std::to_string(l.port) + (l.tls() ? " (TLS)" : "") + (l.websockets() ? " (websockets)" : "");
    };
    auto listeners = [&](const Config& c) {
        std::vector<std::string> v;
        if (c.listeners.empty()) v.push_back("127.0.0.1:1883");
        for (const auto& l : c.listeners) v.push_back(endpoint(l));
        std::sort(v.begin(), v.end());
        return v;
    };
    const auto before = listeners(running);
    const auto after = listeners(loaded);
    for (const auto& l : after) {
        if (!std::binary_search(before.begin(), before.end(), l)) {
            out.push_back("listener " + l + " added: restart mqttoolsd to open it");
        }
    }
    for (const auto& l : before) {
        if (!std::binary_search(after.begin(), after.end(), l)) {
            out.push_back("listener " + l + " removed: restart mqttoolsd to close it");
        }
    }
    for (const auto& a : loaded.listeners) {
        for (const auto& b : running.listeners) {
            if (a.port == b.port && a.bind == b.bind && a.tls() && b.tls() &&
                (a.require_certificate != b.require_certificate ||
                 a.use_identity_as_username != b.use_identity_as_username)) {
                out.push_back("listener " + endpoint(a) +
                              ": require_certificate/use_identity_as_username changed: restart mqttoolsd");
            }
        }
    }
    const auto& m0 = running.metrics;
    const auto& m1 = loaded.metrics;
    if (m0.enabled != m1.enabled || (m1.enabled && (m0.port != m1.port || m0.bind != m1.bind))) {
        out.push_back("[metrics] changed: restart mqttoolsd to apply it");
    }
    const auto& p0 = running.persistence;
    const auto& p1 = loaded.persistence;
    if (p0.enabled != p1.enabled || p0.path() != p1.path() || p0.sync_full != p1.sync_full) {
        out.push_back("persistence settings changed: restart mqttoolsd to apply them");
    }
    return out;
}

void add_command_line_port(Config& cfg, std::uint16_t port) {
    if (!cfg.allow_anonymous) cfg.allow_anonymous = cfg.effective_allow_anonymous();
    for (const auto& l : cfg.listeners) {
        if (l.port == port && l.bind == "127.0.0.1") return;
    }
    Listener l;
    l.port = port;
    l.bind = "127.0.0.1";
    cfg.listeners.push_back(l);
}

std::string_view to_string(LogLevel level) {
    return kLogLevels[static_cast<std::size_t>(level)];
}

std::string_view to_string(LogDest dest) {
    switch (dest) {
        case LogDest::stderr_: return "stderr";
        case LogDest::journal: return "journal";
        case LogDest::file: return "file";
    }
    return "stderr";
}

bool known_key(std::string_view table, std::string_view key) {
    const auto in = [key](const std::vector<std::string_view>& keys) {
        return std::find(keys.begin(), keys.end(), key) != keys.end();
    };
    if (table == "listener") return in(kListenerKeys);
    if (table == "bridge") return bridge_key(key);
    return in(kTopKeys) && key != "listener" && key != "metrics" && key != "cluster" && key != "bridge";
}

}  // namespace mqttools::config
