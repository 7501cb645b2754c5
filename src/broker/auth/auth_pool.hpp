// Password verification off the reactor. A $7$ hash (PBKDF2-HMAC-SHA512,
// thousands of iterations) costs about a millisecond of CPU per CONNECT, so
// a reconnect storm of 10,000 authenticated clients would freeze the
// single-threaded reactor for seconds. The broker hands each such check to
// this small pool of worker threads; a worker runs Authenticator::check and
// queues the answer, and an eventfd wakes the reactor to collect it.
// Nothing is cached: every CONNECT pays the full hash, so a stolen cache
// could never be cheaper to attack than the password file itself.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "broker/auth/authenticator.hpp"
#include "mqttools/reason_code.hpp"
#include "net/unique_fd.hpp"

namespace mqttools::auth {

class AuthPool {
public:
    struct Job {
        std::uint64_t ticket = 0;
        // The authenticator in force when the CONNECT arrived: a reload
        // meanwhile does not change the rules a pending client is judged by.
        std::shared_ptr<const Authenticator> authenticator;
        std::optional<std::string> username;
        std::optional<std::string> password;
        // When set, the worker runs this instead of authenticator->check.
        std::function<ReasonCode()> work;
    };
    struct Result {
        std::uint64_t ticket = 0;
        ReasonCode reason = ReasonCode::unspecified_error;
    };

    // Starts `threads` workers (at least one). The workers run at a lower
    // scheduling priority than the reactor (nice +5), so a storm of hashes
    // takes the spare CPU and the connected clients keep theirs.
    // Throws std::system_error when the eventfd or a thread cannot be made.
    explicit AuthPool(unsigned threads);
    // Stops the workers; jobs not yet started are dropped.
    ~AuthPool();
    AuthPool(const AuthPool&) = delete;
    AuthPool& operator=(const AuthPool&) = delete;

    // Readable (EFD_NONBLOCK) while results wait in take_results().
    int event_fd() const noexcept { return event_.get(); }

    void submit(Job job);
    // Moves every finished result into `out` (appended) and resets the eventfd.
    void take_results(std::vector<Result>& out);

    unsigned threads() const noexcept { return static_cast<unsigned>(workers_.size()); }

    // Workers for this machine: one per core, at most 4 (the reactor is
    // one thread; more hashing threads than cores only queue).
    static unsigned default_threads() noexcept;

private:
    void run();

    net::UniqueFd event_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Job> jobs_;
    std::vector<Result> results_;
    bool stopping_ = false;
    std::vector<std::thread> workers_;
};

}  // namespace mqttools::auth
