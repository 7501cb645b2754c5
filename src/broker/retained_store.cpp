#include "broker/retained_store.hpp"
#include "broker/topic_levels.hpp"

namespace mqttools::broker {

struct RetainedStore::Node {
    Node* parent = nullptr;
    std::string level;
    std::unordered_map<std::string, std::unique_ptr<Node>, StringHash, std::equal_to<>> children;
    MessagePtr message;
};

RetainedStore::RetainedStore() : root_(std::make_unique<Node>()) {}
RetainedStore::~RetainedStore() {
    // Tear down without recursion (a topic can be 65,535 levels deep).
    std::vector<std::unique_ptr<Node>> pending;
    pending.push_back(std::move(root_));
    while (!pending.empty()) {
        std::unique_ptr<Node> node = std::move(pending.back());
        pending.pop_back();
        for (auto& [level, child] : node->children) pending.push_back(std::move(child));
    }
}

void RetainedStore::set(MessagePtr message) {
    ++generation_;
    Node* node = root_.get();
    bool at_end = false;
    std::string_view rest = message->topic;
    while (!at_end) {
        auto level = next_level(rest, at_end);
        auto it = node->children.find(level);
        if (it == node->children.end()) {
            auto child = std::make_unique<Node>();
            child->parent = node;
            child->level.assign(level);
            it = node->children.emplace(std::string(level), std::move(child)).first;
        }
        node = it->second.get();
    }
    if (node->message) {
        bytes_ -= node->message->memory_size();
        node->message->superseded = true;
    } else {
        ++count_;
    }
    bytes_ += message->memory_size();
    node->message = std::move(message);
}

void RetainedStore::erase(std::string_view topic) {
    Node* node = root_.get();
    bool at_end = false;
    std::string_view rest = topic;
    while (!at_end) {
        auto level = next_level(rest, at_end);
        auto it = node->children.find(level);
        if (it == node->children.end()) return;
        node = it->second.get();
    }
    if (!node->message) return;
    ++generation_;
    bytes_ -= node->message->memory_size();
    --count_;
    node->message->superseded = true;
    node->message.reset();
    while (node != root_.get() && !node->message && node->children.empty()) {
        Node* parent = node->parent;
        parent->children.erase(node->level);
        node = parent;
    }
}

void RetainedStore::take(Node& node, Clock::time_point now, std::vector<MessagePtr>& out,
                         std::vector<std::string>& expired) {
    if (!node.message) return;
    if (node.message->expired(now)) {
        expired.push_back(node.message->topic);
        return;
    }
    out.push_back(node.message);
}

// Everything below `node` (iteratively: topics can be 65,535 levels deep).
void RetainedStore::collect_all(Node& node, bool skip_dollar, Clock::time_point now, std::vector<MessagePtr>& out,
                                std::vector<std::string>& expired) {
    std::vector<std::pair<Node*, bool>> pending{{&node, skip_dollar}};
    while (!pending.empty()) {
        auto [n, skip] = pending.back();
        pending.pop_back();
        for (auto& [level, child] : n->children) {
            if (skip && !level.empty() && level.front() == '$') continue;  // [MQTT-4.7.2-1]
            take(*child, now, out, expired);
            pending.emplace_back(child.get(), false);
        }
    }
}

void RetainedStore::match(std::string_view filter, Clock::time_point now, std::vector<MessagePtr>& out) {
    struct Frame {
        Node* node;
        std::string_view rest;
        bool at_end;
        bool first;
    };
    std::vector<std::string> expired;
    std::vector<Frame> pending{{root_.get(), filter, false, true}};
    while (!pending.empty()) {
        const Frame f = pending.back();
        pending.pop_back();
        if (f.at_end) {
            take(*f.node, now, out, expired);
            continue;
        }
        std::string_view rest = f.rest;
        bool end = false;
        auto level = next_level(rest, end);
        if (level == "#") {
            // Everything below, and this level itself ("a/#" matches "a").
            if (!f.first) take(*f.node, now, out, expired);
            collect_all(*f.node, f.first, now, out, expired);
        } else if (level == "+") {
            for (auto& [name, child] : f.node->children) {
                if (f.first && !name.empty() && name.front() == '$') continue;  // [MQTT-4.7.2-1]
                pending.push_back(Frame{child.get(), rest, end, false});
            }
        } else if (auto it = f.node->children.find(level); it != f.node->children.end()) {
            pending.push_back(Frame{it->second.get(), rest, end, false});
        }
    }
    for (const auto& topic : expired) erase(topic);
}

void RetainedStore::all(Clock::time_point now, std::vector<MessagePtr>& out) {
    std::vector<std::string> expired;
    collect_all(*root_, false, now, out, expired);
    for (const auto& topic : expired) erase(topic);
}

MessagePtr RetainedStore::find(std::string_view topic, Clock::time_point now) {
    // A topic name has no wildcards, so matching it as a filter finds at
    // most its own message ("$SYS/x" included: the first level is literal).
    if (topic.find_first_of("+#") != std::string_view::npos) return nullptr;
    std::vector<MessagePtr> out;
    match(topic, now, out);
    return out.empty() ? nullptr : out.front();
}

}  // namespace mqttools::broker
