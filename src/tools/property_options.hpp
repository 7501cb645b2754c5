// mosquitto_pub/sub's `-D COMMAND NAME VALUE` (`-D COMMAND user-property KEY
// VALUE`): MQTT 5 properties by the packet they go in and the property's
// name in the specification, spelt with hyphens (spec 2.2.2.2).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mqttools/client.hpp"

namespace mqttools::tools {

struct PropertyOptions {
    using Pairs = std::vector<std::pair<std::string, std::string>>;
    bool any = false;
    // connect
    std::optional<std::uint32_t> session_expiry_interval;
    std::optional<std::uint16_t> receive_maximum;
    std::optional<std::uint32_t> maximum_packet_size;
    std::optional<std::uint16_t> topic_alias_maximum;
    std::optional<std::uint8_t> request_problem_information;
    std::optional<std::uint8_t> request_response_information;
    Pairs connect_user_properties;
    // publish and will
    PublishProperties publish;
    PublishProperties will;
    std::optional<std::uint32_t> will_delay_interval;
    // subscribe, disconnect
    Pairs subscribe_user_properties;
    std::optional<std::uint32_t> disconnect_session_expiry_interval;
    Pairs disconnect_user_properties;
};

// Reads "-D COMMAND NAME VALUE [VALUE]" at argv[i] (argv[i] is "-D");
// returns the index of the last value used. Throws UsageError naming what
// is wrong (unknown command, a property that packet cannot carry, a bad
// value).
int consume_property_option(PropertyOptions& properties, int argc, char** argv, int i);

// Puts the connect, will and disconnect properties into `options` (the
// publish and subscribe ones are the commands' to use).
void apply_properties(const PropertyOptions& properties, ClientOptions& options);

}  // namespace mqttools::tools
