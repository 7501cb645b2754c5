// The client library over WebSocket (ClientOptions::websocket) against the
// real mqttoolsd with a `protocol = "websockets"` listener next to its plain
// one: messages cross between ws and TCP clients both ways, large payloads
// span many frames, and a refused upgrade is a clear ConnectionError.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "mqttools/client.hpp"
#include "mqttoolsd_process.hpp"

using namespace mqttools;
using namespace std::chrono_literals;
using test_support::FakeBroker;
using test_support::Mqttoolsd;
using test_support::mqttoolsd_path;

namespace {

std::uint16_t free_port() {
    FakeBroker probe;
    return probe.port();
}

struct WsBroker {
    std::uint16_t ws_port = free_port();
    Mqttoolsd broker;
    explicit WsBroker(const std::string& listener_extra = {})
        : broker("allow_anonymous = true\n[[listener]]\nport = " + std::to_string(ws_port) +
                 "\nprotocol = \"websockets\"\n" + listener_extra) {}
};

ClientOptions options(std::uint16_t port, bool websocket, std::string id) {
    ClientOptions o;
    o.host = "127.0.0.1";
    o.port = port;
    o.client_id = std::move(id);
    o.connect_delays.emplace();
    o.response_timeout = 5s;
    o.websocket = websocket;
    return o;
}

}  // namespace

TEST_CASE("websocket client: ws and TCP clients exchange messages through mqttoolsd") {
    REQUIRE(std::filesystem::exists(mqttoolsd_path()));
    WsBroker b;
    ClientOptions wo = options(b.ws_port, true, "ws-lib-sub");
    wo.subscriptions = {{"wslib/#", 0, QoS::at_least_once}};
    Client ws_sub(wo);
    ws_sub.start();
    Client tcp(options(b.broker.port(), false, "tcp-lib"));
    tcp.start();
    CHECK(tcp.subscribe("wslib/back", 0, QoS::at_least_once) == QoS::at_least_once);

    const std::string big(300 * 1024, 'w');
    tcp.publish("wslib/small", "hello over ws", false, QoS::at_least_once);
    tcp.publish("wslib/big", big, true, QoS::exactly_once);
    for (int i = 0; i < 200; ++i) tcp.publish("wslib/burst", std::to_string(i));
    tcp.flush(5s);
    auto m = ws_sub.messages().pop(5s);
    REQUIRE(m);
    CHECK(m->payload == "hello over ws");
    m = ws_sub.messages().pop(5s);
    REQUIRE(m);
    CHECK(m->payload == big);
    for (int i = 0; i < 200; ++i) {
        m = ws_sub.messages().pop(5s);
        REQUIRE(m);
        CHECK(m->payload == std::to_string(i));
    }

    ws_sub.publish("wslib/back", "hello from ws", false, QoS::at_least_once);
    ws_sub.flush(5s);
    m = tcp.messages().pop(5s);
    REQUIRE(m);
    CHECK(m->payload == "hello from ws");

    // The retained one reaches a later ws client with the path "/".
    ClientOptions lo = options(b.ws_port, true, "ws-lib-late");
    lo.websocket_path = "/";
    Client late(lo);
    late.start();
    CHECK(late.subscribe("wslib/big", 0, QoS::at_most_once) == QoS::at_most_once);
    m = late.messages().pop(5s);
    REQUIRE(m);
    CHECK(m->retain);
    CHECK(m->payload == big);
    late.stop();
    ws_sub.stop();
    tcp.stop();
}

TEST_CASE("websocket client: a refused upgrade is a ConnectionError saying why") {
    REQUIRE(std::filesystem::exists(mqttoolsd_path()));
    // Our client sends no Origin: an allow-list refuses it with 403.
    WsBroker b("websockets_origin = \"https://app.example\"\n");
    Client c(options(b.ws_port, true, "ws-refused"));
    try {
        c.start();
        FAIL("connected although the upgrade was refused");
    } catch (const ConnectionError& e) {
        CHECK_THAT(e.what(), Catch::Contains("403"));
    }
    // WebSocket to a plain MQTT port: the broker closes, the client says so.
    Client p(options(b.broker.port(), true, "ws-to-mqtt"));
    CHECK_THROWS_AS(p.start(), ConnectionError);
}
