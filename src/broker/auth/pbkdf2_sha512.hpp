// PBKDF2-HMAC-SHA512 (RFC 8018 section 5.2) for the $7$ hashes of
// Mosquitto's password files, 1.7x faster than OpenSSL 3's
// PKCS5_PBKDF2_HMAC: every CONNECT checked against a $7$ file pays
// `iterations` rounds of it (1,000 by default), and in a reconnect storm
// that is most of the broker's work (docs/profiling.md).
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace mqttools::auth {

// The first 64 bytes of PBKDF2-HMAC-SHA512(password, salt, iterations):
// the same bytes as PKCS5_PBKDF2_HMAC(..., EVP_sha512(), 64, out)
// (tests/auth/test_password.cpp compares them). iterations >= 1.
void pbkdf2_sha512(std::string_view password, std::span<const unsigned char> salt, int iterations,
                   std::span<unsigned char, 64> out);

}  // namespace mqttools::auth
