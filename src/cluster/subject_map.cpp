#include "cluster/subject_map.hpp"

namespace mqttools::cluster {

namespace {

constexpr char hex_digits[] = "0123456789ABCDEF";

bool plain(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Splits on '/', calling fn(level, is_first).
template <class Fn>
void for_each_level(std::string_view s, Fn&& fn) {
    std::size_t start = 0;
    bool first = true;
    for (;;) {
        const std::size_t slash = s.find('/', start);
        const std::string_view level = s.substr(start, slash == std::string_view::npos ? s.npos : slash - start);
        fn(level, first);
        first = false;
        if (slash == std::string_view::npos) return;
        start = slash + 1;
    }
}

bool decode_token(std::string_view token, std::string& out) {
    if (token == "%") return true;  // an empty level
    if (token.empty()) return false;
    for (std::size_t i = 0; i < token.size(); ++i) {
        const char c = token[i];
        if (c == '%') {
            if (i + 2 >= token.size()) return false;
            const int hi = hex_value(token[i + 1]);
            const int lo = hex_value(token[i + 2]);
            if (hi < 0 || lo < 0) return false;
            const auto byte = static_cast<unsigned char>(hi * 16 + lo);
            if (plain(byte)) return false;  // not what the encoder makes
            out.push_back(static_cast<char>(byte));
            i += 2;
        } else if (plain(static_cast<unsigned char>(c))) {
            out.push_back(c);
        } else {
            return false;
        }
    }
    return true;
}

}  // namespace

void append_level_token(std::string& out, std::string_view level) {
    if (level.empty()) {
        out.push_back('%');
        return;
    }
    // Runs of plain bytes in one append each (per message on the live
    // path: byte-wise push_back was a tenth of a publishing node's work).
    std::size_t i = 0;
    while (i < level.size()) {
        std::size_t j = i;
        while (j < level.size() && plain(static_cast<unsigned char>(level[j]))) ++j;
        out.append(level.data() + i, j - i);
        if (j == level.size()) break;
        const auto c = static_cast<unsigned char>(level[j]);
        const char escaped[3] = {'%', hex_digits[c >> 4], hex_digits[c & 0xF]};
        out.append(escaped, 3);
        i = j + 1;
    }
}

void topic_subject(std::string& out, std::string_view prefix, std::string_view topic) {
    out.assign(prefix);
    out.append(!topic.empty() && topic.front() == '$' ? ".s" : ".t");
    for_each_level(topic, [&](std::string_view level, bool) {
        out.push_back('.');
        append_level_token(out, level);
    });
}

std::vector<std::string> filter_subjects(std::string_view prefix, std::string_view filter) {
    std::string s(prefix);
    // A first level starting with '$' is literal and names a '$' topic;
    // a wildcard first level never matches one ([MQTT-4.7.2-1]).
    s.append(!filter.empty() && filter.front() == '$' ? ".s" : ".t");
    std::vector<std::string> out;
    bool hash = false;
    for_each_level(filter, [&](std::string_view level, bool) {
        if (level == "#") {
            hash = true;
            return;
        }
        s.push_back('.');
        if (level == "+") {
            s.push_back('*');
        } else {
            append_level_token(s, level);
        }
    });
    if (!hash) {
        out.push_back(std::move(s));
        return out;
    }
    // "x/#" matches "x" and everything below it; "#" alone matches every
    // topic, which has at least one level (so no parent).
    if (filter != "#") out.push_back(s);
    s.append(".>");
    out.push_back(std::move(s));
    return out;
}

std::optional<std::string> subject_topic(std::string_view prefix, std::string_view subject) {
    if (subject.size() < prefix.size() + 4 || subject.substr(0, prefix.size()) != prefix) return std::nullopt;
    std::string_view rest = subject.substr(prefix.size());
    bool dollar = false;
    if (rest.substr(0, 3) == ".s.") {
        dollar = true;
    } else if (rest.substr(0, 3) != ".t.") {
        return std::nullopt;
    }
    rest.remove_prefix(3);
    std::string topic;
    std::size_t start = 0;
    for (;;) {
        const std::size_t dot = rest.find('.', start);
        if (start != 0) topic.push_back('/');
        if (!decode_token(rest.substr(start, dot == rest.npos ? rest.npos : dot - start), topic)) return std::nullopt;
        if (dot == rest.npos) break;
        start = dot + 1;
    }
    if ((!topic.empty() && topic.front() == '$') != dollar) return std::nullopt;
    return topic;
}

std::string queue_name(std::string_view share_name, std::string_view filter) {
    // '.' separates the two escaped parts (neither contains a '.').
    std::string q;
    append_level_token(q, share_name);
    q.push_back('.');
    for_each_level(filter, [&](std::string_view level, bool first) {
        if (!first) q.push_back('.');
        append_level_token(q, level);
    });
    return q;
}

bool subject_matches(std::string_view pattern, std::string_view subject) {
    std::size_t p = 0;
    std::size_t s = 0;
    for (;;) {
        const std::size_t pe = pattern.find('.', p);
        const std::string_view ptok = pattern.substr(p, pe == pattern.npos ? pattern.npos : pe - p);
        if (ptok == ">") return s <= subject.size();  // one or more tokens left
        if (s > subject.size()) return false;
        const std::size_t se = subject.find('.', s);
        const std::string_view stok = subject.substr(s, se == subject.npos ? subject.npos : se - s);
        if (ptok != "*" && ptok != stok) return false;
        const bool p_end = pe == pattern.npos;
        const bool s_end = se == subject.npos;
        if (p_end || s_end) return p_end && s_end;
        p = pe + 1;
        s = se + 1;
    }
}

}  // namespace mqttools::cluster
