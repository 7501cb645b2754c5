// The received-message queue, with the capacity the I/O thread keeps to and
// the wake-up it needs when the application makes room.
#include <algorithm>

#include "mqttools/client.hpp"

namespace mqttools {

MessageQueue::MessageQueue(std::size_t capacity) : capacity_(capacity) {}

void MessageQueue::push(Message message) {
    {
        std::lock_guard lock(mutex_);
        items_.push_back(std::move(message));
        high_water_ = std::max(high_water_, items_.size());
    }
    cv_.notify_one();
}

bool MessageQueue::take_notification_locked() {
    if (!notify_on_space_ || items_.size() >= capacity_) return false;
    notify_on_space_ = false;
    return true;
}

void MessageQueue::notify(bool due) {
    if (!due) return;
    std::function<void()> callback;
    {
        std::lock_guard lock(mutex_);
        callback = on_space_;
    }
    if (callback) callback();
}

std::optional<Message> MessageQueue::pop(std::chrono::milliseconds timeout) {
    std::optional<Message> m;
    bool due;
    {
        std::unique_lock lock(mutex_);
        if (!cv_.wait_for(lock, timeout, [this] { return !items_.empty(); })) return std::nullopt;
        m.emplace(std::move(items_.front()));
        items_.pop_front();
        due = take_notification_locked();
    }
    notify(due);
    return m;
}

Message MessageQueue::pop() {
    bool due;
    Message m;
    {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [this] { return !items_.empty(); });
        m = std::move(items_.front());
        items_.pop_front();
        due = take_notification_locked();
    }
    notify(due);
    return m;
}

std::optional<Message> MessageQueue::try_pop() {
    std::optional<Message> m;
    bool due;
    {
        std::lock_guard lock(mutex_);
        if (items_.empty()) return std::nullopt;
        m.emplace(std::move(items_.front()));
        items_.pop_front();
        due = take_notification_locked();
    }
    notify(due);
    return m;
}

std::size_t MessageQueue::size() const {
    std::lock_guard lock(mutex_);
    return items_.size();
}

void MessageQueue::clear() {
    bool due;
    {
        std::lock_guard lock(mutex_);
        items_.clear();
        due = take_notification_locked();
    }
    notify(due);
}

std::size_t MessageQueue::high_water() const {
    std::lock_guard lock(mutex_);
    return high_water_;
}

void MessageQueue::reset_high_water() {
    std::lock_guard lock(mutex_);
    high_water_ = items_.size();
}

bool MessageQueue::full_or_notify() {
    std::lock_guard lock(mutex_);
    if (capacity_ == 0 || items_.size() < capacity_) return false;
    // Set under the lock that pops take: a pop right after this sees it, so
    // the wake-up cannot be missed.
    notify_on_space_ = true;
    return true;
}

void MessageQueue::on_space(std::function<void()> callback) {
    std::lock_guard lock(mutex_);
    on_space_ = std::move(callback);
}

}  // namespace mqttools
