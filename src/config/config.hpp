// The broker's configuration as plain structs. Parsed once from TOML
// (config_file.cpp, the only place that sees toml++ types); every other layer
// reads these fields. Keys are named as Mosquitto names them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mqttools::config {

struct Listener {
    std::uint16_t port = 1883;
    std::string bind = "127.0.0.1";  // "" or "0.0.0.0" / "::" for all addresses
    // TLS: a listener with certfile and keyfile speaks TLS.
    std::string certfile;
    std::string keyfile;
    std::string cafile;
    bool require_certificate = false;
    bool use_identity_as_username = false;
    // SO_REUSEPORT: several nodes of a cluster on one host share the port
    // (the kernel spreads new connections over them).
    bool reuse_port = false;
    bool tls() const { return !certfile.empty(); }
    // MQTT over WebSocket (Mosquitto's `protocol = websockets`): ws, or wss
    // with certfile/keyfile. Then the upgrade request's head may be at most
    // websockets_headers_size bytes, and when websockets_origin is not
    // empty its Origin header must be one of them.
    // `protocol = "http_api"` (Mosquitto 2.1's name): the management API
    // and dashboard (src/admin), HTTP Basic with the keys of api_key_file
    // (a Mosquitto password file).
    enum class Protocol : std::uint8_t { mqtt, websockets, http_api };
    Protocol protocol = Protocol::mqtt;
    std::uint32_t websockets_headers_size = 4096;
    std::vector<std::string> websockets_origin;
    bool websockets() const { return protocol == Protocol::websockets; }
    std::string api_key_file;
    bool http_api() const { return protocol == Protocol::http_api; }
};

struct Metrics {
    bool enabled = false;  // true when a [metrics] table is present
    std::uint16_t port = 9234;
    std::string bind = "127.0.0.1";
};

// Persistence (issue 12), Mosquitto's key names. Off by default as in
// Mosquitto; the shipped config and systemd unit turn it on.
struct Persistence {
    bool enabled = false;            // persistence
    std::string location;            // persistence_location; "" = working directory
    std::string file = "mqttoolsd.db";  // persistence_file
    bool sync_full = true;           // persistence_sync: "full" or "normal"
    std::string path() const {
        if (location.empty()) return file;
        return location.back() == '/' ? location + file : location + "/" + file;
    }
};

// A bridge to another broker (Mosquitto's `connection` block; parsed in
// config_bridge.cpp). Every name is Mosquitto's.
struct BridgeTopic {
    enum class Direction : std::uint8_t { out, in, both };
    std::string pattern;  // a topic filter, or "" when the prefixes are the whole topic
    Direction direction = Direction::out;
    std::uint8_t qos = 0;
    std::string local_prefix;
    std::string remote_prefix;
    bool sends() const { return direction != Direction::in; }
    bool receives() const { return direction != Direction::out; }
    std::string local_filter() const { return local_prefix + pattern; }
    std::string remote_filter() const { return remote_prefix + pattern; }
    bool operator==(const BridgeTopic&) const = default;
};

struct BridgeAddress {
    std::string host;
    std::uint16_t port = 1883;
    bool operator==(const BridgeAddress&) const = default;
};

enum class BridgeStart : std::uint8_t { automatic, lazy, once };

struct Bridge {
    std::string name;                      // `connection`
    std::vector<BridgeAddress> addresses;  // tried in turn (failover)
    std::vector<BridgeTopic> topics;
    std::string remote_clientid;           // default "<hostname>.<name>"
    std::optional<std::string> remote_username;
    std::optional<std::string> remote_password;
    bool cleansession = false;
    std::uint16_t keepalive_interval = 60;
    std::uint32_t restart_timeout = 5;      // seconds; with a cap: the back-off base
    std::uint32_t restart_timeout_cap = 0;  // 0: constant restart_timeout
    bool mqtt5 = false;                     // bridge_protocol_version = "mqttv50"
    bool try_private = true;
    bool notifications = true;
    std::string notification_topic;         // default "$SYS/broker/connection/<remote_clientid>/state"
    bool notifications_local_only = false;  // the state only here, not on the remote
    std::string local_clientid;             // default "local.<remote_clientid>"
    std::string cafile;                     // bridge_cafile: TLS when set
    std::string capath;                     // bridge_capath: TLS when set
    std::string certfile;
    std::string keyfile;
    std::string tls_version;                // bridge_tls_version: "" (1.2 or 1.3), "tlsv1.2", "tlsv1.3"
    std::string alpn;                       // bridge_alpn: one protocol name
    bool insecure = false;                  // bridge_insecure: no host name check
    bool round_robin = false;               // false: the first address is the primary
    bool outgoing_retain = true;            // bridge_outgoing_retain: false clears retain out
    std::uint32_t max_packet_size = 0;      // bridge_max_packet_size (what we accept); 0 = the broker's
    std::string bind_address;               // bridge_bind_address: local IP to connect from
    BridgeStart start_type = BridgeStart::automatic;
    std::uint32_t threshold = 10;           // lazy: queued messages that start it
    std::uint32_t idle_timeout = 60;        // lazy: seconds idle before it stops
    bool tls() const { return !cafile.empty() || !capath.empty(); }
    bool operator==(const Bridge&) const = default;
};

// [cluster] (config_cluster.cpp): this broker is one node of a cluster
// whose nodes meet on NATS.
struct Cluster {
    bool enabled = false;                // a [cluster] table is present
    std::vector<std::string> nats_urls;  // nats_url: one or several servers
    std::string node_id;                 // unique per node; "" = hostname:port
    std::string credentials;             // NATS .creds file (JWT + nkey)
    std::string username;                // NATS user/password
    std::string password;
    std::string cafile;                  // TLS to NATS: trusted CAs
    std::string certfile;                // TLS client certificate and key
    std::string keyfile;
    std::string subject_prefix = "mqtt"; // root of every NATS subject we use
    // sessions: "replicated" (issue 25: QoS 1/2 messages and persistent
    // sessions live in JetStream, any node resumes them) or "local"
    // (sessions live and die with their node).
    bool replicated = true;
    std::uint32_t replicas = 1;          // JetStream stream/KV replicas (1..5)
    std::uint32_t hold_timeout = 5000;   // ms a PUBACK waits for JetStream before it is refused
    // ms cut off from NATS after which the node disconnects its clients
    // (0x9C) and refuses new ones (0x88) until NATS is back; 0 = never.
    std::uint32_t disconnect_after = 0;
    // ms without a heartbeat after which a node counts as down and the
    // others take over the sessions it held (their wills, their expiry).
    std::uint32_t net_ticktime = 10000;
    // µs the live QoS 0 messages for NATS may wait to leave together
    // (batch_time, EMQX's name; Kafka's linger.ms); 0 = every reactor turn.
    std::uint32_t batch_time_us = 0;
};

// [auth_http] (config_auth.cpp): an HTTP auth service with
// mosquitto-go-auth's contract (docs/authentication.md).
struct AuthHttp {
    bool enabled = false;  // an [auth_http] table is present
    std::string host = "127.0.0.1";
    std::uint16_t port = 80;
    std::string getuser_uri;    // required
    std::string superuser_uri;  // optional
    std::string aclcheck_uri;   // optional: without it the service decides no ACL
    bool with_tls = false;
    bool verify_peer = true;
    std::string params_mode = "json";      // json | form
    std::string response_mode = "status";  // status | json | text
    std::string method = "POST";           // POST | GET | PUT
    std::uint32_t timeout_ms = 5000;       // timeout (seconds, fractions allowed)
    std::uint32_t cache_seconds = 0;       // 0: every check asks the service
    std::vector<std::pair<std::string, std::string>> headers;  // [auth_http.headers]
    bool operator==(const AuthHttp&) const = default;
};

// [auth_jwt] (config_auth.cpp): JWTs in CONNECT (docs/authentication.md).
struct AuthJwt {
    bool enabled = false;  // an [auth_jwt] table is present
    bool from_username = false;  // from = "username" (default "password")
    std::string secret;          // HS256/384/512
    bool secret_base64 = false;
    std::string public_key_file;  // RS256/384/512, ES256/384: PEM
    std::string jwks_file;        // or a JWKS document
    std::uint32_t leeway = 5;     // seconds of clock skew allowed for exp/nbf
    std::vector<std::pair<std::string, std::string>> verify_claims;  // [auth_jwt.verify_claims]
    std::string acl_claim;        // "" = no ACL from the token
    bool operator==(const AuthJwt&) const = default;
};

enum class LogLevel { trace, debug, info, warning, error };
enum class LogDest { stderr_, journal, file };

struct Config {
    std::string source;  // the file it came from, "" for built-in defaults

    std::vector<Listener> listeners;  // empty: one plain listener on 127.0.0.1:1883
    Metrics metrics;
    Persistence persistence;
    std::vector<Bridge> bridges;  // [[bridge]] tables
    Cluster cluster;

    // Authentication and authorization. allow_anonymous defaults to true only
    // when no listener is configured (Mosquitto 2's local-only mode).
    std::optional<bool> allow_anonymous;
    std::string password_file;
    std::string acl_file;
    // Mosquitto's dynamic-security.json: users, groups and roles managed
    // live through $CONTROL/dynamic-security/v1 (mosquitto_ctrl).
    std::string dynamic_security_file;
    AuthHttp auth_http;
    AuthJwt auth_jwt;

    // Limits. 0 means unlimited where noted.
    std::uint32_t max_connections = 0;        // 0: unlimited (-1 in Mosquitto)
    std::uint32_t max_packet_size = 0;        // 0: protocol maximum; advertised in CONNACK
    std::uint32_t message_size_limit = 0;     // payload bytes; 0: unlimited
    std::uint16_t max_keepalive = 65535;      // Server Keep Alive when a client asks for more
    std::uint16_t max_inflight_messages = 20;  // outbound QoS 1/2 window per client
    std::uint32_t max_queued_messages = 1000;  // per session; 0: unlimited
    std::uint64_t max_queued_bytes = 0;        // per session; 0: unlimited
    std::uint16_t receive_maximum = 65535;     // inbound QoS 1/2 window, advertised
    std::uint16_t topic_alias_maximum = 10;    // inbound aliases per client, advertised
    std::uint32_t max_subscriptions_per_client = 0;  // 0: unlimited
    std::uint32_t max_topic_levels = 0;              // 0: unlimited
    std::uint64_t max_client_output_bytes = 8 * 1024 * 1024;  // per connection output bound
    std::uint32_t stuck_client_timeout = 30;   // seconds over that bound before 0x97; 0: never
    std::uint64_t memory_limit = 0;            // bytes; 0: unlimited
    std::uint32_t connect_timeout = 10;        // seconds from accept to CONNECT

    bool retain_available = true;
    // $SYS/brokers/NODE/clients/ID/connected|disconnected (EMQX's events).
    bool client_events = false;
    std::uint32_t sys_interval = 10;           // seconds; 0 disables $SYS
    std::optional<std::uint32_t> persistent_client_expiration;  // seconds cap on session expiry

    LogLevel log_level = LogLevel::info;
    LogDest log_dest = LogDest::stderr_;
    std::string log_file;  // with log_dest = "file"

    bool effective_allow_anonymous() const {
        return allow_anonymous.value_or(listeners.empty());
    }
};

}  // namespace mqttools::config
