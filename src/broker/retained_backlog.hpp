// Retained messages still to be sent to one connection for its new
// subscriptions. A `#` subscription over 100,000 retained topics must not
// become one long step of the reactor: the matches are taken at SUBSCRIBE
// (shared pointers, in match order) and sent a slice per reactor turn, only
// while the connection's output stays under a bound (retained_delivery.cpp).
// The matches are an immutable snapshot that later subscribers to the same
// filter share while the retained store has not changed: 100 dashboards
// subscribing to `#` over 100,000 topics hold one list, not 100.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "broker/message.hpp"
#include "broker/session.hpp"

namespace mqttools::broker {

using RetainedSnapshot = std::shared_ptr<const std::vector<MessagePtr>>;

// The latest large snapshot, for the next subscriber to the same filter.
// Weak: it lives as long as some backlog still sends from it.
struct SharedRetainedMatch {
    std::string filter;
    std::uint64_t generation = 0;
    std::weak_ptr<const std::vector<MessagePtr>> messages;
};

struct RetainedBacklog {
    struct Batch {
        RetainedSnapshot messages;
        std::size_t next = 0;
        SubscriptionOptions options;
    };
    // In SUBSCRIBE order: a later subscription's retained messages follow
    // the earlier ones'.
    std::deque<Batch> batches;
};

}  // namespace mqttools::broker
