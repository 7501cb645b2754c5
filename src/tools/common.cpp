#include "tools/common.hpp"

#include <cstdio>
#include <optional>

#include "mqttools/codec.hpp"

namespace mqttools::tools {

void add_common_options(ArgParser& parser, CommonOptions& o) {
    parser.string("--host", o.host, "Broker host (default: localhost); -h HOST as mosquitto_pub, -h alone is help.");
    parser.integer("--port", 0, 65535, o.port, "Broker port (default: 1883).");
    parser.string("--client-id", o.client_id, "Client id (default: mqttools-<14 random hex characters>).");
    parser.string("--cafile", o.cafile, "CA file; connects with TLS.");
    parser.flag("--no-check-hostname", o.no_check_hostname, "Do not check the certificate hostname.");
    parser.string("--username", o.username, "User name.");
    parser.string("--password", o.password, "Password.");
    // mosquitto_pub / mosquitto_sub spellings.
    parser.alias("-h", "--host");
    parser.alias("-p", "--port");
    parser.alias("-i", "--client-id");
    parser.alias("--id", "--client-id");
    parser.alias("-u", "--username");
    parser.alias("-P", "--password");
    parser.alias("--insecure", "--no-check-hostname");
}

ClientOptions make_client_options(const CommonOptions& c) {
    ClientOptions o;
    o.host = c.host;
    o.port = static_cast<std::uint16_t>(c.port);
    o.client_id = c.client_id;
    o.cafile = c.cafile;
    o.tls = !c.cafile.empty();
    o.check_hostname = !c.no_check_hostname;
    if (!c.username.empty()) o.username = c.username;
    if (!c.password.empty()) o.password = c.password;
    o.connect_delays = std::vector<std::chrono::milliseconds>{std::chrono::milliseconds(500),
                                                              std::chrono::milliseconds(1000)};
    o.max_connect_attempts = 3;
    return o;
}

std::string endpoint(const CommonOptions& c) { return "'" + c.host + ":" + std::to_string(c.port) + "'"; }

std::string hexlify(std::string_view bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char b : bytes) {
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

namespace {

std::string show_nul(std::string s) {
    std::string out;
    out.reserve(s.size());
    for (char ch : s) {
        if (ch == '\0') {
            out += "\\x00";
        } else {
            out += ch;
        }
    }
    return out;
}

// Length of the valid UTF-8 sequence at s[i] (0 when invalid). NUL is fine
// here (it is shown as \x00), unlike in MQTT strings.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) return 1;
    std::size_t len;
    std::uint32_t cp;
    if ((b0 & 0xE0) == 0xC0) {
        len = 2;
        cp = b0 & 0x1F;
    } else if ((b0 & 0xF0) == 0xE0) {
        len = 3;
        cp = b0 & 0x0F;
    } else if ((b0 & 0xF8) == 0xF0) {
        len = 4;
        cp = b0 & 0x07;
    } else {
        return 0;
    }
    if (i + len > s.size()) return 0;
    for (std::size_t k = 1; k < len; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if ((b & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (b & 0x3F);
    }
    static constexpr std::uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

std::optional<std::string> unhexlify(std::string_view text) {
    if (text.size() % 2 != 0) return std::nullopt;
    auto value = [](char ch) -> int {
        if (ch >= '0' && ch <= '9') return ch - '0';
        if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
        if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(text.size() / 2);
    for (std::size_t i = 0; i < text.size(); i += 2) {
        const int hi = value(text[i]);
        const int lo = value(text[i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
    }
    return out;
}

}  // namespace

std::string format_message(std::string_view format, std::string_view bytes) {
    if (format == "binary") return hexlify(bytes);
    bool valid = true;
    std::string text;
    text.reserve(bytes.size());
    for (std::size_t i = 0; i < bytes.size();) {
        const std::size_t n = utf8_sequence(bytes, i);
        if (n == 0) {
            valid = false;
            text += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
            ++i;
        } else {
            text.append(bytes.substr(i, n));
            i += n;
        }
    }
    if (format == "auto" && !valid) return hexlify(bytes);
    return show_nul(std::move(text));
}

std::string encode_message(std::string_view format, std::string_view message) {
    if (format == "text") return std::string(message);
    auto decoded = unhexlify(message);
    if (decoded) return *decoded;
    if (format == "binary") throw UsageError("the message is not hexadecimal: '" + std::string(message) + "'");
    return std::string(message);
}

void print_line(std::string_view line) {
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

}  // namespace mqttools::tools
