// [[bridge]] tables (src/config/config_bridge.cpp): Mosquitto's names and
// its topic line syntax, defaults, and every problem with FILE:LINE:COLUMN
// and the key.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <string>

#include "config/config_file.hpp"

using namespace mqttools::config;

namespace {

LoadResult parse(const std::string& text) { return parse_config(text, "/etc/mqttools/test.toml"); }

std::string only_error(const std::string& text) {
    auto r = parse(text);
    REQUIRE_FALSE(r.ok());
    REQUIRE(r.errors.size() == 1);
    return r.errors[0];
}

const Bridge& only_bridge(const LoadResult& r) {
    REQUIRE(r.ok());
    REQUIRE(r.config->bridges.size() == 1);
    return r.config->bridges[0];
}

std::string hostname() {
    char buf[256] = {};
    ::gethostname(buf, sizeof buf - 1);
    return buf;
}

}  // namespace

TEST_CASE("a bridge with only the required keys gets Mosquitto's defaults") {
    auto r = parse("[[bridge]]\nname = \"cloud\"\naddress = \"10.0.0.1:1884\"\ntopic = [\"sensors/#\"]\n");
    const Bridge& b = only_bridge(r);
    CHECK(b.name == "cloud");
    REQUIRE(b.addresses.size() == 1);
    CHECK(b.addresses[0].host == "10.0.0.1");
    CHECK(b.addresses[0].port == 1884);
    REQUIRE(b.topics.size() == 1);
    CHECK(b.topics[0].pattern == "sensors/#");
    CHECK(b.topics[0].direction == BridgeTopic::Direction::out);
    CHECK(b.topics[0].qos == 0);
    CHECK(b.remote_clientid == hostname() + ".cloud");
    // The issue's (and Mosquitto's documented) NAME: the connection name.
    CHECK(b.notification_topic == "$SYS/broker/connection/" + hostname() + ".cloud/state");
    CHECK(b.local_clientid == "local." + hostname() + ".cloud");
    CHECK_FALSE(b.notifications_local_only);
    CHECK_FALSE(b.round_robin);
    CHECK(b.outgoing_retain);
    CHECK(b.max_packet_size == 0);
    CHECK(b.bind_address.empty());
    CHECK_FALSE(b.cleansession);
    CHECK(b.keepalive_interval == 60);
    CHECK_FALSE(b.mqtt5);
    CHECK(b.try_private);
    CHECK(b.notifications);
    CHECK_FALSE(b.tls());
    CHECK(b.start_type == BridgeStart::automatic);
}

TEST_CASE("topic lines in Mosquitto's syntax with its prefix rules") {
    auto r = parse(
        "[[bridge]]\nname = \"b\"\naddress = \"127.0.0.1\"\n"
        "topic = [\"a/# out 1\", \"cmd/# in 2 site1/ \\\"\\\"\", \"x/+ both 0 edge/ cloud/\", "
        "\"\\\"\\\" out 1 local/exact remote/exact\"]\n");
    const Bridge& b = only_bridge(r);
    CHECK(b.addresses[0].port == 1883);
    REQUIRE(b.topics.size() == 4);
    CHECK(b.topics[0].local_filter() == "a/#");
    CHECK(b.topics[0].qos == 1);
    CHECK(b.topics[1].direction == BridgeTopic::Direction::in);
    CHECK(b.topics[1].qos == 2);
    CHECK(b.topics[1].local_filter() == "site1/cmd/#");
    CHECK(b.topics[1].remote_filter() == "cmd/#");
    CHECK(b.topics[2].direction == BridgeTopic::Direction::both);
    CHECK(b.topics[2].local_filter() == "edge/x/+");
    CHECK(b.topics[2].remote_filter() == "cloud/x/+");
    CHECK(b.topics[3].pattern.empty());
    CHECK(b.topics[3].local_filter() == "local/exact");
    CHECK(b.topics[3].remote_filter() == "remote/exact");
}

TEST_CASE("every bridge key") {
    auto r = parse(
        "[[bridge]]\nconnection = \"b\"\naddress = [\"127.0.0.1:1\", \"[::1]:2\", \"broker.example.com\"]\n"
        "topic = \"t/#\"\nremote_clientid = \"edge-1\"\nremote_username = \"u\"\nremote_password = \"p\"\n"
        "cleansession = true\nkeepalive_interval = 30\nrestart_timeout = \"2 40\"\n"
        "bridge_protocol_version = \"mqttv50\"\ntry_private = false\nnotifications = false\n"
        "notification_topic = \"edge/state\"\nbridge_insecure = true\nstart_type = \"lazy\"\n"
        "threshold = 5\nidle_timeout = 9\nbridge_capath = \"/etc/ssl/certs\"\nbridge_tls_version = \"tlsv1.3\"\n"
        "bridge_alpn = \"mqtt\"\nlocal_clientid = \"here\"\nround_robin = true\nbridge_outgoing_retain = false\n"
        "notifications_local_only = true\nbridge_max_packet_size = 4096\nbridge_bind_address = \"127.0.0.2\"\n");
    const Bridge& b = only_bridge(r);
    REQUIRE(b.addresses.size() == 3);
    CHECK(b.addresses[1].host == "::1");
    CHECK(b.addresses[1].port == 2);
    CHECK(b.addresses[2].host == "broker.example.com");
    CHECK(b.remote_clientid == "edge-1");
    CHECK(b.remote_username == "u");
    CHECK(b.remote_password == "p");
    CHECK(b.cleansession);
    CHECK(b.keepalive_interval == 30);
    CHECK(b.restart_timeout == 2);
    CHECK(b.restart_timeout_cap == 40);
    CHECK(b.mqtt5);
    CHECK_FALSE(b.try_private);
    CHECK_FALSE(b.notifications);
    CHECK(b.notification_topic == "edge/state");
    CHECK(b.insecure);
    CHECK(b.start_type == BridgeStart::lazy);
    CHECK(b.threshold == 5);
    CHECK(b.idle_timeout == 9);
    CHECK(b.capath == "/etc/ssl/certs");
    CHECK(b.tls());  // bridge_capath alone turns TLS on, as in Mosquitto
    CHECK(b.tls_version == "tlsv1.3");
    CHECK(b.alpn == "mqtt");
    CHECK(b.local_clientid == "here");
    CHECK(b.round_robin);
    CHECK_FALSE(b.outgoing_retain);
    CHECK(b.notifications_local_only);
    CHECK(b.max_packet_size == 4096);
    CHECK(b.bind_address == "127.0.0.2");
}

TEST_CASE("Mosquitto bridge keys mqttoolsd does not implement are refused by name") {
    const std::string head = "[[bridge]]\nname = \"b\"\naddress = \"127.0.0.1\"\ntopic = \"a\"\n";
    CHECK(only_error(head + "local_username = \"u\"\n") ==
          "/etc/mqttools/test.toml:5:1: bridge[0].local_username: Mosquitto's 'local_username' is not supported "
          "by mqttoolsd (the bridge is inside the broker and has no local connection to authenticate)");
    for (const char* key : {"local_password", "bridge_attempt_unsubscribe", "bridge_identity", "bridge_psk",
                            "bridge_require_ocsp", "bridge_tls_use_os_certs", "bridge_reload_type"}) {
        CAPTURE(key);
        CHECK(only_error(head + key + " = \"x\"\n").find("is not supported by mqttoolsd") != std::string::npos);
    }
    CHECK(only_error(head + "bridge_tls_version = \"tlsv1.1\"\n").find("'tlsv1.1' is not one of tlsv1.2, tlsv1.3") !=
          std::string::npos);
    CHECK(only_error(head + "bridge_tls_version = \"tlsv1.2\"\n")
              .find("bridge[0]: bridge_tls_version needs bridge_cafile or bridge_capath (TLS)") != std::string::npos);
    CHECK(only_error(head + "bridge_bind_address = \"nowhere\"\n").find("is not an IPv4 or IPv6 address") !=
          std::string::npos);
}

TEST_CASE("bad bridge topics, addresses and files are reported with file, line and key") {
    const std::string head = "[[bridge]]\nname = \"b\"\naddress = \"127.0.0.1\"\n";
    CHECK(only_error(head + "topic = [\"a/# sideways 1\"]\n") ==
          "/etc/mqttools/test.toml:4:10: bridge[0].topic: unknown direction 'sideways' in 'a/# sideways 1' "
          "(expected out, in or both)");
    CHECK(only_error(head + "topic = [\"a/# out 3\"]\n") ==
          "/etc/mqttools/test.toml:4:10: bridge[0].topic: QoS '3' in 'a/# out 3' is not 0, 1 or 2");
    CHECK(only_error(head + "topic = [\"a/# out 1 lo/+ x\"]\n").find("local prefix 'lo/+' contains a wildcard") !=
          std::string::npos);
    CHECK(only_error(head + "topic = [\"\\\"\\\" out 1 a/b\"]\n").find("pattern \"\" needs both") != std::string::npos);
    CHECK(only_error(head + "topic = [\"a/#/b\"]\n").find("is not a valid topic filter") != std::string::npos);
    CHECK(only_error("[[bridge]]\nname = \"b\"\naddress = \"127.0.0.1:99999\"\ntopic = \"a\"\n") ==
          "/etc/mqttools/test.toml:3:11: bridge[0].address: '127.0.0.1:99999': port '99999' is not a number "
          "from 1 to 65535");
    CHECK(only_error("[[bridge]]\nname = \"b\"\naddress = \"host:\"\ntopic = \"a\"\n").find("empty port") !=
          std::string::npos);
    CHECK(only_error("[[bridge]]\nname = \"b\"\naddress = \"ho st!:1\"\ntopic = \"a\"\n")
              .find("is not a host name or IP address") != std::string::npos);
    CHECK(only_error(head + "topic = \"a\"\nbridge_cafile = \"/nonexistent/ca.pem\"\n") ==
          "/etc/mqttools/test.toml:5:17: bridge[0].bridge_cafile: cannot read '/nonexistent/ca.pem': "
          "No such file or directory");
    CHECK(only_error(head + "topic = \"a\"\nbridge_protocol_version = \"mqttv5\"\n")
              .find("'mqttv5' is not one of mqttv311, mqttv50 (did you mean 'mqttv50'?)") != std::string::npos);
    CHECK(only_error(head + "topic = \"a\"\nstart_typ = \"lazy\"\n") ==
          "/etc/mqttools/test.toml:5:1: unknown key 'start_typ' in [[bridge]] (did you mean 'start_type'?)");
    CHECK(only_error("[[bridge]]\nname = \"b\"\ntopic = \"a\"\n").find("missing required key 'address'") !=
          std::string::npos);
    CHECK(only_error(head + "topic = \"a\"\n[[bridge]]\nname = \"b\"\naddress = \"127.0.0.1\"\ntopic = \"a\"\n")
              .find("'b' is already the name of bridge[0]") != std::string::npos);
}
