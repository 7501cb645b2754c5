#include "broker/auth/auth_chain.hpp"

#include <stdexcept>

#include "broker/auth/file_sources.hpp"
#include "broker/auth/http_source.hpp"
#include "broker/auth/jwt_source.hpp"
#include "config/config.hpp"

namespace mqttools::auth {

AuthChain::AuthChain(bool allow_anonymous, std::vector<std::shared_ptr<AuthSource>> sources)
    : allow_anonymous_(allow_anonymous), sources_(std::move(sources)) {
    for (const auto& s : sources_) {
        knows_users_ = knows_users_ || s->authenticates();
        authorizes_ = authorizes_ || s->authorizes();
    }
}

std::shared_ptr<const AuthChain> AuthChain::from_config(const config::Config& config, AuthHost& host,
                                                        std::vector<std::shared_ptr<AuthSource>> first) {
    std::vector<std::shared_ptr<AuthSource>> sources = std::move(first);
    std::string errors;
    auto add = [&](auto make) {
        try {
            if (auto s = make()) sources.push_back(std::move(s));
        } catch (const std::exception& e) {
            if (!errors.empty()) errors += '\n';
            errors += e.what();
        }
    };
    add([&]() -> std::shared_ptr<AuthSource> {
        if (config.password_file.empty()) return nullptr;
        return std::make_shared<PasswordFileSource>(PasswordFile::load(config.password_file), host);
    });
    add([&]() -> std::shared_ptr<AuthSource> {
        if (config.acl_file.empty()) return nullptr;
        return std::make_shared<AclFileSource>(AclChecker::load(config.acl_file));
    });
    add([&]() -> std::shared_ptr<AuthSource> {
        if (!config.auth_jwt.enabled) return nullptr;
        return std::make_shared<JwtSource>(config.auth_jwt);
    });
    add([&]() -> std::shared_ptr<AuthSource> {
        if (!config.auth_http.enabled) return nullptr;
        return std::make_shared<HttpSource>(config.auth_http, host);
    });
    if (!errors.empty()) throw std::runtime_error(errors);
    return std::make_shared<const AuthChain>(config.effective_allow_anonymous(), std::move(sources));
}

AuthResult AuthChain::authenticate(const ConnectInfo& info, std::size_t from, std::size_t& at) const {
    if (info.username || info.password) {
        for (std::size_t i = from; i < sources_.size(); ++i) {
            AuthSource& s = *sources_[i];
            if (!s.authenticates()) continue;
            AuthResult r = s.authenticate(info);
            if (r.verdict == Verdict::unknown) continue;
            if (r.verdict == Verdict::pending) at = i;
            if (r.source.empty()) r.source = s.name();
            return r;
        }
    }
    // Nobody knows this client: the anonymous rule.
    if (info.username && knows_users_) {
        return AuthResult::deny(ReasonCode::bad_user_name_or_password, "unknown user");
    }
    if (allow_anonymous_) return AuthResult::allow();
    return AuthResult::deny(ReasonCode::not_authorized, "anonymous access is not allowed");
}

std::unique_ptr<ClientAuthz> AuthChain::bind(const ClientIdentity& who, std::shared_ptr<const ClientRules> credentials,
                                             bool superuser) const {
    if (superuser) return nullptr;
    auto authz = std::make_unique<ClientAuthz>();
    authz->waiter_ = who.waiter;
    authz->credentials_ = std::move(credentials);
    if (authorizes_) {
        for (const auto& s : sources_) {
            if (!s->authorizes()) continue;
            if (auto r = s->bind(who)) authz->rules_.push_back(std::move(r));
        }
    }
    if (!authz->credentials_ && authz->rules_.empty()) return nullptr;
    return authz;
}

std::vector<SourceMetric> AuthChain::metrics() const {
    std::vector<SourceMetric> out;
    for (const auto& s : sources_) s->metrics(out);
    return out;
}

}  // namespace mqttools::auth
