// One-line descriptions of MQTT packets for logs, in Mosquitto's words
// (`mosquitto -v`, `mosquitto_sub -d`): "PUBLISH (d0, q1, r0, m3, 'a/b', ...
// (5 bytes))". Never payloads, passwords or authentication data. Unlike the
// rest of the codec these allocate: call them only when the line is logged.
#pragma once

#include <string>

#include "mqttools/codec.hpp"

namespace mqttools {

std::string describe_packet(const Packet& packet);

}  // namespace mqttools
