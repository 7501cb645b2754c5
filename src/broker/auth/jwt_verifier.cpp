#include "broker/auth/jwt_verifier.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mqttools::auth {

struct JwtVerifier::Key {
    enum class Kind { rsa, ec256, ec384 } kind;
    EVP_PKEY* pkey = nullptr;
    std::string kid;
    Key(Kind k, EVP_PKEY* p, std::string id) : kind(k), pkey(p), kid(std::move(id)) {}
    ~Key() { EVP_PKEY_free(pkey); }
};

namespace {

using Key = JwtVerifier::Key;

std::shared_ptr<const Key> classify(EVP_PKEY* pkey, std::string kid) {
    if (EVP_PKEY_is_a(pkey, "RSA")) return std::make_shared<Key>(Key::Kind::rsa, pkey, std::move(kid));
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char curve[64] = {};
        std::size_t len = 0;
        EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve, &len);
        const std::string_view c(curve, len);
        if (c == "prime256v1" || c == "P-256") return std::make_shared<Key>(Key::Kind::ec256, pkey, std::move(kid));
        if (c == "secp384r1" || c == "P-384") return std::make_shared<Key>(Key::Kind::ec384, pkey, std::move(kid));
    }
    EVP_PKEY_free(pkey);
    return nullptr;
}

EVP_PKEY* rsa_from_jwk(const std::string& n, const std::string& e) {
    BIGNUM* bn_n = BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr);
    BIGNUM* bn_e = BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()), nullptr);
    OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e);
    OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY* pkey = nullptr;
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
    if (ctx && params && EVP_PKEY_fromdata_init(ctx) > 0) EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return pkey;
}

EVP_PKEY* ec_from_jwk(const std::string& crv, const std::string& x, const std::string& y) {
    const char* group = crv == "P-256" ? "prime256v1" : crv == "P-384" ? "secp384r1" : nullptr;
    const std::size_t size = crv == "P-256" ? 32 : 48;
    if (!group || x.size() != size || y.size() != size) return nullptr;
    std::string point = "\x04" + x + y;  // uncompressed
    OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size());
    OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY* pkey = nullptr;
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
    if (ctx && params && EVP_PKEY_fromdata_init(ctx) > 0) EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

const EVP_MD* digest_for(std::string_view alg) {
    const std::string_view bits = alg.size() == 5 ? alg.substr(2) : std::string_view{};
    if (bits == "256") return EVP_sha256();
    if (bits == "384") return EVP_sha384();
    if (bits == "512") return EVP_sha512();
    return nullptr;
}

bool verify_hmac(const std::string& secret, const EVP_MD* md, std::string_view signed_part, const std::string& sig) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!HMAC(md, secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(signed_part.data()),
              signed_part.size(), mac, &len))
        return false;
    return sig.size() == len && CRYPTO_memcmp(mac, sig.data(), len) == 0;
}

bool verify_signature(const Key& key, const EVP_MD* md, std::string_view signed_part, std::string sig) {
    if (key.kind != Key::Kind::rsa) {
        // JWS carries R || S (RFC 7518 section 3.4); EVP wants DER.
        const std::size_t half = key.kind == Key::Kind::ec256 ? 32 : 48;
        if (sig.size() != 2 * half) return false;
        ECDSA_SIG* es = ECDSA_SIG_new();
        BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()), static_cast<int>(half), nullptr);
        BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data() + half), static_cast<int>(half), nullptr);
        ECDSA_SIG_set0(es, r, s);
        unsigned char* der = nullptr;
        const int der_len = i2d_ECDSA_SIG(es, &der);
        ECDSA_SIG_free(es);
        if (der_len <= 0) return false;
        sig.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(der_len));
        OPENSSL_free(der);
    }
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, nullptr, md, nullptr, key.pkey) == 1 &&
              EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                               reinterpret_cast<const unsigned char*>(signed_part.data()), signed_part.size()) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

bool numeric_date(const nlohmann::json& claims, const char* name, std::int64_t& out, bool& bad) {
    auto it = claims.find(name);
    if (it == claims.end()) return false;
    if (!it->is_number() || (it->is_number_float() && !std::isfinite(it->get<double>()))) {
        bad = true;
        return false;
    }
    out = it->is_number_float() ? static_cast<std::int64_t>(it->get<double>()) : it->get<std::int64_t>();
    return true;
}

}  // namespace

bool base64url_decode(std::string_view in, std::string& out) {
    out.clear();
    out.reserve(in.size() * 3 / 4);
    std::uint32_t acc = 0;
    int bits = 0;
    for (const char ch : in) {
        int v;
        if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
        else if (ch == '-') v = 62;
        else if (ch == '_') v = 63;
        else return false;  // padding, '+', '/', spaces: not base64url
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xFF);
        }
    }
    return bits < 6;  // a lone 6-bit tail is not a byte boundary
}

bool JwtVerifier::looks_like_jwt(std::string_view token) noexcept {
    return std::count(token.begin(), token.end(), '.') == 2 && token.size() >= 5;
}

JwtVerifier JwtVerifier::with_secret(std::string secret) {
    if (secret.empty()) throw std::invalid_argument("the JWT secret is empty");
    JwtVerifier v;
    v.secret_ = std::move(secret);
    return v;
}

JwtVerifier JwtVerifier::from_pem(std::string_view pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    EVP_PKEY* pkey = bio ? PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr) : nullptr;
    BIO_free(bio);
    if (!pkey) throw std::runtime_error("no PEM public key (-----BEGIN PUBLIC KEY-----) in it");
    auto key = classify(pkey, "");
    if (!key) throw std::runtime_error("not an RSA, P-256 or P-384 public key");
    JwtVerifier v;
    v.keys_.push_back(std::move(key));
    return v;
}

JwtVerifier JwtVerifier::from_jwks(std::string_view json) {
    const nlohmann::json doc = nlohmann::json::parse(json, nullptr, false);
    if (!doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array())
        throw std::runtime_error("not a JWKS document ({\"keys\": [...]})");
    JwtVerifier v;
    for (const auto& jwk : doc["keys"]) {
        if (!jwk.is_object()) continue;
        auto str = [&](const char* k) { return jwk.contains(k) && jwk[k].is_string() ? jwk[k].get<std::string>() : ""; };
        if (str("use") == "enc") continue;
        EVP_PKEY* pkey = nullptr;
        std::string a, b;
        if (str("kty") == "RSA" && base64url_decode(str("n"), a) && base64url_decode(str("e"), b) && !a.empty() &&
            !b.empty()) {
            pkey = rsa_from_jwk(a, b);
        } else if (str("kty") == "EC" && base64url_decode(str("x"), a) && base64url_decode(str("y"), b)) {
            pkey = ec_from_jwk(str("crv"), a, b);
        }
        if (!pkey) continue;
        if (auto key = classify(pkey, str("kid"))) v.keys_.push_back(std::move(key));
    }
    if (v.keys_.empty()) throw std::runtime_error("no usable RSA or EC (P-256, P-384) key in the JWKS");
    return v;
}

JwtVerifier::Result JwtVerifier::verify(std::string_view token, std::int64_t now, std::uint32_t leeway) const {
    Result r;
    const std::size_t dot1 = token.find('.');
    const std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
        r.why = "malformed token (not three parts)";
        return r;
    }
    std::string header_text, payload_text, sig;
    if (!base64url_decode(token.substr(0, dot1), header_text) ||
        !base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1), payload_text) ||
        !base64url_decode(token.substr(dot2 + 1), sig)) {
        r.why = "malformed token (not base64url)";
        return r;
    }
    const nlohmann::json header = nlohmann::json::parse(header_text, nullptr, false);
    if (!header.is_object() || !header.contains("alg") || !header["alg"].is_string()) {
        r.why = "malformed token header";
        return r;
    }
    const std::string alg = header["alg"].get<std::string>();
    const std::string_view family = std::string_view(alg).substr(0, 2);
    const EVP_MD* md = digest_for(alg);
    const std::string_view signed_part = token.substr(0, dot2);
    bool verified = false;
    if (!md) {
        r.why = "algorithm '" + alg + "' refused";  // "none" among them
        return r;
    }
    if (!secret_.empty()) {
        if (family != "HS") {
            r.why = "algorithm " + alg + " refused: a secret is configured (HS256/384/512 only)";
            return r;
        }
        verified = verify_hmac(secret_, md, signed_part, sig);
    } else {
        // A public key: its own algorithms only, never HMAC.
        const std::string kid = header.contains("kid") && header["kid"].is_string() ? header["kid"].get<std::string>() : "";
        bool any = false;
        for (const auto& key : keys_) {
            if (!kid.empty() && !key->kid.empty() && key->kid != kid) continue;
            const bool fits = (family == "RS" && key->kind == Key::Kind::rsa) ||
                              (alg == "ES256" && key->kind == Key::Kind::ec256) ||
                              (alg == "ES384" && key->kind == Key::Kind::ec384);
            if (!fits) continue;
            any = true;
            if (verify_signature(*key, md, signed_part, sig)) {
                verified = true;
                break;
            }
        }
        if (!any) {
            r.why = "algorithm " + alg + " refused: no configured public key is for it";
            return r;
        }
    }
    if (!verified) {
        r.why = "bad signature";
        return r;
    }
    r.claims = nlohmann::json::parse(payload_text, nullptr, false);
    if (!r.claims.is_object()) {
        r.why = "malformed token payload";
        return r;
    }
    bool bad = false;
    std::int64_t t = 0;
    if (numeric_date(r.claims, "exp", t, bad) && now > t + static_cast<std::int64_t>(leeway)) {
        r.why = "token expired";
        return r;
    }
    if (numeric_date(r.claims, "nbf", t, bad) && now + static_cast<std::int64_t>(leeway) < t) {
        r.why = "token not yet valid (nbf)";
        return r;
    }
    if (bad) {
        r.why = "exp or nbf is not a number";
        return r;
    }
    r.ok = true;
    return r;
}

}  // namespace mqttools::auth
