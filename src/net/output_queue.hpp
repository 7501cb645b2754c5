// A connection's pending output: a ring of segments, each a slice of a
// SharedBuffer. Fanned-out PUBLISH packets are appended by reference;
// packets only this connection sends (CONNACK, acks, QoS 1/2 PUBLISH with
// its own packet id) are encoded straight into a private tail buffer with
// reserve()/commit(). flush() hands up to 64 slices to one writev.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mqttools/packets.hpp"
#include "net/shared_buffer.hpp"

namespace mqttools::net {

class OutputQueue {
public:
    OutputQueue() = default;
    ~OutputQueue() { clear(); }
    OutputQueue(const OutputQueue&) = delete;
    OutputQueue& operator=(const OutputQueue&) = delete;

    // Appends buf[offset, offset+len) by reference.
    void append(const BufferRef& buf, std::uint32_t offset, std::uint32_t len);
    // Space for `n` bytes at the tail; write into it, then commit(written).
    MutableBytes reserve(std::size_t n);
    void commit(std::size_t n) noexcept;

    std::size_t bytes() const noexcept { return bytes_; }
    bool empty() const noexcept { return bytes_ == 0; }

    // Fills at most `max` iovecs from the head; returns how many.
    int fill_iov(iovec* iov, int max) const noexcept;
    // Drops `n` written bytes from the head.
    void consume(std::size_t n) noexcept;
    void clear() noexcept;

private:
    struct Segment {
        SharedBuffer* buf = nullptr;
        std::uint32_t offset = 0;
        std::uint32_t len = 0;
        bool writable = false;  // a private buffer: reserve() may extend it
    };
    Segment& at(std::size_t i) noexcept { return ring_[(head_ + i) & (ring_.size() - 1)]; }
    const Segment& at(std::size_t i) const noexcept { return ring_[(head_ + i) & (ring_.size() - 1)]; }
    void push(const Segment& s);
    void pop_front() noexcept;

    std::vector<Segment> ring_;  // size is 0 or a power of two
    std::size_t head_ = 0;
    std::size_t count_ = 0;
    std::size_t bytes_ = 0;
};

}  // namespace mqttools::net
