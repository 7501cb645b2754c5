#include "net/reactor.hpp"

#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <typeinfo>
#include <vector>

#include <unistd.h>

namespace mqttools::net {

namespace {
std::int64_t thread_cpu_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}
std::int64_t wall_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
}  // namespace

// A turn: the dispatch of one wait's events, then the next turn's timers,
// before-sleep hooks and deferred work, up to the next wait.
struct Reactor::TurnStats {
    static constexpr std::size_t segments = 5;  // dispatch, timers, before sleep, before sleep last, deferred
    static constexpr std::array<std::int64_t, 11> bounds_us{100, 250, 500, 1000, 2000, 3000, 4000, 5000, 8000, 16000, 32000};
    struct Turn {
        std::int64_t cpu = 0, wall = 0, at_ms = 0;
        std::array<std::int64_t, segments> seg_cpu{}, seg_wall{};
        int events = 0;
        std::int64_t handler_wall = 0;
        const char* handler = "";
    };
    std::string path;
    std::int64_t start_wall = wall_ns(), cpu_mark = 0, wall_mark = 0;
    Turn turn;
    std::uint64_t turns = 0;
    std::array<std::uint64_t, bounds_us.size() + 1> hist_cpu{}, hist_wall{};
    std::vector<Turn> longest;  // by wall-clock time

    void mark() noexcept {
        cpu_mark = thread_cpu_ns();
        wall_mark = wall_ns();
    }
    void segment(std::size_t i) noexcept {
        const std::int64_t c = thread_cpu_ns(), w = wall_ns();
        turn.seg_cpu[i] += c - cpu_mark;
        turn.seg_wall[i] += w - wall_mark;
        cpu_mark = c;
        wall_mark = w;
    }
    static std::size_t bucket(std::int64_t ns) noexcept {
        std::size_t b = 0;
        while (b < bounds_us.size() && ns >= bounds_us[b] * 1000) ++b;
        return b;
    }
    void finish() {
        for (std::size_t i = 0; i < segments; ++i) {
            turn.cpu += turn.seg_cpu[i];
            turn.wall += turn.seg_wall[i];
        }
        turn.at_ms = (wall_mark - start_wall) / 1'000'000;
        ++turns;
        ++hist_cpu[bucket(turn.cpu)];
        ++hist_wall[bucket(turn.wall)];
        if (turn.wall >= 1'000'000) {
            if (longest.size() < 60) {
                longest.push_back(turn);
            } else {
                auto m = std::min_element(longest.begin(), longest.end(),
                                          [](const Turn& a, const Turn& b) { return a.wall < b.wall; });
                if (m->wall < turn.wall) *m = turn;
            }
        }
        turn = Turn{};
    }
    void write() const {
        const std::string file = path + "." + std::to_string(::getpid());
        FILE* f = std::fopen(file.c_str(), "w");
        if (!f) return;
        std::fprintf(f, "turns %llu\nbucket_us cpu wall\n", static_cast<unsigned long long>(turns));
        for (std::size_t b = 0; b <= bounds_us.size(); ++b) {
            std::fprintf(f, "<%lld %llu %llu\n", b < bounds_us.size() ? static_cast<long long>(bounds_us[b]) : -1LL,
                         static_cast<unsigned long long>(hist_cpu[b]), static_cast<unsigned long long>(hist_wall[b]));
        }
        auto sorted = longest;
        std::sort(sorted.begin(), sorted.end(), [](const Turn& a, const Turn& b) { return a.at_ms < b.at_ms; });
        std::fprintf(f, "at_ms wall_us cpu_us | dispatch timers before_sleep before_sleep_last deferred (cpu/wall us) | events longest_handler_us handler\n");
        for (const Turn& t : sorted) {
            std::fprintf(f, "%lld %lld %lld |", static_cast<long long>(t.at_ms), static_cast<long long>(t.wall / 1000),
                         static_cast<long long>(t.cpu / 1000));
            for (std::size_t i = 0; i < segments; ++i) {
                std::fprintf(f, " %lld/%lld", static_cast<long long>(t.seg_cpu[i] / 1000),
                             static_cast<long long>(t.seg_wall[i] / 1000));
            }
            std::fprintf(f, " | %d %lld %s\n", t.events, static_cast<long long>(t.handler_wall / 1000), t.handler);
        }
        std::fclose(f);
    }
};

Reactor::Reactor() : epoll_(::epoll_create1(EPOLL_CLOEXEC)), now_(Clock::now()) {
    if (const char* p = std::getenv("MQTTOOLS_TURN_STATS"); p && *p) {
        stats_ = std::make_unique<TurnStats>();
        stats_->path = p;
    }
}

Reactor::~Reactor() {
    if (stats_) stats_->write();
}

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
    if (stats_) stats_->segment(1);
    if (before_sleep_) before_sleep_();
    if (stats_) stats_->segment(2);
    if (before_sleep_last_) before_sleep_last_();
    if (stats_) stats_->segment(3);
    if (deferred_work_ && !stopped_) deferred_work_();
    if (stats_) {
        stats_->segment(4);
        stats_->finish();
    }
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
    if (stats_) {
        dispatch(events, n);
        return;
    }
    for (int i = 0; i < n; ++i) {
        static_cast<IoHandler*>(events[i].data.ptr)->on_io(events[i].events);
    }
}

void Reactor::dispatch(const void* raw, int n) {
    const auto* events = static_cast<const epoll_event*>(raw);
    stats_->mark();
    stats_->turn.events = n < 0 ? 0 : n;
    for (int i = 0; i < n; ++i) {
        auto* h = static_cast<IoHandler*>(events[i].data.ptr);
        const char* name = typeid(*h).name();  // before: on_io may end the handler
        const std::int64_t t0 = wall_ns();
        h->on_io(events[i].events);
        const std::int64_t t = wall_ns() - t0;
        if (t > stats_->turn.handler_wall) {
            stats_->turn.handler_wall = t;
            stats_->turn.handler = name;
        }
    }
    stats_->segment(0);
}

void Reactor::run() {
    while (!stopped_) run_once(std::chrono::seconds(1));
}

}  // namespace mqttools::net
