// A connection's pending output: a ring of segments, each a slice of a
// SharedBuffer. Fanned-out PUBLISH packets are appended by reference;
// packets only this connection sends (CONNACK, acks, QoS 1/2 PUBLISH with
// its own packet id) are encoded straight into a private tail buffer with
// reserve()/commit(). flush() hands up to 64 slices to one writev.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "mqttools/packets.hpp"
#include "net/shared_buffer.hpp"

namespace mqttools::net {

class OutputQueue {
public:
    OutputQueue() = default;
    ~OutputQueue();
    OutputQueue(const OutputQueue&) = delete;
    OutputQueue& operator=(const OutputQueue&) = delete;

    // Appends buf[offset, offset+len) by reference.
    void append(const BufferRef& buf, std::uint32_t offset, std::uint32_t len);
    // Space for `n` bytes at the tail; write into it, then commit(written).
    MutableBytes reserve(std::size_t n);
    void commit(std::size_t n) noexcept;
    // Moves every segment of `other` to this queue's tail (no copy);
    // `other` is left empty.
    void splice(OutputQueue& other);

    std::size_t bytes() const noexcept { return bytes_; }
    bool empty() const noexcept { return bytes_ == 0; }

    // Fills at most `max` iovecs from the head; returns how many.
    int fill_iov(iovec* iov, int max) const noexcept;
    // Drops `n` written bytes from the head.
    void consume(std::size_t n) noexcept;
    void clear() noexcept;

private:
    // 16 bytes: an idle connection's queue is its inline ring and nothing
    // else. A segment never exceeds one packet or one shared buffer, both
    // below 2^31 bytes (Maximum Packet Size <= 268,435,460), so the top bit
    // of `len` is free for the private-buffer flag.
    struct Segment {
        SharedBuffer* buf = nullptr;
        std::uint32_t offset = 0;
        std::uint32_t len_flags = 0;

        static constexpr std::uint32_t writable_bit = 0x80000000u;
        std::uint32_t len() const noexcept { return len_flags & ~writable_bit; }
        bool writable() const noexcept { return (len_flags & writable_bit) != 0; }
        void grow(std::uint32_t n) noexcept { len_flags += n; }
        void shrink_front(std::uint32_t n) noexcept {
            offset += n;
            len_flags -= n;
        }
    };
    static constexpr std::uint32_t inline_segments = 2;

    Segment& at(std::size_t i) noexcept { return ring_[(head_ + i) & (capacity_ - 1)]; }
    const Segment& at(std::size_t i) const noexcept { return ring_[(head_ + i) & (capacity_ - 1)]; }
    void push(const Segment& s);
    void pop_front() noexcept;

    // A power-of-two ring: the inline pair until more segments are queued
    // at once, then the heap (kept while the connection lives: a busy
    // subscriber would otherwise allocate per turn).
    Segment* ring_ = inline_;
    std::uint32_t capacity_ = inline_segments;
    std::uint32_t head_ = 0;
    std::uint32_t count_ = 0;
    std::size_t bytes_ = 0;
    Segment inline_[inline_segments];
};

}  // namespace mqttools::net
