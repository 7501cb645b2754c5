#include "broker/auth/password_hash.hpp"

#include "broker/auth/pbkdf2_sha512.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <charconv>
#include <memory>

namespace mqttools::auth {
namespace {

// The digest Mosquitto computes (mosquitto_passwd.c, pw__digest): SHA512 of
// the password bytes followed by the salt bytes, or PBKDF2-HMAC-SHA512 with
// a 64-byte output.
bool digest(HashKind kind, int iterations, std::string_view password,
            std::span<const unsigned char> salt, unsigned char (&out)[hash_length]) {
    if (kind == HashKind::sha512) {
        std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                     &EVP_MD_CTX_free);
        unsigned int len = 0;
        return ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha512(), nullptr) == 1 &&
               EVP_DigestUpdate(ctx.get(), password.data(), password.size()) == 1 &&
               EVP_DigestUpdate(ctx.get(), salt.data(), salt.size()) == 1 &&
               EVP_DigestFinal_ex(ctx.get(), out, &len) == 1 && len == hash_length;
    }
    if (iterations <= 0 || iterations > max_iterations || password.size() > 0x7fffffff) {
        return false;
    }
    pbkdf2_sha512(password, salt, iterations, out);
    return true;
}

}  // namespace

std::string base64_encode(std::span<const unsigned char> data) {
    std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(),
                                  static_cast<int>(data.size()));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::optional<std::vector<unsigned char>> base64_decode(std::string_view text) {
    // EVP_DecodeBlock skips no padding and accepts nothing but complete
    // quartets, which is what mosquitto_passwd writes.
    if (text.empty() || text.size() % 4 != 0 || text.size() > 4096) return std::nullopt;
    for (char c : text) {
        const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                        (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=';
        if (!ok) return std::nullopt;
    }
    std::vector<unsigned char> out(text.size() / 4 * 3);
    const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                                  static_cast<int>(text.size()));
    if (n < 0) return std::nullopt;
    // EVP_DecodeBlock counts the padding as zero bytes; drop them.
    std::size_t len = static_cast<std::size_t>(n);
    std::size_t pad = 0;
    if (text.ends_with("==")) pad = 2;
    else if (text.ends_with('=')) pad = 1;
    if (pad > len) return std::nullopt;
    out.resize(len - pad);
    return out;
}

std::optional<PasswordHash> parse_password_hash(std::string_view text) {
    PasswordHash h;
    std::string_view rest;
    if (text.starts_with("$6$")) {
        h.kind = HashKind::sha512;
        rest = text.substr(3);
    } else if (text.starts_with("$7$")) {
        h.kind = HashKind::pbkdf2_sha512;
        rest = text.substr(3);
        const auto dollar = rest.find('$');
        if (dollar == std::string_view::npos) return std::nullopt;
        const auto digits = rest.substr(0, dollar);
        const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(),
                                               h.iterations);
        if (ec != std::errc{} || end != digits.data() + digits.size() || h.iterations <= 0 ||
            h.iterations > max_iterations) {
            return std::nullopt;
        }
        rest = rest.substr(dollar + 1);
    } else {
        return std::nullopt;
    }
    const auto dollar = rest.find('$');
    if (dollar == std::string_view::npos) return std::nullopt;
    auto salt = base64_decode(rest.substr(0, dollar));
    auto hash = base64_decode(rest.substr(dollar + 1));
    if (!salt || !hash || salt->empty() || hash->size() != hash_length) return std::nullopt;
    h.salt = std::move(*salt);
    h.hash = std::move(*hash);
    return h;
}

std::string format_password_hash(const PasswordHash& hash) {
    std::string out = hash.kind == HashKind::sha512 ? "$6$" : "$7$";
    if (hash.kind == HashKind::pbkdf2_sha512) {
        out += std::to_string(hash.iterations);
        out += '$';
    }
    out += base64_encode(hash.salt);
    out += '$';
    out += base64_encode(hash.hash);
    return out;
}

std::optional<PasswordHash> make_password_hash(std::string_view password, HashKind kind,
                                               int iterations) {
    PasswordHash h;
    h.kind = kind;
    h.iterations = kind == HashKind::pbkdf2_sha512 ? iterations : 0;
    h.salt.resize(salt_length);
    if (RAND_bytes(h.salt.data(), static_cast<int>(h.salt.size())) != 1) return std::nullopt;
    unsigned char out[hash_length];
    if (!digest(kind, h.iterations, password, h.salt, out)) return std::nullopt;
    h.hash.assign(out, out + hash_length);
    return h;
}

bool verify_password(const PasswordHash& hash, std::string_view password) {
    unsigned char out[hash_length];
    if (hash.hash.size() != hash_length) return false;
    if (!digest(hash.kind, hash.iterations, password, hash.salt, out)) return false;
    return CRYPTO_memcmp(out, hash.hash.data(), hash_length) == 0;
}

}  // namespace mqttools::auth
