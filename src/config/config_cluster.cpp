// [cluster]: nats_url (a string or an array of strings), node_id,
// credentials / username / password, cafile / certfile / keyfile for TLS
// to NATS, subject_prefix.
#include "config/config_cluster.hpp"

namespace mqttools::config {

namespace {

const std::vector<std::string_view> kClusterKeys = {
    "nats_url", "node_id", "credentials", "username", "password",
    "cafile",   "certfile", "keyfile",    "subject_prefix", "sessions", "replicas", "hold_timeout",
    "disconnect_after",
    "net_ticktime", "batch_time",
};

bool has_space(std::string_view s) {
    for (const char ch : s) {
        if (static_cast<unsigned char>(ch) <= ' ' || ch == 0x7f) return true;
    }
    return false;
}

void add_url(const toml::node& node, std::string_view key, Cluster& out, const SectionChecker& c) {
    std::string url;
    if (!get_string(node, key, url, c)) return;
    const bool scheme = url.rfind("nats://", 0) == 0 || url.rfind("tls://", 0) == 0;
    if (!scheme || url.size() <= (url[0] == 'n' ? 7u : 6u) || has_space(url)) {
        c.error(node.source(), key, "'" + url + "' is not a NATS URL (nats://HOST:PORT or tls://HOST:PORT)");
        return;
    }
    out.nats_urls.push_back(std::move(url));
}

// "300us", "1ms", "0", or an integer (µs), at most 100 ms.
bool parse_batch_time(const toml::node& node, std::uint32_t& out) {
    std::uint64_t us = 0;
    if (auto i = node.value_exact<std::int64_t>()) {
        if (*i < 0) return false;
        us = static_cast<std::uint64_t>(*i);
    } else if (auto text = node.value_exact<std::string>()) {
        std::string_view t = *text;
        std::uint64_t scale = 1;
        if (t.size() > 2 && t.substr(t.size() - 2) == "us") {
            t.remove_suffix(2);
        } else if (t.size() > 2 && t.substr(t.size() - 2) == "ms") {
            t.remove_suffix(2);
            scale = 1000;
        } else if (t != "0") {
            return false;
        }
        if (t.empty() || t.size() > 6) return false;
        for (const char ch : t) {
            if (ch < '0' || ch > '9') return false;
            us = us * 10 + static_cast<std::uint64_t>(ch - '0');
        }
        us *= scale;
    } else {
        return false;
    }
    if (us > 100000) return false;
    out = static_cast<std::uint32_t>(us);
    return true;
}

}  // namespace

bool get_string(const toml::node& node, std::string_view key, std::string& out, const SectionChecker& c) {
    auto v = node.value_exact<std::string>();
    if (!v) {
        c.error(node.source(), key, "expected a string");
        return false;
    }
    out = *v;
    return true;
}

void check_cluster(const toml::table& table, Cluster& out, const SectionChecker& c) {
    out.enabled = true;
    // batch_time's default with a [cluster] table: 500 µs (chosen by
    // bench/cluster.py --compare-keys, docs/profiling.md; 0 = every turn).
    out.batch_time_us = 500;
    for (auto&& [key, value] : table) {
        const std::string k(key.str());
        const std::string qk = "cluster." + k;
        if (k == "nats_url") {
            if (auto* arr = value.as_array()) {
                if (arr->empty()) c.error(value.source(), qk, "needs at least one URL");
                for (auto& item : *arr) add_url(item, qk, out, c);
            } else {
                add_url(value, qk, out, c);
            }
        } else if (k == "node_id") {
            if (get_string(value, qk, out.node_id, c)) {
                // It names this node in NATS messages and in $SYS.
                if (out.node_id.empty() || out.node_id.size() > 128 || has_space(out.node_id)) {
                    c.error(value.source(), qk, "must be 1 to 128 characters without spaces");
                }
            }
        } else if (k == "credentials" || k == "cafile" || k == "certfile" || k == "keyfile") {
            std::string path;
            if (get_string(value, qk, path, c)) {
                path = path.empty() ? path : c.resolve(path);
                if (k == "credentials") out.credentials = path;
                if (k == "cafile") out.cafile = path;
                if (k == "certfile") out.certfile = path;
                if (k == "keyfile") out.keyfile = path;
            }
        } else if (k == "username") {
            get_string(value, qk, out.username, c);
        } else if (k == "password") {
            get_string(value, qk, out.password, c);
        } else if (k == "subject_prefix") {
            if (get_string(value, qk, out.subject_prefix, c)) {
                // One or more plain NATS tokens: no wildcard, no empty token.
                bool ok = !out.subject_prefix.empty() && !has_space(out.subject_prefix) &&
                          out.subject_prefix.front() != '.' && out.subject_prefix.back() != '.' &&
                          out.subject_prefix.find("..") == std::string::npos;
                for (const char ch : out.subject_prefix) ok = ok && ch != '*' && ch != '>';
                if (!ok) c.error(value.source(), qk, "must be NATS subject tokens like \"mqtt\" or \"site1.mqtt\"");
            }
        } else if (k == "sessions") {
            std::string mode;
            if (get_string(value, qk, mode, c)) {
                if (mode == "replicated" || mode == "local") {
                    out.replicated = mode == "replicated";
                } else {
                    c.error(value.source(), qk, "must be \"replicated\" or \"local\"");
                }
            }
        } else if (k == "replicas" || k == "hold_timeout") {
            auto v = value.value_exact<std::int64_t>();
            const std::int64_t lo = 1, hi = k == "replicas" ? 5 : 600000;
            if (!v || *v < lo || *v > hi) {
                c.error(value.source(), qk,
                        k == "replicas" ? "must be an integer from 1 to 5" : "must be milliseconds from 1 to 600000");
            } else if (k == "replicas") {
                out.replicas = static_cast<std::uint32_t>(*v);
            } else {
                out.hold_timeout = static_cast<std::uint32_t>(*v);
            }
        } else if (k == "disconnect_after") {
            // 0 (never) or at least 100 ms: a shorter cut-off is a NATS
            // reconnect, not a partition.
            auto v = value.value_exact<std::int64_t>();
            if (!v || (*v != 0 && (*v < 100 || *v > 3600000))) {
                c.error(value.source(), qk, "must be 0 (never) or milliseconds from 100 to 3600000");
            } else {
                out.disconnect_after = static_cast<std::uint32_t>(*v);
            }
        } else if (k == "net_ticktime") {
            // Erlang's (EMQX's node.dist_net_ticktime): a node silent this
            // long is down; its orphaned sessions are taken over.
            auto v = value.value_exact<std::int64_t>();
            if (!v || *v < 1000 || *v > 3600000) {
                c.error(value.source(), qk, "must be milliseconds from 1000 to 3600000");
            } else {
                out.net_ticktime = static_cast<std::uint32_t>(*v);
            }
        } else if (k == "batch_time") {
            // EMQX's batch_time: a duration ("300us", "1ms") or microseconds.
            if (!parse_batch_time(value, out.batch_time_us)) {
                c.error(value.source(), qk, "must be a duration from 0 to 100ms, like \"300us\" or \"1ms\" "
                                            "(an integer: microseconds)");
            }
        } else {
            c.unknown_key(key, "[cluster]", kClusterKeys);
        }
    }
    if (out.nats_urls.empty() && !table.contains("nats_url")) out.nats_urls.push_back("nats://127.0.0.1:4222");
    if (out.certfile.empty() != out.keyfile.empty()) {
        c.error(table.source(), "cluster", "certfile and keyfile go together (TLS client certificate)");
    }
    if (!out.credentials.empty() && !out.username.empty()) {
        c.error(table.source(), "cluster", "credentials and username are two ways to log in: use one");
    }
}

}  // namespace mqttools::config
