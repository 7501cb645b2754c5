// Dynamic security as one AuthSource of the broker's chain (asked first,
// auth_chain.hpp): it decides CONNECTs of its clients (the PBKDF2 check
// runs on the auth worker threads) and binds their rules and those of
// anonymous clients (the anonymous group). A username it does not know is
// left to the next sources.
#pragma once

#include <memory>

#include "broker/auth/auth_source.hpp"
#include "broker/auth/dynsec.hpp"

namespace mqttools::auth {

class DynsecSource final : public AuthSource {
public:
    // `state` is the broker's, changed on the reactor thread only.
    DynsecSource(std::shared_ptr<const dynsec::Dynsec> state, AuthHost& host)
        : state_(std::move(state)), host_(host) {}

    std::string_view name() const noexcept override { return "dynsec"; }
    bool authenticates() const noexcept override { return true; }
    AuthResult authenticate(const ConnectInfo& info) override;
    bool authorizes() const noexcept override { return true; }
    std::unique_ptr<ClientRules> bind(const ClientIdentity& who) const override;
    void metrics(std::vector<SourceMetric>& out) const override;

private:
    std::shared_ptr<const dynsec::Dynsec> state_;
    AuthHost& host_;
};

}  // namespace mqttools::auth
