// Mosquitto's files as AuthSources: password_file (users, checked on the
// auth worker threads: a $7$ hash costs about a millisecond) and acl_file
// (rules bound per client at CONNECT, checked in place).
#pragma once

#include <memory>

#include "broker/auth/acl.hpp"
#include "broker/auth/auth_source.hpp"
#include "broker/auth/authenticator.hpp"
#include "broker/auth/password_file.hpp"

namespace mqttools::auth {

class PasswordFileSource final : public AuthSource {
public:
    PasswordFileSource(PasswordFile passwords, AuthHost& host);
    std::string_view name() const noexcept override { return "password_file"; }
    bool authenticates() const noexcept override { return true; }
    // Always pending: a known user's hash, or (an unknown user) the same
    // work spent on a dummy hash so the time taken does not tell which
    // usernames exist; then allow, deny 0x86, or unknown.
    AuthResult authenticate(const ConnectInfo& info) override;

private:
    // Judges like Mosquitto's password_file (Authenticator::check).
    std::shared_ptr<const Authenticator> checker_;
    const PasswordFile* passwords_;
    AuthHost& host_;
};

class AclFileSource final : public AuthSource {
public:
    explicit AclFileSource(AclChecker acl) : acl_(std::move(acl)) {}
    std::string_view name() const noexcept override { return "acl_file"; }
    bool authorizes() const noexcept override { return true; }
    // Never unknown: what the file does not grant is denied.
    std::unique_ptr<ClientRules> bind(const ClientIdentity& who) const override;

private:
    AclChecker acl_;
};

}  // namespace mqttools::auth
