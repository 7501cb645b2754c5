// JSON Web Tokens (RFC 7519) checked with OpenSSL's EVP directly: HS256/
// 384/512 with a secret, RS256/384/512 and ES256/384 with a public key (PEM
// or a JWKS document, RFC 7517). The key decides which algorithms are
// accepted, never the token: "alg": "none" is refused, and so is an HMAC
// token offered where a public key is configured (algorithm confusion: the
// public key, known to all, would be the HMAC secret). Not libjwt: Debian's
// 1.10 reads no JWKS and lets the token's header choose the algorithm for
// a key given as bytes, the very confusion to avoid.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace mqttools::auth {

class JwtVerifier {
public:
    // HS256/384/512 only. Throws std::invalid_argument on an empty secret.
    static JwtVerifier with_secret(std::string secret);
    // RS* (an RSA key) or ES256/ES384 (a P-256/P-384 key). Throws
    // std::runtime_error when the text holds no public key.
    static JwtVerifier from_pem(std::string_view pem);
    // Every RSA and EC key of a JWKS document ({"keys": [...]}); a token's
    // "kid" picks one. Throws std::runtime_error when none can be used.
    static JwtVerifier from_jwks(std::string_view json);

    struct Result {
        bool ok = false;
        std::string why;        // refused: a reason for the log
        nlohmann::json claims;  // ok: the payload (an object)
    };
    // `now` in seconds since the epoch; exp and nbf get `leeway` seconds.
    Result verify(std::string_view token, std::int64_t now, std::uint32_t leeway) const;

    // Looks like a compact JWS (three base64url parts)?
    static bool looks_like_jwt(std::string_view token) noexcept;

    struct Key;

private:
    std::string secret_;
    std::vector<std::shared_ptr<const Key>> keys_;
};

// base64url without padding (RFC 7515 section 2), also used by tests.
bool base64url_decode(std::string_view in, std::string& out);

}  // namespace mqttools::auth
