// Password hashes in the exact text form of Mosquitto's password files, so a
// file written by mosquitto_passwd verifies here unchanged and vice versa:
//   $6$<base64 salt>$<base64 hash>               hash = SHA512(password + salt)
//   $7$<iterations>$<base64 salt>$<base64 hash>  hash = PBKDF2-HMAC-SHA512
// Salt and hash are raw bytes, base64 encoded (standard alphabet, padded).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mqttools::auth {

enum class HashKind : std::uint8_t { sha512, pbkdf2_sha512 };

inline constexpr std::size_t salt_length = 12;        // bytes, as mosquitto_passwd
inline constexpr std::size_t hash_length = 64;        // SHA-512 output
inline constexpr int default_iterations = 1000;       // for new $7$ hashes
inline constexpr int max_iterations = 10'000'000;     // bounds work per CONNECT

struct PasswordHash {
    HashKind kind = HashKind::pbkdf2_sha512;
    int iterations = 0;  // $7$ only
    std::vector<unsigned char> salt;
    std::vector<unsigned char> hash;
};

// "$7$101$salt$hash" -> PasswordHash; nullopt when it is not a valid $6$/$7$.
std::optional<PasswordHash> parse_password_hash(std::string_view text);
std::string format_password_hash(const PasswordHash& hash);

// A fresh hash of `password` with a random salt of salt_length bytes.
// nullopt only when OpenSSL fails (no randomness).
std::optional<PasswordHash> make_password_hash(std::string_view password,
                                               HashKind kind = HashKind::pbkdf2_sha512,
                                               int iterations = default_iterations);

// Recomputes the digest and compares in constant time (CRYPTO_memcmp).
bool verify_password(const PasswordHash& hash, std::string_view password);

std::string base64_encode(std::span<const unsigned char> data);
std::optional<std::vector<unsigned char>> base64_decode(std::string_view text);

}  // namespace mqttools::auth
