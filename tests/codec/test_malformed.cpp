// Malformed and forbidden input: every fixture asserts the exact reason code
// the decoder returns (spec 4.13: 0x81 Malformed Packet, 0x82 Protocol Error,
// and the more specific codes the spec names).
#include "util.hpp"

using namespace codec_test;

namespace {

constexpr auto V5 = ProtocolVersion::v5;
constexpr auto V3 = ProtocolVersion::v311;
constexpr auto C = Sender::client;
constexpr auto S = Sender::server;
constexpr auto MAL = ReasonCode::malformed_packet;
constexpr auto PROTO = ReasonCode::protocol_error;

struct Fixture {
    const char* name;
    ProtocolVersion version;
    Sender sender;
    const char* hex;
    ReasonCode expected;
};

// "MQTT" + level 5 / level 4
#define MQTT5 "00 04 4d 51 54 54 05 "
#define MQTT4 "00 04 4d 51 54 54 04 "

const Fixture fixtures[] = {
    // ---------------------------------------------------------- framing
    {"reserved packet type 0", V5, C, "00 00", MAL},
    {"remaining length with a fifth byte", V5, C, "30 ff ff ff ff 01", MAL},
    {"remaining length not minimally encoded", V5, C, "30 80 00", MAL},

    // ---------------------------------------------------------- CONNECT
    {"CONNECT protocol name MQTX", V5, C, "10|00 04 4d 51 54 58 05 02 00 3c 00 00 01 61",
     ReasonCode::unsupported_protocol_version},
    {"CONNECT protocol level 3", V5, C, "10|00 04 4d 51 54 54 03 02 00 3c 00 00 01 61",
     ReasonCode::unsupported_protocol_version},
    {"CONNECT protocol level 6", V5, C, "10|00 04 4d 51 54 54 06 02 00 3c 00 00 01 61",
     ReasonCode::unsupported_protocol_version},
    {"CONNECT MQIsdp at level 4 (MQTT 3.1 is level 3)", V5, C, "10|00 06 4d 51 49 73 64 70 04 02 00 3c 00 01 61",
     ReasonCode::unsupported_protocol_version},
    {"CONNECT MQTT at level 3 (3.1 is named MQIsdp)", V5, C, "10|00 04 4d 51 54 54 03 02 00 3c 00 01 61",
     ReasonCode::unsupported_protocol_version},
    {"CONNECT fixed header flags", V5, C, "11|" MQTT5 "02 00 3c 00 00 01 61", MAL},
    {"CONNECT reserved connect flag [MQTT-3.1.2-3]", V5, C, "10|" MQTT5 "03 00 3c 00 00 01 61", MAL},
    {"CONNECT will QoS 3", V5, C, "10|" MQTT5 "1e 00 3c 00 00 01 61 00 00 01 74 00 00", MAL},
    {"CONNECT will QoS without will flag [MQTT-3.1.2-11]", V5, C, "10|" MQTT5 "0a 00 3c 00 00 01 61", MAL},
    {"CONNECT will retain without will flag [MQTT-3.1.2-13]", V5, C, "10|" MQTT5 "22 00 3c 00 00 01 61", MAL},
    {"CONNECT 3.1.1 password without user name", V3, C, "10|" MQTT4 "42 00 3c 00 01 61 00 02 70 77", MAL},
    {"CONNECT trailing byte", V5, C, "10|" MQTT5 "02 00 3c 00 00 01 61 ff", MAL},
    {"CONNECT 3.1.1 trailing byte", V3, C, "10|" MQTT4 "02 00 3c 00 01 61 ff", MAL},
    {"CONNECT truncated client id", V5, C, "10|" MQTT5 "02 00 3c 00 00 05 61", MAL},
    {"CONNECT truncated keep alive", V5, C, "10|" MQTT5 "02 00", MAL},
    {"CONNECT truncated protocol name", V5, C, "10|00 04 4d 51", MAL},
    {"CONNECT overlong UTF-8 client id", V5, C, "10|" MQTT5 "02 00 3c 00 00 02 c0 80", MAL},
    {"CONNECT client id with U+0000", V5, C, "10|" MQTT5 "02 00 3c 00 00 01 00", MAL},
    {"CONNECT duplicate Session Expiry Interval", V5, C,
     "10|" MQTT5 "02 00 3c 0a 11 00 00 00 01 11 00 00 00 02 00 01 61", PROTO},
    {"CONNECT unknown property 0x05", V5, C, "10|" MQTT5 "02 00 3c 02 05 00 00 01 61", MAL},
    {"CONNECT Topic Alias not allowed", V5, C, "10|" MQTT5 "02 00 3c 03 23 00 01 00 01 61", MAL},
    {"CONNECT Receive Maximum 0", V5, C, "10|" MQTT5 "02 00 3c 03 21 00 00 00 01 61", PROTO},
    {"CONNECT Maximum Packet Size 0", V5, C, "10|" MQTT5 "02 00 3c 05 27 00 00 00 00 00 01 61", PROTO},
    {"CONNECT Request Problem Information 2", V5, C, "10|" MQTT5 "02 00 3c 02 17 02 00 01 61", PROTO},
    {"CONNECT Request Response Information 2", V5, C, "10|" MQTT5 "02 00 3c 02 19 02 00 01 61", PROTO},
    {"CONNECT Authentication Data without Method", V5, C, "10|" MQTT5 "02 00 3c 04 16 00 01 78 00 01 61", PROTO},
    {"CONNECT property length past the end", V5, C, "10|" MQTT5 "02 00 3c 05 11 00", MAL},
    {"CONNECT property length not minimal", V5, C, "10|" MQTT5 "02 00 3c 80 00 00 01 61", MAL},
    {"CONNECT user property value not UTF-8", V5, C, "10|" MQTT5 "02 00 3c 07 26 00 01 61 00 01 ff 00 01 61",
     MAL},
    {"CONNECT will payload not UTF-8 with format indicator 1", V5, C,
     "10|" MQTT5 "06 00 3c 00 00 01 61 02 01 01 00 01 74 00 01 ff", ReasonCode::payload_format_invalid},
    {"CONNECT Session Expiry Interval in will properties", V5, C,
     "10|" MQTT5 "06 00 3c 00 00 01 61 05 11 00 00 00 01 00 01 74 00 00", MAL},
    {"CONNECT will topic with wildcard", V5, C, "10|" MQTT5 "06 00 3c 00 00 01 61 00 00 01 23 00 00",
     ReasonCode::topic_name_invalid},
    {"CONNECT will payload missing", V5, C, "10|" MQTT5 "06 00 3c 00 00 01 61 00 00 01 74", MAL},
    {"CONNECT user name missing", V5, C, "10|" MQTT5 "82 00 3c 00 00 01 61", MAL},
    {"CONNECT password truncated", V5, C, "10|" MQTT5 "c2 00 3c 00 00 01 61 00 01 75 00 05 70", MAL},
    {"CONNECT sent by a server", V5, S, "10|" MQTT5 "02 00 3c 00 00 01 61", PROTO},

    // ---------------------------------------------------------- CONNACK
    {"CONNACK reserved acknowledge flags", V5, S, "20|02 00 00", MAL},
    {"CONNACK reason 0x01 not a CONNACK code", V5, S, "20|00 01 00", PROTO},
    {"CONNACK session present with an error", V5, S, "20|01 80 00", PROTO},
    {"CONNACK Maximum QoS 2", V5, S, "20|00 00 02 24 02", PROTO},
    {"CONNACK Retain Available 2", V5, S, "20|00 00 02 25 02", PROTO},
    {"CONNACK Wildcard Subscription Available 5", V5, S, "20|00 00 02 28 05", PROTO},
    {"CONNACK Subscription Identifier Available 2", V5, S, "20|00 00 02 29 02", PROTO},
    {"CONNACK Shared Subscription Available 2", V5, S, "20|00 00 02 2a 02", PROTO},
    {"CONNACK Will Delay Interval not allowed", V5, S, "20|00 00 05 18 00 00 00 01", MAL},
    {"CONNACK duplicate Server Keep Alive", V5, S, "20|00 00 06 13 00 01 13 00 02", PROTO},
    {"CONNACK truncated", V5, S, "20|00", MAL},
    {"CONNACK 3.1.1 return code 6", V3, S, "20|00 06", PROTO},
    {"CONNACK 3.1.1 trailing byte", V3, S, "20|00 00 00", MAL},
    {"CONNACK sent by a client", V5, C, "20|00 00 00", PROTO},

    // ---------------------------------------------------------- PUBLISH
    {"PUBLISH QoS 3", V5, C, "36|00 01 61 00 01 00", MAL},
    {"PUBLISH DUP at QoS 0", V5, C, "38|00 01 61 00", MAL},
    {"PUBLISH packet id 0 at QoS 1", V5, C, "32|00 01 61 00 00 00", PROTO},
    {"PUBLISH 3.1.1 packet id 0 at QoS 2", V3, C, "34|00 01 61 00 00", PROTO},
    {"PUBLISH '+' in topic", V5, C, "30|00 03 61 2f 2b 00", ReasonCode::topic_name_invalid},
    {"PUBLISH 3.1.1 '#' in topic", V3, C, "30|00 01 23", ReasonCode::topic_name_invalid},
    {"PUBLISH empty topic without Topic Alias", V5, C, "30|00 00 00", PROTO},
    {"PUBLISH 3.1.1 empty topic", V3, C, "30|00 00", ReasonCode::topic_name_invalid},
    {"PUBLISH Subscription Identifier from a client [MQTT-3.3.4-6]", V5, C, "30|00 01 61 02 0b 01", PROTO},
    {"PUBLISH Subscription Identifier 0", V5, S, "30|00 01 61 02 0b 00", PROTO},
    {"PUBLISH Payload Format Indicator 2", V5, C, "30|00 01 61 02 01 02", PROTO},
    {"PUBLISH payload not UTF-8 with format indicator 1", V5, C, "30|00 01 61 02 01 01 ff fe",
     ReasonCode::payload_format_invalid},
    {"PUBLISH duplicate Topic Alias", V5, C, "30|00 01 61 06 23 00 01 23 00 02", PROTO},
    {"PUBLISH Topic Alias 0", V5, C, "30|00 01 61 03 23 00 00", ReasonCode::topic_alias_invalid},
    {"PUBLISH Response Topic with wildcard", V5, C, "30|00 01 61 04 08 00 01 23", PROTO},
    {"PUBLISH Session Expiry Interval not allowed", V5, C, "30|00 01 61 05 11 00 00 00 01", MAL},
    {"PUBLISH truncated topic", V5, C, "30|00 05 61", MAL},
    {"PUBLISH topic with a UTF-16 surrogate", V5, C, "30|00 03 ed a0 80 00", MAL},
    {"PUBLISH duplicate Payload Format Indicator", V5, C, "30|00 01 61 04 01 00 01 01", PROTO},
    {"PUBLISH duplicate Correlation Data", V5, C, "30|00 01 61 08 09 00 01 78 09 00 01 79", PROTO},
    {"PUBLISH property id not minimally encoded", V5, C, "30|00 01 61 03 81 00 00", MAL},
    {"PUBLISH truncated packet id", V5, C, "32|00 01 61 00", MAL},
    {"PUBLISH Content Type not UTF-8", V5, C, "30|00 01 61 04 03 00 01 ff", MAL},

    // ------------------------------------------------- PUBACK PUBREC PUBREL PUBCOMP
    {"PUBACK packet id 0", V5, C, "40|00 00", PROTO},
    {"PUBACK 3.1.1 remaining length 3", V3, C, "40|00 01 00", MAL},
    {"PUBACK reason 0x92 not a PUBACK code", V5, C, "40|00 01 92", PROTO},
    {"PUBREL fixed header flags 0", V5, C, "60|00 01", MAL},
    {"PUBREL reason 0x10 not a PUBREL code", V5, C, "62|00 01 10", PROTO},
    {"PUBCOMP trailing byte after properties", V5, C, "70|00 01 00 00 ff", MAL},
    {"PUBREC truncated properties", V5, C, "50|00 01 00 05 1f 00", MAL},
    {"PUBACK truncated packet id", V5, C, "40|00", MAL},
    {"PUBACK Content Type not allowed", V5, C, "40|00 01 00 04 03 00 01 61", MAL},
    {"PUBACK fixed header flags", V5, C, "41|00 01", MAL},

    // ---------------------------------------------------------- SUBSCRIBE
    {"SUBSCRIBE without filters [MQTT-3.8.3-2]", V5, C, "82|00 01 00", PROTO},
    {"SUBSCRIBE 3.1.1 without filters", V3, C, "82|00 01", PROTO},
    {"SUBSCRIBE fixed header flags 0", V5, C, "80|00 01 00 00 01 61 00", MAL},
    {"SUBSCRIBE reserved option bits [MQTT-3.8.3-5]", V5, C, "82|00 01 00 00 01 61 40", MAL},
    {"SUBSCRIBE Retain Handling 3", V5, C, "82|00 01 00 00 01 61 30", PROTO},
    {"SUBSCRIBE QoS 3", V5, C, "82|00 01 00 00 01 61 03", PROTO},
    {"SUBSCRIBE QoS 3 (3.1.1)", V3, C, "82|00 01 00 01 61 03", MAL},
    {"SUBSCRIBE 3.1.1 No Local bit is reserved", V3, C, "82|00 01 00 01 61 04", MAL},
    {"SUBSCRIBE No Local on a shared subscription [MQTT-3.8.3-4]", V5, C,
     "82|00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 04", PROTO},
    {"SUBSCRIBE missing options byte", V5, C, "82|00 01 00 00 01 61", MAL},
    {"SUBSCRIBE packet id 0", V5, C, "82|00 00 00 00 01 61 00", PROTO},
    {"SUBSCRIBE Subscription Identifier 0", V5, C, "82|00 01 02 0b 00 00 01 61 00", PROTO},
    {"SUBSCRIBE two Subscription Identifiers", V5, C, "82|00 01 04 0b 01 0b 02 00 01 61 00", PROTO},
    {"SUBSCRIBE filter not UTF-8", V5, C, "82|00 01 00 00 01 ff 00", MAL},
    {"SUBSCRIBE Topic Alias not allowed", V5, C, "82|00 01 03 23 00 01 00 01 61 00", MAL},
    {"SUBSCRIBE sent by a server", V5, S, "82|00 01 00 00 01 61 00", PROTO},

    // ---------------------------------------------------------- SUBACK
    {"SUBACK without reason codes", V5, S, "90|00 01 00", PROTO},
    {"SUBACK reason 0x03", V5, S, "90|00 01 00 03", PROTO},
    {"SUBACK 3.1.1 return code 0x87", V3, S, "90|00 01 87", PROTO},
    {"SUBACK sent by a client", V5, C, "90|00 01 00 00", PROTO},

    // ---------------------------------------------------- UNSUBSCRIBE UNSUBACK
    {"UNSUBSCRIBE without filters", V5, C, "a2|00 01 00", PROTO},
    {"UNSUBSCRIBE 3.1.1 without filters", V3, C, "a2|00 01", PROTO},
    {"UNSUBSCRIBE fixed header flags 0", V5, C, "a0|00 01 00 00 01 61", MAL},
    {"UNSUBSCRIBE truncated filter", V5, C, "a2|00 01 00 00 03 61", MAL},
    {"UNSUBSCRIBE Subscription Identifier not allowed", V5, C, "a2|00 01 02 0b 01 00 01 61", MAL},
    {"UNSUBACK 3.1.1 with a payload", V3, S, "b0|00 01 00", MAL},
    {"UNSUBACK reason 0x01", V5, S, "b0|00 01 00 01", PROTO},
    {"UNSUBACK without reason codes", V5, S, "b0|00 01 00", PROTO},

    // ---------------------------------------------------------- PING
    {"PINGREQ with a body", V5, C, "c0|00", MAL},
    {"PINGREQ fixed header flags", V5, C, "c1 00", MAL},
    {"PINGREQ sent by a server", V5, S, "c0 00", PROTO},
    {"PINGRESP with a body", V3, S, "d0|00", MAL},

    // ---------------------------------------------------------- DISCONNECT AUTH
    {"DISCONNECT 3.1.1 with a body", V3, C, "e0|00", MAL},
    {"DISCONNECT reason 0x05", V5, C, "e0|05", PROTO},
    {"DISCONNECT Session Expiry Interval from the server [MQTT-3.14.2-2]", V5, S, "e0|00 05 11 00 00 00 01",
     PROTO},
    {"DISCONNECT fixed header flags", V5, C, "e2 00", MAL},
    {"DISCONNECT trailing byte", V5, C, "e0|00 00 ff", MAL},
    {"DISCONNECT Receive Maximum not allowed", V5, C, "e0|00 03 21 00 01", MAL},
    {"DISCONNECT 3.1.1 from a server", V3, S, "e0 00", PROTO},
    {"AUTH in 3.1.1", V3, C, "f0 00", PROTO},
    {"AUTH reason 0x01", V5, C, "f0|01", PROTO},
    {"AUTH Authentication Data without Method", V5, C, "f0|18 04 16 00 01 78", PROTO},
    {"AUTH fixed header flags", V5, C, "f1 00", MAL},
};

}  // namespace

TEST_CASE("malformed and forbidden packets give their exact reason code", "[malformed]") {
    STATIC_REQUIRE(sizeof(fixtures) / sizeof(fixtures[0]) >= 60);
    for (const auto& f : fixtures) {
        DYNAMIC_SECTION(f.name) {
            INFO(f.hex);
            CHECK(decode_error(f.hex, f.version, f.sender) == f.expected);
        }
    }
}

TEST_CASE("an invalid filter that is valid UTF-8 is not a decoding error", "[malformed][subscribe]") {
    // "a/#/b": the broker refuses it with SUBACK 0x8F.
    CHECK(decode_error("82|00 01 00 00 05 61 2f 23 2f 62 01", V5, C) == ReasonCode::success);
    CHECK(decode_error("82|00 01 00 00 00 01", V5, C) == ReasonCode::success);  // empty filter
    CHECK(decode_error("a2|00 01 00 00 03 2b 2b 2f", V5, C) == ReasonCode::success);
}

TEST_CASE("the boundary forms that are valid", "[malformed]") {
    // v5 acks: remaining length 2 = Success, 3 = reason without properties.
    CHECK(decode_error("40|00 01", V5, C) == ReasonCode::success);
    CHECK(decode_error("40|00 01 10", V5, C) == ReasonCode::success);
    // DISCONNECT v5 with remaining length 0 = Normal disconnection.
    CHECK(decode_error("e0 00", V5, C) == ReasonCode::success);
    // Several Subscription Identifiers in a PUBLISH to a client.
    CHECK(decode_error("30|00 01 61 04 0b 01 0b 02", V5, S) == ReasonCode::success);
    // User Property may repeat.
    CHECK(decode_error("30|00 01 61 0e 26 00 01 61 00 01 62 26 00 01 61 00 01 62", V5, C) == ReasonCode::success);
    // Payload Format Indicator 1 with UTF-8 payload.
    CHECK(decode_error("30|00 01 61 02 01 01 c3 a9", V5, C) == ReasonCode::success);
    // Empty topic with a Topic Alias.
    CHECK(decode_error("30|00 00 03 23 00 01", V5, C) == ReasonCode::success);
}

TEST_CASE("the valid twins of the fixtures decode", "[malformed]") {
    // Each fixture above breaks one thing in one of these packets.
    const Fixture valid[] = {
        {"CONNECT", V5, C, "10|" MQTT5 "02 00 3c 00 00 01 61", ReasonCode::success},
        {"CONNECT with will", V5, C, "10|" MQTT5 "06 00 3c 00 00 01 61 00 00 01 74 00 00", ReasonCode::success},
        {"CONNECT will QoS 2 retained", V5, C, "10|" MQTT5 "36 00 3c 00 00 01 61 00 00 01 74 00 00",
         ReasonCode::success},
        {"CONNECT user and password", V5, C, "10|" MQTT5 "c2 00 3c 00 00 01 61 00 01 75 00 01 70",
         ReasonCode::success},
        {"CONNECT 5 password without user", V5, C, "10|" MQTT5 "42 00 3c 00 00 01 61 00 01 70", ReasonCode::success},
        {"CONNECT 3.1.1 user and password", V3, C, "10|" MQTT4 "c2 00 3c 00 01 61 00 01 75 00 01 70",
         ReasonCode::success},
        {"CONNECT will UTF-8 payload", V5, C, "10|" MQTT5 "06 00 3c 00 00 01 61 02 01 01 00 01 74 00 01 41",
         ReasonCode::success},
        {"CONNECT user property", V5, C, "10|" MQTT5 "02 00 3c 07 26 00 01 61 00 01 62 00 01 61", ReasonCode::success},
        {"CONNECT auth method and data", V5, C, "10|" MQTT5 "02 00 3c 08 15 00 01 78 16 00 01 78 00 01 61",
         ReasonCode::success},
        {"CONNACK", V5, S, "20|00 00 00", ReasonCode::success},
        {"CONNACK Maximum QoS 1", V5, S, "20|00 00 02 24 01", ReasonCode::success},
        {"CONNACK 3.1.1 return code 5", V3, S, "20|00 05", ReasonCode::success},
        {"PUBLISH QoS 1", V5, C, "32|00 01 61 00 01 00", ReasonCode::success},
        {"PUBLISH DUP QoS 1", V5, C, "3a|00 01 61 00 01 00", ReasonCode::success},
        {"SUBSCRIBE", V5, C, "82|00 01 00 00 01 61 00", ReasonCode::success},
        {"SUBSCRIBE all option bits", V5, C, "82|00 01 00 00 01 61 2e", ReasonCode::success},
        {"SUBSCRIBE shared without No Local", V5, C, "82|00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 00",
         ReasonCode::success},
        {"SUBSCRIBE Subscription Identifier", V5, C, "82|00 01 02 0b 01 00 01 61 00", ReasonCode::success},
        {"SUBSCRIBE 3.1.1", V3, C, "82|00 01 00 01 61 02", ReasonCode::success},
        {"SUBACK", V5, S, "90|00 01 00 00", ReasonCode::success},
        {"SUBACK 3.1.1", V3, S, "90|00 01 80", ReasonCode::success},
        {"UNSUBACK", V5, S, "b0|00 01 00 00 11", ReasonCode::success},
        {"UNSUBACK 3.1.1", V3, S, "b0|00 01", ReasonCode::success},
        {"DISCONNECT Session Expiry Interval from a client", V5, C, "e0|00 05 11 00 00 00 01", ReasonCode::success},
        {"AUTH", V5, C, "f0|18 08 15 00 01 78 16 00 01 78", ReasonCode::success},
        {"PUBREL", V5, C, "62|00 01 92", ReasonCode::success},
        {"PUBCOMP with properties", V5, C, "70|00 01 00 00", ReasonCode::success},
    };
    for (const auto& f : valid) {
        DYNAMIC_SECTION(f.name) {
            INFO(f.hex);
            CHECK(decode_error(f.hex, f.version, f.sender) == ReasonCode::success);
        }
    }
}
