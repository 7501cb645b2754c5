// `mqttools monitor TOPIC...`: a full-screen ncurses view of the latest
// message per topic (the seed's layout): a title bar, the topics sorted, each
// with its timestamp and its message wrapped under it, and a menu bar.
// Keys: q quit, p play/pause, f cycle the format (auto, binary, text).
#include <curses.h>

#include <chrono>
#include <clocale>
#include <csignal>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "tools/commands.hpp"
#include "tools/common.hpp"

namespace mqttools::tools {

namespace {

volatile std::sig_atomic_t interrupted = 0;

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

class Monitor {
public:
    explicit Monitor(Client& client) : client_(client) {}

    // Returns when the user quits; throws ClientError when the connection
    // is lost.
    void run() {
        for (;;) {
            if (interrupted) return;
            bool modified = modified_;
            modified_ = false;
            if (playing_ && take_messages()) modified = true;
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
                modified_ = true;
            } else if (key == 'f') {
                format_ = format_ == "auto" ? "binary" : format_ == "binary" ? "text" : "auto";
                modified_ = true;
            } else if (key == KEY_RESIZE) {
                modified_ = true;
            }
        }
    }

private:
    bool take_messages() {
        bool any = false;
        while (auto m = client_.messages().try_pop()) {
            if (m->connection_lost) throw ConnectionError("broker connection lost");
            char stamp[16];
            const std::time_t now = std::time(nullptr);
            std::tm local{};
            localtime_r(&now, &local);
            std::strftime(stamp, sizeof stamp, "%H:%M:%S", &local);
            entries_[m->topic] = Entry{stamp, std::move(m->payload)};
            any = true;
        }
        return any;
    }

    void bar(int row, const std::string& text, int pair) {
        std::string line = text;
        const auto width = static_cast<std::size_t>(std::max(cols_, 0));
        if (line.size() < width) line.append(width - line.size(), ' ');
        attron(COLOR_PAIR(pair));
        mvaddnstr(row, 0, line.c_str(), cols_);
        attroff(COLOR_PAIR(pair));
    }

    void redraw() {
        erase();
        bar(0, "TIMESTAMP  TOPIC & MESSAGE", 1);
        int row = 1;
        const std::size_t width = static_cast<std::size_t>(std::max(1, cols_ - 12));
        for (const auto& [topic, entry] : entries_) {
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

    Client& client_;
    std::map<std::string, Entry> entries_;  // sorted by topic
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
    std::int64_t keep_alive = 0;
    std::int64_t session_expiry_interval = 0;
    std::vector<std::int64_t> retain_handling;
    std::vector<std::string> topics;
    ArgParser parser("mqttools monitor", "Monitor given topics in a text based user interface.");
    add_common_options(parser, common);
    parser.integer("--keep-alive", 0, 65535, keep_alive,
                   "Keep alive time in seconds (default: 0). Give as 0 to disable keep alive.");
    parser.integer("--session-expiry-interval", 0, 0xffffffff, session_expiry_interval,
                   "Session expiry interval in the range 0..0xffffffff (default: 0).");
    parser.integers("--retain-handling", 0, 2, retain_handling,
                    "Retain handling per topic, in order; repeat it (default: 0).");
    parser.positionals("topic", topics, "Topic(s) to subscribe to.");
    if (!parser.parse(argc, argv, 1)) return 0;

    ClientOptions options = make_client_options(common);
    options.keep_alive_s = static_cast<std::uint16_t>(keep_alive);
    options.session_expiry_interval = static_cast<std::uint32_t>(session_expiry_interval);
    for (std::size_t i = 0; i < topics.size(); ++i) {
        const std::int64_t rh = i < retain_handling.size() ? retain_handling[i]
                                : retain_handling.empty() ? 0
                                                          : retain_handling.back();
        options.subscriptions.push_back({topics[i], static_cast<std::uint8_t>(rh), QoS::at_most_once});
    }
    Client client(options);
    client.start();

    std::signal(SIGINT, [](int) { interrupted = 1; });
    {
        Curses screen;
        Monitor(client).run();
    }
    client.stop();
    return 0;
}

}  // namespace mqttools::tools
