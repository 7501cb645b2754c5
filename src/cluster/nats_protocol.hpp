// NATS' client protocol (issue 26), as a codec: bytes in, results out; it
// never touches a socket (like src/codec for MQTT). The live cross-node path
// speaks it on the reactor's own socket (nats_wire.cpp) instead of going
// through libnats' threads.
//
// Server to client: INFO {json}, MSG, HMSG, PING, PONG, +OK, -ERR 'text'.
// Client to server: CONNECT {json}, PUB, HPUB, SUB, UNSUB, PING, PONG.
// Every line ends with CRLF; MSG/HMSG carry a payload of the announced size
// followed by CRLF. Reference: docs.nats.io "Client Protocol".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mqttools::cluster::nats {

// nats-server's defaults: a longer control line closes the connection
// (max_control_line), a larger payload is refused (max_payload).
constexpr std::size_t default_max_control_line = 4096;
constexpr std::size_t default_max_payload = 1 << 20;

enum class ServerOp : std::uint8_t { info, msg, hmsg, ping, pong, ok, err };

// One message from the server; views into the buffer passed to parse().
struct ServerMessage {
    ServerOp op = ServerOp::ok;
    std::string_view subject;
    std::string_view reply;    // empty: none
    std::uint64_t sid = 0;
    std::string_view headers;  // HMSG: "NATS/1.0[ status]\r\n...\r\n\r\n"
    std::string_view payload;  // MSG/HMSG payload (after the headers)
    std::string_view text;     // INFO: the JSON object; -ERR: the text without quotes
};

enum class ParseStatus : std::uint8_t { ok, incomplete, malformed };

struct ParseResult {
    ParseStatus status = ParseStatus::incomplete;
    std::size_t consumed = 0;     // bytes of `in` the message took (ok only)
    const char* error = nullptr;  // malformed: why
    ServerMessage message;
};

// Parses the first message of `in`. incomplete: more bytes are needed (a
// control line or payload not yet complete); malformed: the stream cannot
// go on (unknown verb, bad sizes, a control line over `max_control_line`,
// a payload over `max_payload`); the connection must be dropped.
ParseResult parse_server(std::string_view in, std::size_t max_control_line = default_max_control_line,
                         std::size_t max_payload = 64u << 20);

// HMSG headers: the status code of "NATS/1.0 503" (0 when none or not
// parsable), and the value of one header (case-insensitive name; empty
// when absent).
int header_status(std::string_view headers);
std::string_view header_value(std::string_view headers, std::string_view name);

// The INFO fields a client needs. Unknown fields are ignored.
struct ServerInfo {
    std::string server_id;
    std::int64_t max_payload = default_max_payload;
    bool headers = false;
    bool tls_required = false;
    bool tls_available = false;  // TLS offered beside plain (allow_non_tls)
    bool auth_required = false;
    int proto = 0;
    std::string nonce;
};
// False when `json` is not an object or a known field has the wrong type.
bool parse_info(std::string_view json, ServerInfo& info);

// Client to server. Each encoder appends to `out` and returns false (and
// appends nothing) when a subject, queue or reply is empty where required
// or holds whitespace or control bytes, which would break the line.
struct ConnectOptions {
    std::string_view name;
    std::string_view user;
    std::string_view pass;
    std::string_view auth_token;
    std::string_view version;
    bool echo = true;
    bool headers = true;
    bool no_responders = true;
    bool tls = false;  // the connection is TLS (CONNECT's tls_required)
};
void encode_connect(std::string& out, const ConnectOptions& options);
bool encode_pub(std::string& out, std::string_view subject, std::string_view reply, std::string_view payload);
bool encode_hpub(std::string& out, std::string_view subject, std::string_view reply, std::string_view headers,
                 std::string_view payload);
// The PUB line alone (the caller appends `size` payload bytes and CRLF):
// for payloads assembled in place.
bool encode_pub_line(std::string& out, std::string_view subject, std::string_view reply, std::size_t size);
// PUB for a subject and reply that are valid by construction (subject_map's
// escaping, our own reply subjects): not checked again, per message.
void encode_pub_trusted(std::string& out, std::string_view subject, std::string_view reply, std::string_view payload);
bool encode_sub(std::string& out, std::string_view subject, std::string_view queue, std::uint64_t sid);
void encode_unsub(std::string& out, std::uint64_t sid, std::uint64_t max_msgs = 0);
inline void encode_ping(std::string& out) { out.append("PING\r\n"); }
inline void encode_pong(std::string& out) { out.append("PONG\r\n"); }

// The decimal digits of `v` appended to `out` (sizes, sids, reply subjects).
void append_decimal(std::string& out, std::uint64_t v);

// A token of a subject or queue name as NATS accepts it on a line: not
// empty, no space, tab, CR, LF or other control byte.
bool valid_token(std::string_view s);

}  // namespace mqttools::cluster::nats
