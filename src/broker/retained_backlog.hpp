// Retained messages still to be sent to one connection for its new
// subscriptions. A `#` subscription over 100,000 retained topics must not
// become one long step of the reactor: the matches are taken at SUBSCRIBE
// (shared pointers, in match order) and sent a slice per reactor turn, only
// while the connection's output stays under a bound (retained_delivery.cpp).
#pragma once

#include <cstddef>
#include <deque>
#include <vector>

#include "broker/message.hpp"
#include "broker/session.hpp"

namespace mqttools::broker {

struct RetainedBacklog {
    struct Batch {
        std::vector<MessagePtr> messages;
        std::size_t next = 0;
        SubscriptionOptions options;
    };
    // In SUBSCRIBE order: a later subscription's retained messages follow
    // the earlier ones'.
    std::deque<Batch> batches;
};

}  // namespace mqttools::broker
