#include "broker/auth/memory_guard.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdlib>

#if defined(__SANITIZE_ADDRESS__)
#define MQTTOOLS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MQTTOOLS_ASAN 1
#endif
#endif
#ifdef MQTTOOLS_ASAN
// From <sanitizer/allocator_interface.h>, which gcc does not install.
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace mqttools::auth {
namespace {

std::uint64_t resident_bytes() noexcept {
    // /proc/self/statm: size resident shared text lib data dt (in pages).
    const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[128];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    char* end = nullptr;
    (void)std::strtoull(buf, &end, 10);  // total size: skip it
    const unsigned long long pages = std::strtoull(end, nullptr, 10);
    return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace

std::uint64_t process_memory_in_use() noexcept {
#ifdef MQTTOOLS_ASAN
    // AddressSanitizer's allocator replaces glibc's and keeps freed memory
    // in quarantine: ask it what is really allocated.
    return __sanitizer_get_current_allocated_bytes();
#endif
    const struct mallinfo2 info = ::mallinfo2();
    const std::uint64_t heap = info.uordblks + info.hblkhd;
    // Heap in use, not RSS: freed memory the allocator keeps (and pages of
    // the binary) must not count, or the limit would never release. Zero
    // means glibc's allocator is not the one in use: fall back to RSS.
    if (heap != 0) return heap;
    return resident_bytes();
}

void MemoryGuard::sample() noexcept {
    if (limit_ == 0) return;
    in_use_ = process_memory_in_use();
    update();
}

}  // namespace mqttools::auth
