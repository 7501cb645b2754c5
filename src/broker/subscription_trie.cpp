#include "broker/subscription_trie.hpp"
#include "broker/topic_levels.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <span>

#include "mqttools/codec.hpp"

namespace mqttools::broker {

// What few nodes have: a '+' or '#' child, shared subscription groups. Kept
// out of the node so that the two million plain nodes of a large tree do
// not carry three empty members each.
struct SubscriptionTrie::Extra {
    Node* plus = nullptr;
    Node* hash = nullptr;
    std::vector<SharedGroup> groups;

    bool unused() const noexcept { return !plus && !hash && groups.empty(); }
};

// 64 bytes, followed by the level's characters in the same allocation
// ("+" and "#" included): a leaf with one subscriber and a short level is
// one 80-byte heap block.
struct SubscriptionTrie::Node {
    Node* parent = nullptr;
    Extra* extra = nullptr;
    trie::ChildSet<Node> children;  // levels other than '+' and '#'
    trie::SubscriberList subscribers;
    std::uint32_t hash = 0;    // hash_level(level())
    std::uint32_t length = 0;  // of level()

    std::string_view level() const noexcept { return {reinterpret_cast<const char*>(this + 1), length}; }
    bool empty() const noexcept { return subscribers.empty() && children.empty() && !extra; }
};

SubscriptionTrie::Node* SubscriptionTrie::new_node(Node* parent, std::string_view level) {
    void* memory = ::operator new(sizeof(Node) + level.size());
    Node* node = new (memory) Node;
    node->parent = parent;
    node->hash = trie::hash_level(level);
    node->length = static_cast<std::uint32_t>(level.size());
    if (!level.empty()) std::memcpy(reinterpret_cast<char*>(node + 1), level.data(), level.size());
    return node;
}

void SubscriptionTrie::delete_node(Node* node) noexcept {
    delete node->extra;
    node->~Node();
    ::operator delete(node);
}

SubscriptionTrie::SubscriptionTrie() : root_(new_node(nullptr, {})) {}

SubscriptionTrie::~SubscriptionTrie() {
    // Tear down without recursion (a branch can be 65,535 levels deep).
    std::vector<Node*> pending{root_};
    while (!pending.empty()) {
        Node* node = pending.back();
        pending.pop_back();
        node->children.for_each([&](Node* child) { pending.push_back(child); });
        if (node->extra) {
            if (node->extra->plus) pending.push_back(node->extra->plus);
            if (node->extra->hash) pending.push_back(node->extra->hash);
        }
        delete_node(node);
    }
}

SubscriptionTrie::Node* SubscriptionTrie::find_or_create(std::string_view filter) {
    Node* node = root_;
    bool at_end = false;
    std::string_view rest = filter;
    while (!at_end) {
        auto level = next_level(rest, at_end);
        Node* next = nullptr;
        if (level == "+" || level == "#") {
            if (!node->extra) node->extra = new Extra;
            Node*& slot = level == "+" ? node->extra->plus : node->extra->hash;
            if (!slot) {
                slot = new_node(node, level);
                ++nodes_;
            }
            next = slot;
        } else {
            next = node->children.find(level);
            if (!next) {
                next = new_node(node, level);
                node->children.insert(next);
                ++nodes_;
            }
        }
        node = next;
    }
    return node;
}

SubscriptionTrie::Node* SubscriptionTrie::find(std::string_view filter) const noexcept {
    Node* node = root_;
    bool at_end = false;
    std::string_view rest = filter;
    while (!at_end && node) {
        auto level = next_level(rest, at_end);
        if (level == "+") {
            node = node->extra ? node->extra->plus : nullptr;
        } else if (level == "#") {
            node = node->extra ? node->extra->hash : nullptr;
        } else {
            node = node->children.find(level);
        }
    }
    return node;
}

bool SubscriptionTrie::subscribe(std::string_view filter, Session* session, const SubscriptionOptions& options,
                                 bool known_new) {
    auto shared = parse_shared_filter(filter);
    ++generation_;  // new or replaced options alike
    Node* node = find_or_create(shared ? shared->filter : filter);
    if (shared) {
        if (!node->extra) node->extra = new Extra;
        auto& groups = node->extra->groups;
        auto g = std::find_if(groups.begin(), groups.end(),
                              [&](const SharedGroup& sg) { return sg.name == shared->share_name; });
        if (g == groups.end()) {
            groups.push_back(SharedGroup{std::string(shared->share_name), {}, 0});
            g = groups.end() - 1;
        }
        for (Subscriber& s : known_new ? std::span<Subscriber>{} : std::span<Subscriber>(g->members)) {
            if (s.session == session) {
                s.options = options;
                return false;
            }
        }
        g->members.push_back(Subscriber{session, options});
        ++shared_count_;
    } else {
        if (Subscriber* s = known_new ? nullptr : node->subscribers.find(session)) {
            s->options = options;
            return false;
        }
        node->subscribers.push_back(Subscriber{session, options});
    }
    ++count_;
    return true;
}

bool SubscriptionTrie::unsubscribe(std::string_view filter, Session* session) {
    auto shared = parse_shared_filter(filter);
    Node* node = find(shared ? shared->filter : filter);
    if (!node) return false;
    if (shared) {
        if (!node->extra) return false;
        auto& groups = node->extra->groups;
        auto g = std::find_if(groups.begin(), groups.end(),
                              [&](const SharedGroup& sg) { return sg.name == shared->share_name; });
        if (g == groups.end()) return false;
        auto it = std::find_if(g->members.begin(), g->members.end(),
                               [&](const Subscriber& s) { return s.session == session; });
        if (it == g->members.end()) return false;
        // Order among members does not matter: swap with the last.
        *it = g->members.back();
        g->members.pop_back();
        if (g->members.empty()) groups.erase(g);
        --shared_count_;
    } else {
        Subscriber* s = node->subscribers.find(session);
        if (!s) return false;
        node->subscribers.erase(s);
    }
    ++generation_;
    --count_;
    prune(node);
    return true;
}

// Drops what no longer leads to any subscription, from `node` upwards.
void SubscriptionTrie::prune(Node* node) noexcept {
    for (;;) {
        if (node->extra && node->extra->unused()) {
            delete node->extra;
            node->extra = nullptr;
        }
        if (node == root_ || !node->empty()) return;
        Node* parent = node->parent;
        Extra* x = parent->extra;
        if (x && x->plus == node) {
            x->plus = nullptr;
        } else if (x && x->hash == node) {
            x->hash = nullptr;
        } else {
            parent->children.erase(node);
        }
        delete_node(node);
        --nodes_;
        node = parent;
    }
}

void SubscriptionTrie::collect(Node& node, std::vector<const Subscriber*>& subscribers,
                               std::vector<SharedGroup*>& groups) {
    for (const Subscriber& s : node.subscribers) subscribers.push_back(&s);
    if (node.extra) {
        for (SharedGroup& g : node.extra->groups) groups.push_back(&g);
    }
}

void SubscriptionTrie::match(std::string_view topic, std::vector<const Subscriber*>& subscribers,
                             std::vector<SharedGroup*>& groups) {
    const bool dollar = !topic.empty() && topic.front() == '$';
    stack_.clear();
    stack_.push_back(Frame{root_, topic, false, true});
    while (!stack_.empty()) {
        const Frame f = stack_.back();
        stack_.pop_back();
        Node& node = *f.node;
        const Extra* x = node.extra;
        const bool wildcards = x && !(f.first && dollar);  // [MQTT-4.7.2-1]
        // '#' matches the parent level too: "a/#" matches "a" ([MQTT-4.7.1-2]).
        if (wildcards && x->hash) collect(*x->hash, subscribers, groups);
        if (f.at_end) {
            collect(node, subscribers, groups);
            continue;
        }
        std::string_view rest = f.rest;
        bool end = false;
        auto level = next_level(rest, end);
        if (wildcards && x->plus) stack_.push_back(Frame{x->plus, rest, end, false});
        if (Node* child = node.children.find(level)) stack_.push_back(Frame{child, rest, end, false});
    }
}

}  // namespace mqttools::broker
