// Decoding byte-exact vectors of every packet type in both versions, built
// from the layouts of the MQTT 5.0 and 3.1.1 specifications.
#include "util.hpp"

using namespace codec_test;

namespace {

constexpr auto V5 = ProtocolVersion::v5;
constexpr auto V3 = ProtocolVersion::v311;

// Keeps the input alive with the packet decoded from it.
template <class P>
struct Decoded {
    Buffer wire;
    P p;
};

template <class P>
Decoded<P> dec(std::string_view hexstr, ProtocolVersion v, Sender s) {
    Decoded<P> d;
    d.wire = hex(hexstr);
    auto r = decode_all(d.wire, v, s);
    INFO(hexstr);
    if (!r) INFO("error " << int(r.error()));
    REQUIRE(r.ok());
    REQUIRE(std::holds_alternative<P>(*r));
    d.p = std::get<P>(*r);
    return d;
}

}  // namespace

TEST_CASE("CONNECT with the spec's variable header (v5 3.1.2.12)", "[decode][connect]") {
    auto d = dec<ConnectPacket>(
        "10 22 00 04 4d 51 54 54 05 ce 00 0a 05 11 00 00 00 0a 00 03 63 69 64 00 00 01 77 00 01 78 00 01 75 00 01 70",
        V5, Sender::client);
    const auto& c = d.p;
    CHECK(c.version == V5);
    CHECK(c.clean_start);
    CHECK(c.keep_alive == 10);
    CHECK(c.properties.session_expiry_interval == 10u);
    CHECK(c.client_id == "cid");
    REQUIRE(c.will);
    CHECK(c.will->qos == QoS::at_least_once);
    CHECK(!c.will->retain);
    CHECK(c.will->topic == "w");
    CHECK(as_string(c.will->payload) == "x");
    CHECK(c.will->properties.raw.empty());
    REQUIRE(c.username);
    CHECK(*c.username == "u");
    REQUIRE(c.password);
    CHECK(as_string(*c.password) == "p");
    // Views point into the input: nothing was copied.
    CHECK(reinterpret_cast<const std::byte*>(c.client_id.data()) == d.wire.data() + 20);
}

TEST_CASE("CONNECT with the spec's variable header (3.1.1 3.1.2.10)", "[decode][connect]") {
    auto d = dec<ConnectPacket>(
        "10 1b 00 04 4d 51 54 54 04 ce 00 0a 00 03 63 69 64 00 01 77 00 01 78 00 01 75 00 01 70", V3,
        Sender::client);
    CHECK(d.p.version == V3);
    CHECK(d.p.keep_alive == 10);
    CHECK(d.p.client_id == "cid");
    REQUIRE(d.p.will);
    CHECK(d.p.will->topic == "w");
    CHECK(*d.p.username == "u");
    // The version comes from the packet, not from the argument.
    auto e = dec<ConnectPacket>("10 0c 00 04 4d 51 54 54 04 00 00 00 00 00", V5, Sender::client);
    CHECK(e.p.version == V3);
    CHECK(!e.p.clean_start);
    CHECK(e.p.client_id.empty());
}

TEST_CASE("CONNECT of MQTT 3.1: protocol name MQIsdp, level 3", "[decode][connect]") {
    // Decoded as 3.1.1 (the same packets on the wire), marked as 3.1 so the
    // server applies its client id rule.
    auto d = dec<ConnectPacket>("10 11 00 06 4d 51 49 73 64 70 03 02 00 3c 00 03 63 69 64", V5, Sender::client);
    CHECK(d.p.version == V3);
    CHECK(d.p.mqtt31);
    CHECK_FALSE(d.p.bridge);
    CHECK(d.p.client_id == "cid");
    // A 3.1 bridge with try_private: 0x80 | 3.
    auto b = dec<ConnectPacket>("10 11 00 06 4d 51 49 73 64 70 83 02 00 3c 00 03 63 69 64", V5, Sender::client);
    CHECK(b.p.mqtt31);
    CHECK(b.p.bridge);
    auto plain = dec<ConnectPacket>("10 0f 00 04 4d 51 54 54 04 02 00 3c 00 03 63 69 64", V5, Sender::client);
    CHECK_FALSE(plain.p.mqtt31);
}

TEST_CASE("CONNECT from a 3.1.1 bridge: try_private's protocol level 0x84", "[decode][connect]") {
    // Mosquitto's bridge flag: 0x80 | 4, a 3.1.1 CONNECT in every other way.
    auto d = dec<ConnectPacket>("10 0f 00 04 4d 51 54 54 84 02 00 3c 00 03 63 69 64", V5, Sender::client);
    CHECK(d.p.version == V3);
    CHECK(d.p.bridge);
    CHECK(d.p.client_id == "cid");
    auto plain = dec<ConnectPacket>("10 0f 00 04 4d 51 54 54 04 02 00 3c 00 03 63 69 64", V5, Sender::client);
    CHECK_FALSE(plain.p.bridge);
    // Only 3.1.1 has the flag: 0x85 is not a protocol level.
    Buffer v5 = hex("10 10 00 04 4d 51 54 54 85 02 00 3c 00 00 03 63 69 64");
    auto r = decode_all(v5, V5, Sender::client);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error() == ReasonCode::unsupported_protocol_version);
    // And the encoder writes it back.
    ConnectPacket c = d.p;
    Buffer out(encoded_size(c));
    REQUIRE(encode(c, MutableBytes(out.data(), out.size())) == out.size());
    CHECK(out == d.wire);
}

TEST_CASE("CONNACK", "[decode][connack]") {
    auto a = dec<ConnackPacket>("20 06 01 00 03 22 00 0a", V5, Sender::server);
    CHECK(a.p.session_present);
    CHECK(a.p.reason == ReasonCode::success);
    CHECK(a.p.properties.topic_alias_maximum == std::uint16_t{10});
    auto b = dec<ConnackPacket>("20 03 00 87 00", V5, Sender::server);
    CHECK(b.p.reason == ReasonCode::not_authorized);
    auto c = dec<ConnackPacket>("20 02 01 00", V3, Sender::server);
    CHECK(c.p.session_present);
    CHECK(c.p.reason == ReasonCode::success);
    const std::pair<const char*, ReasonCode> map[] = {
        {"20 02 00 01", ReasonCode::unsupported_protocol_version},
        {"20 02 00 02", ReasonCode::client_identifier_not_valid},
        {"20 02 00 03", ReasonCode::server_unavailable},
        {"20 02 00 04", ReasonCode::bad_user_name_or_password},
        {"20 02 00 05", ReasonCode::not_authorized},
    };
    for (auto [bytes, code] : map) CHECK(dec<ConnackPacket>(bytes, V3, Sender::server).p.reason == code);
}

TEST_CASE("PUBLISH", "[decode][publish]") {
    auto a = dec<PublishPacket>("32 0a 00 03 61 2f 62 00 0a 00 68 69", V5, Sender::client);
    CHECK(a.p.qos == QoS::at_least_once);
    CHECK(a.p.packet_id == 10);
    CHECK(a.p.topic == "a/b");
    CHECK(as_string(a.p.payload) == "hi");
    CHECK(!a.p.retain);
    CHECK(!a.p.dup);
    auto b = dec<PublishPacket>("32 09 00 03 61 2f 62 00 0a 68 69", V3, Sender::client);
    CHECK(b.p.packet_id == 10);
    CHECK(as_string(b.p.payload) == "hi");
    auto c = dec<PublishPacket>("31 08 00 03 61 2f 62 00 68 69", V5, Sender::server);
    CHECK(c.p.retain);
    CHECK(c.p.qos == QoS::at_most_once);
    CHECK(c.p.packet_id == 0);
    auto d = dec<PublishPacket>("3c 11 00 03 61 2f 62 00 0a 07 01 01 02 00 00 01 02 68 69", V5, Sender::server);
    CHECK(d.p.dup);
    CHECK(d.p.qos == QoS::exactly_once);
    CHECK(d.p.properties.payload_format_indicator == std::uint8_t{1});
    CHECK(d.p.properties.message_expiry_interval == 0x0102u);
    CHECK(d.p.properties.raw.size() == 7);
    auto e = dec<PublishPacket>("31 07 00 03 61 2f 62 68 69", V3, Sender::server);
    CHECK(e.p.retain);
    CHECK(as_string(e.p.payload) == "hi");
    // Empty payload.
    auto f = dec<PublishPacket>("30 04 00 01 61 00", V5, Sender::client);
    CHECK(f.p.payload.empty());
}

TEST_CASE("acks", "[decode][ack]") {
    auto a = dec<AckPacket>("40 02 00 0a", V5, Sender::client);
    CHECK(a.p.type == PacketType::puback);
    CHECK(a.p.packet_id == 10);
    CHECK(a.p.reason == ReasonCode::success);
    auto b = dec<AckPacket>("40 03 00 0a 10", V5, Sender::client);
    CHECK(b.p.reason == ReasonCode::no_matching_subscribers);
    auto c = dec<AckPacket>("40 08 00 0a 10 04 1f 00 01 78", V5, Sender::server);
    CHECK(c.p.properties.reason_string == std::string_view("x"));
    CHECK(dec<AckPacket>("50 02 00 0a", V3, Sender::client).p.type == PacketType::pubrec);
    CHECK(dec<AckPacket>("62 02 00 0a", V3, Sender::client).p.type == PacketType::pubrel);
    auto d = dec<AckPacket>("62 03 00 0a 92", V5, Sender::server);
    CHECK(d.p.reason == ReasonCode::packet_identifier_not_found);
    auto e = dec<AckPacket>("70 02 ff ff", V3, Sender::server);
    CHECK(e.p.type == PacketType::pubcomp);
    CHECK(e.p.packet_id == 0xFFFF);
}

TEST_CASE("SUBSCRIBE SUBACK", "[decode][subscribe]") {
    auto a = dec<SubscribePacket>("82 0c 00 0a 03 0b ac 02 00 03 61 2f 62 1d", V5, Sender::client);
    CHECK(a.p.packet_id == 10);
    CHECK(a.p.properties.subscription_identifier == 300u);
    REQUIRE(a.p.subscriptions.size() == 1);
    std::size_t cursor = 0;
    Subscription s;
    REQUIRE(a.p.subscriptions.next(cursor, s));
    CHECK(s.filter == "a/b");
    CHECK(s.qos == QoS::at_least_once);
    CHECK(s.no_local);
    CHECK(s.retain_as_published);
    CHECK(s.retain_handling == 1);
    CHECK(!a.p.subscriptions.next(cursor, s));

    auto b = dec<SubscribePacket>("82 0e 00 0a 00 03 61 2f 62 01 00 03 63 2f 23 02", V3, Sender::client);
    REQUIRE(b.p.subscriptions.size() == 2);
    cursor = 0;
    REQUIRE(b.p.subscriptions.next(cursor, s));
    CHECK(s.filter == "a/b");
    CHECK(s.qos == QoS::at_least_once);
    REQUIRE(b.p.subscriptions.next(cursor, s));
    CHECK(s.filter == "c/#");
    CHECK(s.qos == QoS::exactly_once);
    CHECK(!s.no_local);

    auto c = dec<SubackPacket>("90 05 00 0a 00 01 8f", V5, Sender::server);
    CHECK(to_hex(c.p.reason_codes) == "01 8f");
    auto d = dec<SubackPacket>("90 04 00 0a 01 80", V3, Sender::server);
    CHECK(to_hex(d.p.reason_codes) == "01 80");
}

TEST_CASE("UNSUBSCRIBE UNSUBACK", "[decode][unsubscribe]") {
    auto a = dec<UnsubscribePacket>("a2 08 00 0a 00 00 03 61 2f 62", V5, Sender::client);
    CHECK(a.p.packet_id == 10);
    REQUIRE(a.p.filters.size() == 1);
    std::size_t cursor = 0;
    std::string_view f;
    REQUIRE(a.p.filters.next(cursor, f));
    CHECK(f == "a/b");
    auto b = dec<UnsubscribePacket>("a2 07 00 0a 00 03 61 2f 62", V3, Sender::client);
    CHECK(b.p.filters.size() == 1);
    auto c = dec<UnsubackPacket>("b0 05 00 0a 00 00 11", V5, Sender::server);
    CHECK(to_hex(c.p.reason_codes) == "00 11");
    auto d = dec<UnsubackPacket>("b0 02 00 0a", V3, Sender::server);
    CHECK(d.p.packet_id == 10);
    CHECK(d.p.reason_codes.empty());
}

TEST_CASE("PINGREQ PINGRESP DISCONNECT AUTH", "[decode][misc]") {
    dec<PingreqPacket>("c0 00", V5, Sender::client);
    dec<PingreqPacket>("c0 00", V3, Sender::client);
    dec<PingrespPacket>("d0 00", V5, Sender::server);
    dec<PingrespPacket>("d0 00", V3, Sender::server);
    CHECK(dec<DisconnectPacket>("e0 00", V5, Sender::client).p.reason == ReasonCode::success);
    CHECK(dec<DisconnectPacket>("e0 00", V3, Sender::client).p.reason == ReasonCode::success);
    CHECK(dec<DisconnectPacket>("e0 01 8e", V5, Sender::server).p.reason == ReasonCode::session_taken_over);
    auto w = dec<DisconnectPacket>("e0 07 04 05 11 00 00 00 00", V5, Sender::client);
    CHECK(w.p.reason == ReasonCode::disconnect_with_will_message);
    CHECK(w.p.properties.session_expiry_interval == 0u);
    auto a = dec<AuthPacket>("f0 06 18 04 15 00 01 6d", V5, Sender::server);
    CHECK(a.p.reason == ReasonCode::continue_authentication);
    CHECK(a.p.properties.authentication_method == std::string_view("m"));
    CHECK(dec<AuthPacket>("f0 00", V5, Sender::client).p.reason == ReasonCode::success);
}

TEST_CASE("decoders used directly", "[decode]") {
    // The broker calls the per-type decoders with the frame's header.
    Buffer in = hex("30 0d 00 03 61 2f 62 00 68 65 6c 6c 6f 21 21");
    Frame f = read_frame(Bytes(in));
    REQUIRE(f.status == FrameStatus::complete);
    auto r = decode_publish(f.header, Bytes(in).subspan(2, f.header.remaining_length), V5, Sender::client);
    REQUIRE(r);
    CHECK(r->topic == "a/b");
    CHECK(as_string(r->payload) == "hello!!");
}
