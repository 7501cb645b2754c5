#include "tools/passwd_command.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "broker/auth/password_hash.hpp"

namespace mqttools::tools {
namespace {

using auth::HashKind;

constexpr std::size_t max_password = 65535;  // an MQTT password field's limit

// Asked for (--help): stdout, exit 0; a usage mistake: stderr, exit 1.
void usage(std::FILE* to = stderr) {
    std::fputs(
        "mqttools passwd manages password files for mqttoolsd and mosquitto.\n\n"
        "Usage: mqttools passwd [-H sha512 | -H sha512-pbkdf2] [-I ITERATIONS] [-c | -D] "
        "passwordfile username\n"
        "       mqttools passwd [-H sha512 | -H sha512-pbkdf2] [-I ITERATIONS] [-c] -b "
        "passwordfile username password\n"
        "       mqttools passwd -U passwordfile\n"
        " -b : run in batch mode to allow passing passwords on the command line.\n"
        " -c : create a new password file. This will overwrite existing files.\n"
        " -D : delete the username rather than adding/updating its password.\n"
        " -H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended.\n"
        " -I : PBKDF2 iterations for new hashes (default 1000).\n"
        " -U : update a plain text password file to use hashed passwords.\n",
        to);
}

struct Options {
    bool create = false;
    bool batch = false;
    bool remove = false;
    bool update = false;
    HashKind kind = HashKind::pbkdf2_sha512;
    int iterations = auth::default_iterations;
    std::vector<std::string> args;
};

int error(const std::string& message) {
    std::fprintf(stderr, "Error: %s\n", message.c_str());
    return 1;
}

// Reads one line from stdin with echo off when stdin is a terminal.
std::optional<std::string> read_secret(const char* prompt) {
    const bool tty = isatty(STDIN_FILENO) == 1;
    termios old{};
    if (tty) {
        std::fputs(prompt, stdout);
        std::fflush(stdout);
        if (tcgetattr(STDIN_FILENO, &old) == 0) {
            termios quiet = old;
            quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
            quiet.c_lflag |= ECHONL;
            tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
        }
    }
    std::string line;
    bool got = false;
    char buf[512];
    while (std::fgets(buf, sizeof buf, stdin)) {
        got = true;
        line += buf;
        if (!line.empty() && line.back() == '\n') break;
        if (line.size() > max_password + 2) break;
    }
    if (tty) tcsetattr(STDIN_FILENO, TCSANOW, &old);
    if (!got) return std::nullopt;
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    return line;
}

std::optional<std::string> prompt_password() {
    auto first = read_secret("Password: ");
    if (!first) {
        error("no password given");
        return std::nullopt;
    }
    auto second = read_secret("Reenter password: ");
    if (!second || *first != *second) {
        error("Passwords do not match.");
        return std::nullopt;
    }
    return first;
}

bool valid_username(const std::string& user) {
    if (user.empty()) return error("Username must not be empty."), false;
    if (user.find(':') != std::string::npos) {
        return error("Username must not contain the ':' character."), false;
    }
    if (user.find_first_of("\r\n") != std::string::npos || user.size() > 65535) {
        return error("Invalid username."), false;
    }
    return true;
}

bool valid_password(const std::string& password) {
    if (password.empty()) return error("Empty password."), false;
    if (password.size() > max_password || password.find_first_of("\r\n") != std::string::npos) {
        return error("Invalid password."), false;
    }
    return true;
}

std::optional<std::string> hash_line(const Options& o, const std::string& user,
                                     const std::string& password) {
    const auto hash = auth::make_password_hash(password, o.kind, o.iterations);
    if (!hash) {
        error("Unable to hash the password (OpenSSL failure).");
        return std::nullopt;
    }
    return user + ":" + auth::format_password_hash(*hash);
}

std::optional<std::vector<std::string>> read_lines(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        error("Unable to open file " + path + " for reading: " + std::strerror(errno) + ".");
        return std::nullopt;
    }
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(std::move(line));
    }
    return lines;
}

// Writes via a temporary file in the same directory and renames it over
// the original, so a crash never leaves a half-written password file.
// A new file is 0600; a replaced one keeps its permissions.
bool write_lines(const std::string& path, const std::vector<std::string>& lines) {
    mode_t mode = S_IRUSR | S_IWUSR;
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0) mode = st.st_mode & 07777;
    std::string tmp = path + ".XXXXXX";
    const int fd = ::mkstemp(tmp.data());
    if (fd < 0) {
        return error("Unable to open file " + path + " for writing: " + std::strerror(errno) +
                     "."),
               false;
    }
    std::string text;
    for (const auto& line : lines) {
        text += line;
        text += '\n';
    }
    bool ok = ::fchmod(fd, mode) == 0;
    std::size_t done = 0;
    while (ok && done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        ok = n > 0;
        if (ok) done += static_cast<std::size_t>(n);
    }
    ok = ok && ::fsync(fd) == 0;
    ok = (::close(fd) == 0) && ok;
    if (ok && ::rename(tmp.c_str(), path.c_str()) == 0) return true;
    const int saved = errno;
    ::unlink(tmp.c_str());
    return error("Unable to write " + path + ": " + std::strerror(saved) + "."), false;
}

std::string_view line_user(std::string_view line) {
    const auto colon = line.find(':');
    return colon == std::string_view::npos ? std::string_view{} : line.substr(0, colon);
}

int update_plaintext_file(const Options& o, const std::string& path) {
    auto lines = read_lines(path);
    if (!lines) return 1;
    for (auto& line : *lines) {
        if (line.empty() || line.front() == '#') continue;
        const auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        const std::string user = line.substr(0, colon);
        const std::string rest = line.substr(colon + 1);
        // Unlike mosquitto_passwd, do not hash a hash a second time.
        if (auth::parse_password_hash(rest)) continue;
        auto hashed = hash_line(o, user, rest);
        if (!hashed) return 1;
        line = *hashed;
    }
    return write_lines(path, *lines) ? 0 : 1;
}

int delete_user(const std::string& path, const std::string& user) {
    auto lines = read_lines(path);
    if (!lines) return 1;
    std::vector<std::string> kept;
    bool found = false;
    for (auto& line : *lines) {
        if (line_user(line) == user) {
            found = true;
        } else {
            kept.push_back(std::move(line));
        }
    }
    if (!found) {
        std::fprintf(stderr, "Warning: User %s not found in password file.\n", user.c_str());
        return 1;
    }
    return write_lines(path, kept) ? 0 : 1;
}

int set_user(const Options& o, const std::string& path, const std::string& user,
             const std::string& password) {
    std::vector<std::string> lines;
    if (!o.create) {
        auto existing = read_lines(path);
        if (!existing) return 1;
        lines = std::move(*existing);
    }
    auto hashed = hash_line(o, user, password);
    if (!hashed) return 1;
    bool replaced = false;
    for (auto& line : lines) {
        if (line_user(line) == user) {
            if (!replaced) line = *hashed;
            else line.clear();  // a duplicate entry: mark for removal
            replaced = true;
        }
    }
    if (replaced) {
        std::erase_if(lines, [](const std::string& l) { return l.empty(); });
    } else {
        lines.push_back(*hashed);
    }
    return write_lines(path, lines) ? 0 : 1;
}

}  // namespace

std::optional<std::string> prompt_new_password() { return prompt_password(); }

int run_passwd_command(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            usage(stdout);
            return 0;
        }
        if (arg == "-H" || arg == "-I") {
            if (i + 1 >= argc) return usage(), 1;
            const std::string_view value = argv[++i];
            if (arg == "-H") {
                if (value == "sha512") o.kind = HashKind::sha512;
                else if (value == "sha512-pbkdf2") o.kind = HashKind::pbkdf2_sha512;
                else return error("Unknown hash type '" + std::string(value) + "'.");
            } else {
                int n = 0;
                const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
                if (ec != std::errc{} || end != value.data() + value.size() || n < 1 ||
                    n > auth::max_iterations) {
                    return error("Invalid iteration count '" + std::string(value) + "'.");
                }
                o.iterations = n;
            }
            continue;
        }
        if (arg.size() >= 2 && arg[0] == '-') {
            for (char c : arg.substr(1)) {
                switch (c) {
                    case 'c': o.create = true; break;
                    case 'b': o.batch = true; break;
                    case 'D': o.remove = true; break;
                    case 'U': o.update = true; break;
                    default: usage(); return 1;
                }
            }
            continue;
        }
        o.args.emplace_back(arg);
    }
    if ((o.create && (o.remove || o.update)) || (o.remove && (o.update || o.batch)) ||
        (o.update && o.batch)) {
        usage();
        return 1;
    }
    if (o.update) {
        if (o.args.size() != 1) return usage(), 1;
        return update_plaintext_file(o, o.args[0]);
    }
    const std::size_t wanted = o.batch ? 3 : 2;
    if (o.args.size() != wanted) return usage(), 1;
    const std::string& path = o.args[0];
    const std::string& user = o.args[1];
    if (!valid_username(user)) return 1;
    if (o.remove) return delete_user(path, user);
    if (!o.create && ::access(path.c_str(), F_OK) != 0) {
        return error("Unable to open file " + path + " for reading: " + std::strerror(errno) +
                     ".");
    }
    std::string password;
    if (o.batch) {
        password = o.args[2];
    } else {
        auto typed = prompt_password();
        if (!typed) return 1;
        password = std::move(*typed);
    }
    if (!valid_password(password)) return 1;
    return set_user(o, path, user, password);
}

}  // namespace mqttools::tools
