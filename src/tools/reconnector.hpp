// Reconnects a client in the background (for the monitor, whose screen keeps
// running meanwhile): one attempt at once, then after 1, 2, 4 and 8 s, the
// last delay repeated, as the client library's default connect delays. A
// resumed session that the broker no longer has gets its subscriptions made
// again.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "mqttools/client.hpp"

namespace mqttools::tools {

class Reconnector {
public:
    // options.connect_delays is replaced by "one attempt": the delays are
    // here, where they can be interrupted.
    Reconnector(ClientOptions options, bool resume_session);
    // Interrupts a wait between attempts (an attempt under way finishes
    // first, within the response timeout) and joins.
    ~Reconnector();
    Reconnector(const Reconnector&) = delete;
    Reconnector& operator=(const Reconnector&) = delete;

    // The connected client, once there is one (then nullptr again).
    std::unique_ptr<Client> take();
    // Attempts made so far and the last one's error ("" before the first
    // failure).
    unsigned attempts() const;
    std::string last_error() const;

private:
    void run();

    ClientOptions options_;
    bool resume_session_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    bool abort_ = false;
    unsigned attempts_ = 0;
    std::string last_error_;
    std::unique_ptr<Client> connected_;
    std::thread thread_;  // last: started once the rest is ready
};

}  // namespace mqttools::tools
