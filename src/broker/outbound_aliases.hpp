// Topic aliases the broker assigns on one connection (broker -> client).
// The client's Topic Alias Maximum bounds how many exist at once
// [MQTT-3.3.2-11]; once they are all in use, the least recently used one
// is given to the new topic, sent with the topic name so the client maps
// the alias anew (section 3.3.2.3.4: "the receiver ... replaces the
// mapping"). A hot topic keeps its alias; a subscriber to many topics
// still gets aliases for the ones that repeat.
//
// Exact LRU in O(1): the aliases form a doubly linked list threaded through
// a slot per alias (slot 0 is the list head), and each slot points at its
// topic, the key of a node in the lookup map (node keys do not move).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/string_hash.hpp"

namespace mqttools::broker {

class OutboundAliases {
public:
    struct Assignment {
        std::uint16_t alias = 0;     // 0: send without an alias
        bool topic_included = true;  // false: the alias alone names the topic
    };

    // The alias for the next PUBLISH to `topic`, with `maximum` the client's
    // Topic Alias Maximum (0: it takes none).
    Assignment assign(std::string_view topic, std::uint16_t maximum) {
        if (maximum == 0) return {};
        if (auto it = by_topic_.find(topic); it != by_topic_.end()) {
            touch(it->second);
            return {it->second, false};
        }
        if (slots_.empty()) slots_.resize(1);  // the list head
        std::uint16_t alias = slots_[0].prev;     // least recently used, or 0
        if (alias != 0 && slots_[alias].topic == nullptr) {
            unlink(alias);  // a forgotten one
        } else if (slots_.size() <= maximum) {
            alias = static_cast<std::uint16_t>(slots_.size());
            slots_.emplace_back();
        } else {
            unlink(alias);
            by_topic_.erase(*slots_[alias].topic);
        }
        slots_[alias].topic = &by_topic_.emplace(std::string(topic), alias).first->first;
        push_front(alias);
        return {alias, true};
    }

    // The PUBLISH that was to map `topic` to `alias` was not sent (too large
    // for the client): the client never learnt it, so neither do we keep it.
    void forget(std::string_view topic) {
        auto it = by_topic_.find(topic);
        if (it == by_topic_.end()) return;
        const std::uint16_t alias = it->second;
        unlink(alias);
        by_topic_.erase(it);
        slots_[alias].topic = nullptr;
        push_back(alias);  // least recent: the next new topic takes it first
    }

    bool empty() const noexcept { return by_topic_.empty(); }
    std::size_t size() const noexcept { return by_topic_.size(); }

private:
    struct Slot {
        const std::string* topic = nullptr;
        std::uint16_t prev = 0;
        std::uint16_t next = 0;
    };

    void unlink(std::uint16_t a) {
        slots_[slots_[a].prev].next = slots_[a].next;
        slots_[slots_[a].next].prev = slots_[a].prev;
    }
    void push_front(std::uint16_t a) {
        slots_[a].prev = 0;
        slots_[a].next = slots_[0].next;
        slots_[slots_[0].next].prev = a;
        slots_[0].next = a;
    }
    void push_back(std::uint16_t a) {
        slots_[a].next = 0;
        slots_[a].prev = slots_[0].prev;
        slots_[slots_[0].prev].next = a;
        slots_[0].prev = a;
    }
    void touch(std::uint16_t a) {
        if (slots_[0].next == a) return;
        unlink(a);
        push_front(a);
    }

    std::vector<Slot> slots_;
    std::unordered_map<std::string, std::uint16_t, StringHash, std::equal_to<>> by_topic_;
};

}  // namespace mqttools::broker
