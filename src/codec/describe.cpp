#include "mqttools/describe.hpp"

#include <cstdio>

namespace mqttools {

namespace {

std::string flag(char name, unsigned value) { return std::string(1, name) + std::to_string(value); }

std::string hex_reason(ReasonCode reason) {
    char text[8];
    std::snprintf(text, sizeof text, "0x%02x", static_cast<unsigned>(reason));
    return text;
}

// Mosquitto prints a reason code in decimal ("RC:0"); the name helps more.
std::string reason_text(ReasonCode reason) {
    return std::to_string(static_cast<unsigned>(reason)) + " " + std::string(reason_code_name(reason));
}

std::string describe(const ConnectPacket& p) {
    std::string s = "CONNECT (p" + std::to_string(static_cast<unsigned>(p.version)) + ", c" +
                    std::to_string(p.clean_start ? 1 : 0) + ", k" + std::to_string(p.keep_alive) + ", '" +
                    std::string(p.client_id) + "'";
    if (p.username) s += ", u'" + std::string(*p.username) + "'";
    if (p.will) s += ", will '" + std::string(p.will->topic) + "' q" + std::to_string(static_cast<unsigned>(p.will->qos));
    if (p.properties.session_expiry_interval) s += ", session expiry " + std::to_string(*p.properties.session_expiry_interval);
    return s + ")";
}

std::string describe(const PublishPacket& p) {
    std::string s = "PUBLISH (" + flag('d', p.dup) + ", " + flag('q', static_cast<unsigned>(p.qos)) + ", " +
                    flag('r', p.retain) + ", " + flag('m', p.packet_id) + ", '" + std::string(p.topic) + "'";
    if (p.properties.topic_alias) s += ", alias " + std::to_string(*p.properties.topic_alias);
    return s + ", ... (" + std::to_string(p.payload.size()) + " bytes))";
}

std::string describe(const AckPacket& p) {
    std::string s = std::string(packet_type_name(p.type)) + " (Mid: " + std::to_string(p.packet_id);
    if (p.reason != ReasonCode::success) s += ", RC: " + reason_text(p.reason);
    return s + ")";
}

std::string describe(const SubscribePacket& p) {
    std::string s = "SUBSCRIBE (Mid: " + std::to_string(p.packet_id);
    std::size_t cursor = 0;
    Subscription sub;
    while (p.subscriptions.next(cursor, sub)) {
        const unsigned options = static_cast<unsigned>(sub.qos) | (sub.no_local ? 4u : 0u) |
                                 (sub.retain_as_published ? 8u : 0u) | (static_cast<unsigned>(sub.retain_handling) << 4);
        char opt[8];
        std::snprintf(opt, sizeof opt, "0x%02x", options);
        s += ", Topic: " + std::string(sub.filter) + ", QoS: " + std::to_string(static_cast<unsigned>(sub.qos)) +
             ", Options: " + opt;
    }
    return s + ")";
}

std::string describe_codes(std::string_view name, std::uint16_t packet_id, Bytes codes) {
    std::string s = std::string(name) + " (Mid: " + std::to_string(packet_id);
    for (std::byte b : codes) s += ", " + hex_reason(static_cast<ReasonCode>(b));
    return s + ")";
}

std::string describe(const UnsubscribePacket& p) {
    std::string s = "UNSUBSCRIBE (Mid: " + std::to_string(p.packet_id);
    std::size_t cursor = 0;
    std::string_view filter;
    while (p.filters.next(cursor, filter)) s += ", Topic: " + std::string(filter);
    return s + ")";
}

}  // namespace

std::string describe_packet(const Packet& packet) {
    if (const auto* p = std::get_if<ConnectPacket>(&packet)) return describe(*p);
    if (const auto* p = std::get_if<ConnackPacket>(&packet)) {
        return "CONNACK (" + reason_text(p->reason) + ", session present " + std::to_string(p->session_present ? 1 : 0) +
               ")";
    }
    if (const auto* p = std::get_if<PublishPacket>(&packet)) return describe(*p);
    if (const auto* p = std::get_if<AckPacket>(&packet)) return describe(*p);
    if (const auto* p = std::get_if<SubscribePacket>(&packet)) return describe(*p);
    if (const auto* p = std::get_if<SubackPacket>(&packet)) return describe_codes("SUBACK", p->packet_id, p->reason_codes);
    if (const auto* p = std::get_if<UnsubscribePacket>(&packet)) return describe(*p);
    if (const auto* p = std::get_if<UnsubackPacket>(&packet)) {
        return describe_codes("UNSUBACK", p->packet_id, p->reason_codes);
    }
    if (std::holds_alternative<PingreqPacket>(packet)) return "PINGREQ";
    if (std::holds_alternative<PingrespPacket>(packet)) return "PINGRESP";
    if (const auto* p = std::get_if<DisconnectPacket>(&packet)) {
        if (p->reason == ReasonCode::success) return "DISCONNECT";
        return "DISCONNECT (" + reason_text(p->reason) + ")";
    }
    const auto& a = std::get<AuthPacket>(packet);
    return "AUTH (" + reason_text(a.reason) + ")";
}

}  // namespace mqttools
