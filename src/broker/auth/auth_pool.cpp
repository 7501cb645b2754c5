#include "broker/auth/auth_pool.hpp"

#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include <openssl/crypto.h>

namespace mqttools::auth {

AuthPool::AuthPool(unsigned threads) : event_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (!event_) throw std::system_error(errno, std::generic_category(), "eventfd");
    threads = std::max(1u, threads);
    workers_.reserve(threads);
    try {
        for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] { run(); });
    } catch (...) {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
        throw;
    }
}

AuthPool::~AuthPool() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        jobs_.clear();
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
}

unsigned AuthPool::default_threads() noexcept {
    return std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
}

void AuthPool::submit(Job job) {
    {
        std::lock_guard lock(mutex_);
        jobs_.push_back(std::move(job));
    }
    wake_.notify_one();
}

void AuthPool::take_results(std::vector<Result>& out) {
    std::uint64_t count = 0;
    // The counter is reset and the results taken under the lock a worker
    // holds while it queues a result and signals it: no result is left
    // unsignalled, and no signal is left for a result already taken (the
    // counter read before the lock was signalled again by a worker caught
    // between its queueing and its write: a wake-up with nothing to take).
    std::lock_guard lock(mutex_);
    (void)!::read(event_.get(), &count, sizeof count);
    out.insert(out.end(), results_.begin(), results_.end());
    results_.clear();
}

void AuthPool::run() {
    // Linux keeps a nice value per thread: lower this one's priority so the
    // reactor thread wins the CPU whenever it has work.
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 5);
    for (;;) {
        Job job;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
            if (stopping_) return;
            job = std::move(jobs_.front());
            jobs_.pop_front();
        }
        std::optional<Bytes> password;
        if (job.password) password = as_bytes(std::string_view(*job.password));
        std::optional<std::string_view> username;
        if (job.username) username = *job.username;
        const ReasonCode reason = job.work ? job.work() : job.authenticator->check(username, password);
        // The password leaves no copy behind in freed memory.
        if (job.password) OPENSSL_cleanse(job.password->data(), job.password->size());
        {
            std::lock_guard lock(mutex_);
            results_.push_back({job.ticket, reason});
            const std::uint64_t one = 1;
            (void)!::write(event_.get(), &one, sizeof one);
        }
    }
}

}  // namespace mqttools::auth
