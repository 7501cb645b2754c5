#include "tools/message_output.hpp"

#include <cctype>
#include <cstdio>
#include <ctime>

#include "mqttools/codec.hpp"
#include "tools/args.hpp"
#include "tools/common.hpp"

namespace mqttools::tools {

namespace {

// Control characters of a topic as \xNN: topic names may hold them
// (spec 4.7.3 only advises against it) and must not reach the terminal.
std::string escape_controls(std::string_view s) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(s.size());
    for (char ch : s) {
        const auto b = static_cast<unsigned char>(ch);
        if (b < 0x20 || b == 0x7f) {
            out += "\\x";
            out += digits[b >> 4];
            out += digits[b & 15];
        } else {
            out += ch;
        }
    }
    return out;
}

// JSON string literal (RFC 8259 section 7) of UTF-8 text.
std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (char ch : s) {
        const auto b = static_cast<unsigned char>(ch);
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (b < 0x20 || b == 0x7f) {
                    char u[8];
                    std::snprintf(u, sizeof u, "\\u%04x", b);
                    out += u;
                } else {
                    out += ch;
                }
        }
    }
    return out + "\"";
}

// A small RFC 8259 recogniser, for %J (the payload embedded as JSON when it
// is JSON). Depth-limited so that hostile input cannot exhaust the stack.
class JsonCheck {
public:
    explicit JsonCheck(std::string_view s) : s_(s) {}
    bool valid() {
        skip();
        if (!value(0)) return false;
        skip();
        return i_ == s_.size();
    }

private:
    void skip() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
    }
    bool literal(std::string_view word) {
        if (s_.substr(i_, word.size()) != word) return false;
        i_ += word.size();
        return true;
    }
    bool string() {
        if (i_ >= s_.size() || s_[i_] != '"') return false;
        for (++i_; i_ < s_.size(); ++i_) {
            const auto b = static_cast<unsigned char>(s_[i_]);
            if (b == '"') {
                ++i_;
                return true;
            }
            if (b < 0x20) return false;
            if (b == '\\') {
                if (++i_ >= s_.size()) return false;
                const char e = s_[i_];
                if (e == 'u') {
                    for (int k = 0; k < 4; ++k) {
                        if (++i_ >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_]))) return false;
                    }
                } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
                    return false;
                }
            }
        }
        return false;
    }
    bool number() {
        const std::size_t start = i_;
        if (i_ < s_.size() && s_[i_] == '-') ++i_;
        auto digits = [&] {
            const std::size_t d = i_;
            while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
            return i_ > d;
        };
        if (i_ < s_.size() && s_[i_] == '0') {
            ++i_;
        } else if (!digits()) {
            return false;
        }
        if (i_ < s_.size() && s_[i_] == '.') {
            ++i_;
            if (!digits()) return false;
        }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            ++i_;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            if (!digits()) return false;
        }
        return i_ > start;
    }
    bool value(int depth) {
        if (depth > 64 || i_ >= s_.size()) return false;
        const char c = s_[i_];
        if (c == '{' || c == '[') {
            const char close = c == '{' ? '}' : ']';
            ++i_;
            skip();
            if (i_ < s_.size() && s_[i_] == close) {
                ++i_;
                return true;
            }
            for (;;) {
                if (c == '{') {
                    if (!string()) return false;
                    skip();
                    if (i_ >= s_.size() || s_[i_] != ':') return false;
                    ++i_;
                    skip();
                }
                if (!value(depth + 1)) return false;
                skip();
                if (i_ < s_.size() && s_[i_] == ',') {
                    ++i_;
                    skip();
                    continue;
                }
                if (i_ < s_.size() && s_[i_] == close) {
                    ++i_;
                    return true;
                }
                return false;
            }
        }
        if (c == '"') return string();
        if (c == 't') return literal("true");
        if (c == 'f') return literal("false");
        if (c == 'n') return literal("null");
        return number();
    }

    std::string_view s_;
    std::size_t i_ = 0;
};

std::string iso_time(const timespec& ts) {
    std::tm local{};
    localtime_r(&ts.tv_sec, &local);
    char text[64];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S%z", &local);
    return text;
}

// %j/%J's "tst": microseconds, then "Z", then the zone offset, exactly as
// mosquitto_sub prints it ("2026-12-07T03:21:48.656928Z+0000").
std::string json_time(const timespec& ts) {
    std::tm local{};
    localtime_r(&ts.tv_sec, &local);
    char date[32];
    char zone[16];
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &local);
    std::strftime(zone, sizeof zone, "%z", &local);
    char micros[32];
    std::snprintf(micros, sizeof micros, ".%06d", static_cast<int>((ts.tv_nsec / 1000) % 1000000));
    return std::string(date) + micros + "Z" + zone;
}

std::string json(const Message& m, const timespec& ts, bool embed_payload) {
    std::string out = "{\"tst\":" + json_string(json_time(ts)) + ",\"topic\":" + json_string(m.topic) +
                      ",\"qos\":" + std::to_string(static_cast<int>(m.qos)) + ",\"retain\":" +
                      std::to_string(m.retain ? 1 : 0) + ",\"payloadlen\":" + std::to_string(m.payload.size());
    if (m.qos != QoS::at_most_once) out += ",\"mid\":" + std::to_string(m.packet_id);
    if (embed_payload && JsonCheck(m.payload).valid()) {
        out += ",\"payload\":" + m.payload;
    } else if (is_valid_utf8(m.payload)) {
        out += ",\"payload\":" + json_string(m.payload);
    } else {
        // Not text: hex, under a name that says so.
        out += ",\"payload_hex\":\"" + hexlify(m.payload) + "\"";
    }
    return out + "}";
}

std::string upper(std::string s) {
    for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    return s;
}

// One %-conversion's text (nullopt: unknown conversion).
std::optional<std::string> conversion(char c, const Message& m, const timespec& ts) {
    switch (c) {
        case 't': return m.topic;
        case 'p': return m.payload;
        case 'x': return hexlify(m.payload);
        case 'X': return upper(hexlify(m.payload));
        case 'l': return std::to_string(m.payload.size());
        case 'q': return std::to_string(static_cast<int>(m.qos));
        case 'r': return std::string(m.retain ? "1" : "0");
        case 'm': return std::to_string(m.packet_id);
        case 'R': return m.response_topic.value_or("");
        case 'C': return m.content_type.value_or("");
        case 'D': return m.correlation_data.value_or("");
        case 'E': return m.message_expiry_interval ? std::to_string(*m.message_expiry_interval) : std::string();
        case 'F': return m.payload_format_indicator ? std::to_string(*m.payload_format_indicator) : std::string();
        case 'P': {
            std::string out;
            for (const auto& [k, v] : m.user_properties) out += (out.empty() ? "" : " ") + k + ":" + v;
            return out;
        }
        case 'I': return iso_time(ts);
        case 'U': {
            char text[48];
            std::snprintf(text, sizeof text, "%lld.%09ld", static_cast<long long>(ts.tv_sec), ts.tv_nsec);
            return std::string(text);
        }
        case 'j': return json(m, ts, false);
        case 'J': return json(m, ts, true);
        default: return std::nullopt;
    }
}

std::string render(std::string_view f, const Message* m) {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    const Message empty;
    const Message& msg = m ? *m : empty;
    std::string out;
    for (std::size_t i = 0; i < f.size(); ++i) {
        const char ch = f[i];
        if (ch == '%') {
            if (i + 1 < f.size() && f[i + 1] == '%') {
                out += '%';
                ++i;
                continue;
            }
            bool left = false;
            bool zero = false;
            std::size_t j = i + 1;
            for (; j < f.size() && (f[j] == '-' || f[j] == '0'); ++j) (f[j] == '-' ? left : zero) = true;
            std::size_t width = 0;
            for (; j < f.size() && std::isdigit(static_cast<unsigned char>(f[j])); ++j) width = std::min<std::size_t>(width * 10 + (f[j] - '0'), 4096);
            std::optional<std::size_t> precision;
            if (j < f.size() && f[j] == '.') {
                precision = 0;
                for (++j; j < f.size() && std::isdigit(static_cast<unsigned char>(f[j])); ++j) {
                    precision = std::min<std::size_t>(*precision * 10 + (f[j] - '0'), 1 << 28);
                }
            }
            if (j >= f.size()) throw UsageError("argument -F: incomplete conversion at the end of '" + std::string(f) + "'");
            auto text = conversion(f[j], msg, ts);
            if (!text) throw UsageError(std::string("argument -F: unknown conversion '%") + f[j] + "'");
            if (precision && text->size() > *precision) text->resize(*precision);
            if (text->size() < width) {
                const std::size_t pad = width - text->size();
                if (left) {
                    text->append(pad, ' ');
                } else {
                    text->insert(0, pad, zero ? '0' : ' ');
                }
            }
            out += *text;
            i = j;
        } else if (ch == '@') {
            if (i + 1 >= f.size()) throw UsageError("argument -F: '@' at the end of the format");
            const char c = f[++i];
            if (c == '@') {
                out += '@';
                continue;
            }
            if (c == 'N') {  // nanoseconds, as mosquitto_sub
                char text[16];
                std::snprintf(text, sizeof text, "%09ld", ts.tv_nsec);
                out += text;
                continue;
            }
            if (!std::isalpha(static_cast<unsigned char>(c))) {
                throw UsageError(std::string("argument -F: unknown time conversion '@") + c + "'");
            }
            std::tm local{};
            localtime_r(&ts.tv_sec, &local);
            const char conv[3] = {'%', c, '\0'};
            char text[128];
            const std::size_t n = std::strftime(text, sizeof text, conv, &local);
            out.append(text, n);
        } else if (ch == '\\') {
            if (i + 1 >= f.size()) throw UsageError("argument -F: '\\' at the end of the format");
            const char c = f[++i];
            switch (c) {
                case '\\': out += '\\'; break;
                case '0': out += '\0'; break;
                case 'a': out += '\a'; break;
                case 'e': out += '\x1b'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'v': out += '\v'; break;
                default: throw UsageError(std::string("argument -F: unknown escape '\\") + c + "'");
            }
        } else {
            out += ch;
        }
    }
    return out;
}

}  // namespace

std::string message_block(const Message& m, std::string_view format) {
    std::string message = format_message(format, m.payload);
    std::string indented;
    indented.reserve(message.size());
    for (char ch : message) {
        indented += ch;
        if (ch == '\n') indented.append(15, ' ');
    }
    std::string block;
    block += "Topic:         " + escape_controls(m.topic) + "\n";
    block += "Message:       " + indented + "\n";
    block += std::string("Retain:        ") + (m.retain ? "True" : "False") + "\n";
    block += "ResponseTopic: " + (m.response_topic ? escape_controls(*m.response_topic) : std::string("None")) + "\n";
    return block;
}

std::string format_mosquitto(std::string_view format, const Message& m) { return render(format, &m); }

void check_format(std::string_view format) { (void)render(format, nullptr); }

}  // namespace mqttools::tools
