// How `mqttools subscribe` prints a message: the seed's block, or, as
// mosquitto_sub, the payload alone, "TOPIC PAYLOAD" (-v) or a -F format
// string.
#pragma once

#include <string>
#include <string_view>

#include "mqttools/client.hpp"

namespace mqttools::tools {

// The seed's block, values at column 16:
//   Topic:         a/b
//   Message:       first line
//                  second line
//   Retain:        False
//   ResponseTopic: None
// Continuation lines of a multi-line message are indented, and control
// characters in the topic are escaped, so a payload can never forge a line.
std::string message_block(const Message& m, std::string_view format);

// mosquitto_sub's -F: %t topic, %p payload, %x/%X payload in hex, %l length,
// %q QoS, %r retain, %m packet id, %R response topic, %C content type, %D
// correlation data, %E message expiry interval, %F payload format
// indicator, %P user properties (name:value, space separated), %I ISO 8601
// time, %U Unix time with nanoseconds, %j/%J JSON, %% a '%'; optional flags
// '-' and '0', a width and a precision as printf ("%-10t", "%08x",
// "%.5t"); @ then a strftime conversion ("@H:@M:@S", @@ an '@'); \n \t \r
// \a \e \v \0 \\ escapes. Throws UsageError for an unknown conversion
// (check_format() at startup).
std::string format_mosquitto(std::string_view format, const Message& m);
void check_format(std::string_view format);

}  // namespace mqttools::tools
