#include "net/output_queue.hpp"

#include <algorithm>

namespace mqttools::net {

namespace {
// The first private buffer of a drained queue usually carries one control
// packet (CONNACK, SUBACK, an ack): the smallest size class, so thousands
// of connections handshaking at once do not park 4 KiB each in the pool.
// Once packets pile up within a turn, the next buffer is a bigger class.
constexpr std::size_t first_private_buffer = 256;
constexpr std::size_t next_private_buffer = 4096;
}  // namespace

OutputQueue::~OutputQueue() {
    clear();
    if (ring_ != inline_) delete[] ring_;
}

void OutputQueue::push(const Segment& s) {
    if (count_ == capacity_) {
        // Grow to the next power of two, unrolling the ring in order.
        const std::uint32_t bigger = capacity_ * 2;
        auto* ring = new Segment[bigger];
        for (std::uint32_t i = 0; i < count_; ++i) ring[i] = at(i);
        if (ring_ != inline_) delete[] ring_;
        ring_ = ring;
        capacity_ = bigger;
        head_ = 0;
    }
    at(count_) = s;
    ++count_;
}

void OutputQueue::pop_front() noexcept {
    Segment& s = at(0);
    release_buffer(s.buf);
    s = Segment{};
    head_ = (head_ + 1) & (capacity_ - 1);
    --count_;
}

void OutputQueue::append(const BufferRef& buf, std::uint32_t offset, std::uint32_t len) {
    if (len == 0) return;
    push(Segment{buf.share(), offset, len});
    bytes_ += len;
}

MutableBytes OutputQueue::reserve(std::size_t n) {
    if (count_ > 0) {
        Segment& tail = at(count_ - 1);
        if (tail.writable() && tail.buf->capacity - (tail.offset + tail.len()) >= n) {
            return {tail.buf->data() + tail.offset + tail.len(), n};
        }
    }
    SharedBuffer* b = acquire_buffer(std::max(n, count_ == 0 ? first_private_buffer : next_private_buffer));
    push(Segment{b, 0, Segment::writable_bit});
    return {b->data(), n};
}

void OutputQueue::commit(std::size_t n) noexcept {
    if (count_ == 0) return;
    at(count_ - 1).grow(static_cast<std::uint32_t>(n));
    bytes_ += n;
}

void OutputQueue::splice(OutputQueue& other) {
    for (std::uint32_t i = 0; i < other.count_; ++i) {
        Segment& s = other.at(i);
        push(s);  // the reference moves with the segment
        s = Segment{};
    }
    bytes_ += other.bytes_;
    other.count_ = 0;
    other.head_ = 0;
    other.bytes_ = 0;
}

int OutputQueue::fill_iov(iovec* iov, int max) const noexcept {
    int n = 0;
    for (std::uint32_t i = 0; i < count_ && n < max; ++i) {
        const Segment& s = at(i);
        if (s.len() == 0) continue;
        iov[n].iov_base = s.buf->data() + s.offset;
        iov[n].iov_len = s.len();
        ++n;
    }
    return n;
}

void OutputQueue::consume(std::size_t n) noexcept {
    bytes_ -= std::min(n, bytes_);
    while (count_ > 0) {
        Segment& s = at(0);
        if (n < s.len()) {
            s.shrink_front(static_cast<std::uint32_t>(n));
            return;
        }
        n -= s.len();
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
