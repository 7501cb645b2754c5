// JwtVerifier with fixed tokens and keys (jwt_fixtures.hpp, made with
// python3-jwt): every accepted algorithm, and everything to refuse.
#include <catch2/catch.hpp>

#include "broker/auth/jwt_source.hpp"
#include "broker/auth/jwt_verifier.hpp"
#include "jwt_fixtures.hpp"

using mqttools::auth::JwtSource;
using mqttools::auth::JwtVerifier;
using mqttools::auth::AclAccess;
using mqttools::auth::Verdict;
namespace fx = jwt_fixtures;

namespace {
constexpr std::int64_t now = 1700000000;
}

TEST_CASE("jwt: HS256/384/512 with the secret", "[jwt]") {
    const JwtVerifier v = JwtVerifier::with_secret("s3cret");
    for (const char* t : {fx::token_hs256, fx::token_hs384, fx::token_hs512}) {
        auto r = v.verify(t, now, 0);
        CHECK(r.ok);
        CHECK(r.claims["sub"] == "alice");
    }
    CHECK_FALSE(JwtVerifier::with_secret("other").verify(fx::token_hs256, now, 0).ok);
    // A secret accepts no public-key algorithm.
    CHECK(v.verify(fx::token_rs256, now, 0).why.find("refused") != std::string::npos);
}

TEST_CASE("jwt: RS256/384/512 and ES256/ES384 with PEM keys", "[jwt]") {
    const JwtVerifier rsa = JwtVerifier::from_pem(fx::rsa_public_pem);
    for (const char* t : {fx::token_rs256, fx::token_rs384, fx::token_rs512}) CHECK(rsa.verify(t, now, 0).ok);
    CHECK_FALSE(rsa.verify(fx::token_es256, now, 0).ok);
    CHECK(JwtVerifier::from_pem(fx::ec256_public_pem).verify(fx::token_es256, now, 0).ok);
    CHECK(JwtVerifier::from_pem(fx::ec384_public_pem).verify(fx::token_es384, now, 0).ok);
    CHECK_FALSE(JwtVerifier::from_pem(fx::ec384_public_pem).verify(fx::token_es256, now, 0).ok);
    CHECK_THROWS(JwtVerifier::from_pem("not a key"));
}

TEST_CASE("jwt: JWKS keys, picked by kid", "[jwt]") {
    const JwtVerifier v = JwtVerifier::from_jwks(fx::jwks);
    CHECK(v.verify(fx::token_rs_kid, now, 0).ok);
    CHECK(v.verify(fx::token_rs256, now, 0).ok);  // no kid: every fitting key is tried
    CHECK_THROWS(JwtVerifier::from_jwks(R"({"keys": []})"));
    CHECK_THROWS(JwtVerifier::from_jwks("[1, 2]"));
}

TEST_CASE("jwt: expired, not yet valid, leeway", "[jwt]") {
    const JwtVerifier v = JwtVerifier::with_secret("s3cret");
    CHECK(v.verify(fx::token_expired, now, 0).why == "token expired");
    CHECK(v.verify(fx::token_expired, now, 200).ok);
    CHECK(v.verify(fx::token_nbf, now, 0).why == "token not yet valid (nbf)");
    CHECK(v.verify(fx::token_nbf, now, 200).ok);
    CHECK_FALSE(v.verify(fx::token_hs256, now + 101, 0).ok);
}

TEST_CASE("jwt: forged, alg none, algorithm confusion, malformed", "[jwt]") {
    const JwtVerifier secret = JwtVerifier::with_secret("s3cret");
    const JwtVerifier rsa = JwtVerifier::from_pem(fx::rsa_public_pem);
    CHECK(secret.verify(fx::token_forged, now, 0).why == "bad signature");
    CHECK(secret.verify(fx::token_none, now, 0).why == "algorithm 'none' refused");
    CHECK(rsa.verify(fx::token_none, now, 0).why == "algorithm 'none' refused");
    // HS256 whose HMAC key is the RSA public key's PEM text.
    const auto confused = rsa.verify(fx::token_confusion, now, 0);
    CHECK_FALSE(confused.ok);
    CHECK(confused.why.find("HS256 refused") != std::string::npos);
    // Even a secret that happens to be the PEM: the token is right, so
    // only a public key configuration protects (it does, above).
    for (const char* bad : {"", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30.e30", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.AAAA"}) {
        CHECK_FALSE(secret.verify(bad, now, 0).ok);
        CHECK_FALSE(rsa.verify(bad, now, 0).ok);
    }
}

TEST_CASE("jwt: ACL claim rules with placeholders", "[jwt]") {
    const auto claim = nlohmann::json::parse(
        R"({"pub": ["devices/${clientid}/out"], "sub": ["devices/${clientid}/in/#"], "all": ["users/${username}/#"]})");
    auto rules = JwtSource::rules_from_claim(claim, "alice", "d1");
    REQUIRE(rules);
    CHECK(rules->check("devices/d1/out", AclAccess::publish) == Verdict::allow);
    CHECK(rules->check("devices/d2/out", AclAccess::publish) == Verdict::unknown);
    CHECK(rules->check("devices/d1/in/#", AclAccess::subscribe) == Verdict::allow);
    CHECK(rules->check("devices/#", AclAccess::subscribe) == Verdict::unknown);
    CHECK(rules->check("devices/d1/in/x", AclAccess::read) == Verdict::allow);
    CHECK(rules->check("users/alice/x", AclAccess::publish) == Verdict::allow);
    CHECK(rules->check("users/bob/x", AclAccess::publish) == Verdict::unknown);
    CHECK_FALSE(JwtSource::rules_from_claim(nlohmann::json::parse(R"({"pub": "x"})"), "a", "b"));
}
