// [auth_jwt]: the CONNECT's password (or username) holds a JWT, as with
// EMQX's JWT authentication (docs/authentication.md). Checked in place: a
// signature check costs microseconds. A credential that is not a JWT is
// not this source's (the next source is asked); a JWT that fails any check
// is refused (0x86). The token's exp ends the connection (0xA0); its ACL
// claim ({"pub": [...], "sub": [...], "all": [...]}, ${username} and
// ${clientid} replaced) is asked before every other source's rules.
#pragma once

#include "broker/auth/auth_source.hpp"
#include "broker/auth/jwt_verifier.hpp"
#include "config/config.hpp"

namespace mqttools::auth {

class JwtSource final : public AuthSource {
public:
    // Reads the key files; throws std::runtime_error("auth_jwt.KEY: FILE: why").
    explicit JwtSource(const config::AuthJwt& settings);
    std::string_view name() const noexcept override { return "jwt"; }
    bool authenticates() const noexcept override { return true; }
    AuthResult authenticate(const ConnectInfo& info) override;

    // The rules of an ACL claim with the placeholders replaced; null when
    // the claim is not in EMQX's form.
    static std::shared_ptr<const ClientRules> rules_from_claim(const nlohmann::json& claim, std::string_view username,
                                                              std::string_view client_id);

private:
    config::AuthJwt settings_;
    JwtVerifier verifier_;
};

}  // namespace mqttools::auth
