// A growable byte buffer with a read offset: bytes are appended at the end
// (prepare + commit, no zero-filling) and consumed from the front. Used for
// the client's outgoing packets and its receive buffer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <utility>

#include "mqttools/packets.hpp"

namespace mqttools::client_detail {

class ByteBuffer {
public:
    std::byte* data() noexcept { return data_.get() + begin_; }
    const std::byte* data() const noexcept { return data_.get() + begin_; }
    std::size_t size() const noexcept { return end_ - begin_; }
    bool empty() const noexcept { return end_ == begin_; }
    Bytes view() const noexcept { return {data(), size()}; }

    // Room for n more bytes at the end; write into it, then commit().
    MutableBytes prepare(std::size_t n) {
        if (cap_ - end_ < n) {
            if (begin_ > 0 && cap_ - size() >= n && size() <= cap_ / 2) {
                // Enough room once the consumed front is reclaimed.
                std::memmove(data_.get(), data(), size());
            } else {
                const std::size_t new_cap = std::max(cap_ * 2, size() + n + 256);
                auto bigger = std::make_unique_for_overwrite<std::byte[]>(new_cap);
                if (size() > 0) std::memcpy(bigger.get(), data(), size());
                data_ = std::move(bigger);
                cap_ = new_cap;
            }
            end_ = size();
            begin_ = 0;
        }
        return {data_.get() + end_, n};
    }
    void commit(std::size_t n) noexcept { end_ += n; }

    void append(Bytes bytes) {
        if (bytes.empty()) return;
        auto room = prepare(bytes.size());
        std::memcpy(room.data(), bytes.data(), bytes.size());
        commit(bytes.size());
    }

    void consume(std::size_t n) noexcept {
        begin_ += n;
        if (begin_ >= end_) begin_ = end_ = 0;
    }
    void clear() noexcept { begin_ = end_ = 0; }

    void swap(ByteBuffer& other) noexcept {
        std::swap(data_, other.data_);
        std::swap(begin_, other.begin_);
        std::swap(end_, other.end_);
        std::swap(cap_, other.cap_);
    }

private:
    std::unique_ptr<std::byte[]> data_;
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
    std::size_t cap_ = 0;
};

}  // namespace mqttools::client_detail
