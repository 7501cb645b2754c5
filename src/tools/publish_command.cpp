// `mqttools publish TOPIC [MESSAGE]`: publishes one message or, with
// --count, many as fast as the connection takes them (the benchmark
// harness). The reported time runs until the broker has read every QoS 0
// message (a PINGREQ/PINGRESP round trip after the last one) or
// acknowledged every QoS 1/2 message.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "tools/commands.hpp"
#include "tools/common.hpp"

namespace mqttools::tools {

namespace {

// The seed's generated payload: the message number, zero-padded to the
// width of count - 1, then 0xA5 bytes up to `size` (cut to `size`).
class PayloadMaker {
public:
    PayloadMaker(std::int64_t count, std::size_t size) : size_(size), buffer_(std::max<std::size_t>(size, 24), '\xa5') {
        char tmp[24];
        width_ = static_cast<std::size_t>(std::to_chars(tmp, tmp + sizeof tmp, std::max<std::int64_t>(count - 1, 0)).ptr - tmp);
    }

    std::string_view make(std::int64_t number) {
        char digits[24];
        const auto end = std::to_chars(digits, digits + sizeof digits, number).ptr;
        const auto n = static_cast<std::size_t>(end - digits);
        const std::size_t pad = width_ > n ? width_ - n : 0;
        std::size_t pos = 0;
        for (std::size_t i = 0; i < pad; ++i) buffer_[pos++] = '0';
        for (std::size_t i = 0; i < n; ++i) buffer_[pos++] = digits[i];
        if (pos < size_) {
            // Restore the filler a longer earlier number may have covered.
            for (std::size_t i = pos; i < std::min(size_, last_len_); ++i) buffer_[i] = '\xa5';
        }
        last_len_ = pos;
        return {buffer_.data(), size_};
    }

private:
    std::size_t size_;
    std::string buffer_;
    std::size_t width_ = 1;
    std::size_t last_len_ = 0;
};

// "0.39", "1.5", "0": at most two decimals, as the seed's humanfriendly.
std::string format_seconds(double seconds) {
    char text[64];
    std::snprintf(text, sizeof text, "%.2f", seconds);
    std::string s = text;
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
}

}  // namespace

int run_publish_command(int argc, char** argv) {
    CommonOptions common;
    std::string topic;
    std::string message;
    bool have_message = false;
    std::int64_t count = 1;
    std::int64_t size = 10;
    std::int64_t qos = 0;
    std::int64_t tasks = 1;
    bool retain = false;
    std::string will_topic;
    std::string will_message;
    bool will_retain = false;
    std::string response_topic;
    std::int64_t session_expiry_interval = 0;
    std::string format = "auto";
    std::vector<std::string> positional;

    ArgParser parser("mqttools publish", "Publish given message (or generated ones) to given topic.");
    add_common_options(parser, common);
    parser.integer("--count", 1, INT64_MAX, count, "Number of times to publish the message (default: 1).");
    parser.integer("--size", 0, 268435455, size, "Generated message size (default: 10).");
    parser.integer("--qos", 0, 2, qos, "Quality of service (default: 0).");
    parser.integer("--tasks", 1, 256, tasks, "Concurrent connections publishing (default: 1).");
    parser.flag("--retain", retain, "Retain the message.");
    parser.string("--will-topic", will_topic, "Will topic.");
    parser.string("--will-message", will_message, "Will message.");
    parser.flag("--will-retain", will_retain, "Retain the will message.");
    parser.string("--response-topic", response_topic, "Response topic.");
    parser.integer("--session-expiry-interval", 0, 0xffffffff, session_expiry_interval,
                   "Session expiry interval in the range 0..0xffffffff (default: 0).");
    parser.choice("--message-format", {"auto", "binary", "text"}, format, "Message format (default: auto).");
    std::vector<std::string> t_option;
    std::vector<std::string> m_option;
    parser.strings("-t", t_option, "Topic to publish (instead of TOPIC, as mosquitto_pub).");
    parser.strings("-m", m_option, "Message to publish (instead of MESSAGE, as mosquitto_pub).");
    parser.alias("-r", "--retain");
    parser.alias("-q", "--qos");
    parser.alias("-x", "--session-expiry-interval");
    parser.positionals("topic [message]", positional, "Topic to publish, then the message "
                       "(default: <counter>\\xa5...).");
    if (!parser.parse(argc, argv, 1)) return 0;
    // TOPIC [MESSAGE], or mosquitto_pub's -t TOPIC -m MESSAGE.
    if (!t_option.empty()) positional.insert(positional.begin(), t_option.back());
    if (!m_option.empty()) positional.insert(positional.begin() + (positional.empty() ? 0 : 1), m_option.back());
    if (positional.empty()) throw UsageError("the following argument is required: topic");
    if (positional.size() > 2) throw UsageError("unrecognized argument '" + positional[2] + "'");
    topic = positional[0];
    if (positional.size() == 2) {
        message = encode_message(format, positional[1]);
        have_message = true;
    }
    if (tasks > count) tasks = count;

    ClientOptions options = make_client_options(common);
    options.will_topic = will_topic;
    options.will_message = encode_message(format, will_message);
    options.will_retain = will_retain;
    options.session_expiry_interval = static_cast<std::uint32_t>(session_expiry_interval);
    options.keep_alive_s = 0;
    PublishProperties properties;
    if (!response_topic.empty()) properties.response_topic = response_topic;

    print_line("Connecting to " + endpoint(common) + ".");
    std::vector<std::unique_ptr<Client>> clients;
    for (std::int64_t i = 0; i < tasks; ++i) {
        ClientOptions o = options;
        if (!common.client_id.empty() && tasks > 1) o.client_id = common.client_id + "-" + std::to_string(i);
        clients.push_back(std::make_unique<Client>(o));
        clients.back()->start();
    }
    print_line("");

    std::mutex error_mutex;
    std::exception_ptr error;
    const auto started = std::chrono::steady_clock::now();
    auto work = [&](std::size_t task, std::int64_t first, std::int64_t last) {
        try {
            Client& client = *clients[task];
            PayloadMaker maker(count, static_cast<std::size_t>(size));
            for (std::int64_t n = first; n < last; ++n) {
                const std::string_view payload = have_message ? std::string_view(message) : maker.make(n);
                client.publish(topic, payload, retain, static_cast<QoS>(qos), properties);
            }
            // Generous: a slow broker under a big --count must not be
            // reported as an error; a dead one ends the wait at once.
            client.flush(std::chrono::seconds(120));
        } catch (...) {
            std::lock_guard lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    };
    std::vector<std::thread> threads;
    for (std::int64_t i = 0; i < tasks; ++i) {
        const std::int64_t first = count * i / tasks;
        const std::int64_t last = count * (i + 1) / tasks;
        if (tasks == 1) {
            work(0, first, last);
        } else {
            threads.emplace_back(work, static_cast<std::size_t>(i), first, last);
        }
    }
    for (auto& t : threads) t.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    if (error) std::rethrow_exception(error);

    print_line("Published " + std::to_string(count) + " message(s) in " + format_seconds(seconds) + " seconds from " +
               std::to_string(tasks) + " concurrent task(s).");
    const double rate = seconds > 0 ? static_cast<double>(count) / seconds : 0.0;
    print_line("Rate: " + std::to_string(static_cast<std::int64_t>(rate + 0.5)) + " msg/s");
    for (auto& c : clients) c->stop();
    return 0;
}

}  // namespace mqttools::tools
