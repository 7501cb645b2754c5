// [[bridge]] tables: Mosquitto's `connection` blocks in TOML, with
// Mosquitto's key names and its `topic` line syntax, so an operator can
// copy a mosquitto.conf bridge over line by line:
//   topic pattern [[[ out | in | both ] qos-level] local-prefix remote-prefix]
// with "" for an empty pattern or prefix (man mosquitto.conf, "Bridges").
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <string>
#include <string_view>
#include <vector>

#include "config/config_checker.hpp"
#include "mqttools/codec.hpp"

namespace mqttools::config {

namespace {

const std::vector<std::string_view> kBridgeKeys = {
    "name", "connection", "address", "addresses", "topic", "remote_clientid", "remote_username",
    "remote_password", "cleansession", "keepalive_interval", "restart_timeout", "bridge_protocol_version",
    "try_private", "notifications", "notification_topic", "bridge_cafile", "bridge_certfile",
    "bridge_keyfile", "bridge_insecure", "start_type", "threshold", "idle_timeout", "bridge_capath",
    "bridge_tls_version", "bridge_alpn", "local_clientid", "round_robin", "bridge_outgoing_retain",
    "notifications_local_only", "bridge_max_packet_size", "bridge_bind_address",
};
// Mosquitto keys an operator may copy that mqttoolsd does not implement:
// refused by name rather than ignored (each changes what the bridge does).
const std::vector<std::pair<std::string_view, std::string_view>> kUnsupportedKeys = {
    {"local_username", "the bridge is inside the broker and has no local connection to authenticate"},
    {"local_password", "the bridge is inside the broker and has no local connection to authenticate"},
    {"bridge_attempt_unsubscribe", "remote subscriptions are not unsubscribed"},
    {"bridge_identity", "TLS-PSK is not supported; use bridge_certfile/bridge_keyfile"},
    {"bridge_psk", "TLS-PSK is not supported; use bridge_certfile/bridge_keyfile"},
    {"bridge_require_ocsp", "OCSP stapling is not checked"},
    {"bridge_tls_use_os_certs", "set bridge_capath = \"/etc/ssl/certs\" instead"},
    {"bridge_reload_type", "a changed [[bridge]] always restarts on SIGHUP"},
};
const std::vector<std::string_view> kTlsVersions = {"tlsv1.2", "tlsv1.3"};
const std::vector<std::string_view> kDirections = {"out", "in", "both"};
const std::vector<std::string_view> kVersions = {"mqttv311", "mqttv50"};
const std::vector<std::string_view> kStartTypes = {"automatic", "lazy", "once"};

std::string local_hostname() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
    return buf;
}

std::vector<std::string> split_words(std::string_view text) {
    std::vector<std::string> out;
    std::size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
        const std::size_t start = i;
        while (i < text.size() && text[i] != ' ' && text[i] != '\t') ++i;
        if (i > start) out.emplace_back(text.substr(start, i - start));
    }
    return out;
}

// "" (two quote characters) is Mosquitto's spelling of an empty word.
std::string unquote(const std::string& word) { return word == "\"\"" ? std::string() : word; }

bool has_wildcard(std::string_view s) { return s.find_first_of("+#") != std::string_view::npos; }

// One `topic` line. Returns an error text, or "" when it is valid.
std::string parse_topic(std::string_view line, BridgeTopic& t) {
    const auto words = split_words(line);
    if (words.empty()) return "empty topic line (expected \"pattern [out|in|both [qos [local-prefix remote-prefix]]]\")";
    if (words.size() > 5) return "'" + std::string(line) + "' has more than 5 words (pattern direction qos local-prefix remote-prefix)";
    t.pattern = unquote(words[0]);
    if (words.size() > 1) {
        const std::string& d = words[1];
        if (d == "out") t.direction = BridgeTopic::Direction::out;
        else if (d == "in") t.direction = BridgeTopic::Direction::in;
        else if (d == "both") t.direction = BridgeTopic::Direction::both;
        else return "unknown direction '" + d + "' in '" + std::string(line) + "' (expected out, in or both)";
    }
    if (words.size() > 2) {
        const std::string& q = words[2];
        if (q != "0" && q != "1" && q != "2") return "QoS '" + q + "' in '" + std::string(line) + "' is not 0, 1 or 2";
        t.qos = static_cast<std::uint8_t>(q[0] - '0');
    }
    if (words.size() > 3) t.local_prefix = unquote(words[3]);
    if (words.size() > 4) t.remote_prefix = unquote(words[4]);
    // Prefixes are prepended to topic names: no wildcards (Mosquitto checks
    // them as publish topics).
    if (has_wildcard(t.local_prefix)) return "local prefix '" + t.local_prefix + "' contains a wildcard";
    if (has_wildcard(t.remote_prefix)) return "remote prefix '" + t.remote_prefix + "' contains a wildcard";
    if (t.pattern.empty()) {
        // "" as the pattern: the prefixes are the whole topics (no wildcards).
        if (t.local_prefix.empty() || t.remote_prefix.empty()) {
            return "pattern \"\" needs both a local and a remote prefix (they are then the whole topics)";
        }
    }
    if (check_topic_filter(t.local_filter()) != ReasonCode::success) {
        return "'" + t.local_filter() + "' (local prefix + pattern) is not a valid topic filter";
    }
    if (check_topic_filter(t.remote_filter()) != ReasonCode::success) {
        return "'" + t.remote_filter() + "' (remote prefix + pattern) is not a valid topic filter";
    }
    if (t.local_filter().rfind("$share/", 0) == 0 || t.remote_filter().rfind("$share/", 0) == 0) {
        return "shared subscriptions ($share/...) cannot be bridged";
    }
    return {};
}

// "host", "host:port", "[v6]:port"; several separated by spaces (Mosquitto's
// `address` line). Returns an error text, or "".
std::string parse_addresses(std::string_view text, std::vector<BridgeAddress>& out) {
    const auto words = split_words(text);
    if (words.empty()) return "empty address (expected \"host:port\")";
    for (const std::string& w : words) {
        BridgeAddress a;
        std::string_view host = w;
        std::string_view port;
        if (!w.empty() && w[0] == '[') {
            const auto close = w.find(']');
            if (close == std::string::npos) return "'" + w + "': missing ']' after an IPv6 address";
            host = std::string_view(w).substr(1, close - 1);
            const std::string_view after = std::string_view(w).substr(close + 1);
            if (!after.empty()) {
                if (after[0] != ':') return "'" + w + "': expected ':port' after ']'";
                port = after.substr(1);
                if (port.empty()) return "'" + w + "': empty port";
            }
        } else if (const auto colon = w.rfind(':'); colon != std::string::npos) {
            if (w.find(':') != colon) {
                host = w;  // a bare IPv6 address, default port
            } else {
                host = std::string_view(w).substr(0, colon);
                port = std::string_view(w).substr(colon + 1);
                if (port.empty()) return "'" + w + "': empty port";
            }
        }
        if (host.empty()) return "'" + w + "': empty host";
        if (!port.empty()) {
            unsigned long v = 0;
            for (char ch : port) {
                if (ch < '0' || ch > '9' || v > 65535) return "'" + w + "': port '" + std::string(port) + "' is not a number from 1 to 65535";
                v = v * 10 + static_cast<unsigned long>(ch - '0');
            }
            if (v == 0 || v > 65535) return "'" + w + "': port '" + std::string(port) + "' is not a number from 1 to 65535";
            a.port = static_cast<std::uint16_t>(v);
        }
        for (char ch : host) {
            const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                            ch == '.' || ch == '-' || ch == ':' || ch == '_';
            if (!ok) return "'" + w + "': '" + std::string(host) + "' is not a host name or IP address";
        }
        a.host = std::string(host);
        out.push_back(std::move(a));
    }
    return {};
}

void check_bridge(detail::Checker& c, const toml::table& table, std::size_t index, Config& cfg) {
    const std::string label = "bridge[" + std::to_string(index) + "]";
    Bridge b;
    bool have_name = false;
    bool have_address = false;
    bool have_topic = false;
    const toml::node* certfile_node = nullptr;
    const toml::node* keyfile_node = nullptr;
    const toml::node* cafile_node = nullptr;
    const toml::node* capath_node = nullptr;
    for (auto&& [key, value] : table) {
        const std::string k(key.str());
        const std::string qk = label + "." + k;
        if (k == "name" || k == "connection") {
            have_name = true;
            if (c.get(value, qk, b.name)) {
                if (b.name.empty() || b.name.find_first_of("/+# ") != std::string::npos) {
                    c.error(value.source(), qk, "'" + b.name + "' is not a valid bridge name (non-empty, no '/', '+', '#' or spaces)");
                }
            }
        } else if (k == "address" || k == "addresses") {
            have_address = true;
            auto take = [&](const toml::node& n) {
                std::string text;
                if (!c.get(n, qk, text)) return;
                if (auto err = parse_addresses(text, b.addresses); !err.empty()) c.error(n.source(), qk, err);
            };
            if (auto* arr = value.as_array()) {
                if (arr->empty()) c.error(value.source(), qk, "empty address list");
                for (auto& item : *arr) take(item);
            } else {
                take(value);
            }
        } else if (k == "topic") {
            have_topic = true;
            auto take = [&](const toml::node& n) {
                std::string text;
                if (!c.get(n, qk, text)) return;
                BridgeTopic t;
                if (auto err = parse_topic(text, t); !err.empty()) {
                    c.error(n.source(), qk, err);
                } else {
                    b.topics.push_back(std::move(t));
                }
            };
            if (auto* arr = value.as_array()) {
                for (auto& item : *arr) take(item);
            } else {
                take(value);
            }
        } else if (k == "remote_clientid") {
            if (c.get(value, qk, b.remote_clientid) && b.remote_clientid.empty()) {
                c.error(value.source(), qk, "must not be empty");
            }
        } else if (k == "remote_username") {
            std::string v;
            if (c.get(value, qk, v)) b.remote_username = v;
        } else if (k == "remote_password") {
            std::string v;
            if (c.get(value, qk, v)) b.remote_password = v;
        } else if (k == "cleansession") {
            c.get(value, qk, b.cleansession);
        } else if (k == "keepalive_interval") {
            c.get_int(value, qk, 5, 65535, b.keepalive_interval);
        } else if (k == "restart_timeout") {
            // Mosquitto: "restart_timeout constant" or "restart_timeout base cap"
            // (exponential back-off with jitter); here also [base, cap].
            std::vector<std::int64_t> v;
            if (value.is_integer()) {
                v.push_back(*value.value_exact<std::int64_t>());
            } else if (auto* arr = value.as_array()) {
                for (auto& item : *arr) {
                    if (auto i = item.value_exact<std::int64_t>()) v.push_back(*i);
                    else c.wrong_type(item, qk, "an integer (seconds)");
                }
            } else if (auto s = value.value_exact<std::string>()) {
                for (const auto& w : split_words(*s)) {
                    if (w.empty() || w.size() > 9 || w.find_first_not_of("0123456789") != std::string::npos) {
                        c.error(value.source(), qk, "'" + *s + "' is not \"seconds\" or \"base cap\"");
                        v.clear();
                        break;
                    }
                    v.push_back(std::stoll(w));
                }
            } else {
                c.wrong_type(value, qk, "seconds, or [base, cap]");
                continue;
            }
            if (v.empty() || v.size() > 2) {
                c.error(value.source(), qk, "expected seconds, or base and cap");
            } else if (v[0] < 1 || v[0] > 86400 || (v.size() == 2 && (v[1] < v[0] || v[1] > 86400))) {
                c.error(value.source(), qk, "out of range (1 to 86400 seconds, cap not below base)");
            } else {
                b.restart_timeout = static_cast<std::uint32_t>(v[0]);
                b.restart_timeout_cap = v.size() == 2 ? static_cast<std::uint32_t>(v[1]) : 0;
            }
        } else if (k == "bridge_protocol_version") {
            std::string w;
            if (c.get_word(value, qk, kVersions, w)) b.mqtt5 = w == "mqttv50";
        } else if (k == "try_private") {
            c.get(value, qk, b.try_private);
        } else if (k == "notifications") {
            c.get(value, qk, b.notifications);
        } else if (k == "notification_topic") {
            if (c.get(value, qk, b.notification_topic) && check_topic_name(b.notification_topic) != ReasonCode::success) {
                c.error(value.source(), qk, "'" + b.notification_topic + "' is not a valid topic name");
            }
        } else if (k == "bridge_cafile") {
            if (c.get_path(value, qk, b.cafile)) cafile_node = &value;
        } else if (k == "bridge_certfile") {
            if (c.get_path(value, qk, b.certfile)) certfile_node = &value;
        } else if (k == "bridge_keyfile") {
            if (c.get_path(value, qk, b.keyfile)) keyfile_node = &value;
        } else if (k == "bridge_insecure") {
            c.get(value, qk, b.insecure);
        } else if (k == "start_type") {
            std::string w;
            if (c.get_word(value, qk, kStartTypes, w)) {
                b.start_type = w == "lazy" ? BridgeStart::lazy : w == "once" ? BridgeStart::once : BridgeStart::automatic;
            }
        } else if (k == "threshold") {
            c.get_int(value, qk, 1, 1'000'000, b.threshold);
        } else if (k == "idle_timeout") {
            c.get_int(value, qk, 1, 86400, b.idle_timeout);
        } else if (k == "bridge_capath") {
            if (c.get_path(value, qk, b.capath)) capath_node = &value;
        } else if (k == "bridge_tls_version") {
            c.get_word(value, qk, kTlsVersions, b.tls_version);
        } else if (k == "bridge_alpn") {
            if (c.get(value, qk, b.alpn) && (b.alpn.empty() || b.alpn.size() > 255)) {
                c.error(value.source(), qk, "an ALPN protocol name is 1 to 255 bytes");
            }
        } else if (k == "local_clientid") {
            if (c.get(value, qk, b.local_clientid) && b.local_clientid.empty()) {
                c.error(value.source(), qk, "must not be empty");
            }
        } else if (k == "round_robin") {
            c.get(value, qk, b.round_robin);
        } else if (k == "bridge_outgoing_retain") {
            c.get(value, qk, b.outgoing_retain);
        } else if (k == "notifications_local_only") {
            c.get(value, qk, b.notifications_local_only);
        } else if (k == "bridge_max_packet_size") {
            c.get_int(value, qk, 0, max_packet_size_limit, b.max_packet_size);
        } else if (k == "bridge_bind_address") {
            c.get_address(value, qk, b.bind_address);
        } else if (auto u = std::find_if(kUnsupportedKeys.begin(), kUnsupportedKeys.end(),
                                         [&](const auto& e) { return e.first == k; });
                   u != kUnsupportedKeys.end()) {
            c.error(key.source(), qk, "Mosquitto's '" + k + "' is not supported by mqttoolsd (" + std::string(u->second) + ")");
        } else {
            c.unknown_key(key, "[[bridge]]", kBridgeKeys);
        }
    }
    if (!have_name) c.error(table.source(), label, "missing required key 'name' (Mosquitto's connection name)");
    if (!have_address) c.error(table.source(), label, "missing required key 'address'");
    if (!have_topic) c.error(table.source(), label, "missing required key 'topic' (a bridge needs at least one topic)");
    // Certificates are checked now, with the line that names them, rather
    // than at the first connection attempt.
    auto readable = [&](const toml::node* node, const std::string& path, const char* key) {
        if (node != nullptr) c.check_readable(*node, label + "." + key, path);
    };
    readable(cafile_node, b.cafile, "bridge_cafile");
    readable(certfile_node, b.certfile, "bridge_certfile");
    readable(keyfile_node, b.keyfile, "bridge_keyfile");
    readable(capath_node, b.capath, "bridge_capath");
    if (!b.certfile.empty() && b.keyfile.empty()) c.error(table.source(), label, "bridge_certfile is set but bridge_keyfile is not");
    if (b.certfile.empty() && !b.keyfile.empty()) c.error(table.source(), label, "bridge_keyfile is set but bridge_certfile is not");
    if (!b.certfile.empty() && !b.tls()) {
        c.error(table.source(), label, "bridge_certfile needs bridge_cafile or bridge_capath (TLS to the remote is on when one is set)");
    }
    if (!b.tls_version.empty() && !b.tls()) c.error(table.source(), label, "bridge_tls_version needs bridge_cafile or bridge_capath (TLS)");
    if (!b.alpn.empty() && !b.tls()) c.error(table.source(), label, "bridge_alpn needs bridge_cafile or bridge_capath (TLS)");
    if (b.remote_password && !b.remote_username) c.error(table.source(), label, "remote_password needs remote_username");
    if (b.remote_clientid.empty()) b.remote_clientid = local_hostname() + "." + b.name;
    // Mosquitto's default, mosquitto.conf(5): the remote client id (not the
    // connection's name), so that existing monitoring keeps its topics.
    if (b.notification_topic.empty()) b.notification_topic = "$SYS/broker/connection/" + b.remote_clientid + "/state";
    if (b.local_clientid.empty()) b.local_clientid = "local." + b.remote_clientid;
    for (std::size_t i = 0; i < cfg.bridges.size(); ++i) {
        if (have_name && cfg.bridges[i].name == b.name) {
            c.error(table.source(), label + ".name", "'" + b.name + "' is already the name of bridge[" + std::to_string(i) + "]");
        }
    }
    cfg.bridges.push_back(std::move(b));
}

}  // namespace

void check_bridges(detail::Checker& c, const toml::node& value, Config& cfg) {
    if (auto* arr = value.as_array(); arr != nullptr && arr->is_array_of_tables()) {
        std::size_t i = 0;
        for (auto& item : *arr) check_bridge(c, *item.as_table(), i++, cfg);
    } else if (auto* one = value.as_table()) {
        check_bridge(c, *one, 0, cfg);
    } else {
        c.wrong_type(value, "bridge", "[[bridge]] tables");
    }
}

bool bridge_key(std::string_view key) {
    return std::find(kBridgeKeys.begin(), kBridgeKeys.end(), key) != kBridgeKeys.end();
}

}  // namespace mqttools::config
