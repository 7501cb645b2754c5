// [auth_http]: mosquitto-go-auth's HTTP backend options without their
// "http_" prefix; [auth_jwt]: EMQX's JWT authentication. What the files and
// keys mean is checked when the sources are built (src/broker/auth); here
// every type, value and combination, with FILE:LINE:COLUMN and the key.
#include "config/config_auth.hpp"

#include <cmath>

namespace mqttools::config {

namespace {

const std::vector<std::string_view> kHttpKeys = {
    "host",        "port",        "getuser_uri",   "superuser_uri", "aclcheck_uri", "with_tls", "verify_peer",
    "params_mode", "response_mode", "method",      "timeout",       "cache_seconds", "headers",
};
const std::vector<std::string_view> kJwtKeys = {
    "from", "secret", "secret_base64", "public_key_file", "jwks_file", "leeway", "verify_claims", "acl_claim",
};

bool get_bool(const toml::node& node, const std::string& key, bool& out, const SectionChecker& c) {
    auto v = node.value_exact<bool>();
    if (!v) {
        c.error(node.source(), key, "expected true or false");
        return false;
    }
    out = *v;
    return true;
}

bool get_int(const toml::node& node, const std::string& key, std::int64_t lo, std::int64_t hi, std::int64_t& out,
             const SectionChecker& c) {
    auto v = node.value_exact<std::int64_t>();
    if (!v || *v < lo || *v > hi) {
        c.error(node.source(), key, "expected an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
        return false;
    }
    out = *v;
    return true;
}

bool one_of(const toml::node& node, const std::string& key, std::string& out, std::initializer_list<const char*> ok,
            const SectionChecker& c) {
    if (!get_string(node, key, out, c)) return false;
    std::string list;
    for (const char* o : ok) {
        if (out == o) return true;
        list += list.empty() ? "" : " or ";
        list += '"';
        list += o;
        list += '"';
    }
    c.error(node.source(), key, "'" + out + "' is not " + list);
    return false;
}

// A sub-table of string values ([auth_http.headers], [auth_jwt.verify_claims]).
void string_pairs(const toml::node& node, const std::string& key, std::vector<std::pair<std::string, std::string>>& out,
                  const SectionChecker& c) {
    const toml::table* t = node.as_table();
    if (!t) {
        c.error(node.source(), key, "expected a table of strings");
        return;
    }
    out.clear();
    for (auto&& [k, v] : *t) {
        std::string value;
        if (get_string(v, key + "." + std::string(k.str()), value, c)) out.emplace_back(std::string(k.str()), value);
    }
}

bool is_uri(const std::string& s) { return !s.empty() && s.front() == '/' && s.find_first_of(" \r\n\t") == std::string::npos; }

}  // namespace

void check_auth_http(const toml::table& table, AuthHttp& out, const SectionChecker& c) {
    out.enabled = true;
    for (auto&& [key, value] : table) {
        const std::string k(key.str());
        const std::string qk = "auth_http." + k;
        std::int64_t n = 0;
        if (k == "host") {
            if (get_string(value, qk, out.host, c) &&
                (out.host.empty() || out.host.find_first_of(" /\r\n\t") != std::string::npos))
                c.error(value.source(), qk, "'" + out.host + "' is not a host name or address");
        } else if (k == "port") {
            if (get_int(value, qk, 1, 65535, n, c)) out.port = static_cast<std::uint16_t>(n);
        } else if (k == "getuser_uri" || k == "superuser_uri" || k == "aclcheck_uri") {
            std::string& uri = k == "getuser_uri" ? out.getuser_uri : k == "superuser_uri" ? out.superuser_uri : out.aclcheck_uri;
            if (get_string(value, qk, uri, c) && !is_uri(uri))
                c.error(value.source(), qk, "'" + uri + "' is not a path starting with /");
        } else if (k == "with_tls") {
            get_bool(value, qk, out.with_tls, c);
        } else if (k == "verify_peer") {
            get_bool(value, qk, out.verify_peer, c);
        } else if (k == "params_mode") {
            one_of(value, qk, out.params_mode, {"json", "form"}, c);
        } else if (k == "response_mode") {
            one_of(value, qk, out.response_mode, {"status", "json", "text"}, c);
        } else if (k == "method") {
            one_of(value, qk, out.method, {"POST", "GET", "PUT"}, c);
        } else if (k == "timeout") {
            // Seconds, as go-auth's http_timeout; fractions allowed here.
            auto v = value.value<double>();
            if (!v || !std::isfinite(*v) || *v <= 0 || *v > 600) {
                c.error(value.source(), qk, "expected seconds, more than 0 and at most 600");
            } else {
                out.timeout_ms = static_cast<std::uint32_t>(std::max(1.0, std::round(*v * 1000)));
            }
        } else if (k == "cache_seconds") {
            if (get_int(value, qk, 0, 86400, n, c)) out.cache_seconds = static_cast<std::uint32_t>(n);
        } else if (k == "headers") {
            string_pairs(value, qk, out.headers, c);
            for (const auto& [name, v] : out.headers) {
                if (name.empty() || name.find_first_of(": \r\n\t") != std::string::npos ||
                    v.find_first_of("\r\n") != std::string::npos)
                    c.error(value.source(), qk, "'" + name + "' is not a valid header");
            }
        } else {
            c.unknown_key(key, "[auth_http]", kHttpKeys);
        }
    }
    if (out.getuser_uri.empty()) c.error(table.source(), "auth_http.getuser_uri", "is required");
}

void check_auth_jwt(const toml::table& table, AuthJwt& out, const SectionChecker& c) {
    out.enabled = true;
    int keys = 0;
    for (auto&& [key, value] : table) {
        const std::string k(key.str());
        const std::string qk = "auth_jwt." + k;
        std::int64_t n = 0;
        if (k == "from") {
            std::string from;
            if (one_of(value, qk, from, {"password", "username"}, c)) out.from_username = from == "username";
        } else if (k == "secret") {
            ++keys;
            if (get_string(value, qk, out.secret, c) && out.secret.empty()) c.error(value.source(), qk, "is empty");
        } else if (k == "secret_base64") {
            get_bool(value, qk, out.secret_base64, c);
        } else if (k == "public_key_file" || k == "jwks_file") {
            ++keys;
            std::string path;
            if (get_string(value, qk, path, c)) {
                if (path.empty()) c.error(value.source(), qk, "is empty");
                (k == "jwks_file" ? out.jwks_file : out.public_key_file) = c.resolve(path);
            }
        } else if (k == "leeway") {
            if (get_int(value, qk, 0, 3600, n, c)) out.leeway = static_cast<std::uint32_t>(n);
        } else if (k == "verify_claims") {
            string_pairs(value, qk, out.verify_claims, c);
        } else if (k == "acl_claim") {
            get_string(value, qk, out.acl_claim, c);
        } else {
            c.unknown_key(key, "[auth_jwt]", kJwtKeys);
        }
    }
    if (keys != 1) c.error(table.source(), "auth_jwt", "needs exactly one of secret, public_key_file, jwks_file");
}

}  // namespace mqttools::config
