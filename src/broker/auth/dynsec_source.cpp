#include "broker/auth/dynsec_source.hpp"

#include <openssl/crypto.h>

#include "broker/auth/pbkdf2_sha512.hpp"
#include "broker/auth/topic_filter.hpp"

namespace mqttools::auth {

namespace {

// One client's dynsec rules. Changes made through the API apply to the
// next check: a snapshot older than the state is rebound then (the one
// allocation, once per change and client).
class DynsecRules final : public ClientRules {
public:
    DynsecRules(std::shared_ptr<const dynsec::Dynsec> state, std::optional<std::string> username)
        : state_(std::move(state)), username_(std::move(username)) {
        rebind();
    }

    Verdict check(std::string_view topic, AclAccess access) const override {
        if (generation_ != state_->generation()) rebind();
        bool ok = false;
        switch (access) {
            case AclAccess::read: ok = acl_.can_receive(topic); break;
            case AclAccess::publish: ok = acl_.can_publish(topic); break;
            case AclAccess::subscribe: ok = acl_.can_subscribe(strip_shared_prefix(topic)); break;
            case AclAccess::unsubscribe: {
                const auto rule = acl_.unsubscribe_rule(strip_shared_prefix(topic));
                if (!rule) return Verdict::unknown;  // as Mosquitto: no ACL, no refusal
                ok = *rule;
                break;
            }
        }
        return ok ? Verdict::allow : Verdict::deny;
    }

private:
    void rebind() const {
        acl_ = state_->bind(username_ ? std::optional<std::string_view>(*username_) : std::nullopt);
        generation_ = state_->generation();
    }

    std::shared_ptr<const dynsec::Dynsec> state_;
    std::optional<std::string> username_;
    mutable dynsec::DynsecAcl acl_;
    mutable std::uint64_t generation_ = 0;
};

}  // namespace

AuthResult DynsecSource::authenticate(const ConnectInfo& info) {
    if (!info.username) return {};  // anonymous: allow_anonymous decides
    auto it = state_->clients().find(*info.username);
    if (it == state_->clients().end()) return {};
    const dynsec::Client& c = it->second;
    AuthResult refused = AuthResult::deny(ReasonCode::not_authorized, "");
    refused.source = "dynsec";
    if (c.disabled) {
        refused.why = "client disabled";
        return refused;
    }
    if (c.clientid && *c.clientid != info.client_id) {
        refused.why = "client id not allowed for this username";
        return refused;
    }
    if (!c.password || !info.password) return {};
    // Copies for the worker thread; the password is wiped after use.
    auto password = std::make_shared<std::string>(*info.password);
    host_.run_blocking(
        info.ticket,
        [stored = *c.password, password]() {
            std::array<unsigned char, 64> hash{};
            pbkdf2_sha512(*password, stored.salt, stored.iterations, hash);
            OPENSSL_cleanse(password->data(), password->size());
            return CRYPTO_memcmp(hash.data(), stored.hash.data(), hash.size()) == 0
                       ? ReasonCode::success
                       : ReasonCode::bad_user_name_or_password;
        },
        [state = state_, username = std::string(*info.username), checked = c.password->hash](ReasonCode rc) {
            // The client may have changed while the hash ran: it must still
            // be there, enabled, with the password that was checked.
            auto it = state->clients().find(username);
            const bool same = it != state->clients().end() && !it->second.disabled && it->second.password &&
                              it->second.password->hash == checked;
            AuthResult r = rc == ReasonCode::success && same
                               ? AuthResult::allow()
                               : AuthResult::deny(ReasonCode::bad_user_name_or_password, "wrong password");
            r.source = "dynsec";
            return r;
        });
    return AuthResult::pending();
}

std::unique_ptr<ClientRules> DynsecSource::bind(const ClientIdentity& who) const {
    // Other usernames (password_file users) are the next sources' business.
    if (who.username && !state_->has_client(*who.username)) return nullptr;
    return std::make_unique<DynsecRules>(state_,
                                         who.username ? std::optional<std::string>(*who.username) : std::nullopt);
}

void DynsecSource::metrics(std::vector<SourceMetric>& out) const {
    out.push_back({"dynsec_clients", "gauge", "Clients in the dynamic security file.", state_->clients().size()});
    out.push_back({"dynsec_roles", "gauge", "Roles in the dynamic security file.", state_->roles().size()});
    out.push_back({"dynsec_groups", "gauge", "Groups in the dynamic security file.", state_->groups().size()});
}

}  // namespace mqttools::auth
