// Dynamic security: the file Mosquitto writes, the command API's answers
// and the ACL evaluation order of Mosquitto 2.0.11's plugin.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "broker/auth/dynsec.hpp"

using namespace mqttools::auth::dynsec;
using nlohmann::json;

namespace {

// Made by Debian's `mosquitto_ctrl dynsec init FILE admin secret` (2.0.11).
constexpr const char* mosquitto_init_file = R"({
	"clients":	[{
			"username":	"admin",
			"textName":	"Dynsec admin user",
			"password":	"UfTtWPfQ7lCnd7KWP9X69s8XU4wt9pQlsjEmb2CSmhCuE+aui7fzZ85f0mvnrD2DfXv66Y/XFAdldvM94Ewt1A==",
			"salt":	"13p6eu/sOy+Y20Ed",
			"iterations":	101,
			"roles":	[{
					"rolename":	"admin"
				}]
		}],
	"roles":	[{
			"rolename":	"admin",
			"acls":	[{
					"acltype":	"publishClientSend",
					"topic":	"$CONTROL/dynamic-security/#",
					"allow":	true
				}, {
					"acltype":	"publishClientReceive",
					"topic":	"$CONTROL/dynamic-security/#",
					"allow":	true
				}, {
					"acltype":	"subscribePattern",
					"topic":	"$CONTROL/dynamic-security/#",
					"allow":	true
				}, {
					"acltype":	"publishClientReceive",
					"topic":	"$SYS/#",
					"allow":	true
				}, {
					"acltype":	"subscribePattern",
					"topic":	"$SYS/#",
					"allow":	true
				}, {
					"acltype":	"publishClientReceive",
					"topic":	"#",
					"allow":	true
				}, {
					"acltype":	"subscribePattern",
					"topic":	"#",
					"allow":	true
				}, {
					"acltype":	"unsubscribePattern",
					"topic":	"#",
					"allow":	true
				}]
		}],
	"defaultACLAccess":	{
		"publishClientSend":	false,
		"publishClientReceive":	true,
		"subscribe":	false,
		"unsubscribe":	true
	}
})";

// Runs one command; returns its response object.
json run(Dynsec& d, json command, Effects* effects = nullptr) {
    Effects local;
    const std::string out = d.handle_commands(json{{"commands", json::array({command})}}.dump(), effects ? *effects : local);
    json r = json::parse(out);
    REQUIRE(r["responses"].size() == 1);
    return r["responses"][0];
}

std::string error_of(const json& r) { return r.contains("error") ? r["error"].get<std::string>() : ""; }

}  // namespace

TEST_CASE("a file made by mosquitto_ctrl dynsec init loads unchanged", "[dynsec]") {
    Dynsec d = Dynsec::parse(mosquitto_init_file);
    REQUIRE(d.clients().size() == 1);
    const Client& admin = d.clients().at("admin");
    CHECK(admin.text_name == "Dynsec admin user");  // "textName": keys are case-insensitive
    REQUIRE(admin.password);
    CHECK(admin.password->iterations == 101);
    CHECK(d.authenticate("admin", "secret", "any-id") == AuthResult::allowed);
    CHECK(d.authenticate("admin", "wrong", "any-id") == AuthResult::denied);
    CHECK(d.authenticate("nobody", "secret", "x") == AuthResult::unknown);
    CHECK(d.default_access().publish_client_receive);
    CHECK_FALSE(d.default_access().publish_client_send);

    DynsecAcl a = d.bind(std::string_view("admin"));
    CHECK(a.can_publish("$CONTROL/dynamic-security/v1"));
    CHECK_FALSE(a.can_publish("a/b"));  // default: no publishing
    CHECK(a.can_subscribe("$CONTROL/dynamic-security/#"));
    CHECK(a.can_subscribe("x/#"));
    CHECK(a.can_receive("$CONTROL/dynamic-security/v1/response"));

    // Round trip: what we write reads back the same.
    Dynsec again = Dynsec::parse(d.to_json());
    CHECK(again.to_json() == d.to_json());
    CHECK(again.authenticate("admin", "secret", "") == AuthResult::allowed);
}

TEST_CASE("make_initial matches mosquitto_ctrl's init", "[dynsec]") {
    auto d = Dynsec::make_initial("boss", "pw", 101);
    REQUIRE(d);
    json ours = json::parse(d->to_json());
    json theirs = json::parse(Dynsec::parse(mosquitto_init_file).to_json());
    // Same roles and defaults; the client differs only in name, salt, hash.
    CHECK(ours["roles"] == theirs["roles"]);
    CHECK(ours["defaultACLAccess"] == theirs["defaultACLAccess"]);
    CHECK(d->authenticate("boss", "pw", "c") == AuthResult::allowed);
}

TEST_CASE("bad files are refused with the file's name; odd entries skipped", "[dynsec]") {
    CHECK_THROWS_WITH(Dynsec::parse("{nope", "f.json"), Catch::Contains("f.json"));
    CHECK_THROWS(Dynsec::parse("[1,2]"));
    CHECK(Dynsec::parse("").clients().empty());
    Dynsec d = Dynsec::parse(R"({"clients":[{"username":"a","salt":"AAAA","password":"AAAA","iterations":1},
        {"nousername":1}, {"username":"b","roles":[{"rolename":"missing"}]}], "roles":[{"rolename":3}]})");
    CHECK_FALSE(d.clients().contains("a"));  // bad salt length: skipped, as Mosquitto
    REQUIRE(d.clients().contains("b"));
    CHECK(d.clients().at("b").roles.empty());
    CHECK(d.roles().empty());
    CHECK(d.authenticate("b", "", "") == AuthResult::unknown);  // no password
}

TEST_CASE("command API answers as Mosquitto 2.0.11", "[dynsec]") {
    Dynsec d;
    Effects fx;
    auto r = run(d, {{"command", "createClient"}, {"username", "u1"}, {"password", "p1"}, {"correlationData", "c1"}});
    CHECK(r == json{{"command", "createClient"}, {"correlationData", "c1"}});
    CHECK(error_of(run(d, {{"command", "createClient"}, {"username", "u1"}})) == "Client already exists");
    CHECK(error_of(run(d, {{"command", "createClient"}})) == "Invalid/missing username");
    CHECK(error_of(run(d, {{"command", "createClient"}, {"username", "x"}, {"password", 5}})) ==
          "Invalid/missing password");
    CHECK(error_of(run(d, {{"command", "createClient"}, {"username", "x"}, {"roles", json::array({{{"rolename", "r"}}})}})) ==
          "Role not found");
    CHECK_FALSE(d.clients().contains("x"));  // a failed command changes nothing
    CHECK(error_of(run(d, {{"command", "createClient"}, {"username", "a\x01"}})) == "Username not valid UTF-8");
    CHECK(error_of(run(d, {{"command", "nosuch"}, {"correlationData", "z"}})) == "Unknown command");
    CHECK(error_of(run(d, {{"command", "getClient"}, {"username", "zz"}})) == "Client not found");
    CHECK(error_of(run(d, {{"command", "setClientPassword"}, {"username", "u1"}, {"password", ""}})) ==
          "Empty password is not allowed");
    CHECK(error_of(run(d, {{"command", "modifyRole"}, {"rolename", "none"}})) == "Role does not exist");
    CHECK(error_of(run(d, {{"command", "setDefaultACLAccess"}})) == "Missing/invalid actions array");

    CHECK(error_of(run(d, {{"command", "createRole"}, {"rolename", "r"}})).empty());
    CHECK(error_of(run(d, {{"command", "addRoleACL"}, {"rolename", "r"}, {"acltype", "bogus"}, {"topic", "a"}})) ==
          "Unknown acltype");
    CHECK(error_of(run(d, {{"command", "addRoleACL"}, {"rolename", "r"}, {"acltype", "publishClientSend"}, {"topic", "a/#/b"}})) ==
          "Invalid ACL topic");
    CHECK(error_of(run(d, {{"command", "addRoleACL"}, {"rolename", "r"}, {"acltype", "publishClientSend"}})) ==
          "Invalid/missing topic");
    CHECK(error_of(run(d, {{"command", "addRoleACL"}, {"rolename", "r"}, {"acltype", "publishClientSend"},
                           {"topic", "a/#"}, {"allow", true}})).empty());
    CHECK(error_of(run(d, {{"command", "addRoleACL"}, {"rolename", "r"}, {"acltype", "publishClientSend"},
                           {"topic", "a/#"}})) == "ACL with this topic already exists");
    CHECK(error_of(run(d, {{"command", "removeRoleACL"}, {"rolename", "r"}, {"acltype", "publishClientSend"},
                           {"topic", "b"}})) == "ACL not found");

    // Roles change: the client is disconnected.
    Effects kick;
    CHECK(error_of(run(d, {{"command", "addClientRole"}, {"username", "u1"}, {"rolename", "r"}}, &kick)).empty());
    CHECK(kick.kick_usernames == std::vector<std::string>{"u1"});
    CHECK(kick.changed);

    auto get = run(d, {{"command", "getClient"}, {"username", "u1"}});
    CHECK(get["data"]["client"] == json{{"username", "u1"}, {"roles", json::array({{{"rolename", "r"}}})}, {"groups", json::array()}});
    auto list = run(d, {{"command", "listClients"}});
    CHECK(list["data"] == json{{"totalCount", 1}, {"clients", json::array({"u1"})}});
    auto role = run(d, {{"command", "getRole"}, {"rolename", "r"}});
    CHECK(role["data"]["role"]["acls"] ==
          json::array({{{"acltype", "publishClientSend"}, {"topic", "a/#"}, {"priority", 0}, {"allow", true}}}));
    auto def = run(d, {{"command", "getDefaultACLAccess"}});
    CHECK(def["data"]["acls"].size() == 4);

    // Groups and the anonymous group.
    CHECK(error_of(run(d, {{"command", "createGroup"}, {"groupname", "g"}})).empty());
    CHECK(error_of(run(d, {{"command", "addGroupClient"}, {"groupname", "g"}, {"username", "u1"}})).empty());
    CHECK(error_of(run(d, {{"command", "addGroupClient"}, {"groupname", "g"}, {"username", "u1"}})) ==
          "Client is already in this group");
    CHECK(error_of(run(d, {{"command", "addGroupRole"}, {"groupname", "g"}, {"rolename", "r"}})).empty());
    CHECK(error_of(run(d, {{"command", "addGroupRole"}, {"groupname", "g"}, {"rolename", "r"}})) ==
          "Group is already in this role");
    auto group = run(d, {{"command", "getGroup"}, {"groupname", "g"}});
    CHECK(group["data"]["group"]["clients"] == json::array({{{"username", "u1"}}}));
    CHECK(error_of(run(d, {{"command", "setAnonymousGroup"}, {"groupname", "g"}})).empty());
    CHECK(run(d, {{"command", "getAnonymousGroup"}})["data"]["group"]["groupname"] == "g");
    CHECK(error_of(run(d, {{"command", "deleteGroup"}, {"groupname", "g"}})).empty());
    CHECK(run(d, {{"command", "getAnonymousGroup"}})["data"]["group"]["groupname"] == "");
    CHECK(d.clients().at("u1").groups.empty());

    // Disable, delete.
    Effects off;
    CHECK(error_of(run(d, {{"command", "disableClient"}, {"username", "u1"}}, &off)).empty());
    CHECK(off.kick_usernames == std::vector<std::string>{"u1"});
    CHECK(d.authenticate("u1", "p1", "") == AuthResult::denied);
    CHECK(error_of(run(d, {{"command", "enableClient"}, {"username", "u1"}})).empty());
    CHECK(d.authenticate("u1", "p1", "") == AuthResult::allowed);
    CHECK(error_of(run(d, {{"command", "setClientId"}, {"username", "u1"}, {"clientid", "only"}})).empty());
    CHECK(d.authenticate("u1", "p1", "other") == AuthResult::denied);
    CHECK(d.authenticate("u1", "p1", "only") == AuthResult::allowed);
    CHECK(error_of(run(d, {{"command", "deleteRole"}, {"rolename", "r"}})).empty());
    CHECK(d.clients().at("u1").roles.empty());
    CHECK(error_of(run(d, {{"command", "deleteClient"}, {"username", "u1"}})).empty());
    CHECK(error_of(run(d, {{"command", "deleteClient"}, {"username", "u1"}})) == "Client not found");
}

TEST_CASE("malformed requests get errors, never a crash", "[dynsec]") {
    Dynsec d;
    Effects fx;
    auto parse = [&](std::string_view payload) { return json::parse(d.handle_commands(payload, fx)); };
    CHECK(parse("not json")["responses"][0] == json{{"command", "Unknown command"}, {"error", "Payload not valid JSON"}});
    CHECK(parse("{}")["responses"][0]["error"] == "Invalid/missing commands");
    CHECK(parse(R"({"commands":[1]})")["responses"][0]["error"] == "Command not an object");
    CHECK(parse(R"({"commands":[{}]})")["responses"][0]["error"] == "Missing command");
    CHECK(parse(R"({"commands":[{"command":"listClients","correlationData":7}]})")["responses"][0]["error"] ==
          "Invalid correlationData data type.");
    // Every command with every field of the wrong type.
    for (const char* c : {"createClient", "deleteClient", "getClient", "modifyClient", "setClientId", "setClientPassword",
                          "addClientRole", "removeClientRole", "enableClient", "disableClient", "createGroup",
                          "deleteGroup", "getGroup", "modifyGroup", "addGroupClient", "removeGroupClient",
                          "addGroupRole", "removeGroupRole", "setAnonymousGroup", "createRole", "getRole",
                          "modifyRole", "deleteRole", "addRoleACL", "removeRoleACL", "setDefaultACLAccess"}) {
        json bad{{"command", c},     {"username", 1},  {"groupname", json::array()}, {"rolename", json::object()},
                 {"password", true}, {"clientid", 2},  {"roles", "x"},               {"groups", 3},
                 {"acls", 4},        {"acltype", 5},   {"topic", 6},                 {"priority", "high"}};
        auto r = json::parse(d.handle_commands(json{{"commands", json::array({bad})}}.dump(), fx));
        INFO(c);
        CHECK(r["responses"][0].contains("error"));
    }
    json listing = json::parse(d.handle_commands(
        R"({"commands":[{"command":"listRoles","count":"x","offset":-5,"verbose":"y"},{"command":"listGroups","count":0}]})", fx));
    CHECK(listing["responses"].size() == 2);
}

TEST_CASE("ACL evaluation follows Mosquitto's order", "[dynsec]") {
    Dynsec d = Dynsec::parse(R"({
      "defaultACLAccess": {"publishClientSend": false, "publishClientReceive": true, "subscribe": false, "unsubscribe": true},
      "clients": [{"username": "u", "roles": [{"rolename": "low", "priority": 1}, {"rolename": "high", "priority": 5}]},
                  {"username": "v"}],
      "groups": [{"groupname": "g1", "roles": [{"rolename": "grp"}], "clients": [{"username": "u", "priority": 2}, {"username": "v"}]},
                 {"groupname": "anon", "roles": [{"rolename": "anonrole"}]}],
      "anonymousGroup": "anon",
      "roles": [
        {"rolename": "high", "acls": [
          {"acltype": "publishClientSend", "topic": "a/#", "priority": 1, "allow": false},
          {"acltype": "publishClientSend", "topic": "a/ok", "priority": 9, "allow": true},
          {"acltype": "subscribeLiteral", "topic": "s/+", "allow": true},
          {"acltype": "subscribePattern", "topic": "s/#", "allow": false},
          {"acltype": "publishClientReceive", "topic": "secret/#", "allow": false}]},
        {"rolename": "low", "acls": [
          {"acltype": "publishClientSend", "topic": "a/#", "allow": true},
          {"acltype": "publishClientSend", "topic": "b/#", "allow": true}]},
        {"rolename": "grp", "acls": [
          {"acltype": "publishClientSend", "topic": "b/#", "allow": false},
          {"acltype": "publishClientSend", "topic": "c/#", "allow": true},
          {"acltype": "unsubscribePattern", "topic": "keep/#", "allow": false}]},
        {"rolename": "anonrole", "acls": [{"acltype": "publishClientSend", "topic": "public/#", "allow": true}]}
      ]})");
    DynsecAcl u = d.bind(std::string_view("u"));
    // In a role, higher-priority ACLs first: a/ok (9, allow) before a/# (1, deny).
    CHECK(u.can_publish("a/ok"));
    // The client's higher-priority role decides before the lower: "high" denies a/x.
    CHECK_FALSE(u.can_publish("a/x"));
    // The client's own roles before its groups': "low" allows b/...
    CHECK(u.can_publish("b/1"));
    // ...and the group's roles after them: c/ from grp.
    CHECK(u.can_publish("c/1"));
    CHECK_FALSE(u.can_publish("d/1"));                    // default deny
    CHECK_FALSE(d.bind(std::string_view("v")).can_publish("b/1"));  // v only has grp: deny
    // Subscribe: a literal ACL is an exact string; patterns cover filters.
    CHECK(u.can_subscribe("s/+"));
    CHECK_FALSE(u.can_subscribe("s/x"));
    CHECK_FALSE(u.can_subscribe("t"));
    CHECK(u.can_unsubscribe("t"));
    CHECK_FALSE(u.can_unsubscribe("keep/x"));
    CHECK_FALSE(u.can_receive("secret/x"));
    CHECK(u.can_receive("other"));
    // Default access never opens $CONTROL.
    CHECK_FALSE(u.can_receive("$CONTROL/dynamic-security/v1/response"));
    // Anonymous clients use the anonymous group; unknown usernames get nothing.
    DynsecAcl anon = d.bind(std::nullopt);
    CHECK(anon.can_publish("public/x"));
    CHECK_FALSE(anon.can_publish("a/ok"));
    DynsecAcl stranger = d.bind(std::string_view("stranger"));
    CHECK_FALSE(stranger.can_receive("other"));
    CHECK_FALSE(stranger.can_unsubscribe("t"));
}

TEST_CASE("subscribe pattern matching as Mosquitto's sub_acl_check", "[dynsec]") {
    CHECK_FALSE(sub_acl_matches("foo/+/bar", "foo/#"));
    CHECK(sub_acl_matches("foo/+/ba℞/#", "foo/baz/ba℞"));
    CHECK(sub_acl_matches("foo/+/ba℞/#", "foo/baz/ba℞/+"));
    CHECK(sub_acl_matches("foo/+/ba℞/#", "foo/baz/ba℞/#"));
    CHECK_FALSE(sub_acl_matches("foo/+/ba℞/#", "foo/baz/+/#"));
    CHECK(sub_acl_matches("/+//#", "/foo///#"));
    CHECK(sub_acl_matches("#", "#"));
    CHECK(sub_acl_matches("#", "+"));
    CHECK_FALSE(sub_acl_matches("/#", "+"));
    CHECK(sub_acl_matches("/#", "/+"));
    CHECK_FALSE(sub_acl_matches("/+", "#"));
    CHECK_FALSE(sub_acl_matches("/+", "+"));
    CHECK(sub_acl_matches("+/+", "topic/topic"));
    CHECK_FALSE(sub_acl_matches("+/+", "topic/topic/"));
    CHECK_FALSE(sub_acl_matches("+", "#"));
    CHECK(sub_acl_matches("+", "+"));
    CHECK(sub_acl_matches("a/b/c/d/e", "a/b/c/d/e"));
    CHECK_FALSE(sub_acl_matches("a/b/ /d/e", "a/b/c/d/e"));
}

TEST_CASE("changes are saved atomically; a failed save undoes the change", "[dynsec]") {
    char dir[] = "/tmp/dynsec-test-XXXXXX";
    REQUIRE(::mkdtemp(dir));
    const std::string file = std::string(dir) + "/dynamic-security.json";
    auto d = Dynsec::make_initial("admin", "pw");
    REQUIRE(d);
    REQUIRE(d->save(file, nullptr));
    Effects fx;
    d->handle_commands(R"({"commands":[{"command":"createClient","username":"n","password":"p"}]})", fx, &file);
    Dynsec loaded = Dynsec::load(file);
    CHECK(loaded.authenticate("n", "p", "") == AuthResult::allowed);
    CHECK(::access((file + ".new").c_str(), F_OK) != 0);

    const std::string unwritable = std::string(dir) + "/missing-dir/x.json";
    json r = json::parse(d->handle_commands(R"({"commands":[{"command":"createClient","username":"m"}]})", fx, &unwritable));
    CHECK(r["responses"][0]["error"].get<std::string>().starts_with("Internal error"));
    CHECK_FALSE(d->clients().contains("m"));
    std::remove(file.c_str());
    ::rmdir(dir);
}
