// dynamic-security.json: reading it as Mosquitto 2.0.11's plugin does
// (entries it would skip are skipped, references to missing roles are
// dropped) and writing it in the plugin's layout, atomically.
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "broker/auth/dynsec.hpp"
#include "broker/auth/dynsec_json.hpp"
#include "broker/auth/password_hash.hpp"
#include "broker/auth/pbkdf2_sha512.hpp"

namespace mqttools::auth::dynsec {

namespace {

constexpr std::array<std::string_view, acl_type_count> acl_names = {
    "publishClientSend",  "publishClientReceive", "subscribeLiteral",
    "subscribePattern",   "unsubscribeLiteral",   "unsubscribePattern",
};

std::optional<std::string> optional_string(const Json& object, std::string_view key) {
    std::string s;
    if (json_string(object, key, s) == Field::ok) return s;
    return std::nullopt;
}

template <std::size_t N>
bool decode_exact(const Json& j, std::array<unsigned char, N>& out) {
    auto bytes = base64_decode(j.get<std::string>());
    if (!bytes || bytes->size() != N) return false;
    std::copy(bytes->begin(), bytes->end(), out.begin());
    return true;
}

// "roles": [{"rolename": R, "priority": P}] -> refs to roles that exist.
std::vector<Ref> load_role_refs(const Json& owner, const std::map<std::string, Role, std::less<>>& roles) {
    std::vector<Ref> refs;
    const Json* j = json_find(owner, "roles");
    if (!j || !j->is_array()) return refs;
    for (const auto& r : *j) {
        if (!r.is_object()) continue;
        std::string name;
        if (json_string(r, "rolename", name) != Field::ok || !roles.contains(name)) continue;
        if (std::any_of(refs.begin(), refs.end(), [&](const Ref& x) { return x.name == name; })) continue;
        insert_ref(refs, Ref{name, json_int(r, "priority", -1)});
    }
    return refs;
}

void write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        const ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw std::runtime_error(std::strerror(errno));
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

}  // namespace

void acls_from_json(const Json& j_acls, Role& role) {
    for (const auto& a : j_acls) {
        std::string type_name;
        if (!a.is_object() || json_string(a, "acltype", type_name) != Field::ok) continue;
        auto type = parse_acl_type(type_name);
        if (!type) continue;
        Acl acl;
        if (json_string(a, "topic", acl.topic) != Field::ok) continue;
        acl.priority = json_int(a, "priority", 0);
        acl.allow = json_bool(a, "allow", false);
        insert_acl(role.acls[static_cast<std::size_t>(*type)], std::move(acl));
    }
}

OrderedJson refs_to_json(const std::vector<Ref>& refs, const char* key) {
    OrderedJson out = OrderedJson::array();
    for (const auto& r : refs) {
        OrderedJson o;
        o[key] = r.name;
        if (r.priority != -1) o["priority"] = r.priority;
        out.push_back(std::move(o));
    }
    return out;
}

OrderedJson acls_to_json(const Role& role) {
    OrderedJson acls = OrderedJson::array();
    for (std::size_t t = 0; t < acl_type_count; ++t) {
        for (const auto& a : role.acls[t]) {
            acls.push_back(OrderedJson{
                {"acltype", acl_names[t]}, {"topic", a.topic}, {"priority", a.priority}, {"allow", a.allow}});
        }
    }
    return acls;
}

std::string_view acl_type_name(AclType type) noexcept { return acl_names[static_cast<std::size_t>(type)]; }

std::optional<AclType> parse_acl_type(std::string_view name) noexcept {
    for (std::size_t i = 0; i < acl_names.size(); ++i) {
        if (name.size() == acl_names[i].size() && ::strncasecmp(name.data(), acl_names[i].data(), name.size()) == 0) {
            return static_cast<AclType>(i);
        }
    }
    return std::nullopt;
}

void insert_ref(std::vector<Ref>& refs, Ref ref) {
    auto it = std::find_if(refs.begin(), refs.end(), [&](const Ref& r) {
        return r.priority < ref.priority || (r.priority == ref.priority && r.name > ref.name);
    });
    refs.insert(it, std::move(ref));
}

void insert_by_name(std::vector<Ref>& refs, Ref ref) {
    auto it = std::find_if(refs.begin(), refs.end(), [&](const Ref& r) { return r.name > ref.name; });
    refs.insert(it, std::move(ref));
}

bool erase_ref(std::vector<Ref>& refs, std::string_view name) {
    auto it = std::find_if(refs.begin(), refs.end(), [&](const Ref& r) { return r.name == name; });
    if (it == refs.end()) return false;
    refs.erase(it);
    return true;
}

void insert_acl(std::vector<Acl>& acls, Acl acl) {
    auto it = std::find_if(acls.begin(), acls.end(), [&](const Acl& a) { return a.priority < acl.priority; });
    acls.insert(it, std::move(acl));
}

bool Dynsec::set_password(Client& client, std::string_view password, int iterations) {
    Password pw;
    if (RAND_bytes(pw.salt.data(), static_cast<int>(pw.salt.size())) != 1) return false;
    pw.iterations = iterations;
    pbkdf2_sha512(password, pw.salt, iterations, pw.hash);
    client.password = pw;
    return true;
}

Dynsec Dynsec::load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot read: " + std::strerror(errno));
    std::stringstream text;
    text << in.rdbuf();
    return parse(text.str(), path);
}

Dynsec Dynsec::parse(std::string_view json_text, std::string_view source) {
    Dynsec d;
    // An empty file is an empty configuration (as in Mosquitto).
    if (json_text.find_first_not_of(" \t\r\n") == std::string_view::npos) return d;
    Json tree = Json::parse(json_text.begin(), json_text.end(), nullptr, false);
    if (tree.is_discarded() || !tree.is_object()) {
        throw std::runtime_error(std::string(source) + ": not a valid dynamic-security JSON object");
    }
    if (const Json* def = json_find(tree, "defaultACLAccess"); def && def->is_object()) {
        d.default_access_.publish_client_send = json_bool(*def, "publishClientSend", false);
        d.default_access_.publish_client_receive = json_bool(*def, "publishClientReceive", false);
        d.default_access_.subscribe = json_bool(*def, "subscribe", false);
        d.default_access_.unsubscribe = json_bool(*def, "unsubscribe", false);
    }
    // Roles first: clients and groups refer to them.
    if (const Json* roles = json_find(tree, "roles"); roles && roles->is_array()) {
        for (const auto& r : *roles) {
            if (!r.is_object()) continue;
            Role role;
            if (json_string(r, "rolename", role.name) != Field::ok) continue;
            role.text_name = optional_string(r, "textname");
            role.text_description = optional_string(r, "textdescription");
            if (const Json* acls = json_find(r, "acls"); acls && acls->is_array()) acls_from_json(*acls, role);
            d.roles_.try_emplace(role.name, std::move(role));
        }
    }
    if (const Json* clients = json_find(tree, "clients"); clients && clients->is_array()) {
        for (const auto& c : *clients) {
            if (!c.is_object()) continue;
            Client client;
            if (json_string(c, "username", client.username) != Field::ok) continue;
            client.disabled = json_bool(c, "disabled", false);
            const Json* salt = json_find(c, "salt");
            const Json* hash = json_find(c, "password");
            const Json* iterations = json_find(c, "iterations");
            if (salt && salt->is_string() && hash && hash->is_string() && iterations && iterations->is_number()) {
                Password pw;
                pw.iterations = json_number_to_int(*iterations);
                // Mosquitto skips the whole client when these are bad.
                if (pw.iterations < 1 || !decode_exact(*salt, pw.salt) || !decode_exact(*hash, pw.hash)) continue;
                client.password = pw;
            }
            client.clientid = optional_string(c, "clientid");
            client.text_name = optional_string(c, "textname");
            client.text_description = optional_string(c, "textdescription");
            client.roles = load_role_refs(c, d.roles_);
            d.clients_.try_emplace(client.username, std::move(client));
        }
    }
    if (const Json* groups = json_find(tree, "groups"); groups && groups->is_array()) {
        for (const auto& g : *groups) {
            if (!g.is_object()) continue;
            Group group;
            if (json_string(g, "groupname", group.name) != Field::ok) continue;
            if (d.groups_.contains(group.name)) continue;
            group.text_name = optional_string(g, "textname");
            group.text_description = optional_string(g, "textdescription");
            group.roles = load_role_refs(g, d.roles_);
            if (const Json* members = json_find(g, "clients"); members && members->is_array()) {
                for (const auto& m : *members) {
                    std::string username;
                    if (!m.is_object() || json_string(m, "username", username) != Field::ok) continue;
                    auto client = d.clients_.find(username);
                    if (client == d.clients_.end()) continue;
                    if (std::any_of(group.clients.begin(), group.clients.end(),
                                    [&](const Ref& r) { return r.name == username; })) {
                        continue;
                    }
                    const int priority = json_int(m, "priority", -1);
                    insert_by_name(group.clients, Ref{username, priority});
                    insert_ref(client->second.groups, Ref{group.name, priority});
                }
            }
            d.groups_.try_emplace(group.name, std::move(group));
        }
    }
    std::string anonymous;
    if (json_string(tree, "anonymousGroup", anonymous) == Field::ok && d.groups_.contains(anonymous)) {
        d.anonymous_group_ = anonymous;
    }
    return d;
}

std::string Dynsec::to_json() const {
    OrderedJson tree;
    tree["defaultACLAccess"] = {
        {"publishClientSend", default_access_.publish_client_send},
        {"publishClientReceive", default_access_.publish_client_receive},
        {"subscribe", default_access_.subscribe},
        {"unsubscribe", default_access_.unsubscribe},
    };
    OrderedJson clients = OrderedJson::array();
    for (const auto& [name, c] : clients_) {
        OrderedJson j;
        j["username"] = c.username;
        if (c.clientid) j["clientid"] = *c.clientid;
        if (c.text_name) j["textname"] = *c.text_name;
        if (c.text_description) j["textdescription"] = *c.text_description;
        if (c.disabled) j["disabled"] = true;
        j["roles"] = refs_to_json(c.roles, "rolename");
        if (c.password) {
            j["password"] = base64_encode(c.password->hash);
            j["salt"] = base64_encode(c.password->salt);
            j["iterations"] = c.password->iterations;
        }
        clients.push_back(std::move(j));
    }
    tree["clients"] = std::move(clients);
    OrderedJson groups = OrderedJson::array();
    for (const auto& [name, g] : groups_) {
        OrderedJson j;
        j["groupname"] = g.name;
        if (g.text_name) j["textname"] = *g.text_name;
        if (g.text_description) j["textdescription"] = *g.text_description;
        j["roles"] = refs_to_json(g.roles, "rolename");
        j["clients"] = refs_to_json(g.clients, "username");
        groups.push_back(std::move(j));
    }
    tree["groups"] = std::move(groups);
    if (anonymous_group_) tree["anonymousGroup"] = *anonymous_group_;
    OrderedJson roles = OrderedJson::array();
    for (const auto& [name, r] : roles_) {
        OrderedJson j;
        j["rolename"] = r.name;
        if (r.text_name) j["textname"] = *r.text_name;
        if (r.text_description) j["textdescription"] = *r.text_description;
        j["acls"] = acls_to_json(r);
        roles.push_back(std::move(j));
    }
    tree["roles"] = std::move(roles);
    return tree.dump(1, '\t') + "\n";
}

bool Dynsec::save(const std::string& path, std::string* error) const {
    const std::string temp = path + ".new";
    const std::string text = to_json();
    // 0600: the file holds password hashes.
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (error) *error = temp + ": " + std::strerror(errno);
        return false;
    }
    try {
        write_all(fd, text);
        if (::fsync(fd) != 0) throw std::runtime_error(std::strerror(errno));
    } catch (const std::exception& e) {
        ::close(fd);
        ::unlink(temp.c_str());
        if (error) *error = temp + ": " + e.what();
        return false;
    }
    ::close(fd);
    if (::rename(temp.c_str(), path.c_str()) != 0) {
        if (error) *error = path + ": rename: " + std::strerror(errno);
        ::unlink(temp.c_str());
        return false;
    }
    // The rename itself must survive a crash: sync the directory.
    const auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
    return true;
}

std::optional<Dynsec> Dynsec::make_initial(std::string_view username, std::string_view password, int iterations) {
    Dynsec d;
    // As mosquitto_ctrl dynsec init: clients may not publish or subscribe
    // unless a role allows it; they may receive and unsubscribe.
    d.default_access_ = DefaultAccess{false, true, false, true};
    Role admin;
    admin.name = "admin";
    auto allow = [&](AclType t, std::string_view topic) {
        admin.acls[static_cast<std::size_t>(t)].push_back(Acl{std::string(topic), 0, true});
    };
    allow(AclType::publish_client_send, "$CONTROL/dynamic-security/#");
    allow(AclType::publish_client_receive, "$CONTROL/dynamic-security/#");
    allow(AclType::publish_client_receive, "$SYS/#");
    allow(AclType::publish_client_receive, "#");
    allow(AclType::subscribe_pattern, "$CONTROL/dynamic-security/#");
    allow(AclType::subscribe_pattern, "$SYS/#");
    allow(AclType::subscribe_pattern, "#");
    allow(AclType::unsubscribe_pattern, "#");
    d.roles_.emplace(admin.name, std::move(admin));
    Client client;
    client.username = std::string(username);
    client.text_name = "Dynsec admin user";
    client.roles.push_back(Ref{"admin", -1});
    if (!set_password(client, password, iterations)) return std::nullopt;
    d.clients_.emplace(client.username, std::move(client));
    return d;
}

}  // namespace mqttools::auth::dynsec
