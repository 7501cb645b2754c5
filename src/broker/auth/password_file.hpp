// Mosquitto's password_file: one "username:hash" a line ($6$ or $7$, see
// password_hash.hpp), '#' comments and blank lines ignored. A line that
// does not parse makes the whole file invalid, so a typo never silently
// locks a user out or lets one in.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "broker/auth/password_hash.hpp"

namespace mqttools::auth {

class PasswordFile {
public:
    // Both throw std::runtime_error("FILE:LINE: why") on an invalid file:
    // loading happens at startup and reload, where the daemon reports it.
    static PasswordFile load(const std::string& path);
    static PasswordFile parse(std::string_view text, std::string_view source = "password_file");

    const PasswordHash* find(std::string_view username) const;
    std::size_t size() const noexcept { return users_.size(); }

private:
    std::map<std::string, PasswordHash, std::less<>> users_;
};

}  // namespace mqttools::auth
