// OutboundAliases: the broker's topic aliases towards one client, bounded by
// its Topic Alias Maximum, least recently used one recycled.
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <string>

#include "broker/outbound_aliases.hpp"

using mqttools::broker::OutboundAliases;

namespace {

// What the client does with what it receives (section 3.3.2.3.4): a topic
// with an alias sets the mapping, an empty topic uses it.
struct ClientView {
    std::map<std::uint16_t, std::string> mapping;
    std::string receive(const std::string& topic, OutboundAliases::Assignment a, std::uint16_t maximum) {
        if (a.alias == 0) {
            REQUIRE(a.topic_included);
            return topic;
        }
        REQUIRE(a.alias >= 1);
        REQUIRE(a.alias <= maximum);  // [MQTT-3.3.2-11]
        if (a.topic_included) {
            mapping[a.alias] = topic;
            return topic;
        }
        REQUIRE(mapping.count(a.alias) == 1);
        return mapping[a.alias];
    }
};

}  // namespace

TEST_CASE("no aliases for a client without a Topic Alias Maximum") {
    OutboundAliases aliases;
    auto a = aliases.assign("t/1", 0);
    CHECK(a.alias == 0);
    CHECK(a.topic_included);
    CHECK(aliases.empty());
}

TEST_CASE("a topic keeps its alias and is sent by alias alone after the first time") {
    OutboundAliases aliases;
    auto first = aliases.assign("t/1", 2);
    CHECK(first.alias == 1);
    CHECK(first.topic_included);
    auto again = aliases.assign("t/1", 2);
    CHECK(again.alias == 1);
    CHECK_FALSE(again.topic_included);
    auto other = aliases.assign("t/2", 2);
    CHECK(other.alias == 2);
    CHECK(other.topic_included);
}

TEST_CASE("when every alias is in use the least recently used one is given to the new topic") {
    OutboundAliases aliases;
    aliases.assign("a", 2);  // 1
    aliases.assign("b", 2);  // 2
    aliases.assign("a", 2);  // a used last: b is least recent
    auto c = aliases.assign("c", 2);
    CHECK(c.alias == 2);
    CHECK(c.topic_included);
    CHECK(aliases.size() == 2);
    auto a = aliases.assign("a", 2);
    CHECK(a.alias == 1);
    CHECK_FALSE(a.topic_included);
    auto b = aliases.assign("b", 2);  // b lost its alias: c is now least recent
    CHECK(b.alias == 2);
    CHECK(b.topic_included);
}

TEST_CASE("a forgotten alias is the next one handed out") {
    OutboundAliases aliases;
    aliases.assign("a", 3);  // 1
    aliases.assign("b", 3);  // 2
    aliases.forget("b");     // its PUBLISH was never sent
    CHECK(aliases.size() == 1);
    auto c = aliases.assign("c", 3);
    CHECK(c.alias == 2);
    CHECK(c.topic_included);
    auto b = aliases.assign("b", 3);
    CHECK(b.alias == 3);
    CHECK(b.topic_included);
    aliases.forget("nothing");  // not mapped: no effect
    CHECK(aliases.size() == 3);
}

TEST_CASE("a forgotten alias is reused while the table is full") {
    OutboundAliases aliases;
    aliases.assign("a", 2);
    aliases.assign("b", 2);
    aliases.forget("a");
    auto c = aliases.assign("c", 2);
    CHECK(c.alias == 1);
    auto b = aliases.assign("b", 2);
    CHECK(b.alias == 2);
    CHECK_FALSE(b.topic_included);
}

TEST_CASE("a maximum of one alias") {
    OutboundAliases aliases;
    CHECK(aliases.assign("a", 1).alias == 1);
    CHECK_FALSE(aliases.assign("a", 1).topic_included);
    auto b = aliases.assign("b", 1);
    CHECK(b.alias == 1);
    CHECK(b.topic_included);
    auto a = aliases.assign("a", 1);
    CHECK(a.alias == 1);
    CHECK(a.topic_included);
}

TEST_CASE("every message resolves to its own topic over a long random run") {
    for (std::uint16_t maximum : {1, 2, 5, 64}) {
        OutboundAliases aliases;
        ClientView client;
        std::mt19937 rng(maximum);
        std::uniform_int_distribution<int> pick(0, 99);
        std::size_t by_alias_only = 0;
        for (int i = 0; i < 20000; ++i) {
            // Topics skewed so that some repeat often.
            const int n = pick(rng) < 70 ? pick(rng) % 4 : pick(rng);
            const std::string topic = "topic/" + std::to_string(n);
            const auto a = aliases.assign(topic, maximum);
            if (i % 97 == 0 && a.topic_included) {
                aliases.forget(topic);  // as if too large for the client
                continue;
            }
            if (!a.topic_included) ++by_alias_only;
            REQUIRE(client.receive(topic, a, maximum) == topic);
            REQUIRE(aliases.size() <= maximum);
        }
        if (maximum >= 5) CHECK(by_alias_only > 10000);  // the hot topics keep their aliases
    }
}
