// MQTT UTF-8 rules (spec 1.5.4), topic names and filters (spec 4.7), shared
// subscriptions (spec 4.8.2) and topic matching.
#include <cstring>

#include "codec/wire.hpp"

namespace mqttools {

bool is_valid_utf8(std::string_view s) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    while (p < end) {
        // ASCII fast path, 8 bytes at a time: no high bit and no zero byte.
        while (end - p >= 8) {
            std::uint64_t w;
            std::memcpy(&w, p, 8);
            constexpr std::uint64_t high = 0x8080808080808080ull;
            constexpr std::uint64_t low = 0x0101010101010101ull;
            if (((w & high) | ((w - low) & ~w & high)) != 0) break;
            p += 8;
        }
        if (p >= end) break;
        unsigned c = *p;
        if (c < 0x80) {
            if (c == 0) return false;  // U+0000 [MQTT-1.5.4-2]
            ++p;
            continue;
        }
        std::size_t left = static_cast<std::size_t>(end - p);
        auto cont = [](unsigned b) { return (b & 0xC0) == 0x80; };
        if (c >= 0xC2 && c <= 0xDF) {
            if (left < 2 || !cont(p[1])) return false;
            p += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (left < 3 || !cont(p[1]) || !cont(p[2])) return false;
            if (c == 0xE0 && p[1] < 0xA0) return false;  // overlong
            if (c == 0xED && p[1] > 0x9F) return false;  // surrogates [MQTT-1.5.4-1]
            p += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (left < 4 || !cont(p[1]) || !cont(p[2]) || !cont(p[3])) return false;
            if (c == 0xF0 && p[1] < 0x90) return false;  // overlong
            if (c == 0xF4 && p[1] > 0x8F) return false;  // above U+10FFFF
            p += 4;
        } else {
            return false;  // continuation byte, C0/C1 overlong, F5..FF
        }
    }
    return true;
}

namespace detail {

bool has_wildcard(std::string_view s) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = p + s.size();
    // 8 bytes at a time: a byte equal to '+' or '#' is a zero byte of w ^ c.
    constexpr std::uint64_t low = 0x0101010101010101ull;
    constexpr std::uint64_t high = 0x8080808080808080ull;
    auto has_zero = [](std::uint64_t v) { return ((v - low) & ~v & high) != 0; };
    while (end - p >= 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        if (has_zero(w ^ (low * '+')) || has_zero(w ^ (low * '#'))) return true;
        p += 8;
    }
    for (; p < end; ++p)
        if (*p == '+' || *p == '#') return true;
    return false;
}

}  // namespace detail

ReasonCode check_topic_name(std::string_view topic) noexcept {
    if (topic.empty() || !is_valid_utf8(topic)) return ReasonCode::topic_name_invalid;
    if (detail::has_wildcard(topic)) return ReasonCode::topic_name_invalid;
    return ReasonCode::success;
}

namespace {

constexpr std::string_view share_prefix = "$share/";

// Wildcard placement only; the caller has checked UTF-8 and emptiness.
bool valid_filter_levels(std::string_view filter) noexcept {
    std::size_t start = 0;
    for (;;) {
        std::size_t end = filter.find('/', start);
        bool last = end == std::string_view::npos;
        if (last) end = filter.size();
        std::string_view level = filter.substr(start, end - start);
        if (level.find('#') != std::string_view::npos && (level.size() != 1 || !last)) return false;
        if (level.find('+') != std::string_view::npos && level.size() != 1) return false;
        if (last) return true;
        start = end + 1;
    }
}

}  // namespace

ReasonCode check_topic_filter(std::string_view filter) noexcept {
    if (filter.empty() || !is_valid_utf8(filter)) return ReasonCode::topic_filter_invalid;
    if (auto shared = parse_shared_filter(filter)) {
        // [MQTT-4.8.2-1] share name: at least one character, no '/', '+', '#';
        // [MQTT-4.8.2-2] followed by '/' and a topic filter.
        if (shared->share_name.empty() || shared->share_name.find_first_of("+#") != std::string_view::npos)
            return ReasonCode::topic_filter_invalid;
        if (filter.size() == share_prefix.size() + shared->share_name.size())  // no '/' after the name
            return ReasonCode::topic_filter_invalid;
        if (shared->filter.empty() || !valid_filter_levels(shared->filter)) return ReasonCode::topic_filter_invalid;
        return ReasonCode::success;
    }
    return valid_filter_levels(filter) ? ReasonCode::success : ReasonCode::topic_filter_invalid;
}

std::optional<SharedFilter> parse_shared_filter(std::string_view filter) noexcept {
    if (!filter.starts_with(share_prefix)) return std::nullopt;
    std::string_view rest = filter.substr(share_prefix.size());
    std::size_t slash = rest.find('/');
    if (slash == std::string_view::npos) return SharedFilter{rest, {}};
    return SharedFilter{rest.substr(0, slash), rest.substr(slash + 1)};
}

bool topic_matches(std::string_view filter, std::string_view topic) noexcept {
    // [MQTT-4.7.2-1]: '#' or '+' first never match a topic starting with '$'.
    if (!topic.empty() && topic[0] == '$' && !filter.empty() && (filter[0] == '+' || filter[0] == '#'))
        return false;
    std::size_t f = 0;
    std::size_t t = 0;
    for (;;) {
        std::size_t fe = filter.find('/', f);
        if (fe == std::string_view::npos) fe = filter.size();
        std::string_view fl = filter.substr(f, fe - f);
        if (fl == "#") return true;
        std::size_t te = topic.find('/', t);
        if (te == std::string_view::npos) te = topic.size();
        std::string_view tl = topic.substr(t, te - t);
        if (fl != "+" && fl != tl) return false;
        bool f_end = fe == filter.size();
        bool t_end = te == topic.size();
        if (f_end && t_end) return true;
        // "a/#" matches "a" as well ([MQTT-4.7.1-2]).
        if (t_end) return filter.substr(fe + 1) == "#";
        if (f_end) return false;
        f = fe + 1;
        t = te + 1;
    }
}

}  // namespace mqttools
