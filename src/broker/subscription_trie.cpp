#include "broker/subscription_trie.hpp"
#include "broker/topic_levels.hpp"

#include <algorithm>
#include <span>

#include "mqttools/codec.hpp"

namespace mqttools::broker {

struct SubscriptionTrie::Node {
    Node* parent = nullptr;
    std::string level;  // this node's level in its parent ("+" and "#" included)
    std::unordered_map<std::string, std::unique_ptr<Node>, StringHash, std::equal_to<>> children;
    std::unique_ptr<Node> plus;
    std::unique_ptr<Node> hash;
    std::vector<Subscriber> subscribers;
    std::vector<SharedGroup> groups;

    bool empty() const noexcept {
        return subscribers.empty() && groups.empty() && children.empty() && !plus && !hash;
    }
};

SubscriptionTrie::SubscriptionTrie() : root_(std::make_unique<Node>()) {}
SubscriptionTrie::~SubscriptionTrie() {
    // Tear down without recursion (a branch can be 65,535 levels deep).
    std::vector<std::unique_ptr<Node>> pending;
    pending.push_back(std::move(root_));
    while (!pending.empty()) {
        std::unique_ptr<Node> node = std::move(pending.back());
        pending.pop_back();
        for (auto& [level, child] : node->children) pending.push_back(std::move(child));
        if (node->plus) pending.push_back(std::move(node->plus));
        if (node->hash) pending.push_back(std::move(node->hash));
    }
}

SubscriptionTrie::Node* SubscriptionTrie::find_or_create(std::string_view filter) {
    Node* node = root_.get();
    bool at_end = false;
    std::string_view rest = filter;
    while (!at_end) {
        auto level = next_level(rest, at_end);
        std::unique_ptr<Node>* slot = nullptr;
        if (level == "+") {
            slot = &node->plus;
        } else if (level == "#") {
            slot = &node->hash;
        } else {
            auto it = node->children.find(level);
            if (it == node->children.end()) it = node->children.emplace(std::string(level), nullptr).first;
            slot = &it->second;
        }
        if (!*slot) {
            *slot = std::make_unique<Node>();
            (*slot)->parent = node;
            (*slot)->level.assign(level);
            ++nodes_;
        }
        node = slot->get();
    }
    return node;
}

bool SubscriptionTrie::subscribe(std::string_view filter, Session* session, const SubscriptionOptions& options,
                                 bool known_new) {
    auto shared = parse_shared_filter(filter);
    ++generation_;  // new or replaced options alike
    Node* node = find_or_create(shared ? shared->filter : filter);
    std::vector<Subscriber>* list = &node->subscribers;
    if (shared) {
        auto g = std::find_if(node->groups.begin(), node->groups.end(),
                              [&](const SharedGroup& sg) { return sg.name == shared->share_name; });
        if (g == node->groups.end()) {
            node->groups.push_back(SharedGroup{std::string(shared->share_name), {}, 0});
            g = node->groups.end() - 1;
        }
        list = &g->members;
    }
    for (Subscriber& s : known_new ? std::span<Subscriber>{} : std::span<Subscriber>(*list)) {
        if (s.session == session) {
            s.options = options;
            return false;
        }
    }
    list->push_back(Subscriber{session, options});
    ++count_;
    if (shared) ++shared_count_;
    return true;
}

bool SubscriptionTrie::unsubscribe(std::string_view filter, Session* session) {
    auto shared = parse_shared_filter(filter);
    std::string_view plain = shared ? shared->filter : filter;
    Node* node = root_.get();
    bool at_end = false;
    std::string_view rest = plain;
    while (!at_end) {
        auto level = next_level(rest, at_end);
        if (level == "+") {
            node = node->plus.get();
        } else if (level == "#") {
            node = node->hash.get();
        } else {
            auto it = node->children.find(level);
            node = it == node->children.end() ? nullptr : it->second.get();
        }
        if (!node) return false;
    }
    bool removed = false;
    auto erase_from = [&](std::vector<Subscriber>& list) {
        auto it = std::find_if(list.begin(), list.end(), [&](const Subscriber& s) { return s.session == session; });
        if (it == list.end()) return;
        // Order among subscribers does not matter: swap with the last.
        *it = list.back();
        list.pop_back();
        removed = true;
    };
    if (shared) {
        auto g = std::find_if(node->groups.begin(), node->groups.end(),
                              [&](const SharedGroup& sg) { return sg.name == shared->share_name; });
        if (g == node->groups.end()) return false;
        erase_from(g->members);
        if (g->members.empty()) node->groups.erase(g);
        if (removed) --shared_count_;
    } else {
        erase_from(node->subscribers);
    }
    if (!removed) return false;
    ++generation_;
    --count_;
    // Prune the branch that no longer leads to any subscription.
    while (node != root_.get() && node->empty()) {
        Node* parent = node->parent;
        if (parent->plus.get() == node) {
            parent->plus.reset();
        } else if (parent->hash.get() == node) {
            parent->hash.reset();
        } else {
            parent->children.erase(node->level);
        }
        --nodes_;
        node = parent;
    }
    return true;
}

void SubscriptionTrie::collect(Node& node, std::vector<const Subscriber*>& subscribers,
                               std::vector<SharedGroup*>& groups) {
    for (const Subscriber& s : node.subscribers) subscribers.push_back(&s);
    for (SharedGroup& g : node.groups) groups.push_back(&g);
}

void SubscriptionTrie::match(std::string_view topic, std::vector<const Subscriber*>& subscribers,
                             std::vector<SharedGroup*>& groups) {
    const bool dollar = !topic.empty() && topic.front() == '$';
    stack_.clear();
    stack_.push_back(Frame{root_.get(), topic, false, true});
    while (!stack_.empty()) {
        const Frame f = stack_.back();
        stack_.pop_back();
        Node& node = *f.node;
        const bool wildcards = !(f.first && dollar);  // [MQTT-4.7.2-1]
        // '#' matches the parent level too: "a/#" matches "a" ([MQTT-4.7.1-2]).
        if (node.hash && wildcards) collect(*node.hash, subscribers, groups);
        if (f.at_end) {
            collect(node, subscribers, groups);
            continue;
        }
        std::string_view rest = f.rest;
        bool end = false;
        auto level = next_level(rest, end);
        if (node.plus && wildcards) stack_.push_back(Frame{node.plus.get(), rest, end, false});
        if (auto it = node.children.find(level); it != node.children.end()) {
            stack_.push_back(Frame{it->second.get(), rest, end, false});
        }
    }
}

}  // namespace mqttools::broker
