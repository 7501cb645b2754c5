// Authentication and ACL checks of dynamic security, in the order of
// Mosquitto 2.0.11's plugin (plugins/dynamic-security/acl.c, auth.c).
#include <algorithm>

#include <openssl/crypto.h>

#include "broker/auth/dynsec.hpp"
#include "broker/auth/pbkdf2_sha512.hpp"
#include "broker/auth/topic_filter.hpp"

namespace mqttools::auth::dynsec {

namespace {

// Splits off the next level of `s` (s becomes the rest, or empty with
// `done` set after the last level).
std::string_view next_level(std::string_view& s, bool& done) {
    const auto slash = s.find('/');
    if (slash == std::string_view::npos) {
        std::string_view level = s;
        s = {};
        done = true;
        return level;
    }
    std::string_view level = s.substr(0, slash);
    s.remove_prefix(slash + 1);
    return level;
}

std::size_t levels(std::string_view s) { return static_cast<std::size_t>(std::count(s.begin(), s.end(), '/')) + 1; }

// "a/#" -> "a", true; "#" -> "", true.
bool strip_hash(std::string_view& s) {
    if (s == "#") {
        s = {};
        return true;
    }
    if (s.size() > 1 && s.ends_with("/#")) {
        s.remove_suffix(2);
        return true;
    }
    return false;
}

}  // namespace

// A subscribe/unsubscribe pattern ACL grants `filter` when every topic the
// filter can match is matched by the ACL: level by level, '+' in the ACL
// takes any one level (also a '+' in the filter), a trailing '#' in the ACL
// takes the rest; a filter ending in '#' needs an ACL ending in '#'.
bool sub_acl_matches(std::string_view acl, std::string_view filter) noexcept {
    if (acl == "#") return true;
    const bool acl_hash = strip_hash(acl);
    const bool sub_hash = strip_hash(filter);
    if (sub_hash && !acl_hash) return false;
    const std::size_t acl_levels = levels(acl);
    const std::size_t sub_levels = levels(filter);
    if (acl_levels > sub_levels) return false;
    if (sub_levels > acl_levels && !acl_hash) return false;
    bool acl_done = false;
    bool sub_done = false;
    for (std::size_t i = 0; i < sub_levels; ++i) {
        const std::string_view sub_token = next_level(filter, sub_done);
        if (i < acl_levels) {
            const std::string_view acl_token = next_level(acl, acl_done);
            if (acl_token == "+" || acl_token == sub_token) continue;
            return false;
        }
        // More levels in the filter than in the ACL: only its '#' takes them.
        if (!acl_hash) return false;
    }
    return true;
}

bool DynsecAcl::decide(const std::vector<Rule>& rules, std::string_view topic, bool pattern_rules,
                       bool default_allow) const noexcept {
    for (const auto& r : rules) {
        bool match = false;
        if (r.literal) {
            match = r.topic == topic;
        } else if (pattern_rules) {
            match = sub_acl_matches(r.topic, topic);
        } else {
            match = topic_matches(r.topic, topic);
        }
        if (match) return r.allow;
    }
    // No ACL matched: a username that is not ours gets nothing; otherwise
    // the default, which never opens $CONTROL.
    if (!known_ || !default_allow) return false;
    return !topic.starts_with("$CONTROL");
}

bool DynsecAcl::can_publish(std::string_view topic) const noexcept {
    return decide(send_, topic, false, defaults_.publish_client_send);
}
bool DynsecAcl::can_receive(std::string_view topic) const noexcept {
    return decide(receive_, topic, false, defaults_.publish_client_receive);
}
bool DynsecAcl::can_subscribe(std::string_view filter) const noexcept {
    return decide(subscribe_, filter, true, defaults_.subscribe);
}
bool DynsecAcl::can_unsubscribe(std::string_view filter) const noexcept {
    return decide(unsubscribe_, filter, true, defaults_.unsubscribe);
}

std::optional<bool> DynsecAcl::unsubscribe_rule(std::string_view filter) const noexcept {
    for (const auto& r : unsubscribe_) {
        if (r.literal ? r.topic == filter : sub_acl_matches(r.topic, filter)) return r.allow;
    }
    return std::nullopt;
}

DynsecAcl Dynsec::bind(std::optional<std::string_view> username) const {
    DynsecAcl acl;
    acl.defaults_ = default_access_;
    auto add_role = [&](const Ref& ref) {
        auto it = roles_.find(ref.name);
        if (it == roles_.end()) return;
        const Role& role = it->second;
        auto copy = [&](std::vector<DynsecAcl::Rule>& out, AclType type, bool literal) {
            for (const auto& a : role.acls[static_cast<std::size_t>(type)]) out.push_back({a.topic, a.allow, literal});
        };
        copy(acl.send_, AclType::publish_client_send, false);
        copy(acl.receive_, AclType::publish_client_receive, false);
        // Within a role the literal ACLs are looked at before the patterns.
        copy(acl.subscribe_, AclType::subscribe_literal, true);
        copy(acl.subscribe_, AclType::subscribe_pattern, false);
        copy(acl.unsubscribe_, AclType::unsubscribe_literal, true);
        copy(acl.unsubscribe_, AclType::unsubscribe_pattern, false);
    };
    auto add_group = [&](std::string_view name) {
        auto it = groups_.find(name);
        if (it == groups_.end()) return;
        for (const auto& r : it->second.roles) add_role(r);
    };
    if (username) {
        auto it = clients_.find(*username);
        if (it == clients_.end()) return acl;  // known_ false: deny all
        acl.known_ = true;
        for (const auto& r : it->second.roles) add_role(r);
        for (const auto& g : it->second.groups) add_group(g.name);
    } else {
        acl.known_ = true;
        if (anonymous_group_) add_group(*anonymous_group_);
    }
    return acl;
}

AuthResult Dynsec::authenticate(std::string_view username, std::string_view password,
                                std::string_view client_id) const {
    auto it = clients_.find(username);
    if (it == clients_.end()) return AuthResult::unknown;
    const Client& c = it->second;
    if (c.disabled) return AuthResult::denied;
    if (c.clientid && *c.clientid != client_id) return AuthResult::denied;
    if (!c.password) return AuthResult::unknown;
    std::array<unsigned char, 64> hash{};
    pbkdf2_sha512(password, c.password->salt, c.password->iterations, hash);
    return CRYPTO_memcmp(hash.data(), c.password->hash.data(), hash.size()) == 0 ? AuthResult::allowed
                                                                                 : AuthResult::denied;
}

}  // namespace mqttools::auth::dynsec
