#include "broker/auth/pbkdf2_sha512.hpp"

// SHA512_Transform is deprecated in OpenSSL 3 (in favour of EVP, which is
// what makes PKCS5_PBKDF2_HMAC slow here: an EVP_MAC init, update and
// final per HMAC) but is still exported by Debian 12's libcrypto.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cstdint>
#include <cstring>

namespace mqttools::auth {
namespace {

constexpr std::size_t block_size = 128;  // SHA-512's
constexpr std::size_t digest_size = 64;

// A SHA-512 state after one 128-byte block: HMAC's key XOR ipad or opad,
// computed once per password instead of once per HMAC.
SHA512_CTX keyed_state(const unsigned char (&key)[block_size], unsigned char pad) {
    unsigned char block[block_size];
    for (std::size_t i = 0; i < block_size; ++i) block[i] = key[i] ^ pad;
    SHA512_CTX ctx;
    SHA512_Init(&ctx);
    SHA512_Update(&ctx, block, block_size);
    OPENSSL_cleanse(block, sizeof block);
    return ctx;
}

// The state words as SHA-512's big-endian digest bytes.
void state_bytes(const SHA512_CTX& ctx, unsigned char* out) {
    for (std::size_t i = 0; i < digest_size / 8; ++i) {
        const std::uint64_t v = __builtin_bswap64(ctx.h[i]);
        std::memcpy(out + 8 * i, &v, 8);
    }
}

}  // namespace

void pbkdf2_sha512(std::string_view password, std::span<const unsigned char> salt, int iterations,
                   std::span<unsigned char, 64> out) {
    // HMAC key (RFC 2104): longer than a block, it is hashed first.
    unsigned char key[block_size] = {};
    if (password.size() > block_size) {
        SHA512(reinterpret_cast<const unsigned char*>(password.data()), password.size(), key);
    } else {
        std::memcpy(key, password.data(), password.size());
    }
    SHA512_CTX inner = keyed_state(key, 0x36);
    SHA512_CTX outer = keyed_state(key, 0x5c);
    OPENSSL_cleanse(key, sizeof key);

    // U1 = HMAC(P, S || INT(1)): 64 output bytes are one PBKDF2 block.
    unsigned char u[digest_size];
    SHA512_CTX ctx = inner;
    const unsigned char block_index[4] = {0, 0, 0, 1};
    SHA512_Update(&ctx, salt.data(), salt.size());
    SHA512_Update(&ctx, block_index, sizeof block_index);
    SHA512_Final(u, &ctx);
    ctx = outer;
    SHA512_Update(&ctx, u, digest_size);
    SHA512_Final(u, &ctx);
    std::memcpy(out.data(), u, digest_size);

    // U2..Uc: each HMAC input is one 64-byte U after a keyed block, so both
    // hashes are a single compression of one fixed padded block: U, 0x80,
    // zeros, and the message length (128 + 64 bytes = 1536 bits).
    unsigned char padded[block_size] = {};
    std::memcpy(padded, u, digest_size);
    padded[digest_size] = 0x80;
    padded[block_size - 2] = 0x06;  // 1536 = 0x0600
    for (int k = 1; k < iterations; ++k) {
        ctx = inner;
        SHA512_Transform(&ctx, padded);
        state_bytes(ctx, padded);
        ctx = outer;
        SHA512_Transform(&ctx, padded);
        state_bytes(ctx, padded);
        for (std::size_t i = 0; i < digest_size; ++i) out[i] ^= padded[i];
    }
    OPENSSL_cleanse(u, sizeof u);
    OPENSSL_cleanse(padded, sizeof padded);
    OPENSSL_cleanse(&ctx, sizeof ctx);
    OPENSSL_cleanse(&inner, sizeof inner);
    OPENSSL_cleanse(&outer, sizeof outer);
}

}  // namespace mqttools::auth
