#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "broker/subscription_trie.hpp"

using namespace mqttools;
using namespace mqttools::broker;

namespace {

// The client ids of the sessions whose subscriptions match `topic`.
std::vector<std::string> matching(SubscriptionTrie& trie, std::string_view topic) {
    std::vector<const Subscriber*> subs;
    std::vector<SharedGroup*> groups;
    trie.match(topic, subs, groups);
    std::vector<std::string> ids;
    for (auto* s : subs) ids.push_back(s->session->client_id);
    for (auto* g : groups) ids.push_back("$share/" + g->name);
    std::sort(ids.begin(), ids.end());
    return ids;
}

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("exact, + and # filters", "[trie]") {
    SubscriptionTrie trie;
    Session a("a"), b("b"), c("c"), d("d"), e("e");
    REQUIRE(trie.subscribe("sport/tennis/player1", &a, {}));
    REQUIRE(trie.subscribe("sport/+/player1", &b, {}));
    REQUIRE(trie.subscribe("sport/#", &c, {}));
    REQUIRE(trie.subscribe("#", &d, {}));
    REQUIRE(trie.subscribe("+/+", &e, {}));
    CHECK(trie.size() == 5);

    CHECK(matching(trie, "sport/tennis/player1") == V{"a", "b", "c", "d"});
    CHECK(matching(trie, "sport/tennis/player2") == V{"c", "d"});
    // "sport/#" also matches the parent level [MQTT-4.7.1-2].
    CHECK(matching(trie, "sport") == V{"c", "d"});
    CHECK(matching(trie, "sport/") == V{"c", "d", "e"});
    CHECK(matching(trie, "/finance") == V{"d", "e"});
    CHECK(matching(trie, "a/b/c/d") == V{"d"});
}

TEST_CASE("wildcards at the first level do not match $ topics", "[trie]") {
    SubscriptionTrie trie;
    Session a("a"), b("b"), c("c"), d("d");
    trie.subscribe("#", &a, {});
    trie.subscribe("+/monitor/Clients", &b, {});
    trie.subscribe("$SYS/#", &c, {});
    trie.subscribe("$SYS/monitor/+", &d, {});
    CHECK(matching(trie, "$SYS/monitor/Clients") == V{"c", "d"});
    CHECK(matching(trie, "x/monitor/Clients") == V{"a", "b"});
}

TEST_CASE("re-subscribing replaces the options, unsubscribe prunes", "[trie]") {
    SubscriptionTrie trie;
    Session a("a");
    SubscriptionOptions o;
    o.qos = QoS::exactly_once;
    CHECK(trie.subscribe("a/b/c", &a, {}));
    CHECK_FALSE(trie.subscribe("a/b/c", &a, o));
    CHECK(trie.size() == 1);
    std::vector<const Subscriber*> subs;
    std::vector<SharedGroup*> groups;
    trie.match("a/b/c", subs, groups);
    REQUIRE(subs.size() == 1);
    CHECK(subs[0]->options.qos == QoS::exactly_once);

    CHECK_FALSE(trie.unsubscribe("a/b", &a));
    CHECK_FALSE(trie.unsubscribe("a/b/+", &a));
    CHECK(trie.unsubscribe("a/b/c", &a));
    CHECK_FALSE(trie.unsubscribe("a/b/c", &a));
    CHECK(trie.size() == 0);
    CHECK(trie.node_count() == 1);  // only the root is left
    CHECK(matching(trie, "a/b/c").empty());
}

TEST_CASE("shared subscriptions form groups per share name", "[trie]") {
    SubscriptionTrie trie;
    Session a("a"), b("b"), c("c");
    CHECK(trie.subscribe("$share/g1/t/#", &a, {}));
    CHECK(trie.subscribe("$share/g1/t/#", &b, {}));
    CHECK(trie.subscribe("$share/g2/t/#", &c, {}));
    CHECK(trie.subscribe("t/#", &c, {}));
    CHECK(trie.shared_size() == 3);
    std::vector<const Subscriber*> subs;
    std::vector<SharedGroup*> groups;
    trie.match("t/x", subs, groups);
    REQUIRE(subs.size() == 1);
    REQUIRE(groups.size() == 2);
    std::sort(groups.begin(), groups.end(), [](auto* x, auto* y) { return x->name < y->name; });
    CHECK(groups[0]->name == "g1");
    CHECK(groups[0]->members.size() == 2);
    CHECK(groups[1]->members.size() == 1);
    CHECK(trie.unsubscribe("$share/g1/t/#", &a));
    CHECK_FALSE(trie.unsubscribe("$share/g3/t/#", &b));
    CHECK(trie.unsubscribe("$share/g1/t/#", &b));
    CHECK(trie.unsubscribe("$share/g2/t/#", &c));
    CHECK(trie.unsubscribe("t/#", &c));
    CHECK(trie.node_count() == 1);
}

TEST_CASE("many sessions on one filter", "[trie]") {
    SubscriptionTrie trie;
    std::vector<std::unique_ptr<Session>> sessions;
    for (int i = 0; i < 1000; ++i) {
        sessions.push_back(std::make_unique<Session>(std::to_string(i)));
        trie.subscribe("load/+", sessions.back().get(), {});
    }
    std::vector<const Subscriber*> subs;
    std::vector<SharedGroup*> groups;
    trie.match("load/x", subs, groups);
    CHECK(subs.size() == 1000);
    for (int i = 0; i < 1000; i += 2) CHECK(trie.unsubscribe("load/+", sessions[static_cast<std::size_t>(i)].get()));
    subs.clear();
    trie.match("load/x", subs, groups);
    CHECK(subs.size() == 500);
    for (auto* s : subs) CHECK(std::stoi(s->session->client_id) % 2 == 1);
}
