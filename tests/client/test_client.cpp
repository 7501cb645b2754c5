// The client library against a scripted broker: what goes on the wire, and
// what the client does with the broker's answers.
#include <catch2/catch.hpp>

#include <future>
#include <thread>

#include "fake_broker.hpp"
#include "mqttools/client.hpp"

using namespace mqttools;
using namespace std::chrono_literals;
using test_support::FakeBroker;
using test_support::RawPacket;

namespace {

ClientOptions options_for(const FakeBroker& fb) {
    ClientOptions o;
    o.host = "127.0.0.1";
    o.port = fb.port();
    o.connect_delays.emplace();  // one attempt
    o.response_timeout = 2s;
    return o;
}

// Starts the client while the fake broker does its handshake.
void start(Client& c, FakeBroker& fb, Properties connack_props = {}, bool session_present = false,
           bool resume = false) {
    auto f = std::async(std::launch::async, [&] { c.start(resume); });
    fb.handshake(connack_props, session_present);
    f.get();
}

std::string str(Bytes b) { return std::string(as_string(b)); }

}  // namespace

TEST_CASE("CONNECT carries the options") {
    FakeBroker fb;
    ClientOptions o = options_for(fb);
    o.will_topic = "will/t";
    o.will_message = "gone";
    o.will_qos = QoS::at_least_once;
    o.will_retain = true;
    o.username = "alice";
    o.password = "secret";
    o.session_expiry_interval = 30;
    o.receive_maximum = 7;
    o.maximum_packet_size = 4096;
    Client c(o);
    auto f = std::async(std::launch::async, [&] { c.start(); });
    fb.accept();
    const RawPacket p = fb.read();
    const auto connect = p.as<ConnectPacket>();
    CHECK(connect.version == ProtocolVersion::v5);
    CHECK(connect.clean_start);
    CHECK(connect.keep_alive == 60);
    CHECK(connect.client_id.starts_with("mqttools-"));
    CHECK(connect.client_id.size() == 9 + 14);
    CHECK(connect.client_id == c.client_id());
    REQUIRE(connect.will);
    CHECK(connect.will->topic == "will/t");
    CHECK(str(connect.will->payload) == "gone");
    CHECK(connect.will->qos == QoS::at_least_once);
    CHECK(connect.will->retain);
    CHECK(connect.username == std::optional<std::string_view>("alice"));
    REQUIRE(connect.password);
    CHECK(str(*connect.password) == "secret");
    CHECK(connect.properties.session_expiry_interval == std::optional<std::uint32_t>(30));
    CHECK(connect.properties.receive_maximum == std::optional<std::uint16_t>(7));
    CHECK(connect.properties.maximum_packet_size == std::optional<std::uint32_t>(4096));
    CHECK(connect.properties.topic_alias_maximum == std::optional<std::uint16_t>(10));
    fb.connack();
    f.get();
    CHECK(c.connected());
    c.stop();
    // stop() says goodbye with a Normal disconnection.
    const RawPacket d = fb.read();
    CHECK(d.as<DisconnectPacket>().reason == ReasonCode::success);
    CHECK(fb.wait_closed());
    CHECK_FALSE(c.connected());
}

TEST_CASE("client ids are mqttools- and 14 hex characters, different each time") {
    const std::string a = make_client_id();
    const std::string b = make_client_id();
    CHECK(a != b);
    REQUIRE(a.size() == 23);
    CHECK(a.substr(0, 9) == "mqttools-");
    CHECK(a.find_first_not_of("0123456789abcdef", 9) == std::string::npos);
}

TEST_CASE("a refused CONNECT is a ConnectError named after the reason code") {
    FakeBroker fb;
    Client c(options_for(fb));
    auto f = std::async(std::launch::async, [&] { c.start(); });
    fb.accept();
    (void)fb.read();
    fb.connack(ReasonCode::not_authorized);
    try {
        f.get();
        FAIL("no ConnectError");
    } catch (const ConnectError& e) {
        CHECK(e.reason() == ReasonCode::not_authorized);
        CHECK(std::string(e.what()) == std::string(reason_code_name(ReasonCode::not_authorized)));
    }
    CHECK_FALSE(c.connected());
}

TEST_CASE("no CONNACK within response_timeout is a TimeoutError") {
    FakeBroker fb;
    ClientOptions o = options_for(fb);
    o.response_timeout = 300ms;
    Client c(o);
    auto f = std::async(std::launch::async, [&] { c.start(); });
    fb.accept();
    (void)fb.read();
    CHECK_THROWS_AS(f.get(), TimeoutError);
}

TEST_CASE("a broker that is down gives a ConnectionError after the attempts") {
    std::uint16_t port;
    {
        FakeBroker gone;
        port = gone.port();
    }
    ClientOptions o;
    o.host = "127.0.0.1";
    o.port = port;
    o.connect_delays = std::vector<std::chrono::milliseconds>{50ms};
    o.max_connect_attempts = 3;
    Client c(o);
    const auto t0 = std::chrono::steady_clock::now();
    try {
        c.start();
        FAIL("connected to nothing");
    } catch (const ConnectionError& e) {
        CHECK_THAT(e.what(), Catch::Contains("Connection refused"));
    }
    const auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took >= 100ms);  // two delays between three attempts
    CHECK(took < 2s);
}

TEST_CASE("start() retries a busy broker with the connect delays") {
    FakeBroker fb;
    ClientOptions o = options_for(fb);
    o.connect_delays = std::vector<std::chrono::milliseconds>{50ms};
    Client c(o);
    auto f = std::async(std::launch::async, [&] { c.start(); });
    fb.accept();
    (void)fb.read();
    fb.connack(ReasonCode::server_busy);
    fb.handshake();
    f.get();
    CHECK(c.connected());
}

TEST_CASE("Assigned Client Identifier and Server Keep Alive from CONNACK are honoured") {
    FakeBroker fb;
    ClientOptions o = options_for(fb);
    o.client_id = "";
    o.keep_alive_s = 0;
    Client c(o);
    Properties p;
    p.assigned_client_identifier = "srv-1";
    p.server_keep_alive = 1;
    start(c, fb, p);
    CHECK(c.client_id() == "srv-1");
    REQUIRE(c.broker_limits().server_keep_alive == std::optional<std::uint16_t>(1));
    // The broker's keep alive of 1 s replaces ours (0): a PINGREQ comes.
    const auto t0 = std::chrono::steady_clock::now();
    const RawPacket ping = fb.read(3s);
    CHECK(ping.header.type == PacketType::pingreq);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    fb.send(PingrespPacket{});
    CHECK(c.connected());
}

TEST_CASE("the broker's Receive Maximum bounds unacknowledged QoS 1 publishes") {
    FakeBroker fb;
    Client c(options_for(fb));
    Properties p;
    p.receive_maximum = 2;
    start(c, fb, p);
    auto publisher = std::async(std::launch::async, [&] {
        for (int i = 0; i < 3; ++i) c.publish("q/t", std::to_string(i), false, QoS::at_least_once);
    });
    const RawPacket a = fb.read();
    const RawPacket b = fb.read();
    const auto pa = a.as<PublishPacket>();
    CHECK(pa.qos == QoS::at_least_once);
    CHECK(str(pa.payload) == "0");
    CHECK(str(b.as<PublishPacket>().payload) == "1");
    CHECK_THROWS(fb.read(300ms));  // the third waits for room
    CHECK(c.inflight() == 2);
    fb.send(AckPacket{PacketType::puback, pa.packet_id, ReasonCode::success, {}});
    const RawPacket third = fb.read();
    CHECK(str(third.as<PublishPacket>().payload) == "2");
    publisher.get();
}

TEST_CASE("the broker's Maximum Packet Size is never exceeded") {
    FakeBroker fb;
    Client c(options_for(fb));
    Properties p;
    p.maximum_packet_size = 64;
    start(c, fb, p);
    try {
        c.publish("big/t", std::string(100, 'x'));
        FAIL("published over the limit");
    } catch (const PublishError& e) {
        CHECK(e.reason() == ReasonCode::packet_too_large);
    }
    c.publish("small/t", "ok");
    CHECK(str(fb.read().as<PublishPacket>().payload) == "ok");
}

TEST_CASE("topic aliases up to the broker's Topic Alias Maximum") {
    FakeBroker fb;
    ClientOptions o = options_for(fb);
    o.topic_aliases = {"a/first", "a/second"};
    Client c(o);
    Properties p;
    p.topic_alias_maximum = 1;
    start(c, fb, p);
    c.publish("a/first", "1");
    c.publish("a/first", "2");
    c.publish("a/second", "3");  // alias 2 is over the broker's maximum
    const RawPacket r1 = fb.read();
    const RawPacket r2 = fb.read();
    const RawPacket r3 = fb.read();
    const auto p1 = r1.as<PublishPacket>();
    const auto p2 = r2.as<PublishPacket>();
    const auto p3 = r3.as<PublishPacket>();
    CHECK(p1.topic == "a/first");
    CHECK(p1.properties.topic_alias == std::optional<std::uint16_t>(1));
    CHECK(p2.topic.empty());
    CHECK(p2.properties.topic_alias == std::optional<std::uint16_t>(1));
    CHECK(p3.topic == "a/second");
    CHECK_FALSE(p3.properties.topic_alias);
}

TEST_CASE("subscribe and unsubscribe wait for their acks") {
    FakeBroker fb;
    Client c(options_for(fb));
    start(c, fb);

    auto ok = std::async(std::launch::async, [&] { return c.subscribe("s/#", 2, QoS::exactly_once); });
    const RawPacket s1 = fb.read();
    const auto sub = s1.as<SubscribePacket>();
    std::size_t cursor = 0;
    Subscription entry;
    REQUIRE(sub.subscriptions.next(cursor, entry));
    CHECK(entry.filter == "s/#");
    CHECK(entry.retain_handling == 2);
    CHECK(entry.qos == QoS::exactly_once);
    const std::byte granted[] = {std::byte{0x01}};
    fb.send(SubackPacket{sub.packet_id, {}, Bytes(granted)});
    CHECK(ok.get() == QoS::at_least_once);

    auto refused = std::async(std::launch::async, [&] { return c.subscribe("secret/#"); });
    const RawPacket s2 = fb.read();
    const std::byte no[] = {std::byte{0x87}};
    fb.send(SubackPacket{s2.as<SubscribePacket>().packet_id, {}, Bytes(no)});
    try {
        refused.get();
        FAIL("no SubscribeError");
    } catch (const SubscribeError& e) {
        CHECK(e.reason() == ReasonCode::not_authorized);
    }

    auto unsub = std::async(std::launch::async, [&] { c.unsubscribe("s/#"); });
    const RawPacket u1 = fb.read();
    const auto up = u1.as<UnsubscribePacket>();
    std::string_view filter;
    cursor = 0;
    REQUIRE(up.filters.next(cursor, filter));
    CHECK(filter == "s/#");
    const std::byte none[] = {std::byte{0x11}};  // No subscription existed: not an error
    fb.send(UnsubackPacket{up.packet_id, {}, Bytes(none)});
    unsub.get();

    auto bad = std::async(std::launch::async, [&] { c.unsubscribe("x"); });
    const RawPacket u2 = fb.read();
    const std::byte err[] = {std::byte{0x80}};
    fb.send(UnsubackPacket{u2.as<UnsubscribePacket>().packet_id, {}, Bytes(err)});
    CHECK_THROWS_AS(bad.get(), UnsubscribeError);

    auto slow = std::async(std::launch::async, [&] { c.subscribe("never/acked"); });
    (void)fb.read();
    CHECK_THROWS_AS(slow.get(), TimeoutError);
}

TEST_CASE("incoming QoS 1 and 2 are acknowledged and QoS 2 delivered once") {
    FakeBroker fb;
    Client c(options_for(fb));
    start(c, fb);
    PublishPacket p;
    p.topic = "in/one";
    p.qos = QoS::at_least_once;
    p.packet_id = 5;
    p.payload = as_bytes("q1");
    fb.send(p);
    const RawPacket ack = fb.read();
    CHECK(ack.header.type == PacketType::puback);
    CHECK(ack.as<AckPacket>().packet_id == 5);

    p.topic = "in/two";
    p.qos = QoS::exactly_once;
    p.packet_id = 6;
    p.payload = as_bytes("q2");
    fb.send(p);
    CHECK(fb.read().as<AckPacket>().type == PacketType::pubrec);
    p.dup = true;  // the broker did not see our PUBREC: same id again
    fb.send(p);
    const RawPacket rec2 = fb.read();
    CHECK(rec2.as<AckPacket>().type == PacketType::pubrec);
    CHECK(rec2.as<AckPacket>().packet_id == 6);
    fb.send(AckPacket{PacketType::pubrel, 6, ReasonCode::success, {}});
    const RawPacket comp = fb.read();
    CHECK(comp.as<AckPacket>().type == PacketType::pubcomp);
    CHECK(comp.as<AckPacket>().reason == ReasonCode::success);

    auto m1 = c.messages().pop(2s);
    REQUIRE(m1);
    CHECK(m1->topic == "in/one");
    CHECK(m1->payload == "q1");
    CHECK(m1->qos == QoS::at_least_once);
    auto m2 = c.messages().pop(2s);
    REQUIRE(m2);
    CHECK(m2->topic == "in/two");
    CHECK(m2->qos == QoS::exactly_once);
    CHECK_FALSE(c.messages().pop(200ms));  // the DUP was not delivered again
}

TEST_CASE("incoming topic aliases and properties") {
    FakeBroker fb;
    Client c(options_for(fb));
    start(c, fb);
    PublishPacket p;
    p.topic = "alias/topic";
    p.retain = true;
    p.properties.topic_alias = 3;
    p.properties.response_topic = "reply/to";
    p.properties.correlation_data = as_bytes("cd");
    const StringPair up[] = {{"k", "v"}};
    p.properties.user_properties = up;
    p.payload = as_bytes("first");
    fb.send(p);
    PublishPacket q;
    q.properties.topic_alias = 3;
    q.payload = as_bytes("second");
    fb.send(q);
    auto m1 = c.messages().pop(2s);
    auto m2 = c.messages().pop(2s);
    REQUIRE(m1);
    REQUIRE(m2);
    CHECK(m1->topic == "alias/topic");
    CHECK(m1->retain);
    CHECK(m1->response_topic == std::optional<std::string>("reply/to"));
    CHECK(m1->correlation_data == std::optional<std::string>("cd"));
    REQUIRE(m1->user_properties.size() == 1);
    CHECK(m1->user_properties[0] == std::pair<std::string, std::string>("k", "v"));
    CHECK(m2->topic == "alias/topic");
    CHECK(m2->payload == "second");

    // An alias above our Topic Alias Maximum (10) ends the connection.
    PublishPacket bad;
    bad.topic = "x";
    bad.properties.topic_alias = 11;
    fb.send(bad);
    const RawPacket d = fb.read();
    CHECK(d.as<DisconnectPacket>().reason == ReasonCode::topic_alias_invalid);
    auto lost = c.messages().pop(2s);
    REQUIRE(lost);
    CHECK(lost->connection_lost);
}

TEST_CASE("a dropped connection pushes a connection-lost message") {
    FakeBroker fb;
    Client c(options_for(fb));
    start(c, fb);
    fb.close_client();
    auto m = c.messages().pop(2s);
    REQUIRE(m);
    CHECK(m->connection_lost);
    CHECK(m->topic.empty());
    CHECK_FALSE(c.connected());
    CHECK_THROWS_AS(c.publish("t", "m"), ConnectionError);
    // start() again makes a new connection.
    start(c, fb);
    CHECK(c.connected());
}

TEST_CASE("a DISCONNECT from the broker is kept and ends the connection") {
    FakeBroker fb;
    Client c(options_for(fb));
    start(c, fb);
    fb.send(DisconnectPacket{ReasonCode::server_shutting_down, {}});
    auto m = c.messages().pop(2s);
    REQUIRE(m);
    CHECK(m->connection_lost);
    CHECK(c.disconnect_reason() == std::optional<ReasonCode>(ReasonCode::server_shutting_down));
}

TEST_CASE("a resumed session redelivers unacknowledged QoS 1/2 with DUP, then PUBREL") {
    FakeBroker fb;
    ClientOptions o = options_for(fb);
    o.client_id = "resumer";
    o.session_expiry_interval = 60;
    Client c(o);
    start(c, fb);
    c.publish("r/one", "1", false, QoS::at_least_once);
    c.publish("r/two", "2", false, QoS::exactly_once);
    const RawPacket a = fb.read();
    const RawPacket b = fb.read();
    const auto pa = a.as<PublishPacket>();
    const auto pb = b.as<PublishPacket>();
    CHECK_FALSE(pa.dup);
    fb.send(AckPacket{PacketType::pubrec, pb.packet_id, ReasonCode::success, {}});
    CHECK(fb.read().as<AckPacket>().type == PacketType::pubrel);
    c.stop();
    (void)fb.read();  // DISCONNECT
    CHECK(c.inflight() == 2);

    auto f = std::async(std::launch::async, [&] { c.start(true); });
    fb.accept();
    const RawPacket conn = fb.read();
    CHECK_FALSE(conn.as<ConnectPacket>().clean_start);
    CHECK(conn.as<ConnectPacket>().client_id == "resumer");
    fb.connack(ReasonCode::success, true);
    f.get();
    const RawPacket again = fb.read();
    const auto pagain = again.as<PublishPacket>();
    CHECK(pagain.dup);
    CHECK(pagain.packet_id == pa.packet_id);
    CHECK(pagain.topic == "r/one");
    const RawPacket rel = fb.read();
    CHECK(rel.as<AckPacket>().type == PacketType::pubrel);
    CHECK(rel.as<AckPacket>().packet_id == pb.packet_id);
    fb.send(AckPacket{PacketType::puback, pa.packet_id, ReasonCode::success, {}});
    fb.send(AckPacket{PacketType::pubcomp, pb.packet_id, ReasonCode::success, {}});
    auto flushed = std::async(std::launch::async, [&] { c.flush(2s); });
    CHECK(fb.read().header.type == PacketType::pingreq);
    fb.send(PingrespPacket{});
    flushed.get();
    CHECK(c.inflight() == 0);
}

TEST_CASE("resume without a session on the broker is a SessionResumeError, still connected") {
    FakeBroker fb;
    Client c(options_for(fb));
    auto f = std::async(std::launch::async, [&] { c.start(true); });
    fb.handshake({}, false);
    CHECK_THROWS_AS(f.get(), SessionResumeError);
    CHECK(c.connected());
}

TEST_CASE("flush() returns once the broker answered the PINGREQ after the publishes") {
    FakeBroker fb;
    Client c(options_for(fb));
    start(c, fb);
    for (int i = 0; i < 1000; ++i) c.publish("f/t", "x");
    auto flushed = std::async(std::launch::async, [&] { c.flush(2s); });
    for (int i = 0; i < 1000; ++i) REQUIRE(fb.read().header.type == PacketType::publish);
    CHECK(fb.read().header.type == PacketType::pingreq);
    CHECK(flushed.wait_for(100ms) == std::future_status::timeout);
    fb.send(PingrespPacket{});
    flushed.get();
    auto late = std::async(std::launch::async, [&] { c.flush(200ms); });
    (void)fb.read();
    CHECK_THROWS_AS(late.get(), TimeoutError);
}
