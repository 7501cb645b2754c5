// Authorization from Mosquitto's acl_file:
//   # comment
//   topic [read|write|readwrite|deny] FILTER     anonymous clients, until the
//                                                first "user" line
//   user NAME
//   topic [read|write|readwrite|deny] FILTER     rules of user NAME
//   pattern [read|write|readwrite|deny] FILTER   every client; %c is its client
//                                                id, %u its username
// The access word may be left out (readwrite). With an ACL, whatever no rule
// grants is denied, and a matching "deny" rule beats every grant.
//
// Subscriptions: a filter is refused when a deny rule covers all of it or no
// read rule overlaps it; what is granted is filtered per message at delivery
// (can_read), which also covers retained messages.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mqttools::auth {

enum class Access : std::uint8_t { deny = 0, read = 1, write = 2, readwrite = 3 };

struct AclRule {
    Access access = Access::readwrite;
    std::string filter;  // patterns: still with %c / %u
};

// The rules of one client with patterns resolved, computed once at CONNECT
// so the per-message checks neither allocate nor look anything up.
class ClientAcl {
public:
    ClientAcl() = default;  // no ACL: everything allowed

    bool can_publish(std::string_view topic) const noexcept;
    bool can_read(std::string_view topic) const noexcept;
    bool can_subscribe(std::string_view filter) const noexcept;

private:
    friend class AclChecker;
    bool check_topic(std::string_view topic, Access wanted) const noexcept;

    bool enabled_ = false;
    bool deny_all_ = false;
    std::vector<AclRule> denies_;
    std::vector<AclRule> grants_;
};

class AclChecker {
public:
    AclChecker() = default;  // no acl_file: everything allowed

    // Throw std::runtime_error("FILE:LINE: why") on an invalid file.
    static AclChecker load(const std::string& path);
    static AclChecker parse(std::string_view text, std::string_view source = "acl_file");

    bool enabled() const noexcept { return enabled_; }

    ClientAcl bind(std::string_view client_id, std::optional<std::string_view> username) const;

    // Conveniences for one-off checks; they bind() every call.
    bool can_publish(std::string_view client_id, std::optional<std::string_view> username,
                     std::string_view topic) const {
        return bind(client_id, username).can_publish(topic);
    }
    bool can_subscribe(std::string_view client_id, std::optional<std::string_view> username,
                       std::string_view filter) const {
        return bind(client_id, username).can_subscribe(filter);
    }
    bool can_read(std::string_view client_id, std::optional<std::string_view> username,
                  std::string_view topic) const {
        return bind(client_id, username).can_read(topic);
    }

private:
    bool enabled_ = false;
    std::vector<AclRule> anonymous_;
    std::map<std::string, std::vector<AclRule>, std::less<>> users_;
    std::vector<AclRule> patterns_;
};

}  // namespace mqttools::auth
