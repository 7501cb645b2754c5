// `mqttools publish TOPIC [MESSAGE]` (the seed's form) or mosquitto_pub's
// `-t TOPIC` with -m / -f / -l / -s / -n: publishes one message, each line
// of stdin, or, with --count, many as fast as the connection takes them
// (the benchmark harness). The reported time runs until the broker has read
// every QoS 0 message (a PINGREQ/PINGRESP round trip after the last one) or
// acknowledged every QoS 1/2 message; only messages the broker did not
// refuse are counted, and any refusal makes the exit status 1. The
// Mosquitto-style forms print nothing on success, as mosquitto_pub, and -l
// reconnects with back-off when the connection is lost (as mosquitto_pub
// -l): stdin is not read meanwhile, so what the writer sends waits in the
// pipe (bounded by it; the writer blocks) and no line is dropped.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
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

// "0.39", "1.5", "0.0042": two decimals, more for sub-second runs so that
// the time never reads "0" next to a rate (three significant digits).
std::string format_seconds(double seconds) {
    int decimals = 2;
    if (seconds > 0 && seconds < 1) decimals = std::min(9, std::max(2, 2 - static_cast<int>(std::floor(std::log10(seconds)))));
    char text[64];
    std::snprintf(text, sizeof text, "%.*f", decimals, seconds);
    std::string s = text;
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
}

// stdin read whole (-s) or a line at a time (-l), interruptible by Ctrl-C
// (the handler has no SA_RESTART, so read() returns EINTR).
class Stdin {
public:
    // The next line without its "\n" ("\r\n" too); false at end of input or
    // when interrupted.
    bool line(std::string& out) {
        for (;;) {
            if (const auto nl = buffer_.find('\n', scanned_); nl != std::string::npos) {
                out.assign(buffer_, 0, nl);
                if (!out.empty() && out.back() == '\r') out.pop_back();
                buffer_.erase(0, nl + 1);
                scanned_ = 0;
                return true;
            }
            scanned_ = buffer_.size();
            if (!fill()) {
                if (buffer_.empty() || interrupted()) return false;
                out = std::move(buffer_);  // a last line without "\n"
                buffer_.clear();
                scanned_ = 0;
                return true;
            }
        }
    }

    std::string all() {
        while (fill()) {
        }
        return std::move(buffer_);
    }

private:
    bool fill() {
        char chunk[65536];
        for (;;) {
            const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
            if (n > 0) {
                buffer_.append(chunk, static_cast<std::size_t>(n));
                return true;
            }
            if (n == 0) return false;
            if (errno == EINTR && !interrupted()) continue;
            if (errno != EINTR) throw std::runtime_error(std::string("cannot read stdin: ") + std::strerror(errno));
            return false;
        }
    }

    std::string buffer_;
    std::size_t scanned_ = 0;
};

std::string read_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
    std::string data;
    char chunk[65536];
    for (;;) {
        const ssize_t n = ::read(fd, chunk, sizeof chunk);
        if (n > 0) {
            data.append(chunk, static_cast<std::size_t>(n));
            if (data.size() > 268435455) {
                ::close(fd);
                throw std::runtime_error("'" + path + "' is larger than an MQTT packet can carry");
            }
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        if (n < 0) throw std::runtime_error("cannot read '" + path + "': " + std::strerror(err));
        return data;
    }
}

}  // namespace

int run_publish_command(int argc, char** argv) {
    CommonOptions common;
    std::int64_t count = 1;
    bool have_count = false;
    std::int64_t size = 10;
    std::int64_t qos = 0;
    std::int64_t tasks = 1;
    bool retain = false;
    std::string response_topic;
    std::string format = "auto";
    std::vector<std::string> positional;
    std::vector<std::string> t_option;
    std::vector<std::string> m_option;
    std::string file;
    bool lines = false;
    bool whole_stdin = false;
    bool null_message = false;
    std::int64_t repeat = 1;
    std::string repeat_delay = "0";

    ArgParser parser("mqttools publish", "Publish given message (or generated ones) to given topic.");
    add_common_options(parser, common);
    parser.custom("--count", "N", [&](int ac, char** av, int i) {
        if (i + 1 >= ac) throw UsageError("argument --count: expected a value");
        count = parse_integer(av[i + 1], 1, INT64_MAX, "--count");
        have_count = true;
        return i + 1;
    }, "Publish N generated messages (or MESSAGE N times) as fast as possible (default: 1).");
    parser.integer("--size", 0, 268435455, size, "Generated message size (default: 10).");
    parser.integer("--qos", 0, 2, qos, "Quality of service (default: 0).");
    parser.integer("--tasks", 1, 256, tasks, "Concurrent connections publishing with --count (default: 1).");
    parser.flag("--retain", retain, "Retain the message.");
    parser.string("--response-topic", response_topic, "Response topic.");
    parser.choice("--message-format", {"auto", "binary", "text"}, format,
                  "How to read MESSAGE: auto (hex when it is hex, as the seed), binary (hex) or text "
                  "(default: auto). -m is always text.");
    parser.strings("--topic", t_option, "Topic to publish to (instead of TOPIC).");
    parser.strings("--message", m_option, "Message to publish, sent as given (instead of MESSAGE).");
    parser.string("--file", file, "Send the contents of this file as the message.");
    parser.flag("--stdin-line", lines, "Send each line of stdin as a message; when the connection is lost, "
                "reconnect with back-off and go on (the other forms do not reconnect).");
    parser.flag("--stdin-file", whole_stdin, "Send all of stdin as one message.");
    parser.flag("--null-message", null_message, "Send an empty message.");
    parser.integer("--repeat", 1, INT64_MAX, repeat, "Publish the message this many times (default: 1).");
    parser.string("--repeat-delay", repeat_delay, "Seconds between repeated messages (default: 0).");
    parser.alias("-t", "--topic");
    parser.alias("-m", "--message");
    parser.alias("-f", "--file");
    parser.alias("-l", "--stdin-line");
    parser.alias("-s", "--stdin-file");
    parser.alias("-n", "--null-message");
    parser.alias("-r", "--retain");
    parser.alias("-q", "--qos");
    parser.positionals("topic [message]", positional, "Topic to publish, then the message "
                       "(default: <counter>\\xa5...).");
    // --help: exit status 1, as mosquitto_pub --help.
    if (!parser.parse(argc, argv, 1)) return 1;
    check_common_options(common);
    // mosquitto_pub's spellings: its silence on success and its exit
    // statuses; the seed's forms (TOPIC [MESSAGE], --count) keep the summary.
    const bool mosquitto_form = !t_option.empty() || !m_option.empty() || !file.empty() || lines ||
                                whole_stdin || null_message;
    if (mosquitto_form) use_connack_exit_status(common);

    std::string topic;
    if (t_option.size() > 1) throw UsageError("argument -t: give one topic to publish to");
    if (!t_option.empty()) {
        topic = t_option.front();
    } else if (!common.url_topic.empty()) {
        topic = common.url_topic;
    } else if (!positional.empty()) {
        topic = positional.front();
        positional.erase(positional.begin());
    } else {
        throw UsageError("a topic is required: -t TOPIC (or TOPIC as the first argument)");
    }
    if (positional.size() > 1) throw UsageError("unrecognized argument '" + positional[1] + "'");
    if (m_option.size() > 1) throw UsageError("argument -m: give one message (-m was repeated)");
    // [MQTT-3.3.2-2]: no wildcards; [MQTT-4.7.3-1]: at least one character.
    if (topic.empty()) throw UsageError("the topic is empty");
    if (check_topic_name(topic) != ReasonCode::success) {
        throw UsageError("invalid topic '" + topic + "' (a topic name: no '+' or '#', valid UTF-8)");
    }
    const int sources = static_cast<int>(!positional.empty()) + static_cast<int>(!m_option.empty()) +
                        static_cast<int>(!file.empty()) + static_cast<int>(lines) + static_cast<int>(whole_stdin) +
                        static_cast<int>(null_message);
    if (sources > 1) throw UsageError("give one message source (MESSAGE, -m, -f, -l, -s or -n)");
    if (lines && (have_count || repeat > 1)) throw UsageError("-l goes without --count and --repeat");
    if (have_count && repeat > 1) throw UsageError("--count and --repeat go alone");
    double delay_s = 0;
    {
        char* end = nullptr;
        delay_s = std::strtod(repeat_delay.c_str(), &end);
        if (repeat_delay.empty() || *end != '\0' || !(delay_s >= 0) || delay_s > 86400) {
            throw UsageError("argument --repeat-delay: invalid number of seconds '" + repeat_delay + "'");
        }
    }

    std::string message;
    bool have_message = true;
    if (!positional.empty()) {
        message = encode_message(format, positional.front());  // the seed's meaning
        const std::string& given = positional.front();
        if (format == "auto" && message != given &&
            given.find_first_not_of("0123456789") == std::string::npos && !quiet()) {
            // "1234" is valid hex: two bytes, not the text a reader expects.
            std::fprintf(stderr,
                         "warning: '%s' is sent as %zu byte(s) of hex; to send the text, use -m %s "
                         "or --message-format text\n",
                         given.c_str(), message.size(), given.c_str());
        }
    } else if (!m_option.empty()) {
        message = m_option.front();  // mosquitto_pub: literally
    } else if (!file.empty()) {
        message = read_file(file);
    } else if (whole_stdin) {
        message = Stdin().all();
    } else if (null_message) {
        message.clear();
    } else {
        have_message = lines;
    }
    if (lines || repeat > 1) tasks = 1;
    if (tasks > count) tasks = count;

    ClientOptions options = make_client_options(common, lines || repeat > 1 ? 60 : 0);
    if (lines) {
        // One attempt per start(): connect_with_backoff paces them.
        options.connect_delays.emplace();
        options.max_connect_attempts = 1;
    }
    PublishProperties properties = common.properties.publish;
    if (!response_topic.empty()) {
        if (check_topic_name(response_topic) != ReasonCode::success) {
            throw UsageError("argument --response-topic: invalid topic name '" + response_topic + "'");
        }
        properties.response_topic = response_topic;
    }

    catch_interrupts();
    const std::string where = endpoint(common);
    std::vector<std::unique_ptr<Client>> clients;
    if (lines) {
        clients.push_back(std::make_unique<Client>(options));
        if (!connect_with_backoff(*clients.back(), common.disable_clean_start, false, where, [] {}, [] {})) return 0;
    } else {
        status_line("Connecting to " + where + ".");
        for (std::int64_t i = 0; i < tasks; ++i) {
            ClientOptions o = options;
            if (tasks > 1) o.client_id = options.client_id + "-" + std::to_string(i);
            clients.push_back(std::make_unique<Client>(o));
            clients.back()->start(common.disable_clean_start);
        }
    }

    std::mutex error_mutex;
    std::exception_ptr error;
    std::vector<std::int64_t> sent(static_cast<std::size_t>(tasks), 0);
    const auto started = std::chrono::steady_clock::now();
    auto work = [&](std::size_t task, std::int64_t first, std::int64_t last) {
        try {
            Client& client = *clients[task];
            PayloadMaker maker(count, static_cast<std::size_t>(size));
            if (lines) {
                Stdin in;
                std::string line;
                bool pending = false;  // `line` still to send (after a reconnection)
                // A session kept (-c) is resumed, so QoS 1/2 lines in flight
                // are sent again; otherwise a fresh one.
                const bool resume = common.disable_clean_start;
                while (!interrupted() && (pending || in.line(line))) {
                    try {
                        client.publish(topic, line, retain, static_cast<QoS>(qos), properties);
                        pending = false;
                        ++sent[task];
                    } catch (const ConnectionError&) {
                        pending = true;
                        status_line("Broker connection lost!");
                        client.stop();
                        if (!connect_with_backoff(client, resume, true, where, [] {}, [] {})) break;
                        status_line("Connected.");
                    }
                }
            } else {
                for (std::int64_t n = first; n < last && !interrupted(); ++n) {
                    const std::string_view payload = have_message ? std::string_view(message) : maker.make(n);
                    for (std::int64_t r = 0; r < repeat && !interrupted(); ++r) {
                        if (r > 0 && delay_s > 0) {
                            const auto until = std::chrono::steady_clock::now() +
                                               std::chrono::duration<double>(delay_s);
                            while (!interrupted() && std::chrono::steady_clock::now() < until) {
                                std::this_thread::sleep_for(std::chrono::milliseconds(
                                    std::min<std::int64_t>(50, static_cast<std::int64_t>(delay_s * 1000) + 1)));
                            }
                            if (interrupted()) break;
                        }
                        client.publish(topic, payload, retain, static_cast<QoS>(qos), properties);
                        ++sent[task];
                    }
                }
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

    std::int64_t total = 0;
    std::uint64_t refused = 0;
    Client::Refusals last_refusal;
    for (std::size_t i = 0; i < clients.size(); ++i) {
        total += sent[i];
        const auto r = clients[i]->refusals();
        refused += r.count;
        if (r.count > 0) last_refusal = r;
    }
    for (auto& c : clients) c->stop();  // DISCONNECT, also after Ctrl-C
    const std::int64_t acknowledged = total - static_cast<std::int64_t>(refused);
    if (!quiet() && (have_count || !mosquitto_form)) {
        print_line("Published " + std::to_string(acknowledged) + " message(s) in " + format_seconds(seconds) +
                   " seconds from " + std::to_string(tasks) + " concurrent task(s).");
        const double rate = seconds > 0 ? static_cast<double>(acknowledged) / seconds : 0.0;
        print_line("Rate: " + std::to_string(static_cast<std::int64_t>(rate + 0.5)) + " msg/s");
    }
    if (refused > 0) {
        if (!quiet()) {
            std::fprintf(stderr, "error: the broker refused %llu of %lld message(s): %s (last on '%s')\n",
                         static_cast<unsigned long long>(refused), static_cast<long long>(total),
                         std::string(reason_code_name(last_refusal.last_reason)).c_str(), last_refusal.last_topic.c_str());
        }
        return 1;
    }
    return 0;
}

}  // namespace mqttools::tools
