#include <catch2/catch.hpp>
#include <cstring>
#include <memory>

#include "broker/auth/memory_guard.hpp"

using namespace mqttools::auth;

TEST_CASE("memory in use follows allocations", "[auth][limits]") {
    const auto before = process_memory_in_use();
    CHECK(before > 0);
    constexpr std::size_t big = 64u << 20;
    auto block = std::make_unique<char[]>(big);
    std::memset(block.get(), 1, big);  // touch it, so RSS counts it too
    // Keep the optimizer from eliding the allocation (clang does).
    asm volatile("" : : "r"(block.get()) : "memory");
    const auto during = process_memory_in_use();
    CHECK(during >= before + big / 2);
    block.reset();
    CHECK(process_memory_in_use() < during);
}

TEST_CASE("MemoryGuard trips above its limit only", "[auth][limits]") {
    MemoryGuard unlimited;
    unlimited.sample();
    CHECK_FALSE(unlimited.exceeded());

    MemoryGuard tiny(1);  // any process uses more than one byte
    tiny.sample();
    CHECK(tiny.exceeded());

    MemoryGuard guard(100);
    guard.set_in_use(100);
    CHECK_FALSE(guard.exceeded());
    guard.set_in_use(101);
    CHECK(guard.exceeded());
    guard.set_limit(0);
    CHECK_FALSE(guard.exceeded());
}

TEST_CASE("MemoryGuard refuses until use falls below 15/16 of its limit", "[auth][limits]") {
    MemoryGuard guard(1600);
    guard.set_in_use(1500);
    CHECK_FALSE(guard.exceeded());
    guard.set_in_use(1601);
    CHECK(guard.exceeded());
    guard.set_in_use(1600);  // back at the limit: still refusing
    CHECK(guard.exceeded());
    guard.set_in_use(1500);  // exactly 15/16: still refusing
    CHECK(guard.exceeded());
    guard.set_in_use(1499);
    CHECK_FALSE(guard.exceeded());
    guard.set_in_use(1550);  // below the limit again, not refusing: stays so
    CHECK_FALSE(guard.exceeded());
    guard.set_in_use(1700);
    guard.set_limit(2000);  // a reload with a higher limit judges afresh
    CHECK_FALSE(guard.exceeded());
}
