// The JSON command API of Mosquitto 2.0.11's dynamic-security plugin:
// every command, its field checks in the same order and its exact error
// strings, so mosquitto_ctrl and scripts written for Mosquitto see the
// same answers. Differences, each deliberate: a command that fails changes
// nothing (Mosquitto sometimes keeps half of a modifyClient); a change
// that cannot be saved is undone and answered with an error; changed ACLs
// apply to the next packet instead of disconnecting the role's clients.
#include <algorithm>
#include <strings.h>

#include "broker/auth/dynsec.hpp"
#include "broker/auth/dynsec_json.hpp"
#include "broker/auth/topic_filter.hpp"

namespace mqttools::auth::dynsec {

namespace {
constexpr const char* roles_invalid = "'roles' not an array or missing/invalid rolename";
}  // namespace

class Commands {
public:
    Commands(Dynsec& d, Effects& effects) : d_(d), effects_(effects) {}

    using Handler = std::optional<std::string> (Commands::*)(const Json&);
    struct Entry {
        const char* name;
        Handler handler;
        bool changes;  // may change the state (saved, undone on error)
    };
    static const std::vector<Entry>& table();

    // The response for one command object (error or data filled in).
    OrderedJson run(const Entry& e, const Json& cmd, const std::optional<std::string>& correlation);

private:
    // Each handler returns an error string, or nullopt on success (data_
    // then holds what a get/list answers).
    std::optional<std::string> set_default_acl_access(const Json& cmd);
    std::optional<std::string> get_default_acl_access(const Json& cmd);
    std::optional<std::string> create_client(const Json& cmd);
    std::optional<std::string> delete_client(const Json& cmd);
    std::optional<std::string> enable_client(const Json& cmd);
    std::optional<std::string> disable_client(const Json& cmd);
    std::optional<std::string> get_client(const Json& cmd);
    std::optional<std::string> list_clients(const Json& cmd);
    std::optional<std::string> modify_client(const Json& cmd);
    std::optional<std::string> set_client_id(const Json& cmd);
    std::optional<std::string> set_client_password(const Json& cmd);
    std::optional<std::string> add_client_role(const Json& cmd);
    std::optional<std::string> remove_client_role(const Json& cmd);
    std::optional<std::string> create_group(const Json& cmd);
    std::optional<std::string> delete_group(const Json& cmd);
    std::optional<std::string> get_group(const Json& cmd);
    std::optional<std::string> list_groups(const Json& cmd);
    std::optional<std::string> modify_group(const Json& cmd);
    std::optional<std::string> add_group_client(const Json& cmd);
    std::optional<std::string> remove_group_client(const Json& cmd);
    std::optional<std::string> add_group_role(const Json& cmd);
    std::optional<std::string> remove_group_role(const Json& cmd);
    std::optional<std::string> set_anonymous_group(const Json& cmd);
    std::optional<std::string> get_anonymous_group(const Json& cmd);
    std::optional<std::string> create_role(const Json& cmd);
    std::optional<std::string> get_role(const Json& cmd);
    std::optional<std::string> list_roles(const Json& cmd);
    std::optional<std::string> modify_role(const Json& cmd);
    std::optional<std::string> delete_role(const Json& cmd);
    std::optional<std::string> add_role_acl(const Json& cmd);
    std::optional<std::string> remove_role_acl(const Json& cmd);

    // A required name field: "Invalid/missing KEY", then "LABEL not valid
    // UTF-8" (label empty: no UTF-8 check, as deleteClient).
    std::optional<std::string> name(const Json& cmd, const char* key, const char* label, std::string& out) {
        if (json_string(cmd, key, out) != Field::ok) return std::string("Invalid/missing ") + key;
        if (*label && !valid_name(out)) return std::string(label) + " not valid UTF-8";
        return std::nullopt;
    }
    // "roles": [...] -> refs; absent -> nullopt with no error.
    std::optional<std::string> roles_from(const Json& cmd, std::optional<std::vector<Ref>>& out,
                                          const char* invalid = roles_invalid);

    void kick(std::string_view username) { effects_.kick_usernames.emplace_back(username); }
    void kick_group(const Group& g) {
        if (d_.anonymous_group_ == g.name) effects_.kick_anonymous = true;
        for (const auto& c : g.clients) kick(c.name);
    }
    void remove_from_all_groups(Client& c) {
        for (const auto& g : c.groups) {
            if (auto it = d_.groups_.find(g.name); it != d_.groups_.end()) erase_ref(it->second.clients, c.username);
        }
        c.groups.clear();
    }
    static void add_membership(Client& c, Group& g, int priority) {
        insert_by_name(g.clients, Ref{c.username, priority});
        insert_ref(c.groups, Ref{g.name, priority});
    }
    static bool is_member(const Client& c, std::string_view group) {
        return std::any_of(c.groups.begin(), c.groups.end(), [&](const Ref& r) { return r.name == group; });
    }

    OrderedJson client_json(const Client& c, bool verbose) const;
    OrderedJson group_json(const Group& g) const;
    OrderedJson role_json(const Role& r, bool verbose) const;
    template <class Map, class ToJson>
    void list(const Json& cmd, const Map& items, const char* key, ToJson to_json);

    Dynsec& d_;
    Effects& effects_;
    std::optional<OrderedJson> data_;
};

namespace {

void add_text(OrderedJson& j, const char* key, const std::optional<std::string>& v) {
    if (v) j[key] = *v;
}

// An optional text field: absent is fine, anything but a string is not.
std::optional<std::string> optional_text(const Json& cmd, const char* key, std::optional<std::string>& out) {
    std::string s;
    switch (json_string(cmd, key, s)) {
    case Field::ok: out = std::move(s); return std::nullopt;
    case Field::absent: return std::nullopt;
    case Field::invalid: break;
    }
    return std::string("Invalid/missing ") + key;
}

// Replace-if-string, as modify* does.
void modify_text(const Json& cmd, const char* key, std::optional<std::string>& field) {
    std::string s;
    if (json_string(cmd, key, s) == Field::ok) field = std::move(s);
}

}  // namespace

const std::vector<Commands::Entry>& Commands::table() {
    static const std::vector<Entry> entries = {
        {"setDefaultACLAccess", &Commands::set_default_acl_access, true},
        {"getDefaultACLAccess", &Commands::get_default_acl_access, false},
        {"createClient", &Commands::create_client, true},
        {"deleteClient", &Commands::delete_client, true},
        {"getClient", &Commands::get_client, false},
        {"listClients", &Commands::list_clients, false},
        {"modifyClient", &Commands::modify_client, true},
        {"setClientPassword", &Commands::set_client_password, true},
        {"setClientId", &Commands::set_client_id, true},
        {"addClientRole", &Commands::add_client_role, true},
        {"removeClientRole", &Commands::remove_client_role, true},
        {"enableClient", &Commands::enable_client, true},
        {"disableClient", &Commands::disable_client, true},
        {"addGroupClient", &Commands::add_group_client, true},
        {"createGroup", &Commands::create_group, true},
        {"deleteGroup", &Commands::delete_group, true},
        {"getGroup", &Commands::get_group, false},
        {"listGroups", &Commands::list_groups, false},
        {"modifyGroup", &Commands::modify_group, true},
        {"removeGroupClient", &Commands::remove_group_client, true},
        {"addGroupRole", &Commands::add_group_role, true},
        {"removeGroupRole", &Commands::remove_group_role, true},
        {"setAnonymousGroup", &Commands::set_anonymous_group, true},
        {"getAnonymousGroup", &Commands::get_anonymous_group, false},
        {"createRole", &Commands::create_role, true},
        {"getRole", &Commands::get_role, false},
        {"listRoles", &Commands::list_roles, false},
        {"modifyRole", &Commands::modify_role, true},
        {"deleteRole", &Commands::delete_role, true},
        {"addRoleACL", &Commands::add_role_acl, true},
        {"removeRoleACL", &Commands::remove_role_acl, true},
    };
    return entries;
}

OrderedJson Commands::run(const Entry& e, const Json& cmd, const std::optional<std::string>& correlation) {
    data_.reset();
    const std::optional<std::string> error = (this->*e.handler)(cmd);
    OrderedJson r;
    r["command"] = e.name;
    if (error) {
        r["error"] = *error;
    } else if (data_) {
        r["data"] = std::move(*data_);
    }
    if (correlation) r["correlationData"] = *correlation;
    return r;
}

std::optional<std::string> Commands::roles_from(const Json& cmd, std::optional<std::vector<Ref>>& out,
                                                const char* invalid) {
    const Json* j = json_find(cmd, "roles");
    if (!j) return std::nullopt;
    if (!j->is_array()) return std::string(invalid);
    std::vector<Ref> refs;
    for (const auto& r : *j) {
        std::string role;
        if (json_string(r, "rolename", role) != Field::ok) return std::string(invalid);
        if (!d_.roles_.contains(role)) return std::string("Role not found");
        if (std::none_of(refs.begin(), refs.end(), [&](const Ref& x) { return x.name == role; })) {
            insert_ref(refs, Ref{role, json_int(r, "priority", -1)});
        }
    }
    out = std::move(refs);
    return std::nullopt;
}

// ---- default access ------------------------------------------------------

std::optional<std::string> Commands::set_default_acl_access(const Json& cmd) {
    const Json* acls = json_find(cmd, "acls");
    if (!acls || !acls->is_array()) return "Missing/invalid actions array";
    for (const auto& a : *acls) {
        std::string type;
        const Json* allow = json_find(a, "allow");
        if (json_string(a, "acltype", type) != Field::ok || !allow || !allow->is_boolean()) continue;
        const bool v = allow->get<bool>();
        auto is = [&](const char* n) { return ::strcasecmp(type.c_str(), n) == 0; };
        if (is("publishClientSend")) d_.default_access_.publish_client_send = v;
        else if (is("publishClientReceive")) d_.default_access_.publish_client_receive = v;
        else if (is("subscribe")) d_.default_access_.subscribe = v;
        else if (is("unsubscribe")) d_.default_access_.unsubscribe = v;
    }
    return std::nullopt;
}

std::optional<std::string> Commands::get_default_acl_access(const Json&) {
    const DefaultAccess& a = d_.default_access_;
    OrderedJson acls = OrderedJson::array();
    acls.push_back({{"acltype", "publishClientSend"}, {"allow", a.publish_client_send}});
    acls.push_back({{"acltype", "publishClientReceive"}, {"allow", a.publish_client_receive}});
    acls.push_back({{"acltype", "subscribe"}, {"allow", a.subscribe}});
    acls.push_back({{"acltype", "unsubscribe"}, {"allow", a.unsubscribe}});
    data_ = OrderedJson{{"acls", std::move(acls)}};
    return std::nullopt;
}

// ---- clients -------------------------------------------------------------

OrderedJson Commands::client_json(const Client& c, bool verbose) const {
    if (!verbose) return c.username;
    OrderedJson j;
    j["username"] = c.username;
    add_text(j, "clientid", c.clientid);
    add_text(j, "textname", c.text_name);
    add_text(j, "textdescription", c.text_description);
    if (c.disabled) j["disabled"] = true;
    j["roles"] = refs_to_json(c.roles, "rolename");
    j["groups"] = refs_to_json(c.groups, "groupname");
    return j;
}

std::optional<std::string> Commands::create_client(const Json& cmd) {
    std::string username;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    std::optional<std::string> password, clientid;
    if (optional_text(cmd, "password", password)) return "Invalid/missing password";
    if (optional_text(cmd, "clientid", clientid)) return "Invalid/missing client id";
    if (clientid && !valid_name(*clientid)) return "Client ID not valid UTF-8";
    Client c;
    c.username = username;
    if (auto e = optional_text(cmd, "textname", c.text_name)) return e;
    if (auto e = optional_text(cmd, "textdescription", c.text_description)) return e;
    if (d_.clients_.contains(username)) return "Client already exists";
    if (password && !Dynsec::set_password(c, *password)) return "Internal error";
    if (clientid && !clientid->empty()) c.clientid = clientid;
    std::optional<std::vector<Ref>> roles;
    if (auto e = roles_from(cmd, roles)) return e;
    if (roles) c.roles = std::move(*roles);
    Client& added = d_.clients_.emplace(username, std::move(c)).first->second;
    if (const Json* groups = json_find(cmd, "groups"); groups && groups->is_array()) {
        for (const auto& g : *groups) {
            std::string group;
            if (json_string(g, "groupname", group) != Field::ok) continue;
            auto it = d_.groups_.find(group);
            if (it == d_.groups_.end()) return "Group not found";
            if (!is_member(added, group)) add_membership(added, it->second, json_int(g, "priority", -1));
        }
    }
    return std::nullopt;
}

std::optional<std::string> Commands::delete_client(const Json& cmd) {
    std::string username;
    if (auto e = name(cmd, "username", "", username)) return e;
    auto it = d_.clients_.find(username);
    if (it == d_.clients_.end()) return "Client not found";
    remove_from_all_groups(it->second);
    d_.clients_.erase(it);
    kick(username);
    return std::nullopt;
}

std::optional<std::string> Commands::enable_client(const Json& cmd) {
    std::string username;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    auto it = d_.clients_.find(username);
    if (it == d_.clients_.end()) return "Client not found";
    it->second.disabled = false;
    return std::nullopt;
}

std::optional<std::string> Commands::disable_client(const Json& cmd) {
    std::string username;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    auto it = d_.clients_.find(username);
    if (it == d_.clients_.end()) return "Client not found";
    it->second.disabled = true;
    kick(username);
    return std::nullopt;
}

std::optional<std::string> Commands::get_client(const Json& cmd) {
    std::string username;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    auto it = d_.clients_.find(username);
    if (it == d_.clients_.end()) return "Client not found";
    data_ = OrderedJson{{"client", client_json(it->second, true)}};
    return std::nullopt;
}

template <class Map, class ToJson>
void Commands::list(const Json& cmd, const Map& items, const char* key, ToJson to_json) {
    const bool verbose = json_bool(cmd, "verbose", false);
    int count = json_int(cmd, "count", -1);
    const int offset = json_int(cmd, "offset", 0);
    OrderedJson out = OrderedJson::array();
    int i = 0;
    for (const auto& [name, item] : items) {
        if (i >= offset) {
            out.push_back(to_json(item, verbose));
            // As Mosquitto counts: "count": 0 still lists one.
            if (count >= 0 && --count <= 0) break;
        }
        ++i;
    }
    data_ = OrderedJson{{"totalCount", items.size()}, {key, std::move(out)}};
}

std::optional<std::string> Commands::list_clients(const Json& cmd) {
    list(cmd, d_.clients_, "clients", [this](const Client& c, bool v) { return client_json(c, v); });
    return std::nullopt;
}

std::optional<std::string> Commands::modify_client(const Json& cmd) {
    std::string username;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    auto it = d_.clients_.find(username);
    if (it == d_.clients_.end()) return "Client not found";
    Client& c = it->second;
    kick(username);  // whatever changed (as Mosquitto, also on an error)
    std::string s;
    if (json_string(cmd, "clientid", s) == Field::ok) {
        c.clientid = s.empty() ? std::nullopt : std::optional<std::string>(s);
    }
    if (json_string(cmd, "password", s) == Field::ok && !s.empty()) {
        if (!Dynsec::set_password(c, s)) return "Internal error";
    }
    modify_text(cmd, "textname", c.text_name);
    modify_text(cmd, "textdescription", c.text_description);
    std::optional<std::vector<Ref>> roles;
    if (auto e = roles_from(cmd, roles)) return e;
    if (roles) c.roles = std::move(*roles);
    if (const Json* groups = json_find(cmd, "groups"); groups && groups->is_array()) {
        remove_from_all_groups(c);
        for (const auto& g : *groups) {
            std::string group;
            if (json_string(g, "groupname", group) != Field::ok) continue;
            auto git = d_.groups_.find(group);
            if (git != d_.groups_.end() && !is_member(c, group)) {
                add_membership(c, git->second, json_int(g, "priority", -1));
            }
        }
    }
    return std::nullopt;
}

std::optional<std::string> Commands::set_client_id(const Json& cmd) {
    std::string username;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    std::optional<std::string> clientid;
    if (optional_text(cmd, "clientid", clientid)) return "Invalid/missing client ID";
    if (clientid && !valid_name(*clientid)) return "Client ID not valid UTF-8";
    auto it = d_.clients_.find(username);
    if (it == d_.clients_.end()) return "Client not found";
    it->second.clientid = clientid && !clientid->empty() ? clientid : std::nullopt;
    kick(username);
    return std::nullopt;
}

std::optional<std::string> Commands::set_client_password(const Json& cmd) {
    std::string username, password;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    if (json_string(cmd, "password", password) != Field::ok) return "Invalid/missing password";
    if (password.empty()) return "Empty password is not allowed";
    auto it = d_.clients_.find(username);
    if (it == d_.clients_.end()) return "Client not found";
    if (!Dynsec::set_password(it->second, password)) return "Internal error";
    kick(username);
    return std::nullopt;
}

std::optional<std::string> Commands::add_client_role(const Json& cmd) {
    std::string username, rolename;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    if (auto e = name(cmd, "rolename", "Role name", rolename)) return e;
    const int priority = json_int(cmd, "priority", -1);
    auto it = d_.clients_.find(username);
    if (it == d_.clients_.end()) return "Client not found";
    if (!d_.roles_.contains(rolename)) return "Role not found";
    auto& roles = it->second.roles;
    // Mosquitto 2.0.11 answers a role the client already has this way.
    if (std::any_of(roles.begin(), roles.end(), [&](const Ref& r) { return r.name == rolename; })) {
        return "Internal error";
    }
    insert_ref(roles, Ref{rolename, priority});
    kick(username);
    return std::nullopt;
}

std::optional<std::string> Commands::remove_client_role(const Json& cmd) {
    std::string username, rolename;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    if (auto e = name(cmd, "rolename", "Role name", rolename)) return e;
    auto it = d_.clients_.find(username);
    if (it == d_.clients_.end()) return "Client not found";
    if (!d_.roles_.contains(rolename)) return "Role not found";
    erase_ref(it->second.roles, rolename);
    kick(username);
    return std::nullopt;
}

// ---- groups ----------------------------------------------------------------

OrderedJson Commands::group_json(const Group& g) const {
    OrderedJson j;
    j["groupname"] = g.name;
    add_text(j, "textname", g.text_name);
    add_text(j, "textdescription", g.text_description);
    OrderedJson clients = OrderedJson::array();
    for (const auto& c : g.clients) clients.push_back(OrderedJson{{"username", c.name}});
    j["clients"] = std::move(clients);
    j["roles"] = refs_to_json(g.roles, "rolename");
    return j;
}

std::optional<std::string> Commands::create_group(const Json& cmd) {
    Group g;
    if (auto e = name(cmd, "groupname", "Group name", g.name)) return e;
    if (auto e = optional_text(cmd, "textname", g.text_name)) return e;
    if (auto e = optional_text(cmd, "textdescription", g.text_description)) return e;
    if (d_.groups_.contains(g.name)) return "Group already exists";
    std::optional<std::vector<Ref>> roles;
    if (auto e = roles_from(cmd, roles, "Internal error")) return e;
    if (roles) g.roles = std::move(*roles);
    d_.groups_.emplace(g.name, std::move(g));
    return std::nullopt;
}

std::optional<std::string> Commands::delete_group(const Json& cmd) {
    std::string groupname;
    if (auto e = name(cmd, "groupname", "Group name", groupname)) return e;
    auto it = d_.groups_.find(groupname);
    if (it == d_.groups_.end()) return "Group not found";
    kick_group(it->second);
    for (const auto& m : it->second.clients) {
        if (auto c = d_.clients_.find(m.name); c != d_.clients_.end()) erase_ref(c->second.groups, groupname);
    }
    if (d_.anonymous_group_ == groupname) d_.anonymous_group_.reset();
    d_.groups_.erase(it);
    return std::nullopt;
}

std::optional<std::string> Commands::get_group(const Json& cmd) {
    std::string groupname;
    if (auto e = name(cmd, "groupname", "Group name", groupname)) return e;
    auto it = d_.groups_.find(groupname);
    if (it == d_.groups_.end()) return "Group not found";
    data_ = OrderedJson{{"group", group_json(it->second)}};
    return std::nullopt;
}

std::optional<std::string> Commands::list_groups(const Json& cmd) {
    list(cmd, d_.groups_, "groups",
         [this](const Group& g, bool verbose) { return verbose ? group_json(g) : OrderedJson(g.name); });
    return std::nullopt;
}

std::optional<std::string> Commands::modify_group(const Json& cmd) {
    std::string groupname;
    if (auto e = name(cmd, "groupname", "Group name", groupname)) return e;
    auto it = d_.groups_.find(groupname);
    if (it == d_.groups_.end()) return "Group not found";
    Group& g = it->second;
    kick_group(g);  // the members before the change...
    modify_text(cmd, "textname", g.text_name);
    modify_text(cmd, "textdescription", g.text_description);
    std::optional<std::vector<Ref>> roles;
    if (auto e = roles_from(cmd, roles)) return e;
    if (roles) g.roles = std::move(*roles);
    if (const Json* clients = json_find(cmd, "clients"); clients && clients->is_array()) {
        for (const auto& m : g.clients) {
            if (auto c = d_.clients_.find(m.name); c != d_.clients_.end()) erase_ref(c->second.groups, groupname);
        }
        g.clients.clear();
        for (const auto& m : *clients) {
            std::string username;
            if (json_string(m, "username", username) != Field::ok) continue;
            auto c = d_.clients_.find(username);
            if (c != d_.clients_.end() && !is_member(c->second, groupname)) {
                add_membership(c->second, g, json_int(m, "priority", -1));
            }
        }
    }
    kick_group(g);  // ...and after
    return std::nullopt;
}

std::optional<std::string> Commands::add_group_client(const Json& cmd) {
    std::string username, groupname;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    if (auto e = name(cmd, "groupname", "Group name", groupname)) return e;
    const int priority = json_int(cmd, "priority", -1);
    kick(username);
    auto c = d_.clients_.find(username);
    if (c == d_.clients_.end()) return "Client not found";
    auto g = d_.groups_.find(groupname);
    if (g == d_.groups_.end()) return "Group not found";
    if (is_member(c->second, groupname)) return "Client is already in this group";
    add_membership(c->second, g->second, priority);
    return std::nullopt;
}

std::optional<std::string> Commands::remove_group_client(const Json& cmd) {
    std::string username, groupname;
    if (auto e = name(cmd, "username", "Username", username)) return e;
    if (auto e = name(cmd, "groupname", "Group name", groupname)) return e;
    kick(username);
    auto c = d_.clients_.find(username);
    if (c == d_.clients_.end()) return "Client not found";
    auto g = d_.groups_.find(groupname);
    if (g == d_.groups_.end()) return "Group not found";
    erase_ref(g->second.clients, username);
    erase_ref(c->second.groups, groupname);
    return std::nullopt;
}

std::optional<std::string> Commands::add_group_role(const Json& cmd) {
    std::string groupname, rolename;
    if (auto e = name(cmd, "groupname", "Group name", groupname)) return e;
    if (auto e = name(cmd, "rolename", "Role name", rolename)) return e;
    const int priority = json_int(cmd, "priority", -1);
    auto g = d_.groups_.find(groupname);
    if (g == d_.groups_.end()) return "Group not found";
    if (!d_.roles_.contains(rolename)) return "Role not found";
    auto& roles = g->second.roles;
    if (std::any_of(roles.begin(), roles.end(), [&](const Ref& r) { return r.name == rolename; })) {
        return "Group is already in this role";
    }
    insert_ref(roles, Ref{rolename, priority});
    kick_group(g->second);
    return std::nullopt;
}

std::optional<std::string> Commands::remove_group_role(const Json& cmd) {
    std::string groupname, rolename;
    if (auto e = name(cmd, "groupname", "Group name", groupname)) return e;
    if (auto e = name(cmd, "rolename", "Role name", rolename)) return e;
    auto g = d_.groups_.find(groupname);
    if (g == d_.groups_.end()) return "Group not found";
    if (!d_.roles_.contains(rolename)) return "Role not found";
    erase_ref(g->second.roles, rolename);
    kick_group(g->second);
    return std::nullopt;
}

std::optional<std::string> Commands::set_anonymous_group(const Json& cmd) {
    std::string groupname;
    if (auto e = name(cmd, "groupname", "Group name", groupname)) return e;
    if (!d_.groups_.contains(groupname)) return "Group not found";
    d_.anonymous_group_ = groupname;
    effects_.kick_anonymous = true;
    return std::nullopt;
}

std::optional<std::string> Commands::get_anonymous_group(const Json&) {
    data_ = OrderedJson{{"group", {{"groupname", d_.anonymous_group_.value_or("")}}}};
    return std::nullopt;
}

// ---- roles -----------------------------------------------------------------

OrderedJson Commands::role_json(const Role& r, bool verbose) const {
    if (!verbose) return r.name;
    OrderedJson j;
    j["rolename"] = r.name;
    add_text(j, "textname", r.text_name);
    add_text(j, "textdescription", r.text_description);
    j["acls"] = acls_to_json(r);
    return j;
}

std::optional<std::string> Commands::create_role(const Json& cmd) {
    Role r;
    if (auto e = name(cmd, "rolename", "Role name", r.name)) return e;
    if (auto e = optional_text(cmd, "textname", r.text_name)) return e;
    if (auto e = optional_text(cmd, "textdescription", r.text_description)) return e;
    if (d_.roles_.contains(r.name)) return "Role already exists";
    if (const Json* acls = json_find(cmd, "acls"); acls && acls->is_array()) acls_from_json(*acls, r);
    d_.roles_.emplace(r.name, std::move(r));
    return std::nullopt;
}

std::optional<std::string> Commands::get_role(const Json& cmd) {
    std::string rolename;
    if (auto e = name(cmd, "rolename", "Role name", rolename)) return e;
    auto it = d_.roles_.find(rolename);
    if (it == d_.roles_.end()) return "Role not found";
    data_ = OrderedJson{{"role", role_json(it->second, true)}};
    return std::nullopt;
}

std::optional<std::string> Commands::list_roles(const Json& cmd) {
    list(cmd, d_.roles_, "roles", [this](const Role& r, bool v) { return role_json(r, v); });
    return std::nullopt;
}

std::optional<std::string> Commands::modify_role(const Json& cmd) {
    std::string rolename;
    if (auto e = name(cmd, "rolename", "Role name", rolename)) return e;
    auto it = d_.roles_.find(rolename);
    if (it == d_.roles_.end()) return "Role does not exist";
    modify_text(cmd, "textname", it->second.text_name);
    modify_text(cmd, "textdescription", it->second.text_description);
    if (const Json* acls = json_find(cmd, "acls"); acls && acls->is_array()) {
        Role replaced;
        acls_from_json(*acls, replaced);
        it->second.acls = std::move(replaced.acls);
    }
    return std::nullopt;
}

std::optional<std::string> Commands::delete_role(const Json& cmd) {
    std::string rolename;
    if (auto e = name(cmd, "rolename", "Role name", rolename)) return e;
    auto it = d_.roles_.find(rolename);
    if (it == d_.roles_.end()) return "Role not found";
    for (auto& [username, c] : d_.clients_) {
        if (erase_ref(c.roles, rolename)) kick(username);
    }
    for (auto& [groupname, g] : d_.groups_) {
        if (erase_ref(g.roles, rolename)) kick_group(g);
    }
    d_.roles_.erase(it);
    return std::nullopt;
}

namespace {

// addRoleACL / removeRoleACL: role, acltype and topic, checked in
// Mosquitto's order.
std::optional<std::string> role_acl_target(const Json& cmd, std::map<std::string, Role, std::less<>>& roles,
                                           std::vector<Acl>*& list, std::string& topic) {
    std::string rolename;
    if (json_string(cmd, "rolename", rolename) != Field::ok) return "Invalid/missing rolename";
    if (!valid_name(rolename)) return "Role name not valid UTF-8";
    auto it = roles.find(rolename);
    if (it == roles.end()) return "Role not found";
    std::string type_name;
    if (json_string(cmd, "acltype", type_name) != Field::ok) return "Invalid/missing acltype";
    auto type = parse_acl_type(type_name);
    if (!type) return "Unknown acltype";
    list = &it->second.acls[static_cast<std::size_t>(*type)];
    if (json_string(cmd, "topic", topic) != Field::ok) return "Invalid/missing topic";
    if (!valid_name(topic)) return "Topic not valid UTF-8";
    if (!valid_filter(topic)) return "Invalid ACL topic";
    return std::nullopt;
}

}  // namespace

std::optional<std::string> Commands::add_role_acl(const Json& cmd) {
    std::vector<Acl>* list = nullptr;
    std::string topic;
    if (auto e = role_acl_target(cmd, d_.roles_, list, topic)) return e;
    if (std::any_of(list->begin(), list->end(), [&](const Acl& a) { return a.topic == topic; })) {
        return "ACL with this topic already exists";
    }
    insert_acl(*list, Acl{topic, json_int(cmd, "priority", 0), json_bool(cmd, "allow", false)});
    return std::nullopt;
}

std::optional<std::string> Commands::remove_role_acl(const Json& cmd) {
    std::vector<Acl>* list = nullptr;
    std::string topic;
    if (auto e = role_acl_target(cmd, d_.roles_, list, topic)) return e;
    auto it = std::find_if(list->begin(), list->end(), [&](const Acl& a) { return a.topic == topic; });
    if (it == list->end()) return "ACL not found";
    list->erase(it);
    return std::nullopt;
}

// ---- the request -----------------------------------------------------------

std::string Dynsec::handle_commands(std::string_view payload, Effects& effects, const std::string* file) {
    OrderedJson responses = OrderedJson::array();
    auto reply = [&](std::string_view command, std::string_view error) {
        responses.push_back(OrderedJson{{"command", command}, {"error", error}});
    };
    auto finish = [&] { return OrderedJson{{"responses", std::move(responses)}}.dump(); };

    const Json tree = Json::parse(payload.begin(), payload.end(), nullptr, false);
    if (tree.is_discarded()) {
        reply("Unknown command", "Payload not valid JSON");
        return finish();
    }
    const Json* commands = json_find(tree, "commands");
    if (!commands || !commands->is_array()) {
        reply("Unknown command", "Invalid/missing commands");
        return finish();
    }
    for (const auto& cmd : *commands) {
        if (!cmd.is_object()) {
            reply("Unknown command", "Command not an object");
            continue;
        }
        std::string command;
        if (json_string(cmd, "command", command) != Field::ok) {
            reply("Unknown command", "Missing command");
            continue;
        }
        std::optional<std::string> correlation;
        std::string cd;
        switch (json_string(cmd, "correlationData", cd)) {
        case Field::ok: correlation = std::move(cd); break;
        case Field::absent: break;
        case Field::invalid:
            // Mosquitto stops handling the request here.
            reply(command, "Invalid correlationData data type.");
            return finish();
        }
        const auto& table = Commands::table();
        auto entry = std::find_if(table.begin(), table.end(),
                                  [&](const Commands::Entry& e) { return ::strcasecmp(e.name, command.c_str()) == 0; });
        if (entry == table.end()) {
            OrderedJson r{{"command", command}, {"error", "Unknown command"}};
            if (correlation) r["correlationData"] = *correlation;
            responses.push_back(std::move(r));
            continue;
        }
        if (!entry->changes) {
            Effects none;
            Commands c(*this, none);
            responses.push_back(c.run(*entry, cmd, correlation));
            continue;
        }
        // A changing command is all or nothing: undone when it fails or
        // when the file cannot be written.
        Dynsec before = *this;
        Effects pending;
        Commands c(*this, pending);
        OrderedJson r = c.run(*entry, cmd, correlation);
        std::string save_error;
        if (!r.contains("error") && file && !save(*file, &save_error)) {
            r = OrderedJson{{"command", entry->name}, {"error", "Internal error: configuration not saved: " + save_error}};
            if (correlation) r["correlationData"] = *correlation;
        }
        if (r.contains("error")) {
            const std::uint64_t generation = generation_;
            *this = std::move(before);
            generation_ = generation;
            // A kick Mosquitto makes even on failure costs a reconnect,
            // nothing else: keep it only for what changed.
        } else {
            ++generation_;
            effects.changed = true;
            effects.kick_anonymous |= pending.kick_anonymous;
            for (auto& u : pending.kick_usernames) effects.kick_usernames.push_back(std::move(u));
        }
        responses.push_back(std::move(r));
    }
    return finish();
}

}  // namespace mqttools::auth::dynsec
