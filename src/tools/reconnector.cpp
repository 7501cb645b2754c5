#include "tools/reconnector.hpp"

#include <chrono>
#include <vector>

namespace mqttools::tools {

Reconnector::Reconnector(ClientOptions options, bool resume_session)
    : options_(std::move(options)), resume_session_(resume_session) {
    options_.connect_delays.emplace();  // one attempt per start()
    options_.max_connect_attempts = 1;
    thread_ = std::thread([this] { run(); });
}

Reconnector::~Reconnector() {
    {
        std::lock_guard lock(mutex_);
        abort_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

std::unique_ptr<Client> Reconnector::take() {
    std::lock_guard lock(mutex_);
    return std::move(connected_);
}

unsigned Reconnector::attempts() const {
    std::lock_guard lock(mutex_);
    return attempts_;
}

std::string Reconnector::last_error() const {
    std::lock_guard lock(mutex_);
    return last_error_;
}

void Reconnector::run() {
    using std::chrono::seconds;
    // The client library's default connect delays (ClientOptions).
    const std::vector<std::chrono::milliseconds> delays{seconds(1), seconds(2), seconds(4), seconds(8)};
    std::size_t next_delay = 0;
    for (;;) {
        std::string error;
        try {
            auto client = std::make_unique<Client>(options_);
            try {
                client->start(resume_session_);
            } catch (const SessionResumeError&) {
                // Connected, but to a new session: subscribe again.
                for (const auto& s : options_.subscriptions) client->subscribe(s);
            }
            std::lock_guard lock(mutex_);
            ++attempts_;
            connected_ = std::move(client);
            return;
        } catch (const std::exception& e) {
            error = e.what();
        }
        std::unique_lock lock(mutex_);
        ++attempts_;
        last_error_ = error;
        if (cv_.wait_for(lock, delays[next_delay], [this] { return abort_; })) return;
        if (next_delay + 1 < delays.size()) ++next_delay;
    }
}

}  // namespace mqttools::tools
