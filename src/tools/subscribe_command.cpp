// `mqttools subscribe TOPIC` (the seed's form) or `mqttools subscribe -t
// TOPIC...` (mosquitto_sub's): prints every received message, as the seed's
// block, or as mosquitto_sub does (the payload, -v "TOPIC PAYLOAD", -F
// FORMAT). Status lines go to stderr. When the broker goes away it
// reconnects with back-off and subscribes again (or resumes the session);
// Ctrl-C sends DISCONNECT and exits 0.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iterator>
#include <thread>

#include "tools/commands.hpp"
#include "tools/common.hpp"
#include "tools/message_output.hpp"

namespace mqttools::tools {

namespace {

using Clock = std::chrono::steady_clock;

// mosquitto_sub's exit status for -W.
constexpr int timed_out_status = 27;

struct SubscribeOptions {
    CommonOptions common;
    std::vector<std::string> topics;
    std::vector<std::string> filter_out;   // -T
    std::vector<std::string> unsubscribe;  // -U
    std::int64_t qos = 0;
    std::int64_t count = 0;
    std::string retain_handling = "0";
    bool no_local = false;
    bool retain_as_published = false;
    bool no_stale = false;         // -R
    bool retained_only = false;
    bool remove_retained = false;
    bool exit_after_suback = false;  // -E
    std::int64_t timeout_s = 0;      // -W
    bool verbose = false;            // -v
    std::string output_format;       // -F
    bool no_eol = false;             // -N
    std::string message_format = "auto";
    bool seed_output = true;  // the block, unless the topics came from -t
};

bool filtered_out(const SubscribeOptions& o, const std::string& topic) {
    for (const auto& f : o.filter_out) {
        if (topic_matches(f, topic)) return true;
    }
    return false;
}

void print_message(const SubscribeOptions& o, const Message& m) {
    std::string out;
    if (!o.output_format.empty()) {
        out = format_mosquitto(o.output_format, m);
    } else if (o.verbose) {
        // mosquitto_sub -v prints "(null)" for an empty payload.
        out = m.topic + " " + (m.payload.empty() ? std::string("(null)") : m.payload);
    } else if (o.seed_output) {
        out = message_block(m, o.message_format);
        std::fwrite(out.data(), 1, out.size(), stdout);
        return;
    } else {
        out = m.payload;
    }
    if (!o.no_eol) out += '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
}

// Subscribes to what the options ask (after a connect that made a new
// session) and unsubscribes the -U topics.
void make_subscriptions(Client& client, const ClientOptions& options, const SubscribeOptions& o) {
    for (const auto& s : options.subscriptions) client.subscribe(s);
    for (const auto& t : o.unsubscribe) client.unsubscribe(t);
}

// Waits, noticing Ctrl-C; false when interrupted.
// Connects (the client makes one attempt per start()): see
// connect_with_backoff; a session the broker no longer has gets the
// subscriptions again, and -U filters are unsubscribed.
bool connect(Client& client, const ClientOptions& options, const SubscribeOptions& o, bool resume,
             bool reconnecting, const std::string& where) {
    return connect_with_backoff(client, resume, reconnecting, where,
                                [&] { make_subscriptions(client, options, o); },
                                [&] { for (const auto& t : o.unsubscribe) client.unsubscribe(t); });
}

}  // namespace

int run_subscribe_command(int argc, char** argv) {
    SubscribeOptions o;
    std::string topic;
    ArgParser parser("mqttools subscribe", "Subscribe to given topic and print received messages.");
    add_common_options(parser, o.common);
    parser.strings("--topic", o.topics, "Topic filter to subscribe to (repeatable).");
    parser.strings("--filter-out", o.filter_out, "Do not print messages whose topic this filter matches "
                                                 "(repeatable).");
    parser.strings("--unsubscribe", o.unsubscribe, "Unsubscribe from this filter after connecting (repeatable).");
    parser.integer("--qos", 0, 2, o.qos, "Maximum QoS of the subscriptions (default: 0).");
    parser.integer("--count", 0, INT64_MAX, o.count, "Exit after this many messages (default: 0, never).");
    parser.choice("--retain-handling", {"0", "1", "2", "always", "new", "never"}, o.retain_handling,
                  "Retained messages at subscribe time: 0/always, 1/new (only for a new subscription), "
                  "2/never (default: 0).");
    parser.flag("--no-local", o.no_local, "Do not receive the messages this client publishes (MQTT 5).");
    parser.flag("--retain-as-published", o.retain_as_published, "Keep the retain flag of live messages (MQTT 5).");
    parser.flag("--no-stale", o.no_stale, "Do not print retained messages (stale ones).");
    parser.flag("--retained-only", o.retained_only, "Print only retained messages; exit at the first live one.");
    parser.flag("--remove-retained", o.remove_retained,
                "Clear each retained message received (publish an empty retained message to its topic).");
    parser.flag("--exit-after-subscribe", o.exit_after_suback, "Exit once the subscriptions are acknowledged.");
    parser.integer("--timeout", 1, 3600 * 24 * 365, o.timeout_s,
                   "Exit (status 27) after this many seconds from connecting.");
    parser.flag("--verbose", o.verbose, "Print \"TOPIC PAYLOAD\" lines, as mosquitto_sub -v.");
    parser.string("--format", o.output_format, "Print each message with this mosquitto_sub format string "
                                               "(%t topic, %p payload, %x hex...; see mqttools(1)).");
    parser.flag("--no-eol", o.no_eol, "No newline after each message (-v, -F and plain payloads).");
    parser.choice("--message-format", {"auto", "binary", "text"}, o.message_format,
                  "Message format of the seed's block (default: auto).");
    // mosquitto_sub spellings.
    parser.alias("-t", "--topic");
    parser.alias("-T", "--filter-out");
    parser.alias("-U", "--unsubscribe");
    parser.alias("-q", "--qos");
    parser.alias("-C", "--count");
    parser.alias("--rh", "--retain-handling");
    parser.alias("--nl", "--no-local");
    parser.alias("--rap", "--retain-as-published");
    parser.alias("-R", "--no-stale");
    parser.alias("-E", "--exit-after-subscribe");
    parser.alias("-W", "--timeout");
    parser.alias("-v", "--verbose");
    parser.alias("-F", "--format");
    parser.alias("-N", "--no-eol");
    parser.positional("topic", topic, false, "Topic to subscribe to (the seed's form: messages are printed as "
                                             "blocks).");
    // --help: exit status 1, as mosquitto_sub --help.
    if (!parser.parse(argc, argv, 1)) return 1;
    check_common_options(o.common);
    // The seed's positional TOPIC prints blocks; mosquitto_sub's -t prints
    // payloads as mosquitto_sub does, and exits as it does when refused.
    o.seed_output = !topic.empty();
    if (!o.seed_output) use_connack_exit_status(o.common);
    if (!topic.empty()) o.topics.insert(o.topics.begin(), topic);
    if (!o.common.url_topic.empty()) o.topics.insert(o.topics.begin(), o.common.url_topic);
    if (o.topics.empty() && o.unsubscribe.empty()) throw UsageError("a topic is required: -t TOPIC (or TOPIC as the argument)");
    for (const auto& t : o.topics) {
        if (check_topic_filter(t) != ReasonCode::success) throw UsageError("invalid topic filter '" + t + "'");
    }
    for (const auto& t : o.filter_out) {
        if (check_topic_filter(t) != ReasonCode::success) throw UsageError("argument -T: invalid topic filter '" + t + "'");
    }
    for (const auto& t : o.unsubscribe) {
        if (check_topic_filter(t) != ReasonCode::success) throw UsageError("argument -U: invalid topic filter '" + t + "'");
    }
    if (!o.output_format.empty()) check_format(o.output_format);
    if (o.no_stale && o.retained_only) throw UsageError("-R and --retained-only go alone");
    const bool v5 = o.common.protocol == "5" || o.common.protocol == "mqttv5";
    if (!v5 && (o.no_local || o.retain_as_published || o.retain_handling != "0")) {
        throw UsageError("--nl, --rap and --rh need MQTT 5");
    }
    const std::uint8_t rh = o.retain_handling == "always" ? 0
                            : o.retain_handling == "new"  ? 1
                            : o.retain_handling == "never" ? 2
                                                           : static_cast<std::uint8_t>(o.retain_handling[0] - '0');

    ClientOptions options = make_client_options(o.common, 0);
    // One attempt per start(): connect() paces the attempts, and notices
    // Ctrl-C between them.
    options.connect_delays.emplace();
    options.max_connect_attempts = 1;
    for (const auto& t : o.topics) {
        SubscriptionRequest s;
        s.topic = t;
        s.qos = static_cast<QoS>(o.qos);
        s.retain_handling = rh;
        s.no_local = o.no_local;
        s.retain_as_published = o.retain_as_published;
        s.user_properties = o.common.properties.subscribe_user_properties;
        options.subscriptions.push_back(std::move(s));
    }
    Client client(options);
    catch_interrupts();
    const std::string where = endpoint(o.common);
    // A kept session (-c, or a Session Expiry Interval) is resumed after a
    // lost connection, so QoS 1/2 messages sent meanwhile are not lost.
    const bool keeps_session = o.common.disable_clean_start || options.session_expiry_interval > 0;
    if (!connect(client, options, o, o.common.disable_clean_start, false, where)) return 0;
    status_line("Connected.");
    if (o.exit_after_suback) {
        client.stop();
        return 0;
    }
    const auto deadline = o.timeout_s > 0 ? Clock::now() + std::chrono::seconds(o.timeout_s) : Clock::time_point::max();
    std::int64_t received = 0;
    for (;;) {
        std::optional<Message> next = client.messages().try_pop();
        if (!next) {
            // Flush once the queue is drained: a line-by-line reader sees
            // every message at once, and a flood is not a syscall each.
            std::fflush(stdout);
            // Short waits: Ctrl-C and -W are noticed within 100 ms.
            next = client.messages().pop(std::chrono::milliseconds(100));
        }
        if (interrupted()) {
            std::fflush(stdout);
            client.stop();  // DISCONNECT, Normal disconnection
            return 0;
        }
        if (Clock::now() >= deadline) {
            std::fflush(stdout);
            client.stop();
            if (!quiet()) std::fputs("Timed out\n", stderr);
            return timed_out_status;
        }
        if (!next) continue;
        Message m = std::move(*next);
        if (m.connection_lost) {
            std::fflush(stdout);
            status_line("Broker connection lost!");
            client.stop();
            if (!connect(client, options, o, keeps_session, true, where)) return 0;  // Ctrl-C
            status_line("Connected.");
            continue;
        }
        if (o.remove_retained && m.retain && !filtered_out(o, m.topic)) {
            // An empty retained message clears it [MQTT-3.3.1-6].
            client.publish(m.topic, {}, true, QoS::at_most_once);
        }
        if (o.retained_only && !m.retain) {
            std::fflush(stdout);
            client.stop();
            return 0;
        }
        if (o.no_stale && m.retain) continue;
        if (filtered_out(o, m.topic)) continue;
        print_message(o, m);
        if (o.count > 0 && ++received >= o.count) {
            std::fflush(stdout);
            client.stop();
            return 0;
        }
    }
}

}  // namespace mqttools::tools
