// What the mqttools client subcommands share: the connection options (the
// seed's spellings and mosquitto_pub/sub's), the client they make, status
// lines on stderr, Ctrl-C, and message formatting (auto / binary / text).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "mqttools/client.hpp"
#include "tools/args.hpp"
#include "tools/property_options.hpp"

namespace mqttools::tools {

struct CommonOptions {
    std::string host = "localhost";
    std::int64_t port = 0;  // 0: 1883, or 8883 with TLS (as mosquitto_pub)
    std::string client_id;
    std::string client_id_prefix;  // -I
    std::string cafile;
    std::string capath;
    std::string certfile;
    std::string keyfile;
    std::string tls_version;
    bool no_check_hostname = false;
    std::string username;
    std::string password;
    std::string protocol = "5";  // -V
    std::string url;             // -L
    std::string bind_address;    // -A
    bool debug = false;          // -d
    bool quiet = false;
    bool disable_clean_start = false;  // -c
    std::int64_t keep_alive = -1;      // -1: the command's default
    std::optional<std::int64_t> session_expiry_interval;
    std::string will_topic;
    std::string will_payload;
    bool have_will_payload = false;
    std::int64_t will_qos = 0;
    bool will_retain = false;
    PropertyOptions properties;  // -D
    // From a -L URL: the topic of mqtt(s)://host/topic; ws(s):// URLs.
    std::string url_topic;
    bool websocket = false;
    std::string websocket_path = "/mqtt";
};

// The options every client command takes (see mqttools(1)).
void add_common_options(ArgParser& parser, CommonOptions& options);

// Checks the combinations parse() cannot (a will payload without a topic,
// -c without a client id, -D with MQTT 3.1.1...) and applies -L. Throws
// UsageError.
void check_common_options(CommonOptions& options);

// Client options from the common ones: a few quick connection attempts,
// then an error (never a silent hang on a broker that is down).
// `default_keep_alive` when -k was not given.
ClientOptions make_client_options(const CommonOptions& common, std::uint16_t default_keep_alive);

// "'localhost:1883'"
std::string endpoint(const CommonOptions& common);

// A status line ("Connecting to ...", "Connected.") on stderr, so that
// stdout carries only messages; nothing with --quiet.
void status_line(std::string_view line);
void set_quiet(bool quiet);
bool quiet();

// The Mosquitto-style forms (-t...) exit as mosquitto_pub/sub when the
// broker refuses the CONNECT: with the CONNACK's code (3.1.1: the return
// code, 5 = not authorised; MQTT 5: the reason code, 135). Otherwise 1.
void use_connack_exit_status(const CommonOptions& common);
std::optional<int> connack_exit_status(ReasonCode reason);

// SIGINT and SIGTERM set a flag instead of killing the process, so that the
// command can send DISCONNECT and exit 0 as mosquitto_sub does.
void catch_interrupts();
bool interrupted();

// Sleeps `delay`; false (at once) when Ctrl-C came meanwhile.
bool pause_unless_interrupted(std::chrono::milliseconds delay);

// Connects a client made with one attempt per start() (connect_delays
// empty, max_connect_attempts 1). A first connection tries three times, 0.5
// and 1 s apart, then throws the error; a reconnection retries with back-off
// (1, 2, 4, 8 s, then 8 s again) until it succeeds, saying so on stderr. A
// refused CONNECT (ConnectError) is thrown at once: another try cannot help.
// `new_session` runs when a resumed session was not there any more,
// `connected` after every successful start. False when interrupted.
bool connect_with_backoff(Client& client, bool resume, bool reconnecting, const std::string& where,
                          const std::function<void()>& new_session, const std::function<void()>& connected);

// Message bytes for display, as the seed: auto = UTF-8 text when it is valid
// UTF-8 with nothing but printable characters, newlines and tabs, else hex;
// binary = hex; text = UTF-8 with U+FFFD for bad bytes and control
// characters (but newline and tab) as \xNN. Never raw control characters.
std::string format_message(std::string_view format, std::string_view bytes);

// A MESSAGE argument to bytes: auto = the hex-decoded bytes when it is valid
// hex, else its UTF-8 bytes; binary = hex-decoded (UsageError when not hex);
// text = as given.
std::string encode_message(std::string_view format, std::string_view message);

std::string hexlify(std::string_view bytes);

// Writes and flushes (output is often a pipe read line by line).
void print_line(std::string_view line);

}  // namespace mqttools::tools
