// libFuzzer target for the codec. The first input byte picks the protocol
// version and the sender; the rest is a byte stream framed with read_frame.
// Every packet that decodes is re-encoded, decoded again and re-encoded
// again: both encodings must be identical and the fields equal. The helpers
// (lists, property reader, topic checks) are exercised on what decoded.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <variant>
#include <vector>

#include "mqttools/codec.hpp"

using namespace mqttools;

namespace {

#define FUZZ_CHECK(cond)       \
    do {                       \
        if (!(cond)) abort();  \
    } while (0)

void passthrough(Properties& p) {
    p.passthrough = p.raw;
    p.passthrough_mask = property_bit(PropertyId::user_property) | property_bit(PropertyId::subscription_identifier);
    p.subscription_identifier.reset();
}

template <class P>
std::size_t encode_any(const P& p, ProtocolVersion v, std::vector<std::byte>& out) {
    std::size_t n = 0;
    if constexpr (std::is_same_v<P, ConnectPacket>) {
        n = encoded_size(p);
        out.resize(n);
        FUZZ_CHECK(n != 0);
        FUZZ_CHECK(encode(p, MutableBytes(out)) == n);
    } else {
        n = encoded_size(p, v);
        out.resize(n);
        FUZZ_CHECK(n != 0);
        FUZZ_CHECK(encode(p, v, MutableBytes(out)) == n);
        // One byte short must write nothing.
        if (n > 0) FUZZ_CHECK(encode(p, v, MutableBytes(out).first(n - 1)) == 0);
    }
    return n;
}

std::vector<std::byte> reencode(Packet pkt, ProtocolVersion v) {
    std::vector<std::byte> out;
    std::visit(
        [&](auto& p) {
            using T = std::decay_t<decltype(p)>;
            if constexpr (!std::is_same_v<T, PingreqPacket> && !std::is_same_v<T, PingrespPacket>) {
                passthrough(p.properties);
                if constexpr (std::is_same_v<T, ConnectPacket>) {
                    if (p.will) passthrough(p.will->properties);
                }
            }
            encode_any(p, v, out);
        },
        pkt);
    return out;
}

bool same(Bytes a, Bytes b) { return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0); }

bool same_props(const Properties& a, const Properties& b) {
    return a.user_property_count == b.user_property_count &&
           a.subscription_identifier_count == b.subscription_identifier_count &&
           a.subscription_identifier == b.subscription_identifier && a.topic_alias == b.topic_alias &&
           a.message_expiry_interval == b.message_expiry_interval && a.content_type == b.content_type &&
           a.response_topic == b.response_topic && a.session_expiry_interval == b.session_expiry_interval &&
           a.receive_maximum == b.receive_maximum && a.maximum_packet_size == b.maximum_packet_size &&
           a.reason_string == b.reason_string && a.authentication_method == b.authentication_method &&
           a.payload_format_indicator == b.payload_format_indicator && a.maximum_qos == b.maximum_qos;
}

// Field comparison of two decodings of the same packet.
bool same_packet(const Packet& x, const Packet& y) {
    if (x.index() != y.index()) return false;
    return std::visit(
        [&](const auto& a) -> bool {
            using T = std::decay_t<decltype(a)>;
            const auto& b = std::get<T>(y);
            if constexpr (std::is_same_v<T, ConnectPacket>) {
                if (a.will.has_value() != b.will.has_value()) return false;
                if (a.will && (a.will->topic != b.will->topic || !same(a.will->payload, b.will->payload) ||
                               a.will->qos != b.will->qos || a.will->retain != b.will->retain ||
                               !same_props(a.will->properties, b.will->properties)))
                    return false;
                return a.version == b.version && a.clean_start == b.clean_start && a.keep_alive == b.keep_alive &&
                       a.client_id == b.client_id && a.username == b.username &&
                       a.password.has_value() == b.password.has_value() &&
                       (!a.password || same(*a.password, *b.password)) && same_props(a.properties, b.properties);
            } else if constexpr (std::is_same_v<T, ConnackPacket>) {
                return a.session_present == b.session_present && a.reason == b.reason &&
                       same_props(a.properties, b.properties);
            } else if constexpr (std::is_same_v<T, PublishPacket>) {
                return a.dup == b.dup && a.qos == b.qos && a.retain == b.retain && a.topic == b.topic &&
                       a.packet_id == b.packet_id && same(a.payload, b.payload) &&
                       same_props(a.properties, b.properties);
            } else if constexpr (std::is_same_v<T, AckPacket>) {
                return a.type == b.type && a.packet_id == b.packet_id && a.reason == b.reason &&
                       same_props(a.properties, b.properties);
            } else if constexpr (std::is_same_v<T, SubscribePacket>) {
                if (a.packet_id != b.packet_id || a.subscriptions.size() != b.subscriptions.size()) return false;
                std::size_t ca = 0, cb = 0;
                Subscription sa, sb;
                while (a.subscriptions.next(ca, sa)) {
                    if (!b.subscriptions.next(cb, sb)) return false;
                    if (sa.filter != sb.filter || sa.qos != sb.qos || sa.no_local != sb.no_local ||
                        sa.retain_as_published != sb.retain_as_published || sa.retain_handling != sb.retain_handling)
                        return false;
                }
                return same_props(a.properties, b.properties);
            } else if constexpr (std::is_same_v<T, SubackPacket> || std::is_same_v<T, UnsubackPacket>) {
                return a.packet_id == b.packet_id && same(a.reason_codes, b.reason_codes) &&
                       same_props(a.properties, b.properties);
            } else if constexpr (std::is_same_v<T, UnsubscribePacket>) {
                if (a.packet_id != b.packet_id || a.filters.size() != b.filters.size()) return false;
                std::size_t ca = 0, cb = 0;
                std::string_view fa, fb;
                while (a.filters.next(ca, fa)) {
                    if (!b.filters.next(cb, fb) || fa != fb) return false;
                }
                return true;
            } else if constexpr (std::is_same_v<T, DisconnectPacket> || std::is_same_v<T, AuthPacket>) {
                return a.reason == b.reason && same_props(a.properties, b.properties);
            } else {
                return true;
            }
        },
        x);
}

// Walks what the helpers offer on a decoded packet.
void exercise(const Packet& pkt) {
    std::visit(
        [](const auto& p) {
            using T = std::decay_t<decltype(p)>;
            if constexpr (!std::is_same_v<T, PingreqPacket> && !std::is_same_v<T, PingrespPacket>) {
                PropertyReader r(p.properties.raw);
                Property prop;
                std::size_t users = 0;
                while (r.next(prop))
                    if (prop.id == PropertyId::user_property) ++users;
                FUZZ_CHECK(users == p.properties.user_property_count);
            }
            if constexpr (std::is_same_v<T, SubscribePacket>) {
                std::size_t cursor = 0, n = 0;
                Subscription s;
                while (p.subscriptions.next(cursor, s)) {
                    ++n;
                    if (check_topic_filter(s.filter) == ReasonCode::success) {
                        auto shared = parse_shared_filter(s.filter);
                        std::string_view f = shared ? shared->filter : s.filter;
                        (void)topic_matches(f, "a/b/c");
                        (void)topic_matches(f, "$SYS/x");
                    }
                }
                FUZZ_CHECK(n == p.subscriptions.size());
            }
            if constexpr (std::is_same_v<T, UnsubscribePacket>) {
                std::size_t cursor = 0, n = 0;
                std::string_view f;
                while (p.filters.next(cursor, f)) {
                    ++n;
                    (void)check_topic_filter(f);
                }
                FUZZ_CHECK(n == p.filters.size());
            }
            if constexpr (std::is_same_v<T, PublishPacket>) {
                if (!p.topic.empty()) {
                    FUZZ_CHECK(check_topic_name(p.topic) == ReasonCode::success);
                    FUZZ_CHECK(topic_matches("#", p.topic) == (p.topic[0] != '$'));
                    FUZZ_CHECK(topic_matches(p.topic, p.topic));
                }
            }
        },
        pkt);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const ProtocolVersion version = (data[0] & 1) ? ProtocolVersion::v311 : ProtocolVersion::v5;
    const Sender sender = (data[0] & 2) ? Sender::server : Sender::client;
    const std::uint32_t max_size = (data[0] & 4) ? 64 : max_packet_size_limit;
    Bytes input(reinterpret_cast<const std::byte*>(data + 1), size - 1);

    while (!input.empty()) {
        Frame f = read_frame(input, max_size);
        if (f.status != FrameStatus::complete) break;
        const Bytes body = input.subspan(f.header.header_size, f.header.remaining_length);
        input = input.subspan(f.header.packet_size());
        (void)reason_code_name(static_cast<ReasonCode>(data[0]));
        (void)packet_type_name(f.header.type);
        (void)check_fixed_header_flags(f.header.type, f.header.flags);

        auto r = decode_packet(f.header, body, version, sender);
        if (!r) {
            FUZZ_CHECK(r.error() != ReasonCode::success);
            continue;
        }
        exercise(*r);
        const ProtocolVersion v = std::holds_alternative<ConnectPacket>(*r) ? std::get<ConnectPacket>(*r).version
                                                                             : version;
        std::vector<std::byte> first = reencode(*r, v);
        Frame f2 = read_frame(Bytes(first));
        FUZZ_CHECK(f2.status == FrameStatus::complete && f2.header.packet_size() == first.size());
        auto r2 = decode_packet(f2.header, Bytes(first).subspan(f2.header.header_size), v, sender);
        FUZZ_CHECK(r2.ok());
        FUZZ_CHECK(same_packet(*r, *r2));
        std::vector<std::byte> second = reencode(*r2, v);
        FUZZ_CHECK(same(Bytes(first), Bytes(second)));
    }
    return 0;
}
