#include <catch2/catch.hpp>

#include "broker/auth/acl.hpp"
#include "broker/auth/topic_filter.hpp"
#include "test_support.hpp"

using namespace mqttools::auth;

TEST_CASE("topic filter relations", "[auth][acl]") {
    CHECK(valid_filter("a/+/c/#"));
    CHECK(valid_filter("#"));
    CHECK(valid_filter("/"));
    CHECK_FALSE(valid_filter("a/#/c"));
    CHECK_FALSE(valid_filter("a/b+"));
    CHECK_FALSE(valid_filter("a#"));
    CHECK_FALSE(valid_filter(""));

    CHECK(topic_matches("a/#", "a"));
    CHECK(topic_matches("a/#", "a/b/c"));
    CHECK(topic_matches("a/+/c", "a/b/c"));
    CHECK(topic_matches("+/+", "/x"));
    CHECK_FALSE(topic_matches("a/+", "a/b/c"));
    CHECK_FALSE(topic_matches("a/b", "a"));
    CHECK_FALSE(topic_matches("#", "$SYS/x"));        // [MQTT-4.7.2-1]
    CHECK_FALSE(topic_matches("+/x", "$SYS/x"));
    CHECK(topic_matches("$SYS/#", "$SYS/x"));

    CHECK(filters_intersect("a/+", "+/b"));
    CHECK(filters_intersect("a/#", "a"));
    CHECK(filters_intersect("#", "x/y"));
    CHECK_FALSE(filters_intersect("a/+", "b/#"));
    CHECK_FALSE(filters_intersect("a/+", "a/b/c"));
    CHECK_FALSE(filters_intersect("#", "$SYS/#"));
    CHECK(filters_intersect("$SYS/+", "$SYS/#"));

    CHECK(filter_covers("a/#", "a/b/+"));
    CHECK(filter_covers("a/#", "a"));
    CHECK(filter_covers("a/+", "a/b"));
    CHECK(filter_covers("+/+", "+/b"));
    CHECK_FALSE(filter_covers("a/+", "a/#"));
    CHECK_FALSE(filter_covers("a/b", "a/+"));
    CHECK_FALSE(filter_covers("#", "$SYS/x"));

    CHECK(strip_shared_prefix("$share/g/a/b") == "a/b");
    CHECK(strip_shared_prefix("a/b") == "a/b");
}

TEST_CASE("no ACL allows everything", "[auth][acl]") {
    AclChecker acl;
    CHECK_FALSE(acl.enabled());
    CHECK(acl.can_publish("c", std::nullopt, "any/thing"));
    CHECK(acl.can_subscribe("c", "u", "#"));
    CHECK(acl.can_read("c", "u", "$SYS/x"));
}

namespace {
constexpr const char* acl_text = R"(# Mosquitto style ACL
# anonymous clients: only the public tree, read only
topic read public/#

user alice
topic readwrite alice/#
topic write sensors/+/cmd
topic sensors/#
topic deny sensors/secret/#

user bob with spaces
topic read shared/topic with spaces

pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern write users/%u/outbox/%c
)";
}

TEST_CASE("ACL file rules", "[auth][acl]") {
    const auto acl = AclChecker::parse(acl_text);
    REQUIRE(acl.enabled());
    const std::optional<std::string_view> anon;

    SECTION("anonymous rules apply to clients without a username only") {
        CHECK(acl.can_read("c1", anon, "public/news"));
        CHECK_FALSE(acl.can_publish("c1", anon, "public/news"));
        CHECK(acl.can_subscribe("c1", anon, "public/+"));
        CHECK(acl.can_subscribe("c1", anon, "#"));  // overlaps public/#: filtered at delivery
        CHECK_FALSE(acl.can_read("c1", anon, "private/x"));
        CHECK_FALSE(acl.can_subscribe("c1", anon, "private/#"));
        CHECK_FALSE(acl.can_read("c1", "alice", "public/news"));
    }
    SECTION("user rules, access words and the default readwrite") {
        CHECK(acl.can_publish("a", "alice", "alice/x/y"));
        CHECK(acl.can_read("a", "alice", "alice/x/y"));
        CHECK(acl.can_publish("a", "alice", "sensors/1/cmd"));
        CHECK(acl.can_read("a", "alice", "sensors/1/cmd"));  // via "topic sensors/#"
        CHECK(acl.can_publish("a", "alice", "sensors/temp"));
        CHECK_FALSE(acl.can_publish("a", "bob", "alice/x"));
        CHECK_FALSE(acl.can_publish("a", "alice", "elsewhere"));
    }
    SECTION("deny beats every grant, at publish, read and subscribe") {
        CHECK_FALSE(acl.can_publish("a", "alice", "sensors/secret/key"));
        CHECK_FALSE(acl.can_read("a", "alice", "sensors/secret/key"));
        CHECK_FALSE(acl.can_read("a", "alice", "sensors/secret"));
        CHECK_FALSE(acl.can_subscribe("a", "alice", "sensors/secret/#"));
        CHECK_FALSE(acl.can_subscribe("a", "alice", "sensors/secret/x"));
        // Partly denied: the subscription is granted, delivery filters.
        CHECK(acl.can_subscribe("a", "alice", "sensors/#"));
        CHECK(acl.can_subscribe("a", "alice", "$share/g/sensors/+"));
        CHECK_FALSE(acl.can_subscribe("a", "alice", "$share/g/sensors/secret/#"));
    }
    SECTION("user names and filters may contain spaces") {
        CHECK(acl.can_read("b", "bob with spaces", "shared/topic with spaces"));
        CHECK_FALSE(acl.can_publish("b", "bob with spaces", "shared/topic with spaces"));
        CHECK_FALSE(acl.can_read("b", "bob", "shared/topic with spaces"));
    }
    SECTION("patterns substitute %c and %u for every client") {
        CHECK(acl.can_publish("dev1", anon, "clients/dev1/state"));
        CHECK(acl.can_read("dev1", "bob with spaces", "clients/dev1"));
        CHECK_FALSE(acl.can_publish("dev1", anon, "clients/dev2/state"));
        CHECK(acl.can_read("c", "alice", "users/alice/inbox"));
        CHECK_FALSE(acl.can_read("c", "alice", "users/bob/inbox"));
        CHECK_FALSE(acl.can_publish("c", "alice", "users/alice/inbox"));
        CHECK(acl.can_publish("c9", "alice", "users/alice/outbox/c9"));
        CHECK_FALSE(acl.can_publish("c8", "alice", "users/alice/outbox/c9"));
        // %u patterns do nothing for anonymous clients.
        CHECK_FALSE(acl.can_read("c", anon, "users//inbox"));
        CHECK(acl.can_subscribe("dev1", anon, "clients/dev1/#"));
        // Overlaps clients/dev1/#: granted, and delivery filters the rest.
        CHECK(acl.can_subscribe("dev1", anon, "clients/+/secret"));
        CHECK_FALSE(acl.can_subscribe("dev1", anon, "other/+"));
    }
    SECTION("wildcards in a client id or username cannot widen a pattern") {
        CHECK_FALSE(acl.can_publish("+", anon, "clients/x/state"));
        CHECK_FALSE(acl.can_read("c", "#", "users/x/inbox"));
        CHECK_FALSE(acl.can_read("#", "alice", "alice/x"));
    }
    SECTION("bound per client: the same answers without re-binding") {
        const ClientAcl a = acl.bind("dev1", "alice");
        CHECK(a.can_publish("alice/1"));
        CHECK(a.can_publish("clients/dev1/x"));
        CHECK_FALSE(a.can_read("sensors/secret/1"));
        CHECK(a.can_read("users/alice/inbox"));
    }
}

TEST_CASE("$ topics need rules that name them", "[auth][acl]") {
    const auto acl = AclChecker::parse("topic read #\ntopic read $SYS/broker/#\n");
    CHECK(acl.can_read("c", std::nullopt, "x/y"));
    CHECK_FALSE(acl.can_read("c", std::nullopt, "$SYS/other"));
    CHECK(acl.can_read("c", std::nullopt, "$SYS/broker/uptime"));
    CHECK(acl.can_subscribe("c", std::nullopt, "$SYS/#"));
}

TEST_CASE("invalid ACL files are refused with the line", "[auth][acl]") {
    CHECK_THROWS_WITH(AclChecker::parse("topic read a/#/b\n", "acl"), Catch::Contains("acl:1:"));
    CHECK_THROWS_WITH(AclChecker::parse("# x\ntopci read a\n", "acl"), Catch::Contains("acl:2:"));
    CHECK_THROWS_WITH(AclChecker::parse("user\n", "acl"), Catch::Contains("acl:1:"));
    CHECK_THROWS_WITH(AclChecker::parse("topic read\n", "acl"), Catch::Contains("acl:1:"));
    CHECK_THROWS(AclChecker::load("/nonexistent/mqttools/acl"));
    auth_test::TempDir dir;
    auth_test::write_file(dir.file("acl"), "user u\r\ntopic write t\r\n");
    const auto acl = AclChecker::load(dir.file("acl"));
    CHECK(acl.can_publish("c", "u", "t"));
    CHECK_FALSE(acl.can_read("c", "u", "t"));
}

TEST_CASE("an empty ACL file denies everything", "[auth][acl]") {
    const auto acl = AclChecker::parse("# nothing\n");
    CHECK(acl.enabled());
    CHECK_FALSE(acl.can_publish("c", std::nullopt, "a"));
    CHECK_FALSE(acl.can_subscribe("c", "u", "#"));
}
