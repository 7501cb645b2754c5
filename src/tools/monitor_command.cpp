// `mqttools monitor TOPIC...`: a full-screen ncurses view of the latest
// message per topic (the seed's layout): a title bar, the topics sorted, each
// with its timestamp and its message wrapped under it, and a menu bar.
// Keys: q quit, p play/pause, f cycle the format (auto, binary, text).
// When the broker connection is lost the title bar says so and the monitor
// reconnects in the background (delays 1, 2, 4, 8 s), subscribes again and
// keeps showing what it had.
#include <curses.h>
#include <langinfo.h>

#include <chrono>
#include <clocale>
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
                }
                modified_ = true;
            } else if (key == 'f') {
                format_ = format_ == "auto" ? "binary" : format_ == "binary" ? "text" : "auto";
                modified_ = true;
            } else if (key == KEY_RESIZE) {
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
        if (client_ && take_messages() && playing_) modified = true;
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

    void redraw() {
        erase();
        bar(0, "TIMESTAMP  TOPIC & MESSAGE", 1, status_);
        int row = 1;
        const std::size_t width = static_cast<std::size_t>(std::max(1, cols_ - 12));
        for (const auto& [topic, entry] : playing_ ? entries_ : frozen_) {
            if (row > rows_ - 2) break;
            mvaddnstr(row++, 0, (" " + entry.timestamp + "  " + topic).c_str(), cols_);
            for (const auto& line : wrap(format_message(format_, entry.payload), width)) {
                if (row > rows_ - 2) break;
                mvaddstr(row++, 0, (std::string(11, ' ') + line).c_str());
            }
        }
        bar(rows_ - 1, "q: Quit, p: Play/Pause, f: Format (" + format_ + ")", 2);
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
    parser.positionals("topic", topics, "Topic(s) to subscribe to.");
    if (!parser.parse(argc, argv, 1)) return 0;
    check_common_options(common);

    ClientOptions options = make_client_options(common, 0);
    for (std::size_t i = 0; i < topics.size(); ++i) {
        const std::int64_t rh = i < retain_handling.size() ? retain_handling[i]
                                : retain_handling.empty() ? 0
                                                          : retain_handling.back();
        options.subscriptions.push_back({topics[i], static_cast<std::uint8_t>(rh), QoS::at_most_once});
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
