// The trie's compact nodes (trie_node.hpp) against plain references:
// random subscribe/unsubscribe/match round trips checked with a naive
// matcher, the child set through every form (inline, array, table) and
// back. "[.memory]" (hidden) prints bytes per subscription of the
// bench/production.py tree scenario's filters.
#include <malloc.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "broker/subscription_trie.hpp"

using namespace mqttools;
using namespace mqttools::broker;

namespace {

std::vector<std::string_view> split(std::string_view s) {
    std::vector<std::string_view> out;
    for (;;) {
        auto slash = s.find('/');
        out.push_back(s.substr(0, slash));
        if (slash == std::string_view::npos) return out;
        s.remove_prefix(slash + 1);
    }
}

// The spec's rules written out level by level (4.7).
bool reference_matches(std::string_view filter, std::string_view topic) {
    const auto f = split(filter);
    const auto t = split(topic);
    if (!t[0].empty() && t[0][0] == '$' && (f[0] == "+" || f[0] == "#")) return false;  // [MQTT-4.7.2-1]
    for (std::size_t i = 0; i < f.size(); ++i) {
        if (f[i] == "#") return true;  // the parent level too [MQTT-4.7.1-2]
        if (i >= t.size() || (f[i] != "+" && f[i] != t[i])) return false;
    }
    return f.size() == t.size();
}

struct RandomTree {
    std::mt19937 rng{17};
    // 4 short levels, an empty one and 20 more: some nodes get more
    // children than the small array holds.
    std::string level() {
        const int k = pick(25);
        if (k < 4) return std::string(1, static_cast<char>('a' + k));
        if (k == 4) return "";
        return "x" + std::to_string(k - 5);
    }
    int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }
    std::string filter() {
        std::string f;
        const int depth = 1 + pick(4);
        for (int i = 0; i < depth; ++i) {
            if (i) f += '/';
            f += pick(7) == 0 ? "+" : i == 0 && pick(10) == 0 ? "$s" : level();
        }
        if (pick(8) == 0) f += "/#";
        if (pick(10) == 0) f = "#";
        if (pick(10) == 0) f = "$share/g" + std::to_string(pick(2)) + "/" + f;
        return f;
    }
    std::string topic() {
        std::string t = pick(10) == 0 ? "$s" : level();
        const int depth = pick(4);
        for (int i = 0; i < depth; ++i) t += "/" + level();
        return t;
    }
};

}  // namespace

TEST_CASE("random subscribe/unsubscribe/match agree with a naive matcher", "[trie]") {
    RandomTree r;
    SubscriptionTrie trie;
    std::vector<std::unique_ptr<Session>> sessions;
    for (int i = 0; i < 12; ++i) sessions.push_back(std::make_unique<Session>(std::to_string(i)));
    // (session, filter as subscribed) -> Subscription Identifier
    std::map<std::pair<int, std::string>, std::uint32_t> ref;
    std::vector<const Subscriber*> subs;
    std::vector<SharedGroup*> groups;
    std::uint32_t next_id = 1;

    for (int round = 0; round < 60; ++round) {
        for (int op = 0; op < 150; ++op) {
            const int s = r.pick(12);
            // Unsubscribe mostly what exists, so that branches get pruned.
            if (!ref.empty() && r.pick(5) < 2) {
                auto it = ref.begin();
                std::advance(it, r.pick(static_cast<int>(ref.size())));
                CHECK(trie.unsubscribe(it->first.second, sessions[static_cast<std::size_t>(it->first.first)].get()));
                ref.erase(it);
                continue;
            }
            const std::string f = r.filter();
            if (r.pick(4) == 0) {
                const bool had = ref.erase({s, f}) != 0;
                CHECK(trie.unsubscribe(f, sessions[static_cast<std::size_t>(s)].get()) == had);
                continue;
            }
            SubscriptionOptions o;
            o.identifier = next_id++;
            const bool fresh = ref.find({s, f}) == ref.end();
            ref[{s, f}] = o.identifier;
            CHECK(trie.subscribe(f, sessions[static_cast<std::size_t>(s)].get(), o) == fresh);
        }
        std::size_t shared = 0;
        for (auto& [key, id] : ref) shared += key.second.starts_with("$share/");
        REQUIRE(trie.size() == ref.size());
        REQUIRE(trie.shared_size() == shared);

        for (int q = 0; q < 40; ++q) {
            const std::string topic = r.topic();
            std::multiset<std::pair<std::string, std::uint32_t>> want, got;
            std::map<std::pair<std::string, std::string>, std::set<std::string>> want_groups;
            for (auto& [key, id] : ref) {
                const std::string& client = sessions[static_cast<std::size_t>(key.first)]->client_id;
                std::string_view f = key.second;
                if (f.starts_with("$share/")) {
                    f.remove_prefix(7);
                    const auto slash = f.find('/');
                    const std::string name(f.substr(0, slash));
                    f.remove_prefix(slash + 1);
                    if (reference_matches(f, topic)) want_groups[{name, std::string(f)}].insert(client);
                } else if (reference_matches(f, topic)) {
                    want.insert({client, id});
                }
            }
            subs.clear();
            groups.clear();
            trie.match(topic, subs, groups);
            for (const Subscriber* s : subs) got.insert({s->session->client_id, s->options.identifier});
            INFO("topic " << topic);
            CHECK(got == want);
            std::multiset<std::pair<std::string, std::set<std::string>>> want_g, got_g;
            for (auto& [key, members] : want_groups) want_g.insert({key.first, members});
            for (const SharedGroup* g : groups) {
                std::set<std::string> members;
                for (const Subscriber& m : g->members) members.insert(m.session->client_id);
                CHECK(members.size() == g->members.size());
                got_g.insert({g->name, members});
            }
            CHECK(got_g == want_g);
        }
    }
    for (auto& [key, id] : ref) CHECK(trie.unsubscribe(key.second, sessions[static_cast<std::size_t>(key.first)].get()));
    CHECK(trie.size() == 0);
    CHECK(trie.shared_size() == 0);
    CHECK(trie.node_count() == 1);
}

namespace {

struct FakeNode {
    std::string name;
    std::uint32_t hash;
    std::string_view level() const { return name; }
};

}  // namespace

TEST_CASE("child set: inline, array and table forms, growing and shrinking", "[trie]") {
    std::vector<std::unique_ptr<FakeNode>> nodes;
    for (int i = 0; i < 1000; ++i) {
        std::string name = "n" + std::to_string(i);
        const auto h = trie::hash_level(name);
        nodes.push_back(std::make_unique<FakeNode>(FakeNode{std::move(name), h}));
    }
    std::mt19937 rng(5);
    trie::ChildSet<FakeNode> set;
    std::vector<bool> in(nodes.size(), false);
    auto verify = [&] {
        std::uint32_t n = 0;
        for (std::size_t i = 0; i < nodes.size(); ++i) {
            FakeNode* found = set.find(nodes[i]->name);
            if (in[i]) {
                ++n;
                REQUIRE(found == nodes[i].get());
            } else {
                REQUIRE(found == nullptr);
            }
        }
        REQUIRE(set.size() == n);
        std::uint32_t seen = 0;
        set.for_each([&](FakeNode*) { ++seen; });
        REQUIRE(seen == n);
    };
    // Up and down through every size twice, in random orders.
    for (int pass = 0; pass < 2; ++pass) {
        std::vector<std::size_t> order(nodes.size());
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::shuffle(order.begin(), order.end(), rng);
        for (std::size_t k = 0; k < order.size(); ++k) {
            set.insert(nodes[order[k]].get());
            in[order[k]] = true;
            if (k < 40 || k % 97 == 0) verify();
        }
        verify();
        std::shuffle(order.begin(), order.end(), rng);
        for (std::size_t k = 0; k < order.size(); ++k) {
            set.erase(nodes[order[k]].get());
            in[order[k]] = false;
            if (k > order.size() - 40 || k % 89 == 0) verify();
        }
        verify();
        CHECK(set.empty());
    }
}

TEST_CASE("subscriber list: one inline, more in an array", "[trie]") {
    std::vector<std::unique_ptr<Session>> sessions;
    for (int i = 0; i < 100; ++i) sessions.push_back(std::make_unique<Session>(std::to_string(i)));
    trie::SubscriberList list;
    std::set<Session*> want;
    std::mt19937 rng(9);
    for (int step = 0; step < 3000; ++step) {
        Session* s = sessions[rng() % sessions.size()].get();
        if (Subscriber* found = list.find(s)) {
            REQUIRE(want.count(s) == 1);
            if (rng() % 3 != 0) {  // fills up more than it empties: sizes 0..100
                list.erase(found);
                want.erase(s);
            }
        } else {
            REQUIRE(want.count(s) == 0);
            SubscriptionOptions o;
            o.identifier = static_cast<std::uint32_t>(step);
            list.push_back(Subscriber{s, o});
            want.insert(s);
        }
        REQUIRE(list.size() == want.size());
        if (step % 1000 == 999) {
            while (!list.empty()) {
                want.erase(list.begin()->session);
                list.erase(list.begin());
            }
            REQUIRE(want.empty());
        }
    }
}

TEST_CASE("a session's subscription map agrees with std::map", "[trie]") {
    std::mt19937 rng(3);
    SubscriptionMap map;
    std::map<std::string, std::uint32_t> ref;
    auto name = [&] { return "f/" + std::to_string(rng() % 300) + std::string(rng() % 30, 'x'); };
    for (int step = 0; step < 20000; ++step) {
        const std::string f = name();
        const auto id = static_cast<std::uint32_t>(step);
        SubscriptionOptions o;
        o.identifier = id;
        switch (rng() % 4) {
        case 0:
            CHECK(map.emplace(f, o) == (ref.find(f) == ref.end()));
            ref.emplace(f, id);
            break;
        case 1:
            map.assign(f, o);
            ref[f] = id;
            break;
        case 2: {
            auto it = map.find(f);
            REQUIRE((it == map.end()) == (ref.find(f) == ref.end()));
            if (it != map.end()) {
                CHECK(it->first == f);
                CHECK(it->second.identifier == ref[f]);
                map.erase(it);
                ref.erase(f);
            }
            break;
        }
        default: {
            const SubscriptionMap& cmap = map;
            auto it = cmap.find(f);
            REQUIRE((it == cmap.end()) == (ref.find(f) == ref.end()));
            if (it != cmap.end()) CHECK((*it).second.identifier == ref[f]);
        }
        }
        REQUIRE(map.size() == ref.size());
        if (step % 500 == 0 || ref.size() < 3) {
            std::map<std::string, std::uint32_t> seen;
            for (const auto& [filter, options] : map) seen.emplace(std::string(filter), options.identifier);
            REQUIRE(seen == ref);
        }
        if (step % 5000 == 4999) {
            map.clear();
            ref.clear();
            CHECK(map.begin() == map.end());
        }
    }
}

TEST_CASE("bytes per subscription, tree scenario filters", "[.memory]") {
    // bench/load/load_client.cpp tree_filter(): 8 in 10 exact, 1 '+', 1 '#'.
    auto filter = [](int n, int j) {
        const std::string base = "tree/" + std::to_string(n) + "/";
        if (j % 10 == 8) return base + "+/w" + std::to_string(j);
        if (j % 10 == 9) return base + std::to_string(j) + "/#";
        return base + std::to_string(j) + "/state";
    };
    constexpr int kClients = 2000, kEach = 100;
    std::vector<std::unique_ptr<Session>> sessions;
    for (int i = 0; i < kClients; ++i) sessions.push_back(std::make_unique<Session>("c" + std::to_string(i)));
    const auto start = mallinfo2();
    SubscriptionTrie trie;
    for (int n = 0; n < kClients; ++n) {
        for (int j = 0; j < kEach; ++j) trie.subscribe(filter(n, j), sessions[static_cast<std::size_t>(n)].get(), {});
    }
    const auto after_trie = mallinfo2();
    for (int n = 0; n < kClients; ++n) {
        for (int j = 0; j < kEach; ++j) sessions[static_cast<std::size_t>(n)]->subscriptions.emplace(filter(n, j), SubscriptionOptions{});
    }
    const auto after_sessions = mallinfo2();
    const double subs = double(kClients) * kEach;
    auto used = [](const struct mallinfo2& m) { return double(m.uordblks + m.hblkhd); };
    std::printf("trie: %.1f B/sub (%zu nodes), session filters: %.1f B/sub\n", (used(after_trie) - used(start)) / subs,
                trie.node_count(), (used(after_sessions) - used(after_trie)) / subs);
    CHECK(trie.size() == kClients * kEach);
}
