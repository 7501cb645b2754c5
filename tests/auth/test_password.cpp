#include <catch2/catch.hpp>

#include "broker/auth/authenticator.hpp"
#include "broker/auth/password_file.hpp"
#include "broker/auth/password_hash.hpp"
#include "broker/auth/pbkdf2_sha512.hpp"

#include <openssl/evp.h>

#include <cstring>
#include <random>
#include "test_support.hpp"

using namespace mqttools;
using namespace mqttools::auth;

namespace {

// Written by Debian's mosquitto_passwd 2.0.11 (alice: -b, bob: -H sha512).
constexpr const char* mosquitto_file =
    "alice:$7$101$Eye6WnG98O5/Vt42$JJ3YNMJpXLp2N0gikYLlSQEpjTA6Y0FI3jBKJl6qsJqaxqncYzLGu6eIXiVLX"
    "vy1/rNZs24ERTsxNtQQ91nGAg==\n"
    "bob:$6$rIwLygsNsOA+U4Xh$eZQbfJrrihpgICTkb6EuA9JokrW1wgenN8+ZpeSP5YMsFDu2+qk4DvMLCiyAQP3XdYTp"
    "ynaQ63CZMLGE5ui0YQ==\n";

Bytes pw(std::string_view s) { return as_bytes(s); }

}  // namespace

TEST_CASE("base64 round trip and rejection of garbage", "[auth][password]") {
    const std::vector<unsigned char> data{0, 1, 2, 250, 251, 252, 253};
    for (std::size_t n = 0; n <= data.size(); ++n) {
        std::span<const unsigned char> part(data.data(), n);
        const auto text = base64_encode(part);
        if (n == 0) {
            CHECK(text.empty());
            continue;
        }
        const auto back = base64_decode(text);
        REQUIRE(back);
        CHECK(std::vector<unsigned char>(part.begin(), part.end()) == *back);
    }
    CHECK_FALSE(base64_decode("abc"));
    CHECK_FALSE(base64_decode("ab!d"));
    CHECK_FALSE(base64_decode(""));
}

TEST_CASE("hashes written by mosquitto_passwd verify unchanged", "[auth][password]") {
    const auto file = PasswordFile::parse(mosquitto_file);
    REQUIRE(file.size() == 2);
    const PasswordHash* alice = file.find("alice");
    const PasswordHash* bob = file.find("bob");
    REQUIRE(alice);
    REQUIRE(bob);
    CHECK(alice->kind == HashKind::pbkdf2_sha512);
    CHECK(alice->iterations == 101);
    CHECK(alice->salt.size() == 12);
    CHECK(bob->kind == HashKind::sha512);
    CHECK(verify_password(*alice, "secret"));
    CHECK_FALSE(verify_password(*alice, "secreT"));
    CHECK_FALSE(verify_password(*alice, ""));
    CHECK(verify_password(*bob, "hunter2"));
    CHECK_FALSE(verify_password(*bob, "hunter3"));
    CHECK(file.find("carol") == nullptr);
    // Formatting reproduces mosquitto's text byte for byte.
    const std::string text = mosquitto_file;
    CHECK(text.find("alice:" + format_password_hash(*alice) + "\n") == 0);
    CHECK(text.find("bob:" + format_password_hash(*bob) + "\n") != std::string::npos);
}

TEST_CASE("a file made by the installed mosquitto_passwd at test time verifies",
          "[auth][password][interop]") {
    REQUIRE(auth_test::have("mosquitto_passwd"));
    auth_test::TempDir dir;
    const auto path = dir.file("pw");
    REQUIRE(auth_test::run("mosquitto_passwd -c -b " + path + " u1 'p w 1'") == 0);
    REQUIRE(auth_test::run("mosquitto_passwd -b " + path + " u2 second") == 0);
    REQUIRE(auth_test::run("mosquitto_passwd -H sha512 -b " + path + " u3 third") == 0);
    const auto file = PasswordFile::load(path);
    REQUIRE(file.size() == 3);
    CHECK(verify_password(*file.find("u1"), "p w 1"));
    CHECK_FALSE(verify_password(*file.find("u1"), "p w 2"));
    CHECK(verify_password(*file.find("u2"), "second"));
    CHECK(file.find("u3")->kind == HashKind::sha512);
    CHECK(verify_password(*file.find("u3"), "third"));
    CHECK_FALSE(verify_password(*file.find("u3"), "second"));
}

TEST_CASE("pbkdf2_sha512 gives OpenSSL's PKCS5_PBKDF2_HMAC bytes", "[auth][password]") {
    // Passwords around HMAC's 128-byte block (longer ones are hashed
    // first), empty ones, salts of several lengths, iteration counts 1..,
    // against OpenSSL's own PBKDF2 as the reference.
    std::mt19937 rng(1234);
    for (std::size_t password_size : {0u, 1u, 11u, 64u, 127u, 128u, 129u, 300u}) {
        for (std::size_t salt_size : {0u, 12u, 16u, 200u}) {
            for (int iterations : {1, 2, 3, 101, 1000}) {
                std::string password(password_size, '\0');
                for (char& ch : password) ch = static_cast<char>(rng());
                std::vector<unsigned char> salt(salt_size);
                for (unsigned char& b : salt) b = static_cast<unsigned char>(rng());
                unsigned char expected[64];
                REQUIRE(PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), salt.data(),
                                          static_cast<int>(salt.size()), iterations, EVP_sha512(), 64,
                                          expected) == 1);
                unsigned char got[64];
                pbkdf2_sha512(password, salt, iterations, got);
                INFO("password " << password_size << " salt " << salt_size << " iterations " << iterations);
                CHECK(std::memcmp(got, expected, 64) == 0);
            }
        }
    }
}

TEST_CASE("new hashes: 12-byte salt, configurable iterations, round trip", "[auth][password]") {
    const auto h = make_password_hash("pa:ss", HashKind::pbkdf2_sha512, 2000);
    REQUIRE(h);
    CHECK(h->salt.size() == 12);
    CHECK(h->iterations == 2000);
    const auto text = format_password_hash(*h);
    CHECK(text.rfind("$7$2000$", 0) == 0);
    const auto back = parse_password_hash(text);
    REQUIRE(back);
    CHECK(verify_password(*back, "pa:ss"));
    CHECK_FALSE(verify_password(*back, "pa:sS"));
    const auto h6 = make_password_hash("x", HashKind::sha512);
    REQUIRE(h6);
    CHECK(format_password_hash(*h6).rfind("$6$", 0) == 0);
    CHECK(verify_password(*parse_password_hash(format_password_hash(*h6)), "x"));
    // Two hashes of one password differ (random salt).
    CHECK(format_password_hash(*make_password_hash("same")) !=
          format_password_hash(*make_password_hash("same")));
}

TEST_CASE("malformed hashes and files are refused", "[auth][password]") {
    CHECK_FALSE(parse_password_hash("plaintext"));
    CHECK_FALSE(parse_password_hash("$5$abcd$abcd"));
    CHECK_FALSE(parse_password_hash("$7$0$Eye6WnG98O5/Vt42$JJ3Y"));
    CHECK_FALSE(parse_password_hash("$7$x$Eye6WnG98O5/Vt42$JJ3Y"));
    CHECK_FALSE(parse_password_hash("$7$99999999999$Eye6WnG98O5/Vt42$JJ3Y"));
    CHECK_FALSE(parse_password_hash("$6$Eye6WnG98O5/Vt42$c2hvcnQ="));  // hash too short
    CHECK_THROWS_WITH(PasswordFile::parse("# c\n\nalice:plain\n", "pw"),
                      Catch::Contains("pw:3:"));
    CHECK_THROWS_WITH(PasswordFile::parse("nocolon\n", "pw"), Catch::Contains("pw:1:"));
    CHECK_THROWS(PasswordFile::load("/nonexistent/mqttools/pw"));
    // Comments, blank lines, CRLF line ends are fine.
    std::string crlf = mosquitto_file;
    crlf.insert(0, "# users\r\n\r\n");
    for (std::size_t p = crlf.find('\n', 12); p != std::string::npos; p = crlf.find('\n', p + 2)) {
        crlf.insert(p, "\r");
    }
    CHECK(PasswordFile::parse(crlf).size() == 2);
}

TEST_CASE("Authenticator decisions and reason codes", "[auth][password]") {
    SECTION("no password file, anonymous allowed") {
        Authenticator a;
        CHECK(a.check(std::nullopt, std::nullopt) == ReasonCode::success);
        CHECK(a.check("anyone", pw("x")) == ReasonCode::success);
    }
    SECTION("no password file, anonymous refused: nobody gets in") {
        Authenticator a(false, std::nullopt);
        CHECK(a.check(std::nullopt, std::nullopt) == ReasonCode::not_authorized);
        CHECK(a.check("alice", pw("secret")) == ReasonCode::not_authorized);
    }
    SECTION("password file, anonymous refused") {
        Authenticator a(false, PasswordFile::parse(mosquitto_file));
        CHECK(a.check("alice", pw("secret")) == ReasonCode::success);
        CHECK(a.check("bob", pw("hunter2")) == ReasonCode::success);
        CHECK(a.check("alice", pw("hunter2")) == ReasonCode::bad_user_name_or_password);
        CHECK(a.check("alice", std::nullopt) == ReasonCode::bad_user_name_or_password);
        CHECK(a.check("mallory", pw("secret")) == ReasonCode::bad_user_name_or_password);
        CHECK(a.check(std::nullopt, std::nullopt) == ReasonCode::not_authorized);
        CHECK(a.check(std::nullopt, pw("secret")) == ReasonCode::not_authorized);
        // A password with an embedded NUL is not the stored one.
        const std::string nul("secret\0x", 8);
        CHECK(a.check("alice", pw(nul)) == ReasonCode::bad_user_name_or_password);
    }
    SECTION("password file, anonymous allowed: known names still need their password") {
        Authenticator a(true, PasswordFile::parse(mosquitto_file));
        CHECK(a.check(std::nullopt, std::nullopt) == ReasonCode::success);
        CHECK(a.check("alice", pw("nope")) == ReasonCode::bad_user_name_or_password);
        CHECK(a.check("mallory", pw("x")) == ReasonCode::bad_user_name_or_password);
    }
}
