#include "net/output_queue.hpp"

#include <algorithm>

namespace mqttools::net {

void OutputQueue::push(const Segment& s) {
    if (count_ == ring_.size()) {
        // Grow to the next power of two, unrolling the ring in order.
        std::vector<Segment> bigger(std::max<std::size_t>(4, ring_.size() * 2));
        for (std::size_t i = 0; i < count_; ++i) bigger[i] = at(i);
        ring_.swap(bigger);
        head_ = 0;
    }
    at(count_) = s;
    ++count_;
}

void OutputQueue::pop_front() noexcept {
    Segment& s = at(0);
    release_buffer(s.buf);
    s = Segment{};
    head_ = (head_ + 1) & (ring_.size() - 1);
    --count_;
}

void OutputQueue::append(const BufferRef& buf, std::uint32_t offset, std::uint32_t len) {
    if (len == 0) return;
    push(Segment{buf.share(), offset, len, false});
    bytes_ += len;
}

MutableBytes OutputQueue::reserve(std::size_t n) {
    if (count_ > 0) {
        Segment& tail = at(count_ - 1);
        if (tail.writable && tail.buf->capacity - (tail.offset + tail.len) >= n) {
            return {tail.buf->data() + tail.offset + tail.len, n};
        }
    }
    SharedBuffer* b = acquire_buffer(std::max<std::size_t>(n, 4096));
    push(Segment{b, 0, 0, true});
    return {b->data(), n};
}

void OutputQueue::commit(std::size_t n) noexcept {
    if (count_ == 0) return;
    at(count_ - 1).len += static_cast<std::uint32_t>(n);
    bytes_ += n;
}

int OutputQueue::fill_iov(iovec* iov, int max) const noexcept {
    int n = 0;
    for (std::size_t i = 0; i < count_ && n < max; ++i) {
        const Segment& s = at(i);
        if (s.len == 0) continue;
        iov[n].iov_base = s.buf->data() + s.offset;
        iov[n].iov_len = s.len;
        ++n;
    }
    return n;
}

void OutputQueue::consume(std::size_t n) noexcept {
    bytes_ -= std::min(n, bytes_);
    while (count_ > 0) {
        Segment& s = at(0);
        if (n < s.len) {
            s.offset += static_cast<std::uint32_t>(n);
            s.len -= static_cast<std::uint32_t>(n);
            return;
        }
        n -= s.len;
        // Everything written goes back to the pool, the private tail too:
        // an idle connection holds no buffer.
        pop_front();
    }
}

void OutputQueue::clear() noexcept {
    while (count_ > 0) pop_front();
    bytes_ = 0;
    head_ = 0;
}

}  // namespace mqttools::net
