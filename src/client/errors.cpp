// Client error types, the received-message queue and client ids.
#include <random>

#include "mqttools/client.hpp"

namespace mqttools {

ConnectError::ConnectError(ReasonCode reason)
    : ClientError(std::string(reason_code_name(reason))), reason_(reason) {}

SessionResumeError::SessionResumeError()
    : ClientError("the broker has no session to resume; a new session was created") {}

SubscribeError::SubscribeError(ReasonCode reason)
    : ClientError(std::string(reason_code_name(reason))), reason_(reason) {}

UnsubscribeError::UnsubscribeError(ReasonCode reason)
    : ClientError(std::string(reason_code_name(reason))), reason_(reason) {}

PublishError::PublishError(ReasonCode reason, const std::string& what) : ClientError(what), reason_(reason) {}

TimeoutError::TimeoutError() : ClientError("timed out waiting for the broker") {}

void MessageQueue::push(Message message) {
    {
        std::lock_guard lock(mutex_);
        items_.push_back(std::move(message));
    }
    cv_.notify_one();
}

std::optional<Message> MessageQueue::pop(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!cv_.wait_for(lock, timeout, [this] { return !items_.empty(); })) return std::nullopt;
    Message m = std::move(items_.front());
    items_.pop_front();
    return m;
}

Message MessageQueue::pop() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return !items_.empty(); });
    Message m = std::move(items_.front());
    items_.pop_front();
    return m;
}

std::optional<Message> MessageQueue::try_pop() {
    std::lock_guard lock(mutex_);
    if (items_.empty()) return std::nullopt;
    Message m = std::move(items_.front());
    items_.pop_front();
    return m;
}

std::size_t MessageQueue::size() const {
    std::lock_guard lock(mutex_);
    return items_.size();
}

void MessageQueue::clear() {
    std::lock_guard lock(mutex_);
    items_.clear();
}

std::string make_client_id() {
    static constexpr char hex[] = "0123456789abcdef";
    std::random_device rd;
    std::uniform_int_distribution<int> digit(0, 15);
    std::string id = "mqttools-";
    for (int i = 0; i < 14; ++i) id += hex[digit(rd)];
    return id;
}

}  // namespace mqttools
