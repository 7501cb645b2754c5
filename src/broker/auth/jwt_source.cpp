#include "broker/auth/jwt_source.hpp"

#include <fstream>
#include <sstream>

#include <openssl/evp.h>

#include "broker/auth/topic_filter.hpp"

namespace mqttools::auth {

namespace {

std::string read_file(const std::string& key, const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("auth_jwt." + key + ": " + path + ": cannot be read");
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

std::string decode_base64(const std::string& text) {
    // Standard base64 (EMQX's secret_base64_encoded); padding allowed.
    std::string out((text.size() / 4 + 1) * 3, '\0');
    const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
    if (n < 0 || text.size() % 4 != 0) throw std::runtime_error("auth_jwt.secret: not base64");
    std::size_t len = static_cast<std::size_t>(n);
    if (!text.empty() && text.back() == '=') --len;
    if (text.size() > 1 && text[text.size() - 2] == '=') --len;
    out.resize(len);
    return out;
}

JwtVerifier make_verifier(const config::AuthJwt& s) {
    if (!s.secret.empty()) return JwtVerifier::with_secret(s.secret_base64 ? decode_base64(s.secret) : s.secret);
    const bool jwks = !s.jwks_file.empty();
    const std::string key = jwks ? "jwks_file" : "public_key_file";
    const std::string& path = jwks ? s.jwks_file : s.public_key_file;
    const std::string text = read_file(key, path);
    try {
        return jwks ? JwtVerifier::from_jwks(text) : JwtVerifier::from_pem(text);
    } catch (const std::exception& e) {
        throw std::runtime_error("auth_jwt." + key + ": " + path + ": " + e.what());
    }
}

std::string substitute(std::string text, std::string_view username, std::string_view client_id) {
    for (const auto& [name, value] : {std::pair<std::string_view, std::string_view>{"${username}", username},
                                      {"${clientid}", client_id}}) {
        for (std::size_t at = text.find(name); at != std::string::npos; at = text.find(name, at + value.size())) {
            text.replace(at, name.size(), value);
        }
    }
    return text;
}

class ClaimRules final : public ClientRules {
public:
    std::vector<std::string> pub, sub, all;

    Verdict check(std::string_view topic, AclAccess access) const override {
        if (access == AclAccess::unsubscribe) return Verdict::unknown;  // the claim has no unsubscribe rules
        if (access == AclAccess::publish) return any(pub, topic) || any(all, topic) ? Verdict::allow : Verdict::unknown;
        if (access == AclAccess::subscribe) {
            const std::string_view f = strip_shared_prefix(topic);
            for (const auto* list : {&sub, &all}) {
                for (const auto& rule : *list) {
                    if (filter_covers(rule, f)) return Verdict::allow;
                }
            }
            return Verdict::unknown;
        }
        // Delivery: what the claim lets the client subscribe to it may read.
        return any(sub, topic) || any(all, topic) ? Verdict::allow : Verdict::unknown;
    }

private:
    static bool any(const std::vector<std::string>& rules, std::string_view topic) {
        for (const auto& rule : rules) {
            if (topic_matches(rule, topic)) return true;
        }
        return false;
    }
};

}  // namespace

JwtSource::JwtSource(const config::AuthJwt& settings) : settings_(settings), verifier_(make_verifier(settings)) {}

std::shared_ptr<const ClientRules> JwtSource::rules_from_claim(const nlohmann::json& claim, std::string_view username,
                                                               std::string_view client_id) {
    if (!claim.is_object()) return nullptr;
    auto rules = std::make_shared<ClaimRules>();
    for (const auto& [name, list] : {std::pair<const char*, std::vector<std::string>*>{"pub", &rules->pub},
                                     {"sub", &rules->sub}, {"all", &rules->all}}) {
        auto it = claim.find(name);
        if (it == claim.end()) continue;
        if (!it->is_array()) return nullptr;
        for (const auto& f : *it) {
            if (!f.is_string()) return nullptr;
            std::string filter = substitute(f.get<std::string>(), username, client_id);
            if (valid_filter(filter)) list->push_back(std::move(filter));
        }
    }
    return rules;
}

AuthResult JwtSource::authenticate(const ConnectInfo& info) {
    const std::optional<std::string_view> token = settings_.from_username ? info.username : info.password;
    if (!token || !JwtVerifier::looks_like_jwt(*token)) return {};  // not a JWT: not ours
    const auto now = std::chrono::system_clock::now();
    const std::int64_t seconds = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
    JwtVerifier::Result v = verifier_.verify(*token, seconds, settings_.leeway);
    if (!v.ok) return AuthResult::deny(ReasonCode::bad_user_name_or_password, v.why);
    const std::string_view username = info.username.value_or("");
    for (const auto& [claim, wanted] : settings_.verify_claims) {
        const std::string expect = substitute(wanted, username, info.client_id);
        auto it = v.claims.find(claim);
        if (it == v.claims.end() || !it->is_string() || it->get<std::string>() != expect) {
            return AuthResult::deny(ReasonCode::bad_user_name_or_password, "claim '" + claim + "' does not match");
        }
    }
    AuthResult r = AuthResult::allow();
    if (auto exp = v.claims.find("exp"); exp != v.claims.end() && exp->is_number()) {
        const auto at = static_cast<std::int64_t>(exp->get<double>()) + settings_.leeway;
        r.expires = std::chrono::system_clock::time_point(std::chrono::seconds(at));
    }
    if (!settings_.acl_claim.empty()) {
        if (auto acl = v.claims.find(settings_.acl_claim); acl != v.claims.end()) {
            r.rules = rules_from_claim(*acl, username, info.client_id);
            if (!r.rules) return AuthResult::deny(ReasonCode::not_authorized, "ACL claim not in {pub, sub, all} form");
        }
    }
    return r;
}

}  // namespace mqttools::auth
