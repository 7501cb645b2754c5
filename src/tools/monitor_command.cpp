// `mqttools monitor TOPIC...`: a full-screen ncurses view of the latest
// message per topic (the seed's layout): a title bar, the topics sorted, each
// with its timestamp and its message wrapped under it, and a menu bar.
// Keys: q quit, p play/pause (the title bar says PAUSED and counts what
// arrives meanwhile), f cycle the format (auto, binary, text), arrows,
// PgUp/PgDn, Home/End scroll when the rows do not fit.
// When the broker connection is lost the title bar says so and the monitor
// reconnects in the background (delays 1, 2, 4, 8 s), subscribes again and
// keeps showing what it had.
#include <curses.h>
#include <langinfo.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <clocale>
#include <cstdint>
#include <csignal>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tools/commands.hpp"
#include "tools/common.hpp"
#include "tools/reconnector.hpp"

namespace mqttools::tools {

namespace {

struct Entry {
    std::string timestamp;  // HH:MM:SS
    std::string payload;
};

// Splits UTF-8 text into rows of at most `width` characters (code points).
std::vector<std::string> wrap(const std::string& text, std::size_t width) {
    std::vector<std::string> rows;
    std::string row;
    std::size_t chars = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto b = static_cast<unsigned char>(text[i]);
        const bool starts_char = (b & 0xC0) != 0x80;
        if (starts_char && chars == width) {
            rows.push_back(std::move(row));
            row.clear();
            chars = 0;
        }
        row += text[i];
        if (starts_char) ++chars;
    }
    if (!row.empty()) rows.push_back(std::move(row));
    return rows;
}

std::size_t columns(const std::string& text) {
    std::size_t n = 0;
    for (char ch : text) n += (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
    return n;
}

// The first `width` characters of UTF-8 text.
std::string truncate(const std::string& text, std::size_t width) {
    const auto rows = wrap(text, width);
    return rows.empty() ? std::string() : rows.front();
}

std::string now_hms() {
    char stamp[16];
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    std::strftime(stamp, sizeof stamp, "%H:%M:%S", &local);
    return stamp;
}

using Entries = std::map<std::string, Entry>;  // sorted by topic

class Monitor {
public:
    // `client` is started; `retry` makes the clients that replace it after
    // a lost connection.
    Monitor(std::unique_ptr<Client> client, ClientOptions retry, bool resume_session)
        : client_(std::move(client)), retry_(std::move(retry)), resume_session_(resume_session) {}

    // Returns when the user quits.
    void run() {
        for (;;) {
            if (interrupted()) return;
            bool modified = modified_;
            modified_ = false;
            if (follow_connection()) modified = true;
            int rows;
            int cols;
            getmaxyx(stdscr, rows, cols);
            if (rows != rows_ || cols != cols_) {
                rows_ = rows;
                cols_ = cols;
                modified = true;
            }
            if (modified) redraw();
            const int key = getch();  // waits up to the halfdelay timeout
            if (key == 'q') return;
            if (key == 'p') {
                playing_ = !playing_;
                // Paused, the screen keeps what it shows while messages are
                // still taken (and a lost connection still noticed).
                if (playing_) {
                    frozen_.clear();
                } else {
                    frozen_ = entries_;
                    missed_ = 0;
                }
                modified_ = true;
            } else if (key == 'f') {
                format_ = format_ == "auto" ? "binary" : format_ == "binary" ? "text" : "auto";
                modified_ = true;
            } else if (key == KEY_RESIZE) {
                modified_ = true;
            } else if (scroll_by_key(key)) {
                modified_ = true;
            }
        }
    }

    void stop() {
        reconnector_.reset();
        if (client_) client_->stop();
    }

private:
    // Takes the received messages, notices a lost connection and picks up
    // the reconnected client. True when the screen must change.
    bool follow_connection() {
        bool modified = false;
        if (reconnector_) {
            if (auto client = reconnector_->take()) {
                client_ = std::move(client);
                reconnector_.reset();
                status_.clear();
                modified = true;
            } else {
                modified = set_status(reconnect_status());
            }
        }
        // Paused, the title's count of new messages changes.
        if (client_ && take_messages()) modified = true;
        return modified;
    }

    // False when the connection was lost (the reconnection has started).
    bool take_messages() {
        bool any = false;
        while (auto m = client_->messages().try_pop()) {
            if (m->connection_lost) {
                // The same client id, so that a kept session resumes.
                retry_.client_id = client_->client_id();
                client_->stop();
                client_.reset();
                reconnector_ = std::make_unique<Reconnector>(retry_, resume_session_);
                set_status(reconnect_status());
                return true;
            }
            entries_[m->topic] = Entry{now_hms(), std::move(m->payload)};
            if (!playing_) ++missed_;
            any = true;
        }
        return any;
    }

    // "connection lost, reconnecting…", with the last attempt's error when
    // the title bar has room for it.
    std::string reconnect_status() const {
        // An ellipsis only where the terminal shows UTF-8.
        static const std::string ellipsis =
            std::string_view(nl_langinfo(CODESET)) == "UTF-8" ? "\u2026" : "...";
        const std::string status = "connection lost, reconnecting" + ellipsis;
        const std::string error = reconnector_->last_error();
        const std::string title = "TIMESTAMP  TOPIC & MESSAGE";
        const auto width = static_cast<std::size_t>(std::max(cols_, 0));
        if (error.empty() || columns(title) + 2 + columns(status) + 2 + columns(error) + 1 > width) return status;
        return status + " (" + error + ")";
    }

    bool set_status(std::string status) {
        if (status == status_) return false;
        status_ = std::move(status);
        return true;
    }

    // A full-width bar: `text` on the left, `right` right-aligned after at
    // least two spaces, both cut to the screen width.
    void bar(int row, const std::string& text, int pair, const std::string& right = {}) {
        const auto width = static_cast<std::size_t>(std::max(cols_, 0));
        std::string line = truncate(text, width);
        std::size_t used = columns(line);
        if (!right.empty() && used + 2 < width) {
            const std::string r = truncate(right, width - used - 2);
            line.append(width - used - columns(r), ' ');
            line += r;
            used = width;
        }
        if (used < width) line.append(width - used, ' ');
        attron(COLOR_PAIR(pair));
        mvaddstr(row, 0, line.c_str());
        attroff(COLOR_PAIR(pair));
    }

    // Arrows, PgUp/PgDn, Home/End move the first body row shown; redraw()
    // keeps it in range.
    bool scroll_by_key(int key) {
        const int page = std::max(1, rows_ - 3);
        switch (key) {
            case KEY_UP: top_ -= 1; return true;
            case KEY_DOWN: top_ += 1; return true;
            case KEY_PPAGE: top_ -= page; return true;
            case KEY_NPAGE: top_ += page; return true;
            case KEY_HOME: top_ = 0; return true;
            case KEY_END: top_ = INT32_MAX / 2; return true;
            default: return false;
        }
    }

    // Every body row: " HH:MM:SS  topic", then the message indented by 11,
    // each of its lines wrapped on its own (so a multi-line payload stays
    // in the message column).
    std::vector<std::string> body_rows() const {
        std::vector<std::string> out;
        const std::size_t width = static_cast<std::size_t>(std::max(1, cols_ - 12));
        for (const auto& [topic, entry] : playing_ ? entries_ : frozen_) {
            out.push_back(truncate(" " + entry.timestamp + "  " + topic, static_cast<std::size_t>(std::max(cols_, 0))));
            const std::string text = format_message(format_, entry.payload);
            std::size_t start = 0;
            for (;;) {
                const std::size_t nl = text.find('\n', start);
                std::string line = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
                // A tab would move the cursor past the column: a space.
                for (char& ch : line) {
                    if (ch == '\t') ch = ' ';
                }
                const auto wrapped = wrap(line, width);
                if (wrapped.empty()) out.push_back(std::string(11, ' '));
                for (const auto& row : wrapped) out.push_back(std::string(11, ' ') + row);
                if (nl == std::string::npos) break;
                start = nl + 1;
            }
        }
        return out;
    }

    void redraw() {
        erase();
        std::string right = status_;
        if (right.empty() && !playing_) {
            right = "PAUSED" + (missed_ > 0 ? " (" + std::to_string(missed_) + " new)" : std::string());
        }
        bar(0, "TIMESTAMP  TOPIC & MESSAGE", 1, right);
        const std::vector<std::string> rows = body_rows();
        const int body = std::max(0, rows_ - 2);
        const int count = static_cast<int>(rows.size());
        top_ = std::clamp(top_, 0, std::max(0, count - body));
        for (int i = 0; i < body && top_ + i < count; ++i) {
            mvaddstr(1 + i, 0, rows[static_cast<std::size_t>(top_ + i)].c_str());
        }
        // Where the view is, when not everything fits.
        std::string where;
        if (count > body && body > 0) {
            where = std::to_string(top_ + 1) + "-" + std::to_string(std::min(count, top_ + body)) + "/" +
                    std::to_string(count);
        }
        bar(rows_ - 1, "q: Quit, p: Play/Pause, f: Format (" + format_ + ")", 2, where);
        refresh();
    }

    std::unique_ptr<Client> client_;  // null while reconnecting
    ClientOptions retry_;
    bool resume_session_;
    std::unique_ptr<Reconnector> reconnector_;
    std::string status_;  // "" while connected
    Entries entries_;     // the latest message per topic
    Entries frozen_;      // what the screen shows while paused
    std::string format_ = "auto";
    bool playing_ = true;
    bool modified_ = true;
    std::uint64_t missed_ = 0;  // messages taken while paused
    int top_ = 0;               // first body row shown (scrolling)
    int rows_ = 0;
    int cols_ = 0;
};

// initscr/endwin as a scope, so an exception still restores the terminal.
struct Curses {
    Curses() {
        std::setlocale(LC_ALL, "");
        initscr();
        cbreak();
        noecho();
        keypad(stdscr, TRUE);
        // tmux, screen, PuTTY and the Linux console send Home/End as the
        // VT220 "\e[1~"/"\e[4~" (rxvt: "\e[7~"/"\e[8~") whatever $TERM's
        // terminfo says (xterm's has "\eOH"/"\eOF" only).
        define_key("\x1b[1~", KEY_HOME);
        define_key("\x1b[4~", KEY_END);
        define_key("\x1b[7~", KEY_HOME);
        define_key("\x1b[8~", KEY_END);
        halfdelay(1);  // getch() waits at most 100 ms: the refresh tick
        curs_set(0);
        if (has_colors()) {
            start_color();
            use_default_colors();
            init_pair(1, COLOR_BLACK, COLOR_GREEN);
            init_pair(2, COLOR_BLACK, COLOR_CYAN);
        }
    }
    ~Curses() { endwin(); }
    Curses(const Curses&) = delete;
    Curses& operator=(const Curses&) = delete;
};

}  // namespace

int run_monitor_command(int argc, char** argv) {
    CommonOptions common;
    std::vector<std::int64_t> retain_handling;
    std::vector<std::string> topics;
    ArgParser parser("mqttools monitor", "Monitor given topics in a text based user interface.");
    add_common_options(parser, common);
    parser.integers("--retain-handling", 0, 2, retain_handling,
                    "Retain handling per topic, in order; repeat it (default: 0).");
    std::vector<std::string> t_topics;
    std::int64_t qos = 0;
    parser.strings("--topic", t_topics, "Topic filter to subscribe to (repeatable, as mosquitto_sub -t).");
    parser.integer("--qos", 0, 2, qos, "Maximum QoS of the subscriptions (default: 0).");
    parser.alias("-t", "--topic");
    parser.alias("-q", "--qos");
    parser.positionals("topic", topics, "Topic(s) to subscribe to.");
    if (!parser.parse(argc, argv, 1)) return 0;
    check_common_options(common);
    topics.insert(topics.end(), t_topics.begin(), t_topics.end());
    if (!common.url_topic.empty()) topics.push_back(common.url_topic);
    // An empty screen waiting for nothing helps nobody.
    if (topics.empty()) throw UsageError("the following argument is required: topic");
    for (const auto& t : topics) {
        if (check_topic_filter(t) != ReasonCode::success) throw UsageError("invalid topic filter '" + t + "'");
    }

    ClientOptions options = make_client_options(common, 0);
    for (std::size_t i = 0; i < topics.size(); ++i) {
        const std::int64_t rh = i < retain_handling.size() ? retain_handling[i]
                                : retain_handling.empty() ? 0
                                                          : retain_handling.back();
        SubscriptionRequest request;
        request.topic = topics[i];
        request.retain_handling = static_cast<std::uint8_t>(rh);
        request.qos = static_cast<QoS>(qos);
        options.subscriptions.push_back(std::move(request));
    }
    auto client = std::make_unique<Client>(options);
    client->start();

    catch_interrupts();
    // Later connections resume the session when it outlives them, so that
    // nothing sent meanwhile is missed.
    Monitor monitor(std::move(client), options, options.session_expiry_interval > 0);
    {
        Curses screen;
        monitor.run();
    }
    monitor.stop();
    return 0;
}

}  // namespace mqttools::tools
