// Retained messages (spec 3.3.1.3), one per topic, in a trie of topic
// levels so a new subscription finds its matches without scanning every
// retained message. Expired messages (Message Expiry) are never returned
// and are dropped when met.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/message.hpp"
#include "broker/string_hash.hpp"

namespace mqttools::broker {

class RetainedStore {
public:
    RetainedStore();
    ~RetainedStore();
    RetainedStore(const RetainedStore&) = delete;
    RetainedStore& operator=(const RetainedStore&) = delete;

    // Stores the message for its topic, replacing the previous one.
    void set(MessagePtr message);
    // An empty retained PUBLISH deletes ([MQTT-3.3.1-6]).
    void erase(std::string_view topic);

    // Appends the unexpired messages matching a valid non-shared filter.
    void match(std::string_view filter, Clock::time_point now, std::vector<MessagePtr>& out);
    // Every unexpired message, $-topics included (the management API's list).
    void all(Clock::time_point now, std::vector<MessagePtr>& out);
    // The unexpired message stored for exactly this topic, or null.
    MessagePtr find(std::string_view topic, Clock::time_point now);

    std::size_t size() const noexcept { return count_; }
    // Changes with every set() and erase(): equal generations, same matches
    // (but for messages expiring meanwhile).
    std::uint64_t generation() const noexcept { return generation_; }
    std::size_t bytes() const noexcept { return bytes_; }

private:
    struct Node;
    void collect_all(Node& node, bool skip_dollar, Clock::time_point now, std::vector<MessagePtr>& out,
                     std::vector<std::string>& expired);
    void take(Node& node, Clock::time_point now, std::vector<MessagePtr>& out, std::vector<std::string>& expired);

    std::unique_ptr<Node> root_;
    std::size_t count_ = 0;
    std::size_t bytes_ = 0;
    std::uint64_t generation_ = 0;
};

}  // namespace mqttools::broker
