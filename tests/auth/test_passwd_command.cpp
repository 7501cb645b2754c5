#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "broker/auth/password_file.hpp"
#include "test_support.hpp"
#include "tools/passwd_command.hpp"

using namespace mqttools::auth;

namespace {

int passwd(std::vector<std::string> args) {
    args.insert(args.begin(), "passwd");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    return mqttools::tools::run_passwd_command(static_cast<int>(args.size()), argv.data());
}

bool verifies(const std::string& path, const std::string& user, const std::string& password) {
    const auto file = PasswordFile::load(path);
    const PasswordHash* h = file.find(user);
    return h && verify_password(*h, password);
}

}  // namespace

TEST_CASE("passwd -c -b creates a 0600 file with a $7$ hash", "[auth][passwd]") {
    auth_test::TempDir dir;
    const auto path = dir.file("pw");
    REQUIRE(passwd({"-c", "-b", path, "alice", "s3cret"}) == 0);
    struct stat st{};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    const auto text = auth_test::read_file(path);
    CHECK(text.rfind("alice:$7$1000$", 0) == 0);
    CHECK(std::count(text.begin(), text.end(), '\n') == 1);
    CHECK(verifies(path, "alice", "s3cret"));
    CHECK_FALSE(verifies(path, "alice", "s3cre"));
    // -c overwrites.
    REQUIRE(passwd({"-cb", path, "bob", "pw"}) == 0);
    CHECK(PasswordFile::load(path).find("alice") == nullptr);
    CHECK(verifies(path, "bob", "pw"));
}

TEST_CASE("passwd adds, updates and deletes users, keeping other lines", "[auth][passwd]") {
    auth_test::TempDir dir;
    const auto path = dir.file("pw");
    auth_test::write_file(path, "# managed by hand\n");
    REQUIRE(passwd({"-b", path, "alice", "one"}) == 0);
    REQUIRE(passwd({"-b", "-H", "sha512", path, "bob", "two"}) == 0);
    REQUIRE(passwd({"-b", "-I", "5000", path, "carol", "three"}) == 0);
    REQUIRE(passwd({"-b", path, "alice", "uno"}) == 0);  // update in place
    auto text = auth_test::read_file(path);
    CHECK(text.rfind("# managed by hand\nalice:$7$", 0) == 0);
    CHECK(text.find("bob:$6$") != std::string::npos);
    CHECK(text.find("carol:$7$5000$") != std::string::npos);
    CHECK(verifies(path, "alice", "uno"));
    CHECK_FALSE(verifies(path, "alice", "one"));
    CHECK(verifies(path, "bob", "two"));
    CHECK(verifies(path, "carol", "three"));
    REQUIRE(passwd({"-D", path, "bob"}) == 0);
    CHECK(PasswordFile::load(path).find("bob") == nullptr);
    CHECK(verifies(path, "carol", "three"));
    CHECK(passwd({"-D", path, "bob"}) == 1);  // no longer there
}

TEST_CASE("passwd -U hashes a plain text file once", "[auth][passwd]") {
    auth_test::TempDir dir;
    const auto path = dir.file("pw");
    auth_test::write_file(path, "# plain\nalice:pa:ss\nbob:hunter2\n");
    REQUIRE(passwd({"-U", path}) == 0);
    CHECK(verifies(path, "alice", "pa:ss"));
    CHECK(verifies(path, "bob", "hunter2"));
    const auto once = auth_test::read_file(path);
    REQUIRE(passwd({"-U", path}) == 0);  // already hashed lines stay as they are
    CHECK(auth_test::read_file(path) == once);
}

TEST_CASE("passwd refuses bad usage", "[auth][passwd]") {
    auth_test::TempDir dir;
    const auto path = dir.file("pw");
    CHECK(passwd({"-b", path, "alice", "x"}) == 1);  // no file and no -c
    CHECK(passwd({"-c", "-b", path, "al:ice", "x"}) == 1);
    CHECK(passwd({"-c", "-b", path, "alice", ""}) == 1);
    CHECK(passwd({"-c", "-D", path, "alice"}) == 1);
    CHECK(passwd({"-H", "md5", "-c", "-b", path, "alice", "x"}) == 1);
    CHECK(passwd({"-I", "0", "-c", "-b", path, "alice", "x"}) == 1);
    CHECK(passwd({"-c", "-b", path, "alice"}) == 1);
    CHECK(passwd({"-x", path, "alice"}) == 1);
    CHECK(passwd({}) == 1);
}

TEST_CASE("mosquitto_passwd and mqttools passwd share one file", "[auth][passwd][interop]") {
    REQUIRE(auth_test::have("mosquitto_passwd"));
    auth_test::TempDir dir;
    const auto path = dir.file("pw");
    REQUIRE(auth_test::run("mosquitto_passwd -c -b " + path + " m1 fromMosquitto") == 0);
    REQUIRE(passwd({"-b", path, "q1", "fromUs"}) == 0);
    REQUIRE(auth_test::run("mosquitto_passwd -b " + path + " m2 alsoMosquitto") == 0);
    CHECK(verifies(path, "m1", "fromMosquitto"));
    CHECK(verifies(path, "q1", "fromUs"));
    CHECK(verifies(path, "m2", "alsoMosquitto"));
    REQUIRE(auth_test::run("mosquitto_passwd -D " + path + " q1") == 0);
    CHECK(PasswordFile::load(path).find("q1") == nullptr);
    CHECK(verifies(path, "m1", "fromMosquitto"));
}
