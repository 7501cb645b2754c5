#include "tools/property_options.hpp"

#include <string_view>

#include "mqttools/codec.hpp"
#include "tools/args.hpp"

namespace mqttools::tools {

namespace {

// The properties each packet may carry (spec 3.x.2.2) that mqttools can
// send; the others of mosquitto's list give a clear error.
constexpr std::string_view connect_names[] = {"session-expiry-interval", "receive-maximum", "maximum-packet-size",
                                              "topic-alias-maximum", "request-problem-information",
                                              "request-response-information", "user-property"};
constexpr std::string_view publish_names[] = {"payload-format-indicator", "message-expiry-interval", "content-type",
                                              "response-topic", "correlation-data", "user-property"};
constexpr std::string_view will_names[] = {"payload-format-indicator", "message-expiry-interval", "content-type",
                                           "response-topic", "correlation-data", "will-delay-interval",
                                           "user-property"};
constexpr std::string_view unsupported[] = {"authentication-method", "authentication-data", "topic-alias",
                                            "subscription-identifier", "reason-string"};

template <std::size_t N>
bool among(const std::string_view (&names)[N], std::string_view name) {
    for (auto n : names) {
        if (n == name) return true;
    }
    return false;
}

std::uint32_t number(const std::string& name, const std::string& value, std::int64_t max) {
    return static_cast<std::uint32_t>(parse_integer(value, 0, max, "-D " + name));
}

void set_publish_like(PublishProperties& p, const std::string& name, const std::string& value) {
    if (name == "payload-format-indicator") {
        p.payload_format_indicator = static_cast<std::uint8_t>(number(name, value, 1));
    } else if (name == "message-expiry-interval") {
        p.message_expiry_interval = number(name, value, 0xffffffff);
    } else if (name == "content-type") {
        p.content_type = value;
    } else if (name == "response-topic") {
        // [MQTT-3.3.2-13]: a Topic Name, so no wildcards.
        if (check_topic_name(value) != ReasonCode::success) {
            throw UsageError("argument -D " + name + ": invalid topic name '" + value + "'");
        }
        p.response_topic = value;
    } else if (name == "correlation-data") {
        p.correlation_data = value;
    }
}

}  // namespace

int consume_property_option(PropertyOptions& o, int argc, char** argv, int i) {
    if (i + 3 >= argc) throw UsageError("argument -D: expected COMMAND NAME VALUE");
    const std::string command = argv[i + 1];
    const std::string name = argv[i + 2];
    std::string value = argv[i + 3];
    int last = i + 3;
    std::string value2;
    if (name == "user-property") {
        if (i + 4 >= argc) throw UsageError("argument -D " + command + " user-property: expected KEY VALUE");
        value2 = argv[i + 4];
        last = i + 4;
    }
    static constexpr std::string_view commands[] = {"connect", "publish", "subscribe", "unsubscribe",
                                                    "disconnect", "will", "auth"};
    if (!among(commands, command)) {
        throw UsageError("argument -D: invalid command '" + command +
                         "' (choose from connect, publish, subscribe, unsubscribe, disconnect, will)");
    }
    if (among(unsupported, name) || command == "auth" || command == "unsubscribe") {
        throw UsageError("argument -D: property '" + name + "' for '" + command + "' is not supported by mqttools");
    }
    const bool ok = command == "connect"     ? among(connect_names, name)
                    : command == "publish"   ? among(publish_names, name)
                    : command == "will"      ? among(will_names, name)
                    : command == "subscribe" ? name == "user-property"
                                             : (name == "session-expiry-interval" || name == "user-property");
    if (!ok) throw UsageError("argument -D: invalid property '" + name + "' for command '" + command + "'");
    // Strings must be MQTT UTF-8 (spec 1.5.4); Correlation Data is binary.
    if ((name != "correlation-data" && !is_valid_utf8(value)) || !is_valid_utf8(value2)) {
        throw UsageError("argument -D " + name + ": not valid UTF-8");
    }
    o.any = true;
    const auto pair = std::make_pair(value, value2);
    if (command == "connect") {
        if (name == "session-expiry-interval") o.session_expiry_interval = number(name, value, 0xffffffff);
        if (name == "receive-maximum") {
            o.receive_maximum = static_cast<std::uint16_t>(number(name, value, 65535));
            // 0 is a Protocol Error (spec 3.1.2.11.3), as is a Maximum
            // Packet Size of 0 (3.1.2.11.4).
            if (*o.receive_maximum == 0) throw UsageError("argument -D receive-maximum: 0 is not allowed");
        }
        if (name == "maximum-packet-size") {
            o.maximum_packet_size = number(name, value, 0xffffffff);
            if (*o.maximum_packet_size == 0) throw UsageError("argument -D maximum-packet-size: 0 is not allowed");
        }
        if (name == "topic-alias-maximum") o.topic_alias_maximum = static_cast<std::uint16_t>(number(name, value, 65535));
        if (name == "request-problem-information") {
            o.request_problem_information = static_cast<std::uint8_t>(number(name, value, 1));
        }
        if (name == "request-response-information") {
            o.request_response_information = static_cast<std::uint8_t>(number(name, value, 1));
        }
        if (name == "user-property") o.connect_user_properties.push_back(pair);
    } else if (command == "publish") {
        if (name == "user-property") {
            o.publish.user_properties.push_back(pair);
        } else {
            set_publish_like(o.publish, name, value);
        }
    } else if (command == "will") {
        if (name == "user-property") {
            o.will.user_properties.push_back(pair);
        } else if (name == "will-delay-interval") {
            o.will_delay_interval = number(name, value, 0xffffffff);
        } else {
            set_publish_like(o.will, name, value);
        }
    } else if (command == "subscribe") {
        o.subscribe_user_properties.push_back(pair);
    } else {  // disconnect
        if (name == "user-property") {
            o.disconnect_user_properties.push_back(pair);
        } else {
            o.disconnect_session_expiry_interval = number(name, value, 0xffffffff);
        }
    }
    return last;
}

void apply_properties(const PropertyOptions& p, ClientOptions& o) {
    if (p.session_expiry_interval) o.session_expiry_interval = *p.session_expiry_interval;
    if (p.receive_maximum) o.receive_maximum = *p.receive_maximum;
    if (p.maximum_packet_size) o.maximum_packet_size = *p.maximum_packet_size;
    if (p.topic_alias_maximum) o.topic_alias_maximum = *p.topic_alias_maximum;
    o.request_problem_information = p.request_problem_information;
    o.request_response_information = p.request_response_information;
    o.connect_user_properties = p.connect_user_properties;
    o.will_properties = p.will;
    o.will_delay_interval = p.will_delay_interval;
    o.disconnect_session_expiry_interval = p.disconnect_session_expiry_interval;
    o.disconnect_user_properties = p.disconnect_user_properties;
}

}  // namespace mqttools::tools
