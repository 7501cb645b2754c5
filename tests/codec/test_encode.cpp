// Byte-exact encoding of every packet type in both versions, built from the
// layouts of the MQTT 5.0 and 3.1.1 specifications (chapter 3 of each).
#include "util.hpp"

using namespace codec_test;

namespace {

constexpr auto V5 = ProtocolVersion::v5;
constexpr auto V3 = ProtocolVersion::v311;

template <class P>
std::string enc(const P& p, ProtocolVersion v) {
    return to_hex(encode_v(p, v));
}

ConnectPacket spec_connect(ProtocolVersion v) {
    // The variable header of the spec's example (3.1.2.12 in v5, 3.1.2.10 in
    // 3.1.1): flags 0xCE = user name, password, will QoS 1, will, clean start;
    // Keep Alive 10; v5: Session Expiry Interval 10.
    ConnectPacket c;
    c.version = v;
    c.clean_start = true;
    c.keep_alive = 10;
    c.client_id = "cid";
    Will w;
    w.qos = QoS::at_least_once;
    w.topic = "w";
    w.payload = as_bytes("x");
    c.will = w;
    c.username = "u";
    c.password = as_bytes("p");
    if (v == V5) c.properties.session_expiry_interval = 10;
    return c;
}

}  // namespace

TEST_CASE("CONNECT bytes", "[encode][connect]") {
    CHECK(enc(spec_connect(V5), V5) ==
          "10 22 00 04 4d 51 54 54 05 ce 00 0a 05 11 00 00 00 0a 00 03 63 69 64 00 00 01 77 00 01 78 00 01 75 00 01 70");
    CHECK(enc(spec_connect(V3), V3) ==
          "10 1b 00 04 4d 51 54 54 04 ce 00 0a 00 03 63 69 64 00 01 77 00 01 78 00 01 75 00 01 70");
    ConnectPacket m;
    m.version = V3;
    m.clean_start = false;
    m.keep_alive = 0;
    m.client_id = "";
    CHECK(enc(m, V3) == "10 0c 00 04 4d 51 54 54 04 00 00 00 00 00");
    m.version = V5;
    CHECK(enc(m, V5) == "10 0d 00 04 4d 51 54 54 05 00 00 00 00 00 00");
}

TEST_CASE("CONNACK bytes", "[encode][connack]") {
    ConnackPacket c;
    c.session_present = true;
    c.properties.topic_alias_maximum = 10;
    CHECK(enc(c, V5) == "20 06 01 00 03 22 00 0a");
    CHECK(enc(c, V3) == "20 02 01 00");
    ConnackPacket e;
    e.reason = ReasonCode::not_authorized;
    CHECK(enc(e, V5) == "20 03 00 87 00");
    CHECK(enc(e, V3) == "20 02 00 05");
    // 3.1.1 return codes per packets.hpp.
    const std::pair<ReasonCode, const char*> map[] = {
        {ReasonCode::unsupported_protocol_version, "20 02 00 01"},
        {ReasonCode::client_identifier_not_valid, "20 02 00 02"},
        {ReasonCode::server_unavailable, "20 02 00 03"},
        {ReasonCode::bad_user_name_or_password, "20 02 00 04"},
        {ReasonCode::not_authorized, "20 02 00 05"},
        {ReasonCode::quota_exceeded, "20 02 00 03"},
        {ReasonCode::banned, "20 02 00 03"},
    };
    for (auto [code, bytes] : map) {
        ConnackPacket p;
        p.reason = code;
        CHECK(enc(p, V3) == bytes);
    }
}

TEST_CASE("PUBLISH bytes", "[encode][publish]") {
    PublishPacket p;
    p.qos = QoS::at_least_once;
    p.topic = "a/b";
    p.packet_id = 10;
    p.payload = as_bytes("hi");
    CHECK(enc(p, V5) == "32 0a 00 03 61 2f 62 00 0a 00 68 69");
    CHECK(enc(p, V3) == "32 09 00 03 61 2f 62 00 0a 68 69");
    PublishPacket q;
    q.retain = true;
    q.topic = "a/b";
    q.payload = as_bytes("hi");
    CHECK(enc(q, V5) == "31 08 00 03 61 2f 62 00 68 69");
    CHECK(enc(q, V3) == "31 07 00 03 61 2f 62 68 69");
    PublishPacket d = p;
    d.dup = true;
    d.qos = QoS::exactly_once;
    d.properties.payload_format_indicator = 1;
    d.properties.message_expiry_interval = 0x0102;
    CHECK(enc(d, V5) == "3c 11 00 03 61 2f 62 00 0a 07 01 01 02 00 00 01 02 68 69");
    CHECK(enc(d, V3) == "3c 09 00 03 61 2f 62 00 0a 68 69");
}

TEST_CASE("PUBLISH head: the whole packet but its payload", "[encode][publish]") {
    // A big payload is queued by reference behind the head (the broker's
    // shared payloads): head + payload must be exactly encode()'s bytes.
    std::string payload(200, 'x');  // 2-byte Remaining Length
    PublishPacket p;
    p.qos = QoS::at_least_once;
    p.topic = "a/b";
    p.packet_id = 10;
    p.payload = as_bytes(payload);
    p.properties.message_expiry_interval = 5;
    for (auto v : {V5, V3}) {
        const std::string whole = enc(p, v);
        std::vector<std::byte> head(encoded_size(p, v));
        const std::size_t n = encode_publish_head(p, v, head);
        REQUIRE(n == encoded_size(p, v) - payload.size());
        head.resize(n);
        head.insert(head.end(), p.payload.begin(), p.payload.end());
        CHECK(to_hex(head) == whole);
        // Room for the head is enough; less is refused.
        std::vector<std::byte> small(n - 1);
        CHECK(encode_publish_head(p, v, small) == 0);
    }
}

TEST_CASE("PUBACK PUBREC PUBREL PUBCOMP bytes", "[encode][ack]") {
    AckPacket a;
    a.type = PacketType::puback;
    a.packet_id = 10;
    CHECK(enc(a, V5) == "40 02 00 0a");  // Success without properties
    CHECK(enc(a, V3) == "40 02 00 0a");
    a.reason = ReasonCode::no_matching_subscribers;
    CHECK(enc(a, V5) == "40 03 00 0a 10");  // reason without properties
    CHECK(enc(a, V3) == "40 02 00 0a");
    a.properties.reason_string = "x";
    CHECK(enc(a, V5) == "40 08 00 0a 10 04 1f 00 01 78");
    AckPacket s;
    s.packet_id = 10;
    s.properties.reason_string = "x";
    CHECK(enc(s, V5) == "40 08 00 0a 00 04 1f 00 01 78");  // Success with properties
    AckPacket rec;
    rec.type = PacketType::pubrec;
    rec.packet_id = 10;
    CHECK(enc(rec, V3) == "50 02 00 0a");
    CHECK(enc(rec, V5) == "50 02 00 0a");
    AckPacket rel;
    rel.type = PacketType::pubrel;
    rel.packet_id = 10;
    CHECK(enc(rel, V3) == "62 02 00 0a");
    rel.reason = ReasonCode::packet_identifier_not_found;
    CHECK(enc(rel, V5) == "62 03 00 0a 92");
    AckPacket comp;
    comp.type = PacketType::pubcomp;
    comp.packet_id = 0xFFFF;
    CHECK(enc(comp, V3) == "70 02 ff ff");
    CHECK(enc(comp, V5) == "70 02 ff ff");
}

TEST_CASE("SUBSCRIBE SUBACK bytes", "[encode][subscribe]") {
    const Subscription subs[] = {{"a/b", QoS::at_least_once, true, true, 1}};
    SubscribePacket s;
    s.packet_id = 10;
    s.subscriptions = SubscriptionList(subs);
    CHECK(enc(s, V5) == "82 09 00 0a 00 00 03 61 2f 62 1d");
    CHECK(enc(s, V3) == "82 08 00 0a 00 03 61 2f 62 01");
    s.properties.subscription_identifier = 300;
    CHECK(enc(s, V5) == "82 0c 00 0a 03 0b ac 02 00 03 61 2f 62 1d");

    const auto codes = hex("01 8f");
    SubackPacket a;
    a.packet_id = 10;
    a.reason_codes = Bytes(codes);
    CHECK(enc(a, V5) == "90 05 00 0a 00 01 8f");
    CHECK(enc(a, V3) == "90 04 00 0a 01 80");  // any v5 error is 0x80 in 3.1.1
}

TEST_CASE("UNSUBSCRIBE UNSUBACK bytes", "[encode][unsubscribe]") {
    const std::string_view filters[] = {"a/b"};
    UnsubscribePacket u;
    u.packet_id = 10;
    u.filters = FilterList(filters);
    CHECK(enc(u, V5) == "a2 08 00 0a 00 00 03 61 2f 62");
    CHECK(enc(u, V3) == "a2 07 00 0a 00 03 61 2f 62");
    const auto codes = hex("00 11");
    UnsubackPacket a;
    a.packet_id = 10;
    a.reason_codes = Bytes(codes);
    CHECK(enc(a, V5) == "b0 05 00 0a 00 00 11");
    CHECK(enc(a, V3) == "b0 02 00 0a");  // no reason codes in 3.1.1
}

TEST_CASE("PINGREQ PINGRESP DISCONNECT AUTH bytes", "[encode][misc]") {
    CHECK(enc(PingreqPacket{}, V5) == "c0 00");
    CHECK(enc(PingreqPacket{}, V3) == "c0 00");
    CHECK(enc(PingrespPacket{}, V5) == "d0 00");
    CHECK(enc(PingrespPacket{}, V3) == "d0 00");
    DisconnectPacket d;
    CHECK(enc(d, V5) == "e0 00");
    CHECK(enc(d, V3) == "e0 00");
    d.reason = ReasonCode::session_taken_over;
    CHECK(enc(d, V5) == "e0 01 8e");
    CHECK(enc(d, V3) == "e0 00");
    DisconnectPacket w;
    w.reason = ReasonCode::disconnect_with_will_message;
    w.properties.session_expiry_interval = 0;
    CHECK(enc(w, V5) == "e0 07 04 05 11 00 00 00 00");
    AuthPacket a;
    a.reason = ReasonCode::continue_authentication;
    a.properties.authentication_method = "m";
    CHECK(enc(a, V5) == "f0 06 18 04 15 00 01 6d");
    CHECK(enc(AuthPacket{}, V5) == "f0 00");
}

TEST_CASE("encode refuses a buffer that is too small", "[encode]") {
    PublishPacket p;
    p.topic = "t";
    p.payload = as_bytes("payload");
    std::size_t n = encoded_size(p, V5);
    REQUIRE(n == 13);
    Buffer out(n - 1, std::byte{0xEE});
    CHECK(encode(p, V5, MutableBytes(out)) == 0);
    // Nothing was written.
    CHECK(std::all_of(out.begin(), out.end(), [](std::byte b) { return b == std::byte{0xEE}; }));
    out.resize(n + 10);
    CHECK(encode(p, V5, MutableBytes(out)) == n);
}

TEST_CASE("encoded_size is 0 for what cannot be encoded", "[encode]") {
    std::string big(70'000, 'a');
    PublishPacket p;
    p.topic = big;
    CHECK(encoded_size(p, V5) == 0);
    CHECK(encoded_size(p, V3) == 0);
    Buffer out(100'000);
    CHECK(encode(p, V5, MutableBytes(out)) == 0);
    PublishPacket q;
    q.topic = "t";
    q.properties.content_type = std::string_view(big);
    CHECK(encoded_size(q, V5) == 0);
    CHECK(encoded_size(q, V3) != 0);  // 3.1.1 writes no properties
    ConnectPacket c;
    c.client_id = big;
    CHECK(encoded_size(c) == 0);
    // A payload of exactly the maximum remaining length can be sized.
    std::vector<std::byte> huge(max_remaining_length - 3);
    PublishPacket h;
    h.topic = "t";
    h.payload = Bytes(huge);
    CHECK(encoded_size(h, V3) == 5 + std::size_t{max_remaining_length});
    h.payload = Bytes(huge.data(), huge.size() + 0);
    std::vector<std::byte> over(max_remaining_length - 2);
    h.payload = Bytes(over);
    CHECK(encoded_size(h, V3) == 0);
}

TEST_CASE("large remaining lengths use more header bytes", "[encode]") {
    std::vector<std::byte> payload(20'000, std::byte{0x41});
    PublishPacket p;
    p.topic = "t";
    p.payload = Bytes(payload);
    Buffer out = encode_v(p, V3);
    CHECK(out.size() == 1 + 3 + 3 + 20'000);
    Frame f = read_frame(Bytes(out));
    CHECK(f.status == FrameStatus::complete);
    CHECK(f.header.remaining_length == 20'003);
}
