// Reference-counted immutable byte buffers from a recycling pool. A PUBLISH
// fanned out to N subscribers is encoded once into one SharedBuffer and
// each subscriber's OutputQueue holds a reference to it. Buffers come from
// per-size-class free lists, so after warm-up the forward path allocates
// nothing. Single-threaded by design (the reactor's thread): the count is
// a plain integer.
//
// An external buffer refers to bytes something else owns (a big stored
// message's payload): it keeps that owner alive through a shared_ptr, so a
// 16 MB payload queued to ten subscribers is in memory once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

#include "mqttools/packets.hpp"

namespace mqttools::net {

struct SharedBuffer {
    SharedBuffer* next_free = nullptr;  // free list link while pooled
    std::byte* bytes = nullptr;         // right behind this header, or the owner's bytes
    std::uint32_t refs = 0;
    std::uint32_t capacity = 0;
    std::uint8_t size_class = 0;

    std::byte* data() noexcept { return bytes; }
};

// Returns a buffer with at least `capacity` bytes and one reference.
SharedBuffer* acquire_buffer(std::size_t capacity);
void release_buffer(SharedBuffer* buffer) noexcept;  // drops one reference
// A read-only buffer over `size` bytes at `data`, which `owner` keeps
// alive until the last reference is released (on the reactor thread; the
// owner's own count is atomic, so other threads may hold it too).
SharedBuffer* external_buffer(std::shared_ptr<const void> owner, const std::byte* data, std::size_t size);

class BufferRef {
public:
    BufferRef() noexcept = default;
    explicit BufferRef(std::size_t capacity) : buf_(acquire_buffer(capacity)) {}
    // Adopts a buffer whose reference the caller owns.
    static BufferRef adopt(SharedBuffer* b) noexcept {
        BufferRef r;
        r.buf_ = b;
        return r;
    }
    // See external_buffer(): never written through (OutputQueue only
    // appends it; it writes into its own private buffers).
    static BufferRef external(std::shared_ptr<const void> owner, Bytes bytes) {
        return adopt(external_buffer(std::move(owner), bytes.data(), bytes.size()));
    }
    ~BufferRef() { reset(); }
    BufferRef(const BufferRef& o) noexcept : buf_(o.buf_) {
        if (buf_) ++buf_->refs;
    }
    BufferRef& operator=(const BufferRef& o) noexcept {
        BufferRef copy(o);
        std::swap(buf_, copy.buf_);
        return *this;
    }
    BufferRef(BufferRef&& o) noexcept : buf_(std::exchange(o.buf_, nullptr)) {}
    BufferRef& operator=(BufferRef&& o) noexcept {
        if (this != &o) {
            reset();
            buf_ = std::exchange(o.buf_, nullptr);
        }
        return *this;
    }

    void reset() noexcept {
        if (buf_) release_buffer(std::exchange(buf_, nullptr));
    }
    SharedBuffer* get() const noexcept { return buf_; }
    std::byte* data() const noexcept { return buf_->data(); }
    std::uint32_t capacity() const noexcept { return buf_ ? buf_->capacity : 0; }
    explicit operator bool() const noexcept { return buf_ != nullptr; }
    // A new reference for a holder that manages it by hand (OutputQueue).
    SharedBuffer* share() const noexcept {
        ++buf_->refs;
        return buf_;
    }

private:
    SharedBuffer* buf_ = nullptr;
};

// Bytes held by the pools' free lists (for tests and metrics).
std::size_t pooled_buffer_bytes() noexcept;

}  // namespace mqttools::net
