// Properties (spec 2.2.2): types, allowance, repetition, ranges, reader and
// the encoder's order and passthrough.
#include "util.hpp"

using namespace codec_test;

namespace {

ReasonCode props(std::string_view hexstr, PacketType type, Sender s = Sender::client, bool will = false) {
    Buffer raw = hex(hexstr);
    Properties p;
    return decode_properties(Bytes(raw), type, s, p, will);
}

}  // namespace

TEST_CASE("every property decodes in a packet that allows it", "[properties]") {
    Buffer raw = hex(
        "01 01"                    // payload format indicator
        "02 00 00 00 3c"           // message expiry interval
        "03 00 01 74"              // content type
        "08 00 01 72"              // response topic
        "09 00 02 01 02"           // correlation data
        "0b 05"                    // subscription identifier
        "0b 06"                    // again (server to client)
        "23 00 07"                 // topic alias
        "26 00 01 6b 00 01 76");   // user property
    Properties p;
    REQUIRE(decode_properties(Bytes(raw), PacketType::publish, Sender::server, p) == ReasonCode::success);
    CHECK(p.payload_format_indicator == std::uint8_t{1});
    CHECK(p.message_expiry_interval == 60u);
    CHECK(p.content_type == std::string_view("t"));
    CHECK(p.response_topic == std::string_view("r"));
    REQUIRE(p.correlation_data);
    CHECK(to_hex(*p.correlation_data) == "01 02");
    CHECK(p.subscription_identifier == 5u);
    CHECK(p.subscription_identifier_count == 2);
    CHECK(p.topic_alias == std::uint16_t{7});
    CHECK(p.user_property_count == 1);
    CHECK(p.raw.data() == raw.data());

    Buffer c = hex(
        "11 00 00 00 0a 12 00 01 63 13 00 05 15 00 01 6d 16 00 01 64 1a 00 01 69 1c 00 01 73"
        "1f 00 01 72 21 00 0a 22 00 03 24 01 25 00 27 00 00 10 00 28 01 29 00 2a 01");
    Properties q;
    REQUIRE(decode_properties(Bytes(c), PacketType::connack, Sender::server, q) == ReasonCode::success);
    CHECK(q.session_expiry_interval == 10u);
    CHECK(q.assigned_client_identifier == std::string_view("c"));
    CHECK(q.server_keep_alive == std::uint16_t{5});
    CHECK(q.authentication_method == std::string_view("m"));
    CHECK(q.response_information == std::string_view("i"));
    CHECK(q.server_reference == std::string_view("s"));
    CHECK(q.reason_string == std::string_view("r"));
    CHECK(q.receive_maximum == std::uint16_t{10});
    CHECK(q.topic_alias_maximum == std::uint16_t{3});
    CHECK(q.maximum_qos == std::uint8_t{1});
    CHECK(q.retain_available == std::uint8_t{0});
    CHECK(q.maximum_packet_size == 4096u);
    CHECK(q.wildcard_subscription_available == std::uint8_t{1});
    CHECK(q.subscription_identifier_available == std::uint8_t{0});
    CHECK(q.shared_subscription_available == std::uint8_t{1});

    Buffer w = hex("18 00 00 00 05 01 00 02 00 00 00 01");
    Properties wp;
    REQUIRE(decode_properties(Bytes(w), PacketType::connect, Sender::client, wp, true) == ReasonCode::success);
    CHECK(wp.will_delay_interval == 5u);
    CHECK(wp.payload_format_indicator == std::uint8_t{0});

    Buffer k = hex("17 01 19 01 21 00 01 22 00 00");
    Properties kp;
    REQUIRE(decode_properties(Bytes(k), PacketType::connect, Sender::client, kp) == ReasonCode::success);
    CHECK(kp.request_problem_information == std::uint8_t{1});
    CHECK(kp.request_response_information == std::uint8_t{1});
    CHECK(kp.topic_alias_maximum == std::uint16_t{0});
}

TEST_CASE("property allowance per packet type", "[properties]") {
    // Will Delay Interval only in will properties.
    CHECK(props("18 00 00 00 05", PacketType::connect) == ReasonCode::malformed_packet);
    CHECK(props("18 00 00 00 05", PacketType::connect, Sender::client, true) == ReasonCode::success);
    // Session Expiry Interval not in will properties.
    CHECK(props("11 00 00 00 05", PacketType::connect, Sender::client, true) == ReasonCode::malformed_packet);
    // Reason String: not in CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE.
    for (auto t : {PacketType::connect, PacketType::publish, PacketType::subscribe, PacketType::unsubscribe})
        CHECK(props("1f 00 01 78", t) == ReasonCode::malformed_packet);
    for (auto t : {PacketType::connack, PacketType::puback, PacketType::pubrec, PacketType::pubrel,
                   PacketType::pubcomp, PacketType::suback, PacketType::unsuback, PacketType::disconnect,
                   PacketType::auth})
        CHECK(props("1f 00 01 78", t, Sender::server) == ReasonCode::success);
    // User Property everywhere, repeatable.
    for (int t = 1; t <= 15; ++t)
        CHECK(props("26 00 00 00 00 26 00 00 00 00", static_cast<PacketType>(t), Sender::server) ==
              ReasonCode::success);
    // Server Reference in DISCONNECT, not in PUBACK.
    CHECK(props("1c 00 01 78", PacketType::disconnect, Sender::server) == ReasonCode::success);
    CHECK(props("1c 00 01 78", PacketType::puback) == ReasonCode::malformed_packet);
    // Session Expiry Interval in DISCONNECT from a client only.
    CHECK(props("11 00 00 00 05", PacketType::disconnect, Sender::client) == ReasonCode::success);
    CHECK(props("11 00 00 00 05", PacketType::disconnect, Sender::server) == ReasonCode::protocol_error);
    // Unknown identifiers.
    for (int id : {0x00, 0x04, 0x0A, 0x14, 0x1B, 0x20, 0x2B, 0x7F})
        CHECK(props(std::string(1, "0123456789abcdef"[id >> 4]) + "0123456789abcdef"[id & 15] + " 00",
                    PacketType::publish) == ReasonCode::malformed_packet);
    // Truncated values.
    CHECK(props("02 00 00", PacketType::publish) == ReasonCode::malformed_packet);
    CHECK(props("26 00 01 61", PacketType::publish) == ReasonCode::malformed_packet);
    CHECK(props("0b 80", PacketType::subscribe) == ReasonCode::malformed_packet);
}

TEST_CASE("duplicates and ranges", "[properties]") {
    CHECK(props("02 00 00 00 01 02 00 00 00 01", PacketType::publish) == ReasonCode::protocol_error);
    CHECK(props("0b 01 0b 01", PacketType::subscribe) == ReasonCode::protocol_error);
    CHECK(props("15 00 01 61 15 00 01 61", PacketType::auth) == ReasonCode::protocol_error);
    CHECK(props("0b ff ff ff 7f", PacketType::subscribe) == ReasonCode::success);  // 268,435,455
    CHECK(props("0b 00", PacketType::subscribe) == ReasonCode::protocol_error);
    CHECK(props("21 00 00", PacketType::connack, Sender::server) == ReasonCode::protocol_error);
    CHECK(props("27 00 00 00 00", PacketType::connack, Sender::server) == ReasonCode::protocol_error);
    CHECK(props("24 00", PacketType::connack, Sender::server) == ReasonCode::success);
    CHECK(props("01 01", PacketType::publish) == ReasonCode::success);
    CHECK(props("01 02", PacketType::publish) == ReasonCode::protocol_error);
    CHECK(props("01 ff", PacketType::connect, Sender::client, true) == ReasonCode::protocol_error);
    CHECK(props("08 00 00", PacketType::publish) == ReasonCode::protocol_error);  // empty Response Topic
    CHECK(props("16 00 00", PacketType::auth) == ReasonCode::protocol_error);     // data without method
}

TEST_CASE("PropertyReader walks raw properties in order", "[properties]") {
    Buffer raw = hex("26 00 01 61 00 01 62 0b 81 01 1f 00 02 68 69 26 00 00 00 01 63 09 00 01 ff");
    PropertyReader r{Bytes(raw)};
    Property p;
    REQUIRE(r.next(p));
    CHECK(p.id == PropertyId::user_property);
    CHECK(p.string == "a");
    CHECK(p.value == "b");
    REQUIRE(r.next(p));
    CHECK(p.id == PropertyId::subscription_identifier);
    CHECK(p.integer == 129);
    REQUIRE(r.next(p));
    CHECK(p.id == PropertyId::reason_string);
    CHECK(p.string == "hi");
    REQUIRE(r.next(p));
    CHECK(p.string.empty());
    CHECK(p.value == "c");
    REQUIRE(r.next(p));
    CHECK(p.id == PropertyId::correlation_data);
    CHECK(to_hex(p.binary) == "ff");
    CHECK(!r.next(p));
    // Bad bytes stop the walk.
    Buffer bad = hex("26 00 05 61");
    PropertyReader b{Bytes(bad)};
    CHECK(!b.next(p));
    CHECK(!b.next(p));
}

TEST_CASE("encoding order, passthrough and sizes", "[properties]") {
    Buffer raw = hex("26 00 01 61 00 01 62 23 00 05 0b 07 08 00 01 72 26 00 01 63 00 01 64");
    const StringPair extra[] = {{"e", "f"}};
    const std::uint32_t ids[] = {9, 200};
    Properties p;
    p.message_expiry_interval = 1;
    p.passthrough = Bytes(raw);
    // Forward user properties and the response topic unchanged, not the
    // alias or the subscription identifier.
    p.passthrough_mask = property_bit(PropertyId::user_property) | property_bit(PropertyId::response_topic);
    p.user_properties = extra;
    p.subscription_identifiers = ids;
    PublishPacket pub;
    pub.topic = "t";
    pub.properties = p;
    Buffer out = encode_v(pub, ProtocolVersion::v5);
    // 02 00000001 | 26 a b | 08 r | 26 c d | 26 e f | 0b 09 | 0b c8 01
    const std::string expect_props =
        "02 00 00 00 01 26 00 01 61 00 01 62 08 00 01 72 26 00 01 63 00 01 64 26 00 01 65 00 01 66 0b 09 0b c8 01";
    CHECK(properties_size(p) == hex(expect_props).size());
    CHECK(to_hex(out) == "30 27 00 01 74 23 " + expect_props);
    CHECK(properties_size(Properties{}) == 0);
}

TEST_CASE("decode_properties resets its output", "[properties]") {
    Properties p;
    p.topic_alias = 9;
    p.user_property_count = 4;
    Buffer raw = hex("02 00 00 00 07");
    REQUIRE(decode_properties(Bytes(raw), PacketType::publish, Sender::client, p) == ReasonCode::success);
    CHECK(!p.topic_alias);
    CHECK(p.user_property_count == 0);
    CHECK(p.message_expiry_interval == 7u);
    Properties empty;
    REQUIRE(decode_properties(Bytes(), PacketType::publish, Sender::client, empty) == ReasonCode::success);
    CHECK(empty.raw.empty());
}

TEST_CASE("a caller's lists iterate like decoded ones", "[properties][lists]") {
    const Subscription subs[] = {{"a", QoS::at_least_once, true, false, 2}, {"b/#", QoS::at_most_once, false, true, 0}};
    SubscriptionList l(subs);
    CHECK(l.size() == 2);
    std::size_t cursor = 0;
    Subscription s;
    REQUIRE(l.next(cursor, s));
    CHECK(s.filter == "a");
    CHECK(s.retain_handling == 2);
    REQUIRE(l.next(cursor, s));
    CHECK(s.filter == "b/#");
    CHECK(s.retain_as_published);
    CHECK(!l.next(cursor, s));
    CHECK(SubscriptionList().size() == 0);
    const std::string_view fs[] = {"x"};
    FilterList f(fs);
    std::string_view out;
    cursor = 0;
    REQUIRE(f.next(cursor, out));
    CHECK(out == "x");
    CHECK(!f.next(cursor, out));
}
