// Decides whether a CONNECT's credentials let the client in. Built from the
// configuration (allow_anonymous, password_file) at startup and rebuilt on
// reload; the broker keeps a shared_ptr and swaps it.
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "broker/auth/password_file.hpp"
#include "mqttools/packets.hpp"
#include "mqttools/reason_code.hpp"

namespace mqttools::config {
struct Config;
}

namespace mqttools::auth {

class Authenticator {
public:
    // Everybody gets in: no password file, anonymous allowed.
    Authenticator() = default;
    Authenticator(bool allow_anonymous, std::optional<PasswordFile> passwords);

    // Reads config.password_file (if set) and effective_allow_anonymous().
    // Throws std::runtime_error when the password file is missing or invalid.
    static std::shared_ptr<const Authenticator> from_config(const config::Config& config);

    // success: let the client in.
    // not_authorized (0x87, 3.1.1 code 5): no username and anonymous access
    //   is not allowed.
    // bad_user_name_or_password (0x86, 3.1.1 code 4): a username was given
    //   and the password file does not accept it with this password.
    // With no password file a username is only a name: the anonymous rule
    // decides (as Mosquitto without password_file).
    ReasonCode check(std::optional<std::string_view> username,
                     std::optional<Bytes> password) const;

    // True when check() would compute a password hash (a username with a
    // password file): the broker then runs it on its AuthPool.
    bool needs_hashing(const std::optional<std::string_view>& username) const noexcept {
        return username.has_value() && passwords_.has_value();
    }

    bool allow_anonymous() const noexcept { return allow_anonymous_; }
    bool has_password_file() const noexcept { return passwords_.has_value(); }
    const PasswordFile* password_file() const noexcept { return passwords_ ? &*passwords_ : nullptr; }

private:
    bool allow_anonymous_ = true;
    std::optional<PasswordFile> passwords_;
};

}  // namespace mqttools::auth
