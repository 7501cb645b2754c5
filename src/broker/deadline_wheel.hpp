// Per-connection deadlines (CONNECT timeout, keep alive) for any number of
// clients with no allocation per connection: a hashed timing wheel of
// intrusive lists. Each Connection *is* a DeadlineLink (three words), so
// 100,000 idle clients with Keep Alive cost no timer nodes at all; a
// std::map timer per client cost ~96 bytes of heap each.
//
// Resolution is one tick (100 ms): a deadline fires in the first tick at
// or after it, never before. Deadlines beyond one turn of the wheel
// (1024 ticks, ~102 s) sit in their slot and are skipped, still linked,
// until their turn comes.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "net/reactor.hpp"

namespace mqttools::broker {

using Clock = net::Clock;

class DeadlineLink {
public:
    DeadlineLink() = default;
    DeadlineLink(const DeadlineLink&) = delete;
    DeadlineLink& operator=(const DeadlineLink&) = delete;
    ~DeadlineLink() { unlink(); }

    bool scheduled() const noexcept { return next_ != nullptr; }
    Clock::time_point deadline() const noexcept { return deadline_; }

private:
    friend class DeadlineWheel;
    void unlink() noexcept {
        if (!next_) return;
        prev_->next_ = next_;
        next_->prev_ = prev_;
        prev_ = next_ = nullptr;
    }
    // Circular: a slot's head is a sentinel link.
    DeadlineLink* prev_ = nullptr;
    DeadlineLink* next_ = nullptr;
    Clock::time_point deadline_{};
};

class DeadlineWheel {
public:
    static constexpr auto tick = std::chrono::milliseconds(100);
    static constexpr std::size_t slots = 1024;  // a power of two

    explicit DeadlineWheel(Clock::time_point now) noexcept : processed_(ticks(now)) {
        for (auto& head : heads_) head.prev_ = head.next_ = &head;
    }
    DeadlineWheel(const DeadlineWheel&) = delete;
    DeadlineWheel& operator=(const DeadlineWheel&) = delete;
    ~DeadlineWheel() {
        for (auto& head : heads_) {
            while (head.next_ != &head) head.next_->unlink();
            head.prev_ = head.next_ = nullptr;
        }
    }

    // (Re)schedules `link` for `deadline`.
    void schedule(DeadlineLink& link, Clock::time_point deadline) noexcept {
        link.unlink();
        link.deadline_ = deadline;
        // Never into a slot already processed: the next tick at the earliest.
        const std::int64_t t = std::max(ticks_up(deadline), processed_ + 1);
        DeadlineLink& head = heads_[static_cast<std::size_t>(t) & (slots - 1)];
        link.prev_ = head.prev_;
        link.next_ = &head;
        head.prev_->next_ = &link;
        head.prev_ = &link;
    }
    static void cancel(DeadlineLink& link) noexcept { link.unlink(); }

    // The time of the next tick that has a link in its slot, or
    // Clock::time_point::max() when none is scheduled.
    Clock::time_point next_tick() const noexcept {
        for (std::int64_t t = processed_ + 1; t <= processed_ + static_cast<std::int64_t>(slots); ++t) {
            const DeadlineLink& head = heads_[static_cast<std::size_t>(t) & (slots - 1)];
            if (head.next_ != &head) return Clock::time_point(tick * t);
        }
        return Clock::time_point::max();
    }

    // Calls expired(link) for every link whose deadline is <= now, each
    // unlinked first; the callback may schedule or cancel any link,
    // including this one. Links of the visited slots that are not due yet
    // (a later turn of the wheel) stay where they are.
    template <class F>
    void advance(Clock::time_point now, F&& expired) {
        const std::int64_t target = ticks(now);
        // After a long stall every slot is visited once, not once per tick.
        std::int64_t from = std::max(processed_ + 1, target - static_cast<std::int64_t>(slots) + 1);
        for (std::int64_t t = from; t <= target; ++t) {
            DeadlineLink& head = heads_[static_cast<std::size_t>(t) & (slots - 1)];
            // Detach the slot so callbacks that reschedule into it (a later
            // turn) are not visited again in this pass.
            DeadlineLink pending;
            if (head.next_ == &head) continue;
            pending.next_ = head.next_;
            pending.prev_ = head.prev_;
            pending.next_->prev_ = &pending;
            pending.prev_->next_ = &pending;
            head.prev_ = head.next_ = &head;
            processed_ = t;
            while (pending.next_ != &pending) {
                DeadlineLink& link = *pending.next_;
                if (link.deadline_ > now) {
                    // A later turn of the wheel: back into its slot.
                    schedule(link, link.deadline_);
                    continue;
                }
                link.unlink();
                expired(link);
            }
            pending.prev_ = pending.next_ = nullptr;
        }
        processed_ = std::max(processed_, target);
    }

private:
    static std::int64_t ticks(Clock::time_point t) noexcept {
        return std::chrono::floor<std::chrono::milliseconds>(t.time_since_epoch()).count() / tick.count();
    }
    static std::int64_t ticks_up(Clock::time_point t) noexcept {
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(t.time_since_epoch()).count();
        return (ms + tick.count() - 1) / tick.count();
    }

    std::array<DeadlineLink, slots> heads_;
    std::int64_t processed_;  // the last tick whose slot was visited
};

}  // namespace mqttools::broker
