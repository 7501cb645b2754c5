#include "net/shared_buffer.hpp"

#include <array>
#include <new>

namespace mqttools::net {
namespace {

// Size classes: 256 B .. 64 KiB. Larger buffers are allocated exactly and
// freed at once (they are rare: big payloads).
constexpr std::array<std::uint32_t, 5> class_sizes{256, 1024, 4096, 16384, 65536};
constexpr std::uint8_t unpooled = 0xFF;
constexpr std::uint8_t external = 0xFE;
// Each class keeps at most this many idle bytes, so a burst does not pin
// its peak memory forever.
constexpr std::size_t max_pooled_bytes_per_class = 4u << 20;

struct Pool {
    SharedBuffer* head = nullptr;
    std::size_t bytes = 0;
};
std::array<Pool, class_sizes.size()> pools;

SharedBuffer* make(std::uint32_t capacity, std::uint8_t size_class) {
    void* mem = ::operator new(sizeof(SharedBuffer) + capacity);
    auto* b = new (mem) SharedBuffer{};
    b->bytes = reinterpret_cast<std::byte*>(b + 1);
    b->capacity = capacity;
    b->size_class = size_class;
    return b;
}

// The header of an external buffer and what keeps its bytes alive.
struct ExternalBuffer : SharedBuffer {
    std::shared_ptr<const void> owner;
};

}  // namespace

SharedBuffer* external_buffer(std::shared_ptr<const void> owner, const std::byte* data, std::size_t size) {
    auto* b = new ExternalBuffer;
    b->owner = std::move(owner);
    // Read-only in fact: only OutputQueue's private buffers are written.
    b->bytes = const_cast<std::byte*>(data);
    b->capacity = static_cast<std::uint32_t>(size);
    b->size_class = external;
    b->refs = 1;
    return b;
}

SharedBuffer* acquire_buffer(std::size_t capacity) {
    for (std::uint8_t c = 0; c < class_sizes.size(); ++c) {
        if (capacity > class_sizes[c]) continue;
        Pool& pool = pools[c];
        SharedBuffer* b = pool.head;
        if (b) {
            pool.head = b->next_free;
            pool.bytes -= b->capacity;
            b->next_free = nullptr;
        } else {
            b = make(class_sizes[c], c);
        }
        b->refs = 1;
        return b;
    }
    SharedBuffer* b = make(static_cast<std::uint32_t>(capacity), unpooled);
    b->refs = 1;
    return b;
}

void release_buffer(SharedBuffer* b) noexcept {
    if (--b->refs != 0) return;
    if (b->size_class == external) {
        delete static_cast<ExternalBuffer*>(b);
        return;
    }
    if (b->size_class != unpooled) {
        Pool& pool = pools[b->size_class];
        if (pool.bytes + b->capacity <= max_pooled_bytes_per_class) {
            b->next_free = pool.head;
            pool.head = b;
            pool.bytes += b->capacity;
            return;
        }
    }
    b->~SharedBuffer();
    ::operator delete(b);
}

std::size_t pooled_buffer_bytes() noexcept {
    std::size_t total = 0;
    for (const Pool& p : pools) total += p.bytes;
    return total;
}

}  // namespace mqttools::net
