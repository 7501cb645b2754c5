#include <poll.h>

#include <chrono>
#include <map>

#include <catch2/catch.hpp>

#include "broker/auth/auth_pool.hpp"
#include "broker/auth/password_file.hpp"
#include "broker/auth/password_hash.hpp"

using namespace mqttools;
using namespace mqttools::auth;

namespace {

std::shared_ptr<const Authenticator> authenticator_with(std::string_view user, std::string_view password) {
    const auto hash = make_password_hash(password, HashKind::pbkdf2_sha512, 1000);
    REQUIRE(hash);
    const std::string text = std::string(user) + ":" + format_password_hash(*hash) + "\n";
    return std::make_shared<const Authenticator>(false, PasswordFile::parse(text));
}

// Waits on the eventfd (bounded) until `want` results have come.
std::map<std::uint64_t, ReasonCode> collect(AuthPool& pool, std::size_t want) {
    std::map<std::uint64_t, ReasonCode> got;
    std::vector<AuthPool::Result> results;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (got.size() < want && std::chrono::steady_clock::now() < deadline) {
        pollfd p{pool.event_fd(), POLLIN, 0};
        if (::poll(&p, 1, 1000) <= 0) continue;
        results.clear();
        pool.take_results(results);
        for (const auto& r : results) got.emplace(r.ticket, r.reason);
    }
    return got;
}

AuthPool::Job job(std::uint64_t ticket, std::shared_ptr<const Authenticator> a,
                  std::optional<std::string> user, std::optional<std::string> password) {
    AuthPool::Job j;
    j.ticket = ticket;
    j.authenticator = std::move(a);
    j.username = std::move(user);
    j.password = std::move(password);
    return j;
}

}  // namespace

TEST_CASE("AuthPool answers every check through its eventfd", "[auth][pool]") {
    auto a = authenticator_with("alice", "wonderland");
    REQUIRE(a->needs_hashing(std::string_view("alice")));
    REQUIRE_FALSE(a->needs_hashing(std::nullopt));
    AuthPool pool(2);
    CHECK(pool.threads() == 2);
    constexpr std::uint64_t n = 24;
    for (std::uint64_t t = 1; t <= n; ++t) {
        switch (t % 4) {
            case 0: pool.submit(job(t, a, "alice", "wonderland")); break;
            case 1: pool.submit(job(t, a, "alice", "wrong")); break;
            case 2: pool.submit(job(t, a, "mallory", "wonderland")); break;
            default: pool.submit(job(t, a, "alice", std::nullopt)); break;
        }
    }
    const auto got = collect(pool, n);
    REQUIRE(got.size() == n);
    for (const auto& [ticket, reason] : got) {
        INFO("ticket " << ticket);
        CHECK(reason == (ticket % 4 == 0 ? ReasonCode::success : ReasonCode::bad_user_name_or_password));
    }
    // Nothing more is signalled once everything was taken.
    pollfd p{pool.event_fd(), POLLIN, 0};
    CHECK(::poll(&p, 1, 50) == 0);
}

TEST_CASE("AuthPool judges a job by the authenticator it was given", "[auth][pool]") {
    auto before = authenticator_with("alice", "old");
    auto after = authenticator_with("alice", "new");
    AuthPool pool(1);
    pool.submit(job(1, before, "alice", "old"));
    pool.submit(job(2, after, "alice", "old"));
    const auto got = collect(pool, 2);
    REQUIRE(got.size() == 2);
    CHECK(got.at(1) == ReasonCode::success);
    CHECK(got.at(2) == ReasonCode::bad_user_name_or_password);
}

TEST_CASE("AuthPool stops promptly with checks still queued", "[auth][pool]") {
    const auto hash = make_password_hash("pw", HashKind::pbkdf2_sha512, 100000);
    REQUIRE(hash);
    auto a = std::make_shared<const Authenticator>(
        false, PasswordFile::parse("u:" + format_password_hash(*hash) + "\n"));
    const auto t0 = std::chrono::steady_clock::now();
    {
        AuthPool pool(1);
        for (std::uint64_t t = 1; t <= 200; ++t) pool.submit(job(t, a, "u", "pw"));
    }
    // At most the one check in progress is finished; the queue is dropped.
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
}
