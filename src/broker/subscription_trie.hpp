// The router: topic filters in a trie of topic levels. A PUBLISH walks the
// levels of its topic once and collects every matching subscription:
// exact levels, '+' and '#' ('a/#' also matches 'a', [MQTT-4.7.1-2]);
// wildcards at the first level never match topics starting with '$'
// ([MQTT-4.7.2-1]). Shared subscriptions ($share/NAME/filter, spec 4.8.2)
// live at their filter's node as groups; the caller picks one member.
// Nodes are compact (trie_node.hpp): a million subscriptions are about two
// million nodes, so each holds its level inline and one child or one
// subscriber without a container allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "broker/session.hpp"
#include "broker/trie_node.hpp"

namespace mqttools::broker {

struct SharedGroup {
    std::string name;
    std::vector<Subscriber> members;
    std::size_t next = 0;  // round-robin cursor
};

class SubscriptionTrie {
public:
    SubscriptionTrie();
    ~SubscriptionTrie();
    SubscriptionTrie(const SubscriptionTrie&) = delete;
    SubscriptionTrie& operator=(const SubscriptionTrie&) = delete;

    // Adds `session`'s subscription to a valid filter, or replaces its
    // options when it exists ([MQTT-3.8.4-3]). True when it is new.
    // `known_new`: the caller knows the session has no such subscription
    // yet (sessions loaded at start-up), so the subscriber list is not
    // searched: 10,000 sessions on one filter made that quadratic.
    bool subscribe(std::string_view filter, Session* session, const SubscriptionOptions& options,
                   bool known_new = false);
    // True when the session had that subscription.
    bool unsubscribe(std::string_view filter, Session* session);

    // Appends every non-shared subscription matching `topic` to
    // `subscribers` and every matching shared group to `groups` (neither is
    // cleared first; reuse them to avoid allocating per message).
    void match(std::string_view topic, std::vector<const Subscriber*>& subscribers,
               std::vector<SharedGroup*>& groups);

    std::size_t size() const noexcept { return count_; }
    // Changes with every subscribe() and every unsubscribe() that removed
    // something: a cached match result is valid while this is unchanged.
    std::uint64_t generation() const noexcept { return generation_; }
    std::size_t shared_size() const noexcept { return shared_count_; }
    std::size_t node_count() const noexcept { return nodes_; }

private:
    struct Node;
    struct Extra;
    static Node* new_node(Node* parent, std::string_view level);
    static void delete_node(Node* node) noexcept;
    Node* find_or_create(std::string_view filter);
    Node* find(std::string_view filter) const noexcept;
    void prune(Node* node) noexcept;
    void collect(Node& node, std::vector<const Subscriber*>& subscribers, std::vector<SharedGroup*>& groups);

    // match() walks with an explicit stack, not recursion: a topic or a
    // filter may have tens of thousands of levels ("/" * 65534).
    struct Frame {
        Node* node;
        std::string_view rest;
        bool at_end;
        bool first;
    };
    std::vector<Frame> stack_;  // reused per message

    Node* root_;
    std::size_t count_ = 0;
    std::uint64_t generation_ = 1;
    std::size_t shared_count_ = 0;
    std::size_t nodes_ = 1;
};

}  // namespace mqttools::broker
