#include "broker/auth/password_file.hpp"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include "broker/auth/text_lines.hpp"

namespace mqttools::auth {

PasswordFile PasswordFile::load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot open password file");
    std::ostringstream text;
    text << in.rdbuf();
    return parse(text.str(), path);
}

PasswordFile PasswordFile::parse(std::string_view text, std::string_view source) {
    PasswordFile file;
    for_each_line(text, [&](std::string_view line, std::size_t number) {
        const auto fail = [&](std::string_view why) {
            throw std::runtime_error(std::string(source) + ":" + std::to_string(number) + ": " +
                                     std::string(why));
        };
        line = trim(line);
        if (line.empty() || line.front() == '#') return;
        const auto colon = line.find(':');
        if (colon == std::string_view::npos) fail("expected username:hash");
        const auto username = line.substr(0, colon);
        if (username.empty()) fail("empty username");
        auto hash = parse_password_hash(line.substr(colon + 1));
        if (!hash) fail("not a $6$ or $7$ password hash (plain text? run 'mqttools passwd -U')");
        // Mosquitto keeps the last entry of a user listed twice; so do we.
        file.users_.insert_or_assign(std::string(username), std::move(*hash));
    });
    return file;
}

const PasswordHash* PasswordFile::find(std::string_view username) const {
    const auto it = users_.find(username);
    return it == users_.end() ? nullptr : &it->second;
}

}  // namespace mqttools::auth
