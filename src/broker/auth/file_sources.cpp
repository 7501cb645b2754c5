#include "broker/auth/file_sources.hpp"

#include <openssl/crypto.h>

namespace mqttools::auth {

PasswordFileSource::PasswordFileSource(PasswordFile passwords, AuthHost& host)
    : checker_(std::make_shared<const Authenticator>(false, std::move(passwords))), host_(host) {
    passwords_ = checker_->password_file();
}

AuthResult PasswordFileSource::authenticate(const ConnectInfo& info) {
    if (!info.username) return {};
    const bool known = passwords_->find(*info.username) != nullptr;
    // Copies for the worker thread; the password is wiped after use.
    auto username = std::make_shared<std::string>(*info.username);
    auto password = info.password ? std::make_shared<std::string>(*info.password) : nullptr;
    host_.run_blocking(
        info.ticket,
        [checker = checker_, username, password]() {
            std::optional<Bytes> pw;
            if (password) pw = as_bytes(std::string_view(*password));
            const ReasonCode rc = checker->check(*username, pw);
            if (password) OPENSSL_cleanse(password->data(), password->size());
            return rc;
        },
        [known](ReasonCode rc) {
            if (!known) return AuthResult{};  // not in the file: the next source decides
            if (rc == ReasonCode::success) return AuthResult::allow();
            return AuthResult::deny(rc, "wrong password");
        });
    return AuthResult::pending();
}

namespace {

class FileRules final : public ClientRules {
public:
    explicit FileRules(ClientAcl acl) : acl_(std::move(acl)) {}
    Verdict check(std::string_view topic, AclAccess access) const override {
        bool ok = false;
        switch (access) {
            case AclAccess::read: ok = acl_.can_read(topic); break;
            case AclAccess::publish: ok = acl_.can_publish(topic); break;
            case AclAccess::subscribe: ok = acl_.can_subscribe(topic); break;
            case AclAccess::unsubscribe: return Verdict::unknown;  // acl_file has no unsubscribe rules
        }
        return ok ? Verdict::allow : Verdict::deny;
    }

private:
    ClientAcl acl_;
};

}  // namespace

std::unique_ptr<ClientRules> AclFileSource::bind(const ClientIdentity& who) const {
    if (!acl_.enabled()) return nullptr;
    return std::make_unique<FileRules>(acl_.bind(who.client_id, who.username));
}

}  // namespace mqttools::auth
