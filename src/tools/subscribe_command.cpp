// `mqttools subscribe TOPIC`: prints every received message as the seed's
// block, values aligned at column 16; reconnects when the broker goes away.
#include <cstdio>

#include "tools/commands.hpp"
#include "tools/common.hpp"

namespace mqttools::tools {

namespace {

void print_message(const Message& m, const std::string& format) {
    std::string block;
    block += "Topic:         " + m.topic + "\n";
    block += "Message:       " + format_message(format, m.payload) + "\n";
    block += std::string("Retain:        ") + (m.retain ? "True" : "False") + "\n";
    block += "ResponseTopic: " + (m.response_topic ? *m.response_topic : std::string("None")) + "\n";
    std::fwrite(block.data(), 1, block.size(), stdout);
}

}  // namespace

int run_subscribe_command(int argc, char** argv) {
    CommonOptions common;
    std::string topic;
    std::int64_t keep_alive = 0;
    std::int64_t session_expiry_interval = 0;
    std::int64_t retain_handling = 0;
    std::int64_t qos = 0;
    std::int64_t count = 0;
    std::string format = "auto";
    ArgParser parser("mqttools subscribe", "Subscribe to given topic and print received messages.");
    add_common_options(parser, common);
    parser.integer("--keep-alive", 0, 65535, keep_alive,
                   "Keep alive time in seconds (default: 0). Give as 0 to disable keep alive.");
    parser.integer("--session-expiry-interval", 0, 0xffffffff, session_expiry_interval,
                   "Session expiry interval in the range 0..0xffffffff (default: 0).");
    parser.integer("--retain-handling", 0, 2, retain_handling, "Retain handling for the subscription (default: 0).");
    parser.integer("--qos", 0, 2, qos, "Maximum QoS of the subscription (default: 0).");
    parser.integer("--count", 0, INT64_MAX, count, "Exit after this many messages (default: 0, never).");
    parser.choice("--message-format", {"auto", "binary", "text"}, format, "Message format (default: auto).");
    bool no_clean_start = false;
    parser.flag("--no-clean-start", no_clean_start,
                "Resume the session the broker kept for this client id (Clean Start 0, as mosquitto_sub -c); "
                "with a persistent broker it survives restarts. Needs --id and --session-expiry-interval > 0.");
    std::vector<std::string> topics;
    parser.strings("-t", topics, "Another topic to subscribe to (repeatable, as mosquitto_sub).");
    parser.alias("-q", "--qos");
    parser.alias("-k", "--keep-alive");
    parser.alias("-x", "--session-expiry-interval");
    parser.alias("-C", "--count");
    parser.alias("-c", "--no-clean-start");
    parser.positional("topic", topic, false, "Topic to subscribe to.");
    if (!parser.parse(argc, argv, 1)) return 0;
    if (!topic.empty()) topics.insert(topics.begin(), topic);
    if (topics.empty()) throw UsageError("the following argument is required: topic");

    ClientOptions options = make_client_options(common);
    options.keep_alive_s = static_cast<std::uint16_t>(keep_alive);
    options.session_expiry_interval = static_cast<std::uint32_t>(session_expiry_interval);
    options.topic_alias_maximum = 10;
    for (const auto& t : topics) {
        options.subscriptions.push_back({t, static_cast<std::uint8_t>(retain_handling), static_cast<QoS>(qos)});
    }
    Client client(options);

    std::int64_t received = 0;
    bool first = true;
    for (;;) {
        print_line("Connecting to " + endpoint(common) + ".");
        // Later connections resume the session when it outlives them, so
        // QoS 1/2 messages sent meanwhile are not lost.
        const bool resume = (!first || no_clean_start) && session_expiry_interval > 0;
        try {
            client.start(resume);
        } catch (const SessionResumeError&) {
            for (const auto& s : options.subscriptions) client.subscribe(s.topic, s.retain_handling, s.qos);
        }
        first = false;
        print_line("Connected.");
        for (;;) {
            // Flush once the queue is drained: a line-by-line reader sees
            // every block at once, and a flood is not a syscall per message.
            std::optional<Message> next = client.messages().try_pop();
            if (!next) {
                std::fflush(stdout);
                next = client.messages().pop();
            }
            Message m = std::move(*next);
            if (m.connection_lost) {
                print_line("Broker connection lost!");
                break;
            }
            print_message(m, format);
            if (count > 0 && ++received >= count) {
                std::fflush(stdout);
                client.stop();
                return 0;
            }
        }
        client.stop();
    }
}

}  // namespace mqttools::tools
