// Fixed header, Remaining Length and Variable Byte Integers (spec 2.1, 1.5.5).
#include "util.hpp"

using namespace codec_test;

TEST_CASE("read_frame reports need_more until the packet is complete", "[framing]") {
    Buffer in = hex("30 05 00 01 61 68 69");
    for (std::size_t n = 0; n < in.size(); ++n) {
        Frame f = read_frame(Bytes(in).first(n));
        CHECK(f.status == FrameStatus::need_more);
        if (n >= 2) {
            CHECK(f.header.type == PacketType::publish);
            CHECK(f.header.remaining_length == 5);
            CHECK(f.header.header_size == 2);
        }
    }
    Frame f = read_frame(Bytes(in));
    REQUIRE(f.status == FrameStatus::complete);
    CHECK(f.header.packet_size() == 7);
    CHECK(f.header.flags == 0);
    // Extra bytes after the packet (the next packet) do not matter.
    in.push_back(std::byte{0xC0});
    CHECK(read_frame(Bytes(in)).status == FrameStatus::complete);
}

TEST_CASE("Remaining Length boundaries of spec 1.5.5", "[framing]") {
    struct Case {
        const char* hex;
        std::uint32_t value;
        std::uint8_t header_size;
    };
    const Case cases[] = {
        {"30 00", 0, 2},
        {"30 7f", 127, 2},
        {"30 80 01", 128, 3},
        {"30 ff 7f", 16'383, 3},
        {"30 80 80 01", 16'384, 4},
        {"30 ff ff 7f", 2'097'151, 4},
        {"30 80 80 80 01", 2'097'152, 5},
        {"30 ff ff ff 7f", 268'435'455, 5},
    };
    for (const auto& c : cases) {
        Buffer in = hex(c.hex);
        Frame f = read_frame(Bytes(in));
        INFO(c.hex);
        CHECK(f.status == (c.value == 0 ? FrameStatus::complete : FrameStatus::need_more));
        CHECK(f.header.remaining_length == c.value);
        CHECK(f.header.header_size == c.header_size);
        // And the writer produces the same bytes.
        std::byte out[4];
        std::size_t n = write_varint(c.value, out);
        CHECK(n == varint_size(c.value));
        CHECK(to_hex(Bytes(out, n)) == to_hex(Bytes(in).subspan(1)));
    }
}

TEST_CASE("read_frame errors", "[framing]") {
    SECTION("a fifth length byte") {
        Buffer in = hex("30 80 80 80 80 01");
        Frame f = read_frame(Bytes(in));
        CHECK(f.status == FrameStatus::error);
        CHECK(f.error == ReasonCode::malformed_packet);
        // Known as soon as the fifth byte would be needed.
        CHECK(read_frame(Bytes(in).first(5)).status == FrameStatus::error);
        CHECK(read_frame(Bytes(in).first(4)).status == FrameStatus::need_more);
    }
    SECTION("reserved packet type 0") {
        Buffer in = hex("00");
        Frame f = read_frame(Bytes(in));
        CHECK(f.status == FrameStatus::error);
        CHECK(f.error == ReasonCode::malformed_packet);
    }
    SECTION("non-minimal length") {
        Buffer in = hex("30 80 80 00");
        CHECK(read_frame(Bytes(in)).error == ReasonCode::malformed_packet);
    }
    SECTION("over the maximum packet size, from the header alone") {
        Buffer in = hex("30 ff 01");  // 255 bytes announced, none there
        Frame f = read_frame(Bytes(in), 257);
        CHECK(f.status == FrameStatus::error);
        CHECK(f.error == ReasonCode::packet_too_large);
        // 3 + 255 = 258 is the whole packet's size.
        CHECK(read_frame(Bytes(in), 258).status == FrameStatus::need_more);
    }
}

TEST_CASE("fixed header flags per packet type [MQTT-2.1.3-1]", "[framing]") {
    for (int t = 1; t <= 15; ++t) {
        auto type = static_cast<PacketType>(t);
        for (std::uint8_t flags = 0; flags < 16; ++flags) {
            ReasonCode expect = ReasonCode::malformed_packet;
            if (type == PacketType::publish)
                expect = (flags & 6) == 6 ? ReasonCode::malformed_packet : ReasonCode::success;
            else if (type == PacketType::pubrel || type == PacketType::subscribe || type == PacketType::unsubscribe)
                expect = flags == 2 ? ReasonCode::success : ReasonCode::malformed_packet;
            else
                expect = flags == 0 ? ReasonCode::success : ReasonCode::malformed_packet;
            INFO(t << " " << int(flags));
            CHECK(check_fixed_header_flags(type, flags) == expect);
        }
    }
}

TEST_CASE("varint_size", "[framing]") {
    CHECK(varint_size(0) == 1);
    CHECK(varint_size(127) == 1);
    CHECK(varint_size(128) == 2);
    CHECK(varint_size(16'383) == 2);
    CHECK(varint_size(16'384) == 3);
    CHECK(varint_size(2'097'151) == 3);
    CHECK(varint_size(2'097'152) == 4);
    CHECK(varint_size(max_remaining_length) == 4);
}

TEST_CASE("a coalesced stream frames the same however it is split", "[framing]") {
    // CONNECT, SUBSCRIBE, PUBLISH, PINGREQ, DISCONNECT back to back.
    Buffer stream = hex(
        "10 0d 00 04 4d 51 54 54 05 00 00 00 00 00 00"
        "82 09 00 0a 00 00 03 61 2f 62 1d"
        "30 08 00 03 61 2f 62 00 68 69"
        "c0 00 e0 00");
    const PacketType expected[] = {PacketType::connect, PacketType::subscribe, PacketType::publish,
                                   PacketType::pingreq, PacketType::disconnect};
    // Deliver the stream in chunks of every size from 1 byte to all of it,
    // as a connection's receive buffer would see it.
    for (std::size_t chunk = 1; chunk <= stream.size(); ++chunk) {
        Buffer buffered;
        std::size_t fed = 0;
        std::size_t seen = 0;
        while (fed < stream.size() || !buffered.empty()) {
            std::size_t n = std::min(chunk, stream.size() - fed);
            buffered.insert(buffered.end(), stream.begin() + static_cast<std::ptrdiff_t>(fed),
                            stream.begin() + static_cast<std::ptrdiff_t>(fed + n));
            fed += n;
            for (;;) {
                Frame f = read_frame(Bytes(buffered));
                REQUIRE(f.status != FrameStatus::error);
                if (f.status == FrameStatus::need_more) break;
                REQUIRE(seen < 5);
                CHECK(f.header.type == expected[seen]);
                const Sender s = Sender::client;
                auto r = decode_packet(f.header, Bytes(buffered).subspan(f.header.header_size, f.header.remaining_length),
                                       ProtocolVersion::v5, s);
                CHECK(r.ok());
                ++seen;
                buffered.erase(buffered.begin(), buffered.begin() + f.header.packet_size());
            }
            if (fed == stream.size() && !buffered.empty()) break;
        }
        INFO("chunk " << chunk);
        CHECK(seen == 5);
        CHECK(buffered.empty());
    }
}
