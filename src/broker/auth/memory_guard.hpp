// memory_limit: the broker refuses new work (CONNECT, SUBSCRIBE, QoS 1/2
// PUBLISH get 0x97 Quota exceeded; QoS 0 is dropped) while the process uses
// more than the limit, instead of growing until the OOM killer ends it.
#pragma once

#include <cstdint>

namespace mqttools::auth {

// Heap bytes the process has allocated and not freed: glibc's mallinfo2,
// AddressSanitizer's allocator statistics under ASan, and the resident set
// size only where neither says anything.
std::uint64_t process_memory_in_use() noexcept;

class MemoryGuard {
public:
    explicit MemoryGuard(std::uint64_t limit_bytes = 0) noexcept : limit_(limit_bytes) {}

    // Re-measures; call from a periodic timer (e.g. every 100 ms) and after
    // large allocations. A no-op without a limit.
    void sample() noexcept;

    // Test hook and for callers that account memory themselves.
    void set_in_use(std::uint64_t bytes) noexcept {
        in_use_ = bytes;
        update();
    }

    // Refusing starts above the limit and ends only below 15/16 of it: the
    // work that tipped it over (a big PUBLISH in its receive buffer) is
    // freed right after its refusal, and without the margin the next
    // CONNECT would be let in at the edge, its SUBSCRIBE refused, and so on.
    bool exceeded() const noexcept { return refusing_; }
    std::uint64_t in_use() const noexcept { return in_use_; }
    std::uint64_t limit() const noexcept { return limit_; }
    void set_limit(std::uint64_t limit_bytes) noexcept {
        limit_ = limit_bytes;
        refusing_ = false;
        update();
    }

private:
    void update() noexcept {
        if (limit_ == 0)
            refusing_ = false;
        else if (in_use_ > limit_)
            refusing_ = true;
        else if (in_use_ < limit_ - limit_ / 16)
            refusing_ = false;
    }

    std::uint64_t limit_;
    std::uint64_t in_use_ = 0;
    bool refusing_ = false;
};

}  // namespace mqttools::auth
