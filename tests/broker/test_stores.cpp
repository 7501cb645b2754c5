#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "broker/retained_store.hpp"
#include "broker/session_store.hpp"
#include "broker/subscription_trie.hpp"

using namespace mqttools;
using namespace mqttools::broker;

TEST_CASE("session store: create, find, erase", "[sessions]") {
    SessionStore store;
    CHECK(store.find("x") == nullptr);
    Session* a = store.create("a");
    Session* b = store.create("b");
    CHECK(store.size() == 2);
    CHECK(store.find("a") == a);
    CHECK(store.find(std::string_view("b")) == b);
    store.erase(a);
    CHECK(store.find("a") == nullptr);
    CHECK(store.size() == 1);
    int n = 0;
    store.for_each([&](Session& s) {
        CHECK(s.client_id == "b");
        ++n;
    });
    CHECK(n == 1);
}

TEST_CASE("session store: 10,000 sessions come and go", "[sessions]") {
    SessionStore store;
    for (int round = 0; round < 3; ++round) {
        for (int i = 0; i < 10000; ++i) {
            Session* s = store.create("client-" + std::to_string(i));
            s->subscriptions.emplace("a/b", SubscriptionOptions{});
        }
        CHECK(store.size() == 10000);
        for (int i = 0; i < 10000; ++i) store.erase(store.find("client-" + std::to_string(i)));
        CHECK(store.size() == 0);
    }
}

namespace {

MessagePtr retained(std::string topic, std::string payload, std::optional<Clock::time_point> expires = {}) {
    auto m = std::make_shared<Message>();
    m->topic = std::move(topic);
    m->payload = std::move(payload);
    m->retain = true;
    m->expires_at = expires;
    return m;
}

std::vector<std::string> topics(RetainedStore& store, std::string_view filter,
                                Clock::time_point now = Clock::now()) {
    std::vector<MessagePtr> out;
    store.match(filter, now, out);
    std::vector<std::string> t;
    for (auto& m : out) t.push_back(m->topic);
    std::sort(t.begin(), t.end());
    return t;
}

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("retained store matches filters", "[retained]") {
    RetainedStore store;
    store.set(retained("a", "1"));
    store.set(retained("a/b", "2"));
    store.set(retained("a/b/c", "3"));
    store.set(retained("$SYS/x", "4"));
    store.set(retained("a/b", "2bis"));
    CHECK(store.size() == 4);
    CHECK(topics(store, "a/#") == V{"a", "a/b", "a/b/c"});
    CHECK(topics(store, "#") == V{"a", "a/b", "a/b/c"});
    CHECK(topics(store, "+") == V{"a"});
    CHECK(topics(store, "+/+") == V{"a/b"});
    CHECK(topics(store, "$SYS/#") == V{"$SYS/x"});
    CHECK(topics(store, "a/+/c") == V{"a/b/c"});
    store.erase("a/b");
    store.erase("nope");
    CHECK(store.size() == 3);
    CHECK(topics(store, "a/#") == V{"a", "a/b/c"});
}

TEST_CASE("expired retained messages are never returned and are dropped", "[retained]") {
    RetainedStore store;
    const auto now = Clock::now();
    store.set(retained("e/old", "x", now - std::chrono::seconds(1)));
    store.set(retained("e/new", "y", now + std::chrono::seconds(60)));
    CHECK(topics(store, "e/#", now) == V{"e/new"});
    CHECK(store.size() == 1);
}

TEST_CASE("65,535-level topics: no recursion in match or teardown", "[retained][trie]") {
    const std::string deep(65534, '/');
    {
        RetainedStore store;
        store.set(retained(deep, "deep"));
        CHECK(topics(store, "#").size() == 1);
        CHECK(topics(store, "+/#").size() == 1);
        CHECK(topics(store, deep).size() == 1);
    }
    {
        SubscriptionTrie trie;
        Session a("a"), b("b");
        trie.subscribe(deep, &a, {});
        trie.subscribe("#", &b, {});
        std::vector<const Subscriber*> subs;
        std::vector<SharedGroup*> groups;
        trie.match(deep, subs, groups);
        CHECK(subs.size() == 2);
    }
}
