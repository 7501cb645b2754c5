// The event loop: one thread, one epoll instance (in the style of Redis'
// ae.c). Handlers are registered per descriptor; timers live in an ordered
// map whose first deadline becomes the epoll wait's timeout, so no thread
// and no timerfd per timer (epoll_pwait2 waits to the µs where the kernel
// has it). A "before sleep" hook runs right before every
// epoll_wait: the broker flushes all queued output there, once per turn, so
// a burst of messages costs one writev per connection instead of one write
// per message.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>

#include "net/unique_fd.hpp"

namespace mqttools::net {

using Clock = std::chrono::steady_clock;

class IoHandler {
public:
    // `events` is the epoll event mask (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP).
    virtual void on_io(std::uint32_t events) = 0;

protected:
    ~IoHandler() = default;
};

class Reactor {
public:
    // A timer's handle: its deadline and sequence number are its key, so
    // cancelling needs no index (an idle connection's keep-alive timer
    // costs one map node). Default-constructed = no timer.
    struct TimerId {
        Clock::time_point when{};
        std::uint64_t seq = 0;
        explicit operator bool() const noexcept { return seq != 0; }
    };

    Reactor();
    ~Reactor();
    Reactor(const Reactor&) = delete;
    Reactor& operator=(const Reactor&) = delete;

    bool valid() const noexcept { return epoll_.valid(); }

    // Level-triggered registration; false on epoll_ctl failure (errno set).
    bool add(int fd, std::uint32_t events, IoHandler* handler) noexcept;
    bool modify(int fd, std::uint32_t events, IoHandler* handler) noexcept;
    void remove(int fd) noexcept;

    TimerId add_timer(Clock::time_point when, std::function<void()> fn);
    TimerId add_timer_after(Clock::duration delay, std::function<void()> fn) {
        return add_timer(now() + delay, std::move(fn));
    }
    // Cancelling an unknown or already fired timer is a no-op.
    void cancel_timer(TimerId id) noexcept;

    void set_before_sleep(std::function<void()> fn) { before_sleep_ = std::move(fn); }
    // Runs right after the before-sleep hook: for a writer the broker's
    // flush may still feed (the cluster's NATS connection, issue 26).
    void set_before_sleep_last(std::function<void()> fn) { before_sleep_last_ = std::move(fn); }
    // Runs after both before-sleep hooks, i.e. after this turn's output
    // went out: bounded work that can wait (connections being set up in a
    // storm) must not hold what the turn routed to connected clients and
    // to other nodes. Work left over asks skip_next_wait().
    void set_deferred_work(std::function<void()> fn) { deferred_work_ = std::move(fn); }
    // Called before the events of a turn are dispatched when the process
    // did not run for longer than `threshold` beyond the turn's planned
    // sleep (SIGSTOP, a VM paused, a starved host): the cluster link then
    // checks what other nodes did meanwhile before any client is served.
    void set_on_stall(Clock::duration threshold, std::function<void(Clock::duration)> fn) {
        stall_threshold_ = threshold;
        on_stall_ = std::move(fn);
    }

    // Runs turns until stop() is called.
    void run();
    // One turn: fire due timers, run the before-sleep hook, wait at most
    // `max_wait` (or until the next timer), dispatch events.
    void run_once(Clock::duration max_wait);
    void stop() noexcept { stopped_ = true; }
    // The coming epoll_wait only polls: work was left for the next turn
    // (a paced retained delivery), to be resumed after the ready sockets.
    void skip_next_wait() noexcept { skip_wait_ = true; }
    // The coming wait ends by `when` at the latest (from a before-sleep
    // hook): a deadline finer than a millisecond without a timer, e.g. the
    // cluster's NATS linger (issue 26). Forgotten after that wait.
    void wake_by(Clock::time_point when) noexcept {
        if (wake_by_ == Clock::time_point{} || when < wake_by_) wake_by_ = when;
    }
    bool stopped() const noexcept { return stopped_; }

    // The time of the current turn (refreshed after every wake-up), so a
    // burst of packets does not call clock_gettime per packet.
    Clock::time_point now() const noexcept { return now_; }
    void refresh_now() noexcept { now_ = Clock::now(); }

    // MQTTOOLS_TURN_STATS=<path prefix>: per-turn CPU and wall-clock time,
    // written to <prefix>.<pid> when run() returns (a diagnosis aid for
    // latency under a storm, docs/profiling.md). Off: one branch per turn.
    struct TurnStats;

private:
    void fire_timers();
    void dispatch(const void* events, int n);
    std::unique_ptr<TurnStats> stats_;

    UniqueFd epoll_;
    bool stopped_ = false;
    bool skip_wait_ = false;
    bool have_pwait2_ = true;  // epoll_pwait2 (Linux 5.11): waits in ns, not ms
    Clock::time_point wake_by_{};
    Clock::time_point now_;
    std::uint64_t next_timer_seq_ = 1;
    using TimerKey = std::pair<Clock::time_point, std::uint64_t>;
    std::map<TimerKey, std::function<void()>> timers_;
    std::function<void()> before_sleep_;
    std::function<void()> before_sleep_last_;
    std::function<void()> deferred_work_;
    Clock::duration stall_threshold_{};
    std::function<void(Clock::duration)> on_stall_;
};

}  // namespace mqttools::net
