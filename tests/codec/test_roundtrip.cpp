// Round trips (encode -> decode -> re-encode) for every packet type in both
// protocol versions, with field checks on the decoded views.
#include "util.hpp"

using namespace codec_test;

namespace {

const ProtocolVersion versions[] = {ProtocolVersion::v5, ProtocolVersion::v311};

const StringPair user_props[] = {{"a", "1"}, {"b", "2"}, {"a", "3"}};

std::vector<StringPair> read_user_properties(const Properties& p) {
    std::vector<StringPair> out;
    PropertyReader r(p.raw);
    Property prop;
    while (r.next(prop))
        if (prop.id == PropertyId::user_property) out.push_back({prop.string, prop.value});
    return out;
}

}  // namespace

TEST_CASE("CONNECT round trip, minimal and full", "[roundtrip][connect]") {
    for (auto v : versions) {
        ConnectPacket c;
        c.version = v;
        c.clean_start = true;
        c.keep_alive = 60;
        c.client_id = "client-1";
        auto rt = round_trip(c, v, Sender::client);
        CHECK(rt.decoded.version == v);
        CHECK(rt.decoded.client_id == "client-1");
        CHECK(rt.decoded.keep_alive == 60);
        CHECK(rt.decoded.clean_start);
        CHECK(!rt.decoded.will);
        CHECK(!rt.decoded.username);
        CHECK(!rt.decoded.password);

        ConnectPacket f = c;
        f.clean_start = false;
        f.username = "user";
        f.password = as_bytes("secret");
        Will w;
        w.topic = "will/topic";
        w.payload = as_bytes("bye");
        w.qos = QoS::exactly_once;
        w.retain = true;
        if (v == ProtocolVersion::v5) {
            w.properties.will_delay_interval = 10;
            w.properties.payload_format_indicator = 1;
            w.properties.content_type = "text/plain";
            w.properties.user_properties = user_props;
            f.properties.session_expiry_interval = 3600;
            f.properties.receive_maximum = 20;
            f.properties.maximum_packet_size = 1024;
            f.properties.topic_alias_maximum = 5;
            f.properties.request_response_information = 1;
            f.properties.request_problem_information = 0;
            f.properties.authentication_method = "SCRAM";
            f.properties.authentication_data = as_bytes("xyz");
            f.properties.user_properties = user_props;
        }
        f.will = w;
        auto rf = round_trip(f, v, Sender::client);
        const auto& d = rf.decoded;
        CHECK(!d.clean_start);
        REQUIRE(d.username);
        CHECK(*d.username == "user");
        REQUIRE(d.password);
        CHECK(as_string(*d.password) == "secret");
        REQUIRE(d.will);
        CHECK(d.will->topic == "will/topic");
        CHECK(as_string(d.will->payload) == "bye");
        CHECK(d.will->qos == QoS::exactly_once);
        CHECK(d.will->retain);
        if (v == ProtocolVersion::v5) {
            CHECK(d.properties.session_expiry_interval == 3600u);
            CHECK(d.properties.receive_maximum == std::uint16_t{20});
            CHECK(d.properties.maximum_packet_size == 1024u);
            CHECK(d.properties.topic_alias_maximum == std::uint16_t{5});
            CHECK(d.properties.request_response_information == std::uint8_t{1});
            CHECK(d.properties.request_problem_information == std::uint8_t{0});
            CHECK(d.properties.authentication_method == std::string_view("SCRAM"));
            CHECK(d.properties.user_property_count == 3);
            CHECK(d.will->properties.will_delay_interval == 10u);
            CHECK(d.will->properties.content_type == std::string_view("text/plain"));
            CHECK(d.will->properties.user_property_count == 3);
            auto ups = read_user_properties(d.properties);
            REQUIRE(ups.size() == 3);
            CHECK(ups[2].name == "a");
            CHECK(ups[2].value == "3");
        } else {
            CHECK(d.properties.raw.empty());
        }
    }
}

TEST_CASE("CONNACK round trip", "[roundtrip][connack]") {
    for (auto v : versions) {
        ConnackPacket c;
        c.session_present = true;
        auto rt = round_trip(c, v, Sender::server);
        CHECK(rt.decoded.session_present);
        CHECK(rt.decoded.reason == ReasonCode::success);

        ConnackPacket e;
        e.reason = ReasonCode::not_authorized;
        if (v == ProtocolVersion::v5) {
            e.properties.assigned_client_identifier = "auto-1";
            e.properties.server_keep_alive = 30;
            e.properties.maximum_qos = 1;
            e.properties.retain_available = 0;
            e.properties.wildcard_subscription_available = 1;
            e.properties.subscription_identifier_available = 1;
            e.properties.shared_subscription_available = 0;
            e.properties.topic_alias_maximum = 10;
            e.properties.receive_maximum = 100;
            e.properties.maximum_packet_size = 65536;
            e.properties.reason_string = "nope";
            e.properties.response_information = "resp";
            e.properties.server_reference = "other";
            e.properties.session_expiry_interval = 0;
            e.properties.user_properties = user_props;
        }
        auto re = round_trip(e, v, Sender::server);
        CHECK(re.decoded.reason == ReasonCode::not_authorized);
        CHECK(!re.decoded.session_present);
        if (v == ProtocolVersion::v5) {
            CHECK(re.decoded.properties.assigned_client_identifier == std::string_view("auto-1"));
            CHECK(re.decoded.properties.server_keep_alive == std::uint16_t{30});
            CHECK(re.decoded.properties.maximum_qos == std::uint8_t{1});
            CHECK(re.decoded.properties.retain_available == std::uint8_t{0});
            CHECK(re.decoded.properties.reason_string == std::string_view("nope"));
        }
    }
}

TEST_CASE("PUBLISH round trip at every QoS", "[roundtrip][publish]") {
    const std::uint32_t sub_ids[] = {7, 300};
    for (auto v : versions) {
        for (int q = 0; q <= 2; ++q) {
            PublishPacket p;
            p.qos = static_cast<QoS>(q);
            p.retain = q == 1;
            p.dup = q == 2;
            p.topic = "a/b/c";
            p.packet_id = q ? 0x1234 : 0;
            p.payload = as_bytes("hello world");
            if (v == ProtocolVersion::v5) {
                p.properties.payload_format_indicator = 1;
                p.properties.message_expiry_interval = 99;
                p.properties.content_type = "text/plain";
                p.properties.response_topic = "reply/here";
                p.properties.correlation_data = as_bytes("\x01\x02");
                p.properties.topic_alias = 3;
                p.properties.user_properties = user_props;
                p.properties.subscription_identifiers = sub_ids;
            }
            auto rt = round_trip(p, v, Sender::server);
            const auto& d = rt.decoded;
            CHECK(d.qos == p.qos);
            CHECK(d.retain == p.retain);
            CHECK(d.dup == p.dup);
            CHECK(d.topic == "a/b/c");
            CHECK(d.packet_id == p.packet_id);
            CHECK(as_string(d.payload) == "hello world");
            if (v == ProtocolVersion::v5) {
                CHECK(d.properties.subscription_identifier_count == 2);
                CHECK(d.properties.subscription_identifier == 7u);
                CHECK(d.properties.topic_alias == std::uint16_t{3});
                CHECK(d.properties.response_topic == std::string_view("reply/here"));
                CHECK(d.properties.message_expiry_interval == 99u);
                CHECK(d.properties.user_property_count == 3);
            }
        }
    }
}

TEST_CASE("PUBLISH with empty payload and a Topic Alias only", "[roundtrip][publish]") {
    PublishPacket p;
    p.topic = "";
    p.properties.topic_alias = 1;
    auto rt = round_trip(p, ProtocolVersion::v5, Sender::client);
    CHECK(rt.decoded.topic.empty());
    CHECK(rt.decoded.payload.empty());
}

TEST_CASE("PUBACK PUBREC PUBREL PUBCOMP round trip", "[roundtrip][ack]") {
    const PacketType types[] = {PacketType::puback, PacketType::pubrec, PacketType::pubrel, PacketType::pubcomp};
    for (auto v : versions) {
        for (auto t : types) {
            AckPacket a;
            a.type = t;
            a.packet_id = 42;
            auto rt = round_trip(a, v, Sender::client);
            CHECK(rt.wire.size() == 4);
            CHECK(rt.decoded.type == t);
            CHECK(rt.decoded.packet_id == 42);
            CHECK(rt.decoded.reason == ReasonCode::success);
            if (v == ProtocolVersion::v5) {
                AckPacket b = a;
                b.reason = (t == PacketType::pubrel || t == PacketType::pubcomp)
                               ? ReasonCode::packet_identifier_not_found
                               : ReasonCode::no_matching_subscribers;
                auto rb = round_trip(b, v, Sender::server);
                CHECK(rb.wire.size() == 5);
                CHECK(rb.decoded.reason == b.reason);
                b.properties.reason_string = "why";
                b.properties.user_properties = user_props;
                auto rc = round_trip(b, v, Sender::server);
                CHECK(rc.decoded.properties.reason_string == std::string_view("why"));
            }
        }
    }
}

TEST_CASE("SUBSCRIBE and SUBACK round trip", "[roundtrip][subscribe]") {
    const Subscription subs[] = {
        {"a/+/c", QoS::at_least_once, false, false, 0},
        {"#", QoS::exactly_once, true, true, 2},
        {"$share/g/x/y", QoS::at_most_once, false, false, 1},
    };
    for (auto v : versions) {
        SubscribePacket s;
        s.packet_id = 10;
        s.subscriptions = SubscriptionList(subs);
        if (v == ProtocolVersion::v5) {
            s.properties.subscription_identifier = 77;
            s.properties.user_properties = user_props;
        }
        auto rt = round_trip(s, v, Sender::client);
        CHECK(rt.decoded.packet_id == 10);
        REQUIRE(rt.decoded.subscriptions.size() == 3);
        std::size_t cursor = 0;
        Subscription out;
        for (const auto& expect : subs) {
            REQUIRE(rt.decoded.subscriptions.next(cursor, out));
            CHECK(out.filter == expect.filter);
            CHECK(out.qos == expect.qos);
            if (v == ProtocolVersion::v5) {
                CHECK(out.no_local == expect.no_local);
                CHECK(out.retain_as_published == expect.retain_as_published);
                CHECK(out.retain_handling == expect.retain_handling);
            }
        }
        CHECK(!rt.decoded.subscriptions.next(cursor, out));
        if (v == ProtocolVersion::v5) CHECK(rt.decoded.properties.subscription_identifier == 77u);

        const auto codes = hex("00 01 02 80");
        SubackPacket a;
        a.packet_id = 10;
        a.reason_codes = Bytes(codes);
        if (v == ProtocolVersion::v5) a.properties.reason_string = "ok";
        auto ra = round_trip(a, v, Sender::server);
        CHECK(to_hex(ra.decoded.reason_codes) == "00 01 02 80");
    }
}

TEST_CASE("UNSUBSCRIBE and UNSUBACK round trip", "[roundtrip][unsubscribe]") {
    const std::string_view filters[] = {"a/b", "c/#"};
    for (auto v : versions) {
        UnsubscribePacket u;
        u.packet_id = 11;
        u.filters = FilterList(filters);
        if (v == ProtocolVersion::v5) u.properties.user_properties = user_props;
        auto rt = round_trip(u, v, Sender::client);
        CHECK(rt.decoded.packet_id == 11);
        REQUIRE(rt.decoded.filters.size() == 2);
        std::size_t cursor = 0;
        std::string_view f;
        REQUIRE(rt.decoded.filters.next(cursor, f));
        CHECK(f == "a/b");
        REQUIRE(rt.decoded.filters.next(cursor, f));
        CHECK(f == "c/#");
        CHECK(!rt.decoded.filters.next(cursor, f));

        const auto codes = hex("00 11");
        UnsubackPacket a;
        a.packet_id = 11;
        if (v == ProtocolVersion::v5) a.reason_codes = Bytes(codes);
        auto ra = round_trip(a, v, Sender::server);
        CHECK(ra.decoded.packet_id == 11);
        if (v == ProtocolVersion::v5) CHECK(to_hex(ra.decoded.reason_codes) == "00 11");
        else CHECK(ra.wire.size() == 4);
    }
}

TEST_CASE("PINGREQ PINGRESP round trip", "[roundtrip][ping]") {
    for (auto v : versions) {
        auto a = round_trip(PingreqPacket{}, v, Sender::client);
        CHECK(to_hex(a.wire) == "c0 00");
        auto b = round_trip(PingrespPacket{}, v, Sender::server);
        CHECK(to_hex(b.wire) == "d0 00");
    }
}

TEST_CASE("DISCONNECT round trip", "[roundtrip][disconnect]") {
    for (auto v : versions) {
        auto a = round_trip(DisconnectPacket{}, v, Sender::client);
        CHECK(to_hex(a.wire) == "e0 00");
        CHECK(a.decoded.reason == ReasonCode::success);
    }
    DisconnectPacket d;
    d.reason = ReasonCode::disconnect_with_will_message;
    auto b = round_trip(d, ProtocolVersion::v5, Sender::client);
    CHECK(to_hex(b.wire) == "e0 01 04");
    d.properties.session_expiry_interval = 5;
    d.properties.reason_string = "bye";
    auto c = round_trip(d, ProtocolVersion::v5, Sender::client);
    CHECK(c.decoded.properties.session_expiry_interval == 5u);
    DisconnectPacket s;
    s.reason = ReasonCode::server_shutting_down;
    s.properties.server_reference = "elsewhere";
    auto e = round_trip(s, ProtocolVersion::v5, Sender::server);
    CHECK(e.decoded.reason == ReasonCode::server_shutting_down);
    CHECK(e.decoded.properties.server_reference == std::string_view("elsewhere"));
}

TEST_CASE("AUTH round trip (v5 only)", "[roundtrip][auth]") {
    auto a = round_trip(AuthPacket{}, ProtocolVersion::v5, Sender::client);
    CHECK(to_hex(a.wire) == "f0 00");
    AuthPacket p;
    p.reason = ReasonCode::continue_authentication;
    p.properties.authentication_method = "SCRAM";
    p.properties.authentication_data = as_bytes("abc");
    auto b = round_trip(p, ProtocolVersion::v5, Sender::server);
    CHECK(b.decoded.reason == ReasonCode::continue_authentication);
    CHECK(b.decoded.properties.authentication_method == std::string_view("SCRAM"));
    CHECK(encoded_size(p, ProtocolVersion::v311) == 0);
}
