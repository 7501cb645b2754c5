#include "net/reactor.hpp"

#include <sys/epoll.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

namespace mqttools::net {

Reactor::Reactor() : epoll_(::epoll_create1(EPOLL_CLOEXEC)), now_(Clock::now()) {}

bool Reactor::add(int fd, std::uint32_t events, IoHandler* handler) noexcept {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = handler;
    return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
}

bool Reactor::modify(int fd, std::uint32_t events, IoHandler* handler) noexcept {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = handler;
    return ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev) == 0;
}

void Reactor::remove(int fd) noexcept {
    epoll_event ev{};
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, &ev);
}

Reactor::TimerId Reactor::add_timer(Clock::time_point when, std::function<void()> fn) {
    TimerId id{when, next_timer_seq_++};
    timers_.emplace(TimerKey{when, id.seq}, std::move(fn));
    return id;
}

void Reactor::cancel_timer(TimerId id) noexcept {
    if (id.seq != 0) timers_.erase(TimerKey{id.when, id.seq});
}

void Reactor::fire_timers() {
    // Only timers due now; a callback that adds a timer due immediately gets
    // it fired on the next turn, so a timer can never starve the sockets.
    const auto now = now_;
    for (int budget = 100000; budget > 0 && !timers_.empty(); --budget) {
        auto it = timers_.begin();
        if (it->first.first > now) break;
        auto fn = std::move(it->second);
        timers_.erase(it);
        fn();
    }
}

void Reactor::run_once(Clock::duration max_wait) {
    const Clock::time_point turn_start = now_;
    refresh_now();
    fire_timers();
    if (before_sleep_) before_sleep_();
    if (before_sleep_last_) before_sleep_last_();
    if (deferred_work_ && !stopped_) deferred_work_();
    if (stopped_) return;

    Clock::duration wait = max_wait;
    if (!timers_.empty()) {
        // Rounded up to whole milliseconds, as epoll_wait would: timers due
        // within the same millisecond fire in one wake-up, and a timer is
        // never woken for early and then spun on.
        const auto until = std::max(Clock::duration::zero(), timers_.begin()->first.first - Clock::now());
        wait = std::min(wait, Clock::duration(std::chrono::ceil<std::chrono::milliseconds>(until)));
    }
    if (wake_by_ != Clock::time_point{}) {
        wait = std::min(wait, std::max(Clock::duration::zero(), wake_by_ - Clock::now()));
        wake_by_ = {};
    }
    if (skip_wait_) {
        skip_wait_ = false;
        wait = Clock::duration::zero();
    }
    epoll_event events[256];
    int n = -1;
    if (have_pwait2_) {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
        const timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
        n = ::epoll_pwait2(epoll_.get(), events, 256, &ts, nullptr);
        if (n < 0 && errno == ENOSYS) have_pwait2_ = false;  // a kernel before 5.11
    }
    if (!have_pwait2_) {
        wait = std::chrono::ceil<std::chrono::milliseconds>(wait);
        n = ::epoll_wait(epoll_.get(), events, 256,
                         static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(wait).count()));
    }
    refresh_now();
    if (on_stall_ && turn_start != Clock::time_point{}) {
        // The turn took this much longer than its sleep: the last turn's
        // work plus this one's timers, hook and wait, less the wait planned.
        const Clock::duration overrun = now_ - turn_start - wait;
        if (overrun > stall_threshold_) on_stall_(overrun);
    }
    for (int i = 0; i < n; ++i) {
        static_cast<IoHandler*>(events[i].data.ptr)->on_io(events[i].events);
    }
}

void Reactor::run() {
    while (!stopped_) run_once(std::chrono::seconds(1));
}

}  // namespace mqttools::net
