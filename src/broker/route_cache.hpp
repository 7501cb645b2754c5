// Where a PUBLISH goes, and the last answer kept per publishing connection.
// A publisher nearly always repeats its topic, and the trie walk (a hash
// lookup per level, then a sort to merge overlapping subscriptions) was the
// largest user-space cost per message (docs/profiling.md). The cached
// answer is valid while the trie's generation is unchanged; topics that
// match a shared subscription are not cached, since each message picks
// the next member.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mqttools/packets.hpp"

namespace mqttools::broker {

class Session;

// One session a message goes to: the highest QoS of its matching
// subscriptions and their Subscription Identifiers (a range of the
// broker's id list).
struct RouteTarget {
    Session* session;
    QoS qos;
    bool retain_as_published;
    std::uint32_t ids_begin;
    std::uint32_t ids_count;
    // Picked as one member of a shared subscription: if its session ends
    // before it completes the message, another member gets it (spec 4.8.2).
    bool shared = false;
};

struct RouteCache {
    std::string topic;
    std::uint64_t generation = 0;  // the trie's generation when filled; 0 = empty
    std::vector<RouteTarget> targets;
    std::vector<std::uint32_t> ids;
};

}  // namespace mqttools::broker
