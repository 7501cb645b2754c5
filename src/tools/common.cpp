#include "tools/common.hpp"

#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <iterator>
#include <thread>
#include <cstdio>
#include <memory>
#include <optional>

#include "mqttools/codec.hpp"
#include "mqttools/describe.hpp"

namespace mqttools::tools {

namespace {

bool quiet_ = false;
volatile std::sig_atomic_t interrupted_ = 0;

// mqtt://[user[:password]@]host[:port][/topic], mqtts://..., ws://...,
// wss://... (ws: the path is the WebSocket path, not a topic).
void apply_url(CommonOptions& o) {
    const std::string& url = o.url;
    const auto scheme_end = url.find("://");
    if (scheme_end == std::string::npos) throw UsageError("argument -L: '" + url + "' is not a URL");
    const std::string scheme = url.substr(0, scheme_end);
    if (scheme != "mqtt" && scheme != "mqtts" && scheme != "ws" && scheme != "wss") {
        throw UsageError("argument -L: unsupported scheme '" + scheme + "' (use mqtt, mqtts, ws or wss)");
    }
    std::string rest = url.substr(scheme_end + 3);
    std::string path;
    if (const auto slash = rest.find('/'); slash != std::string::npos) {
        path = rest.substr(slash);
        rest.resize(slash);
    }
    if (const auto at = rest.rfind('@'); at != std::string::npos) {
        const std::string user = rest.substr(0, at);
        rest = rest.substr(at + 1);
        if (const auto colon = user.find(':'); colon != std::string::npos) {
            o.username = user.substr(0, colon);
            o.password = user.substr(colon + 1);
        } else {
            o.username = user;
        }
    }
    const bool tls = scheme == "mqtts" || scheme == "wss";
    std::string host = rest;
    std::string port;
    if (!rest.empty() && rest.front() == '[') {  // [::1]:1883
        const auto close = rest.find(']');
        if (close == std::string::npos) throw UsageError("argument -L: bad IPv6 address in '" + url + "'");
        host = rest.substr(1, close - 1);
        if (close + 1 < rest.size() && rest[close + 1] == ':') port = rest.substr(close + 2);
    } else if (const auto colon = rest.rfind(':'); colon != std::string::npos) {
        host = rest.substr(0, colon);
        port = rest.substr(colon + 1);
    }
    if (host.empty()) throw UsageError("argument -L: no host in '" + url + "'");
    o.host = host;
    if (!port.empty()) {
        o.port = parse_integer(port, 1, 65535, "-L port");
    } else if (scheme.starts_with("ws")) {
        o.port = tls ? 443 : 80;
    } else {
        o.port = tls ? 8883 : 1883;
    }
    if (tls && o.cafile.empty() && o.capath.empty()) o.capath = "/etc/ssl/certs";
    if (scheme.starts_with("ws")) {
        o.url_topic.clear();
        o.websocket_path = path.empty() ? "/mqtt" : path;
        o.websocket = true;
    } else if (path.size() > 1) {
        o.url_topic = path.substr(1);
    }
}

}  // namespace

void add_common_options(ArgParser& parser, CommonOptions& o) {
    parser.string("--host", o.host, "Broker host (default: localhost); -h HOST as mosquitto_pub, -h alone is help.");
    parser.integer("--port", 1, 65535, o.port, "Broker port (default: 1883, 8883 with TLS).");
    parser.string("--client-id", o.client_id, "Client id (default: mqttools-<14 random hex characters>).");
    parser.string("--id-prefix", o.client_id_prefix, "Client id prefix; the process id is appended.");
    parser.string("--url", o.url, "mqtt://[USER[:PASSWORD]@]HOST[:PORT]/TOPIC, mqtts://..., ws://HOST[:PORT]/PATH "
                                  "or wss://...: instead of --host, --port, --username, --password and a topic.");
    parser.string("--bind-address", o.bind_address, "Local address to connect from.");
    parser.choice("--protocol-version", {"5", "mqttv5", "311", "mqttv311", "31", "mqttv31"}, o.protocol,
                  "MQTT version: 5 (default) or 311.");
    parser.string("--cafile", o.cafile, "CA file; connects with TLS.");
    parser.string("--capath", o.capath, "Directory of hashed CA certificates; connects with TLS.");
    parser.string("--cert", o.certfile, "Client certificate (PEM) for brokers that require one.");
    parser.string("--key", o.keyfile, "Key of the client certificate (default: in the --cert file).");
    parser.choice("--tls-version", {"tlsv1.2", "tlsv1.3"}, o.tls_version, "Offer only this TLS version.");
    parser.flag("--no-check-hostname", o.no_check_hostname, "Do not check the certificate hostname.");
    parser.string("--username", o.username, "User name.");
    parser.string("--password", o.password, "Password.");
    parser.flag("--disable-clean-session", o.disable_clean_start,
                "Clean Start 0: resume the session of this client id (needs -i; with MQTT 5 the session "
                "expiry interval defaults to never).");
    parser.integer("--keep-alive", 0, 65535, o.keep_alive, "Keep alive time in seconds; 0 disables it.");
    parser.custom("--session-expiry-interval", "SECONDS", [&o](int argc, char** argv, int i) {
        if (i + 1 >= argc) throw UsageError("argument --session-expiry-interval: expected a value");
        const std::string v = argv[i + 1];
        // mosquitto's spellings of "never expires".
        o.session_expiry_interval = v == "-1" || v == "\u221e" ? 0xffffffff
                                    : parse_integer(v, 0, 0xffffffff, "--session-expiry-interval");
        return i + 1;
    }, "Session expiry interval in seconds, 0..4294967295; -1 or 4294967295: never expires "
       "(default: 0, or never with -c).");
    parser.string("--will-topic", o.will_topic, "Will topic.");
    parser.custom("--will-payload", "PAYLOAD", [&o](int argc, char** argv, int i) {
        if (i + 1 >= argc) throw UsageError("argument --will-payload: expected a value");
        o.will_payload = argv[i + 1];
        o.have_will_payload = true;
        return i + 1;
    }, "Will payload (text, sent as given).");
    parser.integer("--will-qos", 0, 2, o.will_qos, "Will QoS (default: 0).");
    parser.flag("--will-retain", o.will_retain, "Retain the will message.");
    parser.custom("--property", "COMMAND NAME VALUE", [&o](int argc, char** argv, int i) {
        return consume_property_option(o.properties, argc, argv, i);
    }, "An MQTT 5 property: COMMAND is connect, publish, subscribe, disconnect or will; NAME as in the "
       "specification (session-expiry-interval, user-property KEY VALUE, content-type...).");
    parser.flag("--debug", o.debug, "Print every MQTT packet sent and received (on stdout, as mosquitto_pub/sub).");
    parser.flag("--quiet", o.quiet, "Print no status lines and no error messages (the exit status tells).");
    // mosquitto_pub / mosquitto_sub spellings.
    parser.alias("-h", "--host");
    parser.alias("-p", "--port");
    parser.alias("-i", "--client-id");
    parser.alias("--id", "--client-id");
    parser.alias("-I", "--id-prefix");
    parser.alias("-L", "--url");
    parser.alias("-A", "--bind-address");
    parser.alias("-V", "--protocol-version");
    parser.alias("-u", "--username");
    parser.alias("-P", "--password");
    parser.alias("-c", "--disable-clean-session");
    parser.alias("--no-clean-start", "--disable-clean-session");  // MQTT 5's name
    parser.alias("-k", "--keep-alive");
    parser.alias("-x", "--session-expiry-interval");
    parser.alias("-D", "--property");
    parser.alias("-d", "--debug");
    parser.alias("--insecure", "--no-check-hostname");
    parser.alias("--will-message", "--will-payload");  // the seed's name
}

void check_common_options(CommonOptions& o) {
    if (!o.url.empty()) apply_url(o);
    if (o.protocol == "31" || o.protocol == "mqttv31") {
        throw UsageError("argument -V: MQTT 3.1 is not supported (use 5 or 311)");
    }
    const bool v5 = o.protocol == "5" || o.protocol == "mqttv5";
    if (!v5 && o.properties.any) throw UsageError("argument -D: properties need MQTT 5 (-V 5)");
    if (!v5 && o.session_expiry_interval) throw UsageError("argument -x: a session expiry interval needs MQTT 5");
    if ((o.have_will_payload || o.will_qos != 0 || o.will_retain) && o.will_topic.empty()) {
        throw UsageError("a will payload, QoS or retain needs --will-topic");
    }
    if (!o.will_topic.empty() && check_topic_name(o.will_topic) != ReasonCode::success) {
        throw UsageError("argument --will-topic: invalid topic name '" + o.will_topic + "'");
    }
    if (!o.keyfile.empty() && o.certfile.empty()) throw UsageError("--key needs --cert");
    if (!o.client_id.empty() && !o.client_id_prefix.empty()) throw UsageError("-i and -I go alone");
    if (!o.client_id_prefix.empty()) o.client_id = o.client_id_prefix + std::to_string(::getpid());
    // A generated id would give a new session every time [MQTT-3.1.3-7]:
    // mosquitto_sub refuses -c without -i too.
    if (o.disable_clean_start && o.client_id.empty()) {
        throw UsageError("-c/--disable-clean-session needs a client id (-i ID)");
    }
    const bool tls = !o.cafile.empty() || !o.capath.empty();
    if (!o.certfile.empty() && !tls) throw UsageError("--cert needs --cafile or --capath (TLS)");
    if (o.port == 0) o.port = tls ? 8883 : 1883;
    set_quiet(o.quiet);
}

ClientOptions make_client_options(const CommonOptions& c, std::uint16_t default_keep_alive) {
    ClientOptions o;
    o.host = c.host;
    o.port = static_cast<std::uint16_t>(c.port);
    o.client_id = c.client_id.empty() ? make_client_id() : c.client_id;
    o.cafile = c.cafile;
    o.capath = c.capath;
    o.certfile = c.certfile;
    o.keyfile = c.keyfile;
    o.tls_version = c.tls_version;
    o.tls = !c.cafile.empty() || !c.capath.empty();
    o.check_hostname = !c.no_check_hostname;
    o.websocket = c.websocket;
    o.websocket_path = c.websocket_path;
    o.bind_address = c.bind_address;
    const bool v5 = c.protocol == "5" || c.protocol == "mqttv5";
    o.protocol_version = v5 ? ProtocolVersion::v5 : ProtocolVersion::v311;
    if (!c.username.empty()) o.username = c.username;
    if (!c.password.empty()) o.password = c.password;
    o.keep_alive_s = c.keep_alive >= 0 ? static_cast<std::uint16_t>(c.keep_alive) : default_keep_alive;
    if (c.session_expiry_interval) {
        o.session_expiry_interval = static_cast<std::uint32_t>(*c.session_expiry_interval);
    } else if (c.disable_clean_start && v5) {
        // As mosquitto_sub: -c alone asks for a session that outlives the
        // connection, which in MQTT 5 is the Session Expiry Interval's job.
        o.session_expiry_interval = 0xffffffff;
    }
    if (!c.will_topic.empty()) {
        o.will_topic = c.will_topic;
        o.will_message = c.will_payload;
        o.will_qos = static_cast<QoS>(c.will_qos);
        o.will_retain = c.will_retain;
    }
    apply_properties(c.properties, o);
    if (!v5) o.topic_alias_maximum = 0;
    if (c.debug) {
        // mosquitto_sub -d's lines ("Client ID sending CONNECT"), on stdout
        // among the messages, as mosquitto_pub/sub print them (scripts that
        // read -d output from stdout keep working).
        auto id = std::make_shared<std::string>(o.client_id);
        o.packet_trace = [id](bool sent, const Packet& packet) {
            const std::string line = "Client " + *id + (sent ? " sending " : " received ") + describe_packet(packet) + "\n";
            std::fwrite(line.data(), 1, line.size(), stdout);
            std::fflush(stdout);
        };
    }
    o.connect_delays = std::vector<std::chrono::milliseconds>{std::chrono::milliseconds(500),
                                                              std::chrono::milliseconds(1000)};
    o.max_connect_attempts = 3;
    return o;
}

std::string endpoint(const CommonOptions& c) { return "'" + c.host + ":" + std::to_string(c.port) + "'"; }

void set_quiet(bool quiet) { quiet_ = quiet; }

namespace {
std::optional<bool> connack_exit_v5_;  // set: Mosquitto's exit statuses
}  // namespace

void use_connack_exit_status(const CommonOptions& c) {
    connack_exit_v5_ = c.protocol == "5" || c.protocol == "mqttv5";
}

std::optional<int> connack_exit_status(ReasonCode reason) {
    if (!connack_exit_v5_) return std::nullopt;
    const auto code = static_cast<int>(reason);
    if (*connack_exit_v5_) return code;  // MQTT 5: the reason code (0x86 = 134...)
    // 3.1.1: the CONNACK return code the client library mapped to its v5
    // meaning (spec 3.2.2.3 vs 3.2.2.2), mapped back.
    return connack_to_v311(reason);
}
bool quiet() { return quiet_; }

void status_line(std::string_view line) {
    if (quiet_) return;
    std::string text(line);
    text += '\n';
    std::fwrite(text.data(), 1, text.size(), stderr);
}

bool pause_unless_interrupted(std::chrono::milliseconds delay) {
    const auto until = std::chrono::steady_clock::now() + delay;
    while (std::chrono::steady_clock::now() < until) {
        if (interrupted()) return false;
        std::this_thread::sleep_for(
            std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(50),
                                                          until - std::chrono::steady_clock::now()));
    }
    return !interrupted();
}

bool connect_with_backoff(Client& client, bool resume, bool reconnecting, const std::string& where,
                          const std::function<void()>& new_session, const std::function<void()>& connected) {
    using std::chrono::milliseconds;
    static constexpr milliseconds first_delays[] = {milliseconds(500), milliseconds(1000)};
    static constexpr milliseconds delays[] = {milliseconds(1000), milliseconds(2000), milliseconds(4000),
                                              milliseconds(8000)};
    status_line("Connecting to " + where + ".");
    for (std::size_t attempt = 0;; ++attempt) {
        try {
            try {
                client.start(resume);
                connected();
            } catch (const SessionResumeError&) {
                // Connected, but the broker kept no session.
                new_session();
            }
            return true;
        } catch (const ConnectError&) {
            // Bad credentials, not authorized...: another try cannot help.
            throw;
        } catch (const ClientError& e) {
            if (!reconnecting) {
                if (attempt >= std::size(first_delays)) throw;
                if (!pause_unless_interrupted(first_delays[attempt])) return false;
                continue;
            }
            const milliseconds delay = delays[std::min<std::size_t>(attempt, std::size(delays) - 1)];
            status_line(std::string("Connection failed: ") + e.what() + "; retrying in " +
                        std::to_string(delay.count() / 1000) + " s.");
            if (!pause_unless_interrupted(delay)) return false;
            status_line("Connecting to " + where + ".");
        }
    }
}

void catch_interrupts() {
    struct sigaction sa {};
    sa.sa_handler = [](int) { interrupted_ = 1; };
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a blocking read on stdin returns EINTR
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
}

bool interrupted() { return interrupted_ != 0; }

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

// Printable in the seed's block and on a terminal: not a C0 control (but
// newline and tab, which the block layout handles), not DEL, not a C1 control
// (U+0080..U+009F, two bytes in UTF-8: 0xC2 0x80..0x9F).
static bool printable_at(std::string_view s, std::size_t i, std::size_t n) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (n == 1) return b0 == '\n' || b0 == '\t' || (b0 >= 0x20 && b0 != 0x7f);
    if (n == 2 && b0 == 0xC2) return static_cast<unsigned char>(s[i + 1]) >= 0xA0;
    return true;
}

std::string format_message(std::string_view format, std::string_view bytes) {
    if (format == "binary") return hexlify(bytes);
    std::string text;
    text.reserve(bytes.size());
    for (std::size_t i = 0; i < bytes.size();) {
        const std::size_t n = utf8_sequence(bytes, i);
        if (n == 0) {
            if (format == "auto") return hexlify(bytes);
            text += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
            ++i;
            continue;
        }
        if (!printable_at(bytes, i, n)) {
            if (format == "auto") return hexlify(bytes);
            // text: shown, never sent raw to the terminal.
            for (std::size_t k = 0; k < n; ++k) {
                static constexpr char digits[] = "0123456789abcdef";
                const auto b = static_cast<unsigned char>(bytes[i + k]);
                text += "\\x";
                text += digits[b >> 4];
                text += digits[b & 15];
            }
        } else {
            text.append(bytes.substr(i, n));
        }
        i += n;
    }
    return text;
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
