// The client library against the real broker: mqttoolsd is started from the
// build tree next to this test binary (build/src/daemon/mqttoolsd).
#include <catch2/catch.hpp>

#include <filesystem>
#include <thread>

#include "mqttools/client.hpp"
#include "mqttoolsd_process.hpp"

using namespace mqttools;
using namespace std::chrono_literals;
using test_support::Mqttoolsd;
using test_support::mqttoolsd_path;

namespace {

ClientOptions options_for(const Mqttoolsd& broker, std::string id = {}) {
    ClientOptions o;
    o.host = "127.0.0.1";
    o.port = broker.port();
    o.client_id = std::move(id);
    o.connect_delays.emplace();
    o.response_timeout = 3s;
    return o;
}

}  // namespace

TEST_CASE("mqttoolsd: QoS 0, 1 and 2 round trips with retained messages") {
    REQUIRE(std::filesystem::exists(mqttoolsd_path()));
    Mqttoolsd broker;
    ClientOptions so = options_for(broker);
    so.subscriptions = {{"rt/#", 0, QoS::exactly_once}};
    Client sub(so);
    sub.start();
    Client pub(options_for(broker));
    pub.start();
    pub.publish("rt/0", "zero");
    pub.publish("rt/1", "one", false, QoS::at_least_once);
    pub.publish("rt/2", "two", true, QoS::exactly_once);
    pub.flush(3s);
    CHECK(pub.inflight() == 0);
    for (const auto& [topic, payload, qos] : {std::tuple{"rt/0", "zero", QoS::at_most_once},
                                              std::tuple{"rt/1", "one", QoS::at_least_once},
                                              std::tuple{"rt/2", "two", QoS::exactly_once}}) {
        auto m = sub.messages().pop(3s);
        REQUIRE(m);
        CHECK(m->topic == topic);
        CHECK(m->payload == payload);
        CHECK(m->qos == qos);
    }
    // The retained one reaches a later subscriber, flagged.
    Client late(options_for(broker));
    late.start();
    CHECK(late.subscribe("rt/2", 0, QoS::exactly_once) == QoS::exactly_once);
    auto r = late.messages().pop(3s);
    REQUIRE(r);
    CHECK(r->retain);
    CHECK(r->payload == "two");
    late.unsubscribe("rt/2");
}

TEST_CASE("mqttoolsd: a resumed session gets the QoS 1 messages sent while away") {
    REQUIRE(std::filesystem::exists(mqttoolsd_path()));
    Mqttoolsd broker;
    ClientOptions so = options_for(broker, "resume-me");
    so.session_expiry_interval = 60;
    Client sub(so);
    sub.start();
    sub.subscribe("away/#", 0, QoS::at_least_once);
    sub.stop();

    Client pub(options_for(broker));
    pub.start();
    pub.publish("away/t", "while you were out", false, QoS::at_least_once);
    pub.flush(3s);

    sub.start(true);  // no SessionResumeError: the broker kept the session
    auto m = sub.messages().pop(3s);
    REQUIRE(m);
    CHECK(m->topic == "away/t");
    CHECK(m->payload == "while you were out");
    sub.stop();

    // A clean start drops the session; resuming afterwards fails.
    Client fresh(options_for(broker, "resume-me"));
    fresh.start();
    fresh.stop();
    Client again(so);
    CHECK_THROWS_AS(again.start(true), SessionResumeError);
}

TEST_CASE("mqttoolsd: a broker going away is a connection-lost message") {
    REQUIRE(std::filesystem::exists(mqttoolsd_path()));
    auto broker = std::make_unique<Mqttoolsd>();
    Client c(options_for(*broker));
    c.start();
    broker.reset();  // SIGTERM: the broker disconnects everyone
    auto m = c.messages().pop(5s);
    REQUIRE(m);
    CHECK(m->connection_lost);
    CHECK_FALSE(c.connected());
}
