// The configured AuthSources in their fixed order, and what the broker
// keeps per client: the rules bound from them (ClientAuthz).
//
// Authentication: the sources that know users are asked in order; the first
// that answers allow or deny decides. When none knows the client, the
// anonymous rule decides: a CONNECT without a username gets in with
// allow_anonymous (else 0x87); one with a username is refused with 0x86 when
// any source knows users (an unknown user), else allow_anonymous decides
// (Mosquitto without password_file: a username is only a name).
//
// Authorization: the rules that came with the credentials (a JWT's ACL
// claim) first, then every source's bound rules in the same order; the first
// allow or deny decides; when all say unknown the answer is deny. A client
// with no rules at all (no source has rules for it) may do everything; a
// superuser skips every check.
//
// Order (docs/authentication.md): the broker's own sources (dynamic
// security), password_file + acl_file, auth_jwt, auth_http.
//
// A chain is immutable once built; a reload builds a new one and swaps it.
// CONNECTs already waiting keep the chain they started with (shared_ptr).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "broker/auth/auth_source.hpp"

namespace mqttools::config {
struct Config;
}

namespace mqttools::auth {

class ClientAuthz {
public:
    Verdict check(std::string_view topic, AclAccess access) const noexcept {
        if (credentials_) {
            if (const Verdict v = credentials_->check(topic, access); v != Verdict::unknown) return v;
        }
        for (const auto& r : rules_) {
            if (const Verdict v = r->check(topic, access); v != Verdict::unknown) return v;
        }
        return access == AclAccess::unsubscribe ? Verdict::allow : Verdict::deny;
    }
    // The client disconnected: sources drop what they cached for it.
    void disconnected() const {
        if (credentials_) credentials_->disconnected();
        for (const auto& r : rules_) r->disconnected();
    }
    std::uint64_t waiter() const noexcept { return waiter_; }
    const std::shared_ptr<const ClientRules>& credentials() const noexcept { return credentials_; }

private:
    friend class AuthChain;
    std::uint64_t waiter_ = 0;
    std::shared_ptr<const ClientRules> credentials_;
    std::vector<std::unique_ptr<ClientRules>> rules_;
};

class AuthChain {
public:
    // Nobody known, nothing allowed: the chain in force before the
    // configuration could be read (fail closed).
    AuthChain() : allow_anonymous_(false) {}
    AuthChain(bool allow_anonymous, std::vector<std::shared_ptr<AuthSource>> sources);

    // Builds the sources the configuration names, after `first` (the
    // broker's own sources, e.g. dynamic security), in the documented order.
    // Throws std::runtime_error with every problem ("file:line: why" for
    // files) when any source cannot be made.
    static std::shared_ptr<const AuthChain> from_config(const config::Config& config, AuthHost& host,
                                                        std::vector<std::shared_ptr<AuthSource>> first = {});

    // Asks the sources from index `from` on. Returns the deciding answer
    // (allow/deny, from a source or the anonymous rule) or pending: then
    // `at` is the asking source's index and its answer comes through
    // AuthHost::connect_answered; if that answer is unknown, ask again from
    // at + 1.
    AuthResult authenticate(const ConnectInfo& info, std::size_t from, std::size_t& at) const;

    // The rules of a client whose session is attached; null when it may do
    // everything (no rules from any source, or a superuser).
    std::unique_ptr<ClientAuthz> bind(const ClientIdentity& who, std::shared_ptr<const ClientRules> credentials,
                                      bool superuser) const;

    bool authorizes() const noexcept { return authorizes_; }
    bool allow_anonymous() const noexcept { return allow_anonymous_; }
    const std::vector<std::shared_ptr<AuthSource>>& sources() const noexcept { return sources_; }
    // Every source's numbers, in source order.
    std::vector<SourceMetric> metrics() const;

private:
    bool allow_anonymous_ = false;
    bool knows_users_ = false;
    bool authorizes_ = false;
    std::vector<std::shared_ptr<AuthSource>> sources_;
};

}  // namespace mqttools::auth
