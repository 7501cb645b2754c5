// Fixed header and Remaining Length (spec 2.1, 1.5.5), flags per packet type
// (spec 2.1.3) and the Variable Byte Integer writers.
#include "mqttools/codec.hpp"

namespace mqttools {

Frame read_frame(Bytes input, std::uint32_t max_packet_size) noexcept {
    Frame frame;
    if (input.empty()) return frame;
    auto first = static_cast<std::uint8_t>(input[0]);
    auto type = static_cast<std::uint8_t>(first >> 4);
    if (type == 0) {  // reserved packet type (spec 2.1.2)
        frame.status = FrameStatus::error;
        frame.error = ReasonCode::malformed_packet;
        return frame;
    }
    frame.header.type = static_cast<PacketType>(type);
    frame.header.flags = static_cast<std::uint8_t>(first & 0x0F);

    std::uint32_t value = 0;
    std::size_t i = 0;
    for (;; ++i) {
        if (i == 4) {  // a fifth length byte: over 268,435,455
            frame.status = FrameStatus::error;
            frame.error = ReasonCode::malformed_packet;
            return frame;
        }
        if (1 + i >= input.size()) return frame;  // need more header bytes
        auto b = static_cast<std::uint8_t>(input[1 + i]);
        value |= static_cast<std::uint32_t>(b & 0x7F) << (7 * i);
        if ((b & 0x80) == 0) {
            if (i > 0 && b == 0) {  // non-minimal encoding [MQTT-1.5.5-1]
                frame.status = FrameStatus::error;
                frame.error = ReasonCode::malformed_packet;
                return frame;
            }
            break;
        }
    }
    frame.header.remaining_length = value;
    frame.header.header_size = static_cast<std::uint8_t>(2 + i);
    // Rejected from the header alone, before the body is buffered.
    if (frame.header.packet_size() > max_packet_size) {
        frame.status = FrameStatus::error;
        frame.error = ReasonCode::packet_too_large;
        return frame;
    }
    if (input.size() >= frame.header.packet_size()) frame.status = FrameStatus::complete;
    return frame;
}

ReasonCode check_fixed_header_flags(PacketType type, std::uint8_t flags) noexcept {
    switch (type) {
        case PacketType::publish:
            // QoS 3 is malformed [MQTT-3.3.1-4].
            return (flags & 0x06) == 0x06 ? ReasonCode::malformed_packet : ReasonCode::success;
        case PacketType::pubrel:
        case PacketType::subscribe:
        case PacketType::unsubscribe:
            // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]
            return flags == 0x02 ? ReasonCode::success : ReasonCode::malformed_packet;
        default:
            return flags == 0 ? ReasonCode::success : ReasonCode::malformed_packet;
    }
}

std::size_t varint_size(std::uint32_t value) noexcept {
    if (value < 128) return 1;
    if (value < 16'384) return 2;
    if (value < 2'097'152) return 3;
    return 4;
}

std::size_t write_varint(std::uint32_t value, std::byte* out) noexcept {
    std::size_t n = 0;
    do {
        auto b = static_cast<std::uint8_t>(value & 0x7F);
        value >>= 7;
        if (value != 0) b |= 0x80;
        out[n++] = static_cast<std::byte>(b);
    } while (value != 0 && n < 4);
    return n;
}

}  // namespace mqttools
