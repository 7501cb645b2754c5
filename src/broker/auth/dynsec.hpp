// Dynamic security, compatible with Mosquitto 2.0's dynamic-security plugin:
// the same file (dynamic-security.json), the same JSON command API on
// $CONTROL/dynamic-security/v1 (so mosquitto_ctrl works unchanged), the
// same authentication and the same ACL evaluation order.
//
// The state lives on the reactor thread and changes only through
// handle_commands(); every change is written to the file atomically
// (dynsec_file.cpp) before it is answered. Authentication and the
// per-client ACL snapshot (DynsecAcl) read it; the broker rebinds the
// snapshots of connected clients after each change, so new ACLs apply to
// the next packet.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mqttools::auth::dynsec {

// The six ACL types of a role, in the order Mosquitto writes them.
enum class AclType : std::uint8_t {
    publish_client_send,
    publish_client_receive,
    subscribe_literal,
    subscribe_pattern,
    unsubscribe_literal,
    unsubscribe_pattern,
};
inline constexpr std::size_t acl_type_count = 6;
std::string_view acl_type_name(AclType type) noexcept;
// Case-insensitive, as Mosquitto compares them.
std::optional<AclType> parse_acl_type(std::string_view name) noexcept;

struct Acl {
    std::string topic;
    int priority = 0;
    bool allow = false;
};

// A reference by name with a priority (-1: none given): a client's or a
// group's role, a client's group, a group's client.
struct Ref {
    std::string name;
    int priority = -1;
};

struct Password {
    std::array<unsigned char, 12> salt{};
    std::array<unsigned char, 64> hash{};
    int iterations = 0;
};

struct Client {
    std::string username;
    std::optional<std::string> clientid;  // when set, the only client id it may connect with
    std::optional<std::string> text_name;
    std::optional<std::string> text_description;
    bool disabled = false;
    std::optional<Password> password;  // none: cannot log in with a password
    std::vector<Ref> roles;            // priority high to low, then name
    std::vector<Ref> groups;           // priority high to low, then name
};

struct Group {
    std::string name;
    std::optional<std::string> text_name;
    std::optional<std::string> text_description;
    std::vector<Ref> roles;    // priority high to low, then name
    std::vector<Ref> clients;  // by username
};

struct Role {
    std::string name;
    std::optional<std::string> text_name;
    std::optional<std::string> text_description;
    // Per type, priority high to low; equal priorities keep insertion order.
    std::array<std::vector<Acl>, acl_type_count> acls;
};

struct DefaultAccess {
    bool publish_client_send = false;
    bool publish_client_receive = false;
    bool subscribe = false;
    bool unsubscribe = false;
};

// What the broker must do after commands: disconnect these clients
// (MQTT 5: DISCONNECT 0x98 Administrative action).
struct Effects {
    std::vector<std::string> kick_usernames;
    bool kick_anonymous = false;
    bool changed = false;  // the state changed: rebind every client's ACL
};

enum class AuthResult : std::uint8_t {
    allowed,
    denied,   // a known client: wrong password, disabled, or wrong client id
    unknown,  // not ours to decide (no such client, no password): next source
};

// One client's view of the rules, in Mosquitto's evaluation order: the
// client's roles (priority order), then its groups (priority order) and
// each group's roles, or for an anonymous client the anonymous group's
// roles; in each role its ACLs by priority; the first matching ACL
// decides. No match: the default access, except that $CONTROL topics
// are never granted by default; a username that is not a dynsec client
// gets nothing.
class DynsecAcl {
public:
    bool can_publish(std::string_view topic) const noexcept;    // publishClientSend
    bool can_receive(std::string_view topic) const noexcept;    // publishClientReceive
    bool can_subscribe(std::string_view filter) const noexcept;  // subscribeLiteral/Pattern
    bool can_unsubscribe(std::string_view filter) const noexcept;
    // The first unsubscribeLiteral/Pattern ACL that matches: allow or deny;
    // nullopt when none does. Mosquitto 2.0's plugin then defers and the
    // broker lets the UNSUBSCRIBE through, whatever defaultACLAccess says
    // (checked against Debian's mosquitto, tests/integration/test_dynsec.py).
    std::optional<bool> unsubscribe_rule(std::string_view filter) const noexcept;

private:
    friend class Dynsec;
    struct Rule {
        std::string topic;
        bool allow = false;
        bool literal = false;  // subscribe/unsubscribe: compared as a string
    };
    bool decide(const std::vector<Rule>& rules, std::string_view topic, bool pattern_rules,
                bool default_allow) const noexcept;

    bool known_ = false;
    DefaultAccess defaults_;
    std::vector<Rule> send_, receive_, subscribe_, unsubscribe_;
};

class Dynsec {
public:
    Dynsec() = default;

    // Throws std::runtime_error("PATH: why") when the file cannot be read
    // or is not a JSON object. Entries Mosquitto would skip are skipped.
    static Dynsec load(const std::string& path);
    static Dynsec parse(std::string_view json_text, std::string_view source = "dynamic_security_file");

    // The file text, in Mosquitto's layout (defaultACLAccess, clients,
    // groups, anonymousGroup, roles; tab-indented).
    std::string to_json() const;
    // Writes PATH.new, fsyncs it, renames it over PATH and fsyncs the
    // directory. False (and *error set) when any step fails.
    bool save(const std::string& path, std::string* error) const;

    // A file as `mosquitto_ctrl dynsec init FILE USER PASSWORD` makes: one
    // client in role "admin", which may use the dynsec API and read
    // everything. nullopt when no random salt can be made.
    static std::optional<Dynsec> make_initial(std::string_view username, std::string_view password,
                                              int iterations = default_iterations);

    // The payload of a PUBLISH to $CONTROL/dynamic-security/v1; returns the
    // payload for $CONTROL/dynamic-security/v1/response. With `file` set,
    // each changing command is saved there before it is answered; a
    // command whose change cannot be saved is undone and answered with an
    // error.
    std::string handle_commands(std::string_view payload, Effects& effects, const std::string* file = nullptr);

    AuthResult authenticate(std::string_view username, std::string_view password,
                            std::string_view client_id) const;
    // Is `username` a dynsec client (whose ACLs dynsec decides)?
    bool has_client(std::string_view username) const { return clients_.contains(username); }

    DynsecAcl bind(std::optional<std::string_view> username) const;

    // Changes with every applied change (and touch()): rules bound from an
    // older generation are stale.
    std::uint64_t generation() const noexcept { return generation_; }
    void touch() noexcept { ++generation_; }

    const DefaultAccess& default_access() const noexcept { return default_access_; }
    const std::map<std::string, Client, std::less<>>& clients() const noexcept { return clients_; }
    const std::map<std::string, Group, std::less<>>& groups() const noexcept { return groups_; }
    const std::map<std::string, Role, std::less<>>& roles() const noexcept { return roles_; }
    const std::optional<std::string>& anonymous_group() const noexcept { return anonymous_group_; }

    // New passwords: PBKDF2-SHA512 with a 12-byte salt (Mosquitto's
    // format); Mosquitto 2.0.11 uses 101 iterations, we use more. Files
    // with any count load.
    static constexpr int default_iterations = 1000;
    static bool set_password(Client& client, std::string_view password, int iterations = default_iterations);

private:
    friend class Commands;

    DefaultAccess default_access_;
    std::map<std::string, Client, std::less<>> clients_;
    std::map<std::string, Group, std::less<>> groups_;
    std::map<std::string, Role, std::less<>> roles_;
    std::optional<std::string> anonymous_group_;
    std::uint64_t generation_ = 0;
};

// Helpers shared by the file and the commands.
void insert_ref(std::vector<Ref>& refs, Ref ref);  // priority high to low, then name
void insert_by_name(std::vector<Ref>& refs, Ref ref);
bool erase_ref(std::vector<Ref>& refs, std::string_view name);
void insert_acl(std::vector<Acl>& acls, Acl acl);  // priority high to low, stable
// Mosquitto's check that an ACL pattern `acl` grants subscribing to `filter`.
bool sub_acl_matches(std::string_view acl, std::string_view filter) noexcept;

}  // namespace mqttools::auth::dynsec
