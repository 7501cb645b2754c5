#include "broker/auth/acl.hpp"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "broker/auth/text_lines.hpp"
#include "broker/auth/topic_filter.hpp"

namespace mqttools::auth {
namespace {

bool has_bit(Access have, Access wanted) noexcept {
    return (static_cast<unsigned>(have) & static_cast<unsigned>(wanted)) != 0;
}

// Splits "word rest" at the first run of blanks.
std::pair<std::string_view, std::string_view> first_word(std::string_view s) {
    s = trim(s);
    const auto blank = s.find_first_of(" \t");
    if (blank == std::string_view::npos) return {s, {}};
    return {s.substr(0, blank), trim(s.substr(blank))};
}

// Replaces %c and %u anywhere in a pattern, as Mosquitto does.
std::string substitute(std::string_view pattern, std::string_view client_id,
                       std::string_view username) {
    std::string out;
    out.reserve(pattern.size() + client_id.size() + username.size());
    for (std::size_t i = 0; i < pattern.size(); ++i) {
        if (pattern[i] == '%' && i + 1 < pattern.size() &&
            (pattern[i + 1] == 'c' || pattern[i + 1] == 'u')) {
            out += pattern[i + 1] == 'c' ? client_id : username;
            ++i;
        } else {
            out += pattern[i];
        }
    }
    return out;
}

bool unsafe_for_patterns(std::string_view s) {
    // A wildcard in a client id or username would widen a pattern rule to
    // other clients' topics (Mosquitto refuses such clients the same way).
    return s.find_first_of("+#") != std::string_view::npos;
}

}  // namespace

AclChecker AclChecker::load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open ACL file");
    std::ostringstream text;
    text << in.rdbuf();
    return parse(text.str(), path);
}

AclChecker AclChecker::parse(std::string_view text, std::string_view source) {
    AclChecker acl;
    acl.enabled_ = true;
    std::vector<AclRule>* current = &acl.anonymous_;
    for_each_line(text, [&](std::string_view line, std::size_t number) {
        const auto fail = [&](std::string_view why) {
            throw std::runtime_error(std::string(source) + ":" + std::to_string(number) + ": " +
                                     std::string(why));
        };
        line = trim(line);
        if (line.empty() || line.front() == '#') return;
        const auto [keyword, rest] = first_word(line);
        if (keyword == "user") {
            if (rest.empty()) fail("'user' needs a name");
            current = &acl.users_[std::string(rest)];
            return;
        }
        if (keyword != "topic" && keyword != "pattern") {
            fail("expected 'user', 'topic' or 'pattern'");
        }
        AclRule rule;
        auto [word, after] = first_word(rest);
        std::string_view filter = rest;
        static constexpr std::pair<std::string_view, Access> words[] = {
            {"read", Access::read},
            {"write", Access::write},
            {"readwrite", Access::readwrite},
            {"deny", Access::deny},
        };
        bool named = false;
        for (const auto& [name, access] : words) {
            if (word == name) {
                rule.access = access;
                filter = after;
                named = true;
            }
        }
        // Two words or more: the first is the access type, as in Mosquitto
        // (which refuses the file otherwise); a typo must not become part of
        // a topic ("topic rw sensors/#" would grant the literal "rw sensors/#").
        if (!named && !after.empty()) {
            fail("invalid topic access type '" + std::string(word) +
                 "' (read, write, readwrite or deny; a topic holding a space needs one)");
        }
        if (filter.empty()) fail("missing topic filter");
        if (!valid_filter(filter)) fail("invalid topic filter '" + std::string(filter) + "'");
        rule.filter = std::string(filter);
        if (keyword == "pattern") {
            acl.patterns_.push_back(std::move(rule));
        } else {
            current->push_back(std::move(rule));
        }
    });
    return acl;
}

ClientAcl AclChecker::bind(std::string_view client_id,
                           std::optional<std::string_view> username) const {
    ClientAcl out;
    if (!enabled_) return out;
    out.enabled_ = true;
    const auto add = [&](const AclRule& rule) {
        (rule.access == Access::deny ? out.denies_ : out.grants_).push_back(rule);
    };
    if (!username) {
        for (const auto& rule : anonymous_) add(rule);
    } else if (const auto it = users_.find(*username); it != users_.end()) {
        for (const auto& rule : it->second) add(rule);
    }
    if (!patterns_.empty() &&
        (unsafe_for_patterns(client_id) || (username && unsafe_for_patterns(*username)))) {
        out.deny_all_ = true;
        return out;
    }
    for (const auto& rule : patterns_) {
        // Without a username a %u pattern means nothing: skip it.
        if (!username && rule.filter.find("%u") != std::string::npos) continue;
        AclRule resolved{rule.access, substitute(rule.filter, client_id, username.value_or(""))};
        // A client id holding '/' can still make a valid filter; one that
        // makes an invalid filter cannot match any topic anyway.
        if (!valid_filter(resolved.filter)) continue;
        add(resolved);
    }
    return out;
}

bool ClientAcl::check_topic(std::string_view topic, Access wanted) const noexcept {
    if (!enabled_) return true;
    if (deny_all_) return false;
    for (const auto& rule : denies_) {
        if (topic_matches(rule.filter, topic)) return false;
    }
    for (const auto& rule : grants_) {
        if (has_bit(rule.access, wanted) && topic_matches(rule.filter, topic)) return true;
    }
    return false;
}

bool ClientAcl::can_publish(std::string_view topic) const noexcept {
    return check_topic(topic, Access::write);
}

bool ClientAcl::can_read(std::string_view topic) const noexcept {
    return check_topic(topic, Access::read);
}

bool ClientAcl::can_subscribe(std::string_view filter) const noexcept {
    if (!enabled_) return true;
    if (deny_all_) return false;
    filter = strip_shared_prefix(filter);
    for (const auto& rule : denies_) {
        if (filter_covers(rule.filter, filter)) return false;
    }
    for (const auto& rule : grants_) {
        if (has_bit(rule.access, Access::read) && filters_intersect(rule.filter, filter)) {
            return true;
        }
    }
    return false;
}

}  // namespace mqttools::auth
