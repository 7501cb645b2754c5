#include "broker/auth/authenticator.hpp"

#include "config/config.hpp"

namespace mqttools::auth {

Authenticator::Authenticator(bool allow_anonymous, std::optional<PasswordFile> passwords)
    : allow_anonymous_(allow_anonymous), passwords_(std::move(passwords)) {}

std::shared_ptr<const Authenticator> Authenticator::from_config(const config::Config& config) {
    std::optional<PasswordFile> passwords;
    if (!config.password_file.empty()) passwords = PasswordFile::load(config.password_file);
    return std::make_shared<const Authenticator>(config.effective_allow_anonymous(),
                                                 std::move(passwords));
}

ReasonCode Authenticator::check(std::optional<std::string_view> username,
                                std::optional<Bytes> password) const {
    if (!username || !passwords_) {
        return allow_anonymous_ ? ReasonCode::success : ReasonCode::not_authorized;
    }
    const std::string_view pw = password ? as_string(*password) : std::string_view{};
    const PasswordHash* hash = passwords_->find(*username);
    if (hash == nullptr) {
        // Spend the same work on an unknown user as on a known one, so the
        // response time does not tell which usernames exist.
        static const std::optional<PasswordHash> dummy = make_password_hash("");
        if (dummy) (void)verify_password(*dummy, pw);
        return ReasonCode::bad_user_name_or_password;
    }
    // A user listed in the file must present a password [MQTT-3.1.2-18 ff.].
    if (!password) return ReasonCode::bad_user_name_or_password;
    return verify_password(*hash, pw) ? ReasonCode::success
                                      : ReasonCode::bad_user_name_or_password;
}

}  // namespace mqttools::auth
