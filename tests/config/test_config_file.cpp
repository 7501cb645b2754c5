// The config parser, case by case: every key parsed, every kind of problem
// reported with FILE:LINE:COLUMN and the key, all problems at once.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/config_file.hpp"

using namespace mqttools::config;

namespace {

// Made-up paths: their files and folders are not looked at here (see
// "files named by the config are checked at load").
LoadResult parse(const std::string& text) { return parse_config(text, "/etc/mqttools/test.toml", false); }

// The single error of a bad file.
std::string only_error(const std::string& text) {
    auto r = parse(text);
    REQUIRE_FALSE(r.ok());
    REQUIRE(r.errors.size() == 1);
    return r.errors[0];
}

}  // namespace

TEST_CASE("an empty file gives the built-in defaults") {
    auto r = parse("");
    REQUIRE(r.ok());
    const Config& c = *r.config;
    CHECK(c.source == "/etc/mqttools/test.toml");
    CHECK(c.listeners.empty());
    CHECK_FALSE(c.metrics.enabled);
    CHECK(c.effective_allow_anonymous());
    CHECK(c.max_connections == 0);
    CHECK(c.max_keepalive == 65535);
    CHECK(c.max_inflight_messages == 20);
    CHECK(c.max_queued_messages == 1000);
    CHECK(c.sys_interval == 10);
    CHECK(c.log_level == LogLevel::info);
    CHECK(c.log_dest == LogDest::stderr_);
    CHECK_FALSE(c.persistent_client_expiration.has_value());
}

TEST_CASE("every top-level key is read") {
    auto r = parse(R"(
allow_anonymous = false
password_file = "/etc/mqttools/passwd"
acl_file = "acl"
max_connections = 500
max_packet_size = 65536
message_size_limit = 1000
max_keepalive = 120
max_inflight_messages = 5
max_queued_messages = 50
max_queued_bytes = 1048576
retain_available = false
sys_interval = 3
persistent_client_expiration = "2d"
topic_alias_maximum = 0
receive_maximum = 100
log_level = "debug"
log_dest = "journal"
max_subscriptions_per_client = 7
max_topic_levels = 9
max_client_output_bytes = 65536
stuck_client_timeout = 0
memory_limit = 1073741824
connect_timeout = 5
)");
    REQUIRE(r.ok());
    const Config& c = *r.config;
    CHECK(c.allow_anonymous == false);
    CHECK(c.password_file == "/etc/mqttools/passwd");
    CHECK(c.acl_file == "/etc/mqttools/acl");  // relative to the config's folder
    CHECK(c.max_connections == 500);
    CHECK(c.max_packet_size == 65536);
    CHECK(c.message_size_limit == 1000);
    CHECK(c.max_keepalive == 120);
    CHECK(c.max_inflight_messages == 5);
    CHECK(c.max_queued_messages == 50);
    CHECK(c.max_queued_bytes == 1048576);
    CHECK_FALSE(c.retain_available);
    CHECK(c.sys_interval == 3);
    CHECK(c.persistent_client_expiration == 2u * 86400u);
    CHECK(c.topic_alias_maximum == 0);
    CHECK(c.receive_maximum == 100);
    CHECK(c.log_level == LogLevel::debug);
    CHECK(c.log_dest == LogDest::journal);
    CHECK(c.max_subscriptions_per_client == 7);
    CHECK(c.max_topic_levels == 9);
    CHECK(c.max_client_output_bytes == 65536);
    CHECK(c.stuck_client_timeout == 0);
    CHECK(c.memory_limit == 1073741824);
    CHECK(c.connect_timeout == 5);
}

TEST_CASE("listeners and metrics") {
    auto r = parse(R"(
[[listener]]
port = 1884

[[listener]]
port = 8883
bind = "::"
certfile = "certs/server.crt"
keyfile = "/k/server.key"
cafile = "/k/ca.crt"
require_certificate = true
use_identity_as_username = true

[metrics]
port = 9100
bind = "0.0.0.0"
)");
    REQUIRE(r.ok());
    const Config& c = *r.config;
    REQUIRE(c.listeners.size() == 2);
    CHECK(c.listeners[0].port == 1884);
    CHECK(c.listeners[0].bind == "127.0.0.1");
    CHECK_FALSE(c.listeners[0].tls());
    CHECK(c.listeners[1].port == 8883);
    CHECK(c.listeners[1].bind == "::");
    CHECK(c.listeners[1].tls());
    CHECK(c.listeners[1].certfile == "/etc/mqttools/certs/server.crt");
    CHECK(c.listeners[1].keyfile == "/k/server.key");
    CHECK(c.listeners[1].cafile == "/k/ca.crt");
    CHECK(c.listeners[1].require_certificate);
    CHECK(c.listeners[1].use_identity_as_username);
    // Mosquitto 2: configuring a listener turns anonymous access off by default.
    CHECK_FALSE(c.effective_allow_anonymous());
    CHECK(c.metrics.enabled);
    CHECK(c.metrics.port == 9100);
    CHECK(c.metrics.bind == "0.0.0.0");
}

TEST_CASE("an empty [metrics] table enables metrics on the default port") {
    auto r = parse("[metrics]\n");
    REQUIRE(r.ok());
    CHECK(r.config->metrics.enabled);
    CHECK(r.config->metrics.port == 9234);
    CHECK(r.config->metrics.bind == "127.0.0.1");
    auto off = parse("[metrics]\nenabled = false\n");
    REQUIRE(off.ok());
    CHECK_FALSE(off.config->metrics.enabled);
}

TEST_CASE("max_connections -1 means unlimited, as in Mosquitto") {
    auto r = parse("max_connections = -1\n");
    REQUIRE(r.ok());
    CHECK(r.config->max_connections == 0);
}

TEST_CASE("persistent_client_expiration accepts seconds and Mosquitto durations") {
    CHECK(parse("persistent_client_expiration = 90\n").config->persistent_client_expiration == 90u);
    CHECK(parse("persistent_client_expiration = \"3h\"\n").config->persistent_client_expiration == 10800u);
    CHECK(parse("persistent_client_expiration = \"1w\"\n").config->persistent_client_expiration == 604800u);
    CHECK(parse("persistent_client_expiration = \"1y\"\n").config->persistent_client_expiration == 31536000u);
    CHECK(only_error("persistent_client_expiration = \"2 days\"\n") ==
          "/etc/mqttools/test.toml:1:32: persistent_client_expiration: '2 days' is not a duration "
          "(a number followed by s, h, d, w, m or y)");
}

TEST_CASE("persistence keys: Mosquitto's names, defaults, paths and errors") {
    const Config d;
    CHECK_FALSE(d.persistence.enabled);  // off unless configured, as in Mosquitto
    CHECK(d.persistence.file == "mqttoolsd.db");
    CHECK(d.persistence.sync_full);
    auto r = parse("persistence = true\npersistence_location = \"state\"\npersistence_file = \"b.db\"\n"
                   "persistence_sync = \"normal\"\n");
    REQUIRE(r.ok());
    CHECK(r.config->persistence.enabled);
    CHECK(r.config->persistence.location == "/etc/mqttools/state");  // relative to the file's folder
    CHECK(r.config->persistence.path() == "/etc/mqttools/state/b.db");
    CHECK_FALSE(r.config->persistence.sync_full);
    CHECK(only_error("persistence_sync = \"fsync\"\n") ==
          "/etc/mqttools/test.toml:1:20: persistence_sync: 'fsync' is not one of full, normal");
    CHECK(only_error("persistence_file = \"a/b.db\"\n") ==
          "/etc/mqttools/test.toml:1:20: persistence_file: 'a/b.db' must be a file name (the folder is "
          "persistence_location)");
    CHECK(only_error("persistence = \"yes\"\n") ==
          "/etc/mqttools/test.toml:1:15: persistence: expected a boolean (true or false), got a string");
}

TEST_CASE("unknown key: position, key and a suggestion") {
    CHECK(only_error("\n\nmax_conections = 10\n") ==
          "/etc/mqttools/test.toml:3:1: unknown key 'max_conections' (did you mean 'max_connections'?)");
    CHECK(only_error("alow_anonymous = true\n") ==
          "/etc/mqttools/test.toml:1:1: unknown key 'alow_anonymous' (did you mean 'allow_anonymous'?)");
    CHECK(only_error("  sys_intreval = 5\n") ==
          "/etc/mqttools/test.toml:1:3: unknown key 'sys_intreval' (did you mean 'sys_interval'?)");
}

TEST_CASE("unknown key with nothing close gets no suggestion") {
    CHECK(only_error("frobnicate = 1\n") == "/etc/mqttools/test.toml:1:1: unknown key 'frobnicate'");
}

TEST_CASE("unknown key inside a listener and inside metrics") {
    CHECK(only_error("[[listener]]\nport = 1884\nprot = 1885\n") ==
          "/etc/mqttools/test.toml:3:1: unknown key 'prot' in [[listener]] (did you mean 'port'?)");
    CHECK(only_error("[metrics]\nbnd = \"127.0.0.1\"\n") ==
          "/etc/mqttools/test.toml:2:1: unknown key 'bnd' in [metrics] (did you mean 'bind'?)");
}

TEST_CASE("wrong types name the expected and the given type") {
    CHECK(only_error("max_connections = \"100\"\n") ==
          "/etc/mqttools/test.toml:1:19: max_connections: expected an integer, got a string");
    CHECK(only_error("allow_anonymous = 1\n") ==
          "/etc/mqttools/test.toml:1:19: allow_anonymous: expected a boolean (true or false), got an integer");
    CHECK(only_error("password_file = false\n") ==
          "/etc/mqttools/test.toml:1:17: password_file: expected a string, got a boolean");
    CHECK(only_error("sys_interval = 2.5\n") ==
          "/etc/mqttools/test.toml:1:16: sys_interval: expected an integer, got a floating-point number");
    CHECK(only_error("[[listener]]\nport = \"1884\"\n") ==
          "/etc/mqttools/test.toml:2:8: listener[0].port: expected an integer, got a string");
    CHECK(only_error("metrics = 9100\n") ==
          "/etc/mqttools/test.toml:1:11: metrics: expected a [metrics] table, got an integer");
    CHECK(only_error("listener = 1883\n") ==
          "/etc/mqttools/test.toml:1:12: listener: expected [[listener]] tables, got an integer");
}

TEST_CASE("out-of-range values give the range") {
    CHECK(only_error("max_keepalive = 70000\n") ==
          "/etc/mqttools/test.toml:1:17: max_keepalive: 70000 is out of range (0 to 65535)");
    CHECK(only_error("receive_maximum = 0\n") ==
          "/etc/mqttools/test.toml:1:19: receive_maximum: 0 is out of range (1 to 65535)");
    CHECK(only_error("max_packet_size = 300000000\n") ==
          "/etc/mqttools/test.toml:1:19: max_packet_size: 300000000 is out of range (0 to 268435455)");
    CHECK(only_error("max_packet_size = 10\n") ==
          "/etc/mqttools/test.toml:1:19: max_packet_size: 10 is too small (0 for no limit, or at least 20)");
    CHECK(only_error("max_connections = -2\n") ==
          "/etc/mqttools/test.toml:1:19: max_connections: -2 is out of range (-1 to 4294967295)");
    CHECK(only_error("[[listener]]\nport = 0\n") ==
          "/etc/mqttools/test.toml:2:8: listener[0].port: 0 is out of range (1 to 65535)");
    CHECK(only_error("[metrics]\nport = 65536\n") ==
          "/etc/mqttools/test.toml:2:8: metrics.port: 65536 is out of range (1 to 65535)");
}

TEST_CASE("enumerated strings list the choices and suggest") {
    CHECK(only_error("log_level = \"verbose\"\n") ==
          "/etc/mqttools/test.toml:1:13: log_level: 'verbose' is not one of trace, debug, info, warning, error");
    CHECK(only_error("log_level = \"warn\"\n") ==
          "/etc/mqttools/test.toml:1:13: log_level: 'warn' is not one of trace, debug, info, warning, error "
          "(did you mean 'warning'?)");
    CHECK(only_error("log_dest = \"jurnal\"\n") ==
          "/etc/mqttools/test.toml:1:12: log_dest: 'jurnal' is not one of stderr, journal, file "
          "(did you mean 'journal'?)");
}

TEST_CASE("log_dest file needs a file name; Mosquitto's 'file PATH' form works") {
    CHECK(only_error("log_dest = \"file\"\n") ==
          "/etc/mqttools/test.toml:1:12: log_dest: \"file\" needs log_file = \"/path/to/log\"");
    auto r = parse("log_dest = \"file /var/log/mqttoolsd.log\"\n");
    REQUIRE(r.ok());
    CHECK(r.config->log_dest == LogDest::file);
    CHECK(r.config->log_file == "/var/log/mqttoolsd.log");
    auto r2 = parse("log_dest = \"file\"\nlog_file = \"broker.log\"\n");
    REQUIRE(r2.ok());
    CHECK(r2.config->log_file == "/etc/mqttools/broker.log");
}

TEST_CASE("listener consistency problems") {
    CHECK(only_error("[[listener]]\nbind = \"127.0.0.1\"\n") ==
          "/etc/mqttools/test.toml:1:1: listener[0]: missing required key 'port'");
    CHECK(only_error("[[listener]]\nport = 8883\ncertfile = \"/a.crt\"\n") ==
          "/etc/mqttools/test.toml:1:1: listener[0]: certfile is set but keyfile is not (TLS needs both)");
    CHECK(only_error("[[listener]]\nport = 8883\ncertfile = \"/a\"\nkeyfile = \"/b\"\nrequire_certificate = true\n") ==
          "/etc/mqttools/test.toml:1:1: listener[0]: require_certificate needs cafile to verify client "
          "certificates");
    CHECK(only_error("[[listener]]\nport = 1884\nbind = \"not-an-address\"\n") ==
          "/etc/mqttools/test.toml:3:8: listener[0].bind: 'not-an-address' is not an IPv4 or IPv6 address");
    CHECK(only_error("[[listener]]\nport = 1884\n[[listener]]\nport = 1884\n") ==
          "/etc/mqttools/test.toml:4:8: listener[1].port: port 1884 on '127.0.0.1' is already used by "
          "listener[0]");
    CHECK(only_error("[[listener]]\nport = 1884\n[metrics]\nport = 1884\n") ==
          "/etc/mqttools/test.toml:3:1: metrics.port: port 1884 is already used by listener[0]");
}

TEST_CASE("every problem is reported at once, in file order") {
    auto r = parse(R"(max_conections = 10
max_keepalive = 70000
allow_anonymous = "yes"

[[listener]]
port = 99999
bnd = "127.0.0.1"
)");
    REQUIRE_FALSE(r.ok());
    REQUIRE(r.errors.size() == 5);
    CHECK(r.errors[0] == "/etc/mqttools/test.toml:1:1: unknown key 'max_conections' (did you mean 'max_connections'?)");
    CHECK(r.errors[1] == "/etc/mqttools/test.toml:2:17: max_keepalive: 70000 is out of range (0 to 65535)");
    CHECK(r.errors[2] == "/etc/mqttools/test.toml:3:19: allow_anonymous: expected a boolean (true or false), got a string");
    CHECK(r.errors[3] == "/etc/mqttools/test.toml:6:8: listener[0].port: 99999 is out of range (1 to 65535)");
    CHECK(r.errors[4] == "/etc/mqttools/test.toml:7:1: unknown key 'bnd' in [[listener]] (did you mean 'bind'?)");
}

TEST_CASE("a TOML syntax error names its position") {
    auto r = parse("max_connections = 10\nsys_interval = = 5\n");
    REQUIRE_FALSE(r.ok());
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].rfind("/etc/mqttools/test.toml:2:", 0) == 0);
    CHECK(r.errors[0].find("syntax error: ") != std::string::npos);
}

TEST_CASE("load_config reads a file and reports a missing one") {
    const auto dir = std::filesystem::temp_directory_path() / ("mqttools-config-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto file = dir / "broker.toml";
    {
        std::ofstream out(file);
        out << "sys_interval = 7\npassword_file = \"pw\"\n";
    }
    auto r = load_config(file.string());
    REQUIRE(r.ok());
    CHECK(r.config->sys_interval == 7);
    CHECK(r.config->password_file == (dir / "pw").string());
    CHECK(r.config->source == file.string());

    auto missing = load_config((dir / "nope.toml").string());
    REQUIRE_FALSE(missing.ok());
    REQUIRE(missing.errors.size() == 1);
    CHECK(missing.errors[0] == "cannot read config file '" + (dir / "nope.toml").string() +
                                   "': No such file or directory");
    auto directory = load_config(dir.string());
    REQUIRE_FALSE(directory.ok());
    CHECK(directory.errors[0] == "cannot read config file '" + dir.string() + "': Is a directory");
    std::filesystem::remove_all(dir);
}

TEST_CASE("closest_match") {
    const std::vector<std::string_view> keys = {"port", "bind", "certfile"};
    CHECK(closest_match("prot", keys) == std::optional<std::string_view>("port"));
    CHECK(closest_match("certfiel", keys) == std::optional<std::string_view>("certfile"));
    CHECK_FALSE(closest_match("xyzzy", keys).has_value());
}

TEST_CASE("restart_required_changes lists what SIGHUP cannot apply") {
    Config a = *parse("[[listener]]\nport = 1884\n").config;
    Config b = a;
    b.max_connections = 5;          // live
    b.password_file = "/x";         // live
    b.log_level = LogLevel::debug;  // live
    CHECK(restart_required_changes(a, b).empty());

    Config c = *parse("[[listener]]\nport = 1885\n[metrics]\n").config;
    auto changes = restart_required_changes(a, c);
    REQUIRE(changes.size() == 3);
    CHECK(changes[0] == "listener 127.0.0.1:1885 added: restart mqttoolsd to open it");
    CHECK(changes[1] == "listener 127.0.0.1:1884 removed: restart mqttoolsd to close it");
    CHECK(changes[2] == "[metrics] changed: restart mqttoolsd to apply it");

    // No listener means the implicit 127.0.0.1:1883.
    Config d = *parse("").config;
    Config e = *parse("[[listener]]\nport = 1883\n").config;
    CHECK(restart_required_changes(d, e).empty());
}

TEST_CASE("-p PORT adds a listener but keeps the file's anonymous default") {
    Config none = *parse("").config;
    add_command_line_port(none, 1884);
    REQUIRE(none.listeners.size() == 1);
    CHECK(none.listeners[0].port == 1884);
    CHECK(none.listeners[0].bind == "127.0.0.1");
    CHECK(none.effective_allow_anonymous());  // as `mosquitto -p 1884`

    Config one = *parse("[[listener]]\nport = 1885\n").config;
    add_command_line_port(one, 1884);
    CHECK(one.listeners.size() == 2);
    CHECK_FALSE(one.effective_allow_anonymous());

    Config explicit_yes = *parse("allow_anonymous = true\n[[listener]]\nport = 1884\n").config;
    add_command_line_port(explicit_yes, 1884);  // already there: not doubled
    CHECK(explicit_yes.listeners.size() == 1);
    CHECK(explicit_yes.effective_allow_anonymous());
}

#ifdef MQTTOOLS_SHIPPED_CONFIG
namespace {
std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}
}  // namespace

TEST_CASE("the shipped conf/mqttoolsd.toml parses to the defaults") {
    auto r = load_config(MQTTOOLS_SHIPPED_CONFIG);
    INFO((r.errors.empty() ? std::string() : r.errors[0]));
    REQUIRE(r.ok());
    CHECK(r.config->listeners.empty());
    CHECK_FALSE(r.config->metrics.enabled);
    CHECK(r.config->persistence.enabled);  // the shipped config turns it on (issue 12)
}

TEST_CASE("every commented key in the shipped config shows its true default") {
    // Uncomment "# key = value" and "# [table]" lines, nothing else.
    std::istringstream in(read_file(MQTTOOLS_SHIPPED_CONFIG));
    std::string text;
    std::string line;
    int uncommented = 0;
    while (std::getline(in, line)) {
        if (line.rfind("# ", 0) == 0) {
            const std::string rest = line.substr(2);
            const auto eq = rest.find(" = ");
            const bool key = eq != std::string::npos && eq > 0 &&
                             rest.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == eq;
            const bool table = rest == "[[listener]]" || rest == "[metrics]" || rest == "[[bridge]]";
            if (key || table) {
                line = rest;
                ++uncommented;
            }
        }
        text += line + "\n";
    }
    CHECK(uncommented >= 35);
    auto r = parse_config(text, MQTTOOLS_SHIPPED_CONFIG, false);
    INFO((r.errors.empty() ? std::string() : r.errors[0]));
    REQUIRE(r.ok());
    const Config& c = *r.config;
    const Config d;
    CHECK(c.max_connections == d.max_connections);
    CHECK(c.max_packet_size == d.max_packet_size);
    CHECK(c.message_size_limit == d.message_size_limit);
    CHECK(c.max_keepalive == d.max_keepalive);
    CHECK(c.max_inflight_messages == d.max_inflight_messages);
    CHECK(c.max_queued_messages == d.max_queued_messages);
    CHECK(c.max_queued_bytes == d.max_queued_bytes);
    CHECK(c.receive_maximum == d.receive_maximum);
    CHECK(c.topic_alias_maximum == d.topic_alias_maximum);
    CHECK(c.retain_available == d.retain_available);
    CHECK(c.max_subscriptions_per_client == d.max_subscriptions_per_client);
    CHECK(c.max_topic_levels == d.max_topic_levels);
    CHECK(c.max_client_output_bytes == d.max_client_output_bytes);
    CHECK(c.stuck_client_timeout == d.stuck_client_timeout);
    CHECK(c.memory_limit == d.memory_limit);
    CHECK(c.connect_timeout == d.connect_timeout);
    CHECK(c.log_level == d.log_level);
    CHECK(c.log_dest == d.log_dest);
    CHECK(c.sys_interval == d.sys_interval);
    CHECK(c.persistence.location == d.persistence.location);
    CHECK(c.persistence.file == d.persistence.file);
    CHECK(c.persistence.sync_full == d.persistence.sync_full);
    CHECK(c.password_file.empty());
    CHECK(c.acl_file.empty());
    CHECK(c.allow_anonymous == true);
    REQUIRE(c.listeners.size() == 3);
    CHECK(c.listeners[2].websockets());
    CHECK(c.listeners[2].websockets_headers_size == Listener{}.websockets_headers_size);
    CHECK(c.listeners[2].websockets_origin.empty());
    CHECK(c.listeners[0].port == Listener{}.port);
    CHECK(c.listeners[0].bind == Listener{}.bind);
    CHECK_FALSE(c.listeners[0].tls());
    CHECK(c.listeners[1].tls());
    CHECK_FALSE(c.listeners[1].require_certificate);
    CHECK_FALSE(c.listeners[1].use_identity_as_username);
    CHECK(c.metrics.enabled);
    CHECK(c.metrics.port == Metrics{}.port);
    CHECK(c.metrics.bind == Metrics{}.bind);
    REQUIRE(c.bridges.size() == 1);
    const Bridge& b = c.bridges[0];
    const Bridge db;
    CHECK(b.cleansession == db.cleansession);
    CHECK(b.keepalive_interval == db.keepalive_interval);
    CHECK(b.restart_timeout == db.restart_timeout);
    CHECK(b.restart_timeout_cap == db.restart_timeout_cap);
    CHECK(b.mqtt5 == db.mqtt5);
    CHECK(b.try_private == db.try_private);
    CHECK(b.notifications == db.notifications);
    CHECK(b.insecure == db.insecure);
    CHECK(b.start_type == db.start_type);
    CHECK(b.threshold == db.threshold);
    CHECK(b.idle_timeout == db.idle_timeout);
}
#endif

TEST_CASE("websockets listener keys") {
    auto r = parse("[[listener]]\nport = 8080\nprotocol = \"websockets\"\nwebsockets_headers_size = 8192\n"
                   "websockets_origin = [\"https://a.example\", \"http://b.example:8000\"]\n"
                   "[[listener]]\nport = 8081\nprotocol = \"websockets\"\nwebsockets_origin = \"https://c.example\"\n"
                   "[[listener]]\nport = 1883\nprotocol = \"mqtt\"\n");
    REQUIRE(r.ok());
    const auto& l = r.config->listeners;
    REQUIRE(l.size() == 3);
    CHECK(l[0].websockets());
    CHECK(l[0].websockets_headers_size == 8192);
    CHECK(l[0].websockets_origin == std::vector<std::string>{"https://a.example", "http://b.example:8000"});
    CHECK(l[1].websockets());
    CHECK(l[1].websockets_headers_size == 4096);
    CHECK(l[1].websockets_origin == std::vector<std::string>{"https://c.example"});
    CHECK_FALSE(l[2].websockets());

    CHECK(only_error("[[listener]]\nport = 8080\nprotocol = \"http\"\n") ==
          "/etc/mqttools/test.toml:3:12: listener[0].protocol: 'http' is not a protocol (use \"mqtt\", "
          "\"websockets\" or \"http_api\")");
    CHECK(only_error("[[listener]]\nport = 8080\nprotocol = \"http_api\"\n") ==
          "/etc/mqttools/test.toml:1:1: listener[0]: protocol = \"http_api\" needs api_key_file (make one with "
          "mqttools passwd)");
    CHECK(only_error("[[listener]]\nport = 8080\napi_key_file = \"/k\"\n") ==
          "/etc/mqttools/test.toml:3:16: listener[0].api_key_file: needs protocol = \"http_api\" on this listener");
    CHECK(only_error("[[listener]]\nport = 8080\nwebsockets_origin = \"https://a\"\n") ==
          "/etc/mqttools/test.toml:3:21: listener[0].websockets_origin: needs protocol = \"websockets\" on this "
          "listener");
    CHECK(only_error("[[listener]]\nport = 8080\nprotocol = \"websockets\"\nwebsockets_headers_size = 10\n")
              .find("listener[0].websockets_headers_size") != std::string::npos);
    CHECK(only_error("[[listener]]\nport = 8080\nprotocol = \"websockets\"\nwebsockets_origin = [1]\n")
              .find("listener[0].websockets_origin: expected a list of origins") != std::string::npos);

    // A listener's protocol cannot change on SIGHUP.
    Config a = *parse("[[listener]]\nport = 8080\n").config;
    Config b = *parse("[[listener]]\nport = 8080\nprotocol = \"websockets\"\n").config;
    auto changes = restart_required_changes(a, b);
    REQUIRE(changes.size() == 2);
    CHECK(changes[0] == "listener 127.0.0.1:8080 (websockets) added: restart mqttoolsd to open it");
}

TEST_CASE("files named by the config are checked at load (issue 30: 13, 15)") {
    const std::string src = "/nonexistent-dir/conf/test.toml";
    // A certificate: its line, the path resolved against the config's folder, why.
    auto r = parse_config("[[listener]]\nport = 8883\ncertfile = \"certs/s.crt\"\nkeyfile = \"/nonexistent-dir/k.key\"\n",
                          src);
    REQUIRE(r.errors.size() == 2);
    CHECK(r.errors[0] == src + ":3:12: listener[0].certfile: cannot read '/nonexistent-dir/conf/certs/s.crt': "
                        "No such file or directory");
    CHECK(r.errors[1].rfind(src + ":4:11: listener[0].keyfile: cannot read '/nonexistent-dir/k.key'", 0) == 0);
    // One rule for the two folders: neither is created; the folder is named.
    r = parse_config("persistence = true\npersistence_location = \"/nonexistent-dir/state\"\n", src);
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0] == src + ":2:24: persistence_location: the folder '/nonexistent-dir/state' does not exist "
                        "(mqttoolsd does not create it)");
    r = parse_config("log_dest = \"file\"\nlog_file = \"/nonexistent-dir/logs/b.log\"\n", src);
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0] == src + ":2:12: log_file: the folder '/nonexistent-dir/logs' does not exist "
                        "(mqttoolsd does not create it)");
    CHECK(parse_config("log_dest = \"file\"\nlog_file = \"/tmp/b.log\"\n", src).ok());
}

TEST_CASE("a Mosquitto config is recognised and converted (issue 30: 14)") {
    const std::string mosquitto = "# broker\nper_listener_settings false\nlistener 1883\nallow_anonymous true\n"
                                  "listener 9001 127.0.0.1\nprotocol websockets\nlog_dest file /var/log/m.log\n"
                                  "log_type all\npersistence true\nconnection cloud\naddress 10.0.0.1:1883 10.0.0.2\n"
                                  "topic sensors/# out 1\ntopic cmd/# in 1\nremote_username u\nremote_password 1234\n";
    auto r = parse_config(mosquitto, "/etc/mosquitto/mosquitto.conf", false);
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0] == "/etc/mosquitto/mosquitto.conf:2: this is a Mosquitto config ('per_listener_settings false'); "
                        "mqttoolsd reads TOML: `mqttools convert-config /etc/mosquitto/mosquitto.conf` writes the "
                        "equivalent (and lists what has none)");
    const ConvertedConfig c = convert_mosquitto_config(mosquitto);
    CHECK(c.unsupported == std::vector<std::string>{"2: per_listener_settings false", "8: log_type all"});
    auto back = parse_config(c.toml, "/etc/mqttools/converted.toml", false);
    INFO(c.toml);
    INFO((back.errors.empty() ? std::string() : back.errors[0]));
    REQUIRE(back.ok());
    const Config& cfg = *back.config;
    REQUIRE(cfg.listeners.size() == 2);
    CHECK(cfg.listeners[0].port == 1883);
    CHECK(cfg.listeners[1].bind == "127.0.0.1");
    CHECK(cfg.listeners[1].websockets());
    CHECK(cfg.effective_allow_anonymous());
    CHECK(cfg.persistence.enabled);
    CHECK(cfg.log_file == "/var/log/m.log");
    REQUIRE(cfg.bridges.size() == 1);
    CHECK(cfg.bridges[0].name == "cloud");
    CHECK(cfg.bridges[0].remote_password == "1234");
    CHECK(cfg.bridges[0].topics.size() == 2);
}
