// OutboundAliases: the broker's topic aliases towards one client, bounded by
// its Topic Alias Maximum, least recently used one recycled.
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <string>
#include <string_view>
#include <utility>

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

// (alias, topic name included) of the next PUBLISH to `topic`.
using Sent = std::pair<int, bool>;
constexpr bool with_topic = true;
constexpr bool alias_only = false;
Sent publish_to(OutboundAliases& aliases, std::string_view topic, std::uint16_t maximum) {
    const auto a = aliases.assign(topic, maximum);
    return {a.alias, a.topic_included};
}

}  // namespace

TEST_CASE("no aliases for a client without a Topic Alias Maximum") {
    OutboundAliases aliases;
    CHECK(publish_to(aliases, "t/1", 0) == Sent{0, with_topic});
    CHECK(aliases.empty());
}

TEST_CASE("a topic keeps its alias and is sent by alias alone after the first time") {
    OutboundAliases aliases;
    CHECK(publish_to(aliases, "t/1", 2) == Sent{1, with_topic});
    CHECK(publish_to(aliases, "t/1", 2) == Sent{1, alias_only});
    CHECK(publish_to(aliases, "t/2", 2) == Sent{2, with_topic});
}

TEST_CASE("when every alias is in use the least recently used one is given to the new topic") {
    OutboundAliases aliases;
    publish_to(aliases, "a", 2);  // 1
    publish_to(aliases, "b", 2);  // 2
    publish_to(aliases, "a", 2);  // a used last: b is least recent
    CHECK(publish_to(aliases, "c", 2) == Sent{2, with_topic});
    CHECK(aliases.size() == 2);
    CHECK(publish_to(aliases, "a", 2) == Sent{1, alias_only});
    CHECK(publish_to(aliases, "b", 2) == Sent{2, with_topic});  // b lost its alias; c was least recent
}

TEST_CASE("a forgotten alias is the next one handed out") {
    OutboundAliases aliases;
    publish_to(aliases, "a", 3);  // 1
    publish_to(aliases, "b", 3);  // 2
    aliases.forget("b");    // its PUBLISH was never sent
    CHECK(aliases.size() == 1);
    CHECK(publish_to(aliases, "c", 3) == Sent{2, with_topic});
    CHECK(publish_to(aliases, "b", 3) == Sent{3, with_topic});
    aliases.forget("nothing");  // not mapped: no effect
    CHECK(aliases.size() == 3);
}

TEST_CASE("a forgotten alias is reused while the table is full") {
    OutboundAliases aliases;
    publish_to(aliases, "a", 2);
    publish_to(aliases, "b", 2);
    aliases.forget("a");
    CHECK(publish_to(aliases, "c", 2) == Sent{1, with_topic});
    CHECK(publish_to(aliases, "b", 2) == Sent{2, alias_only});
}

TEST_CASE("a maximum of one alias") {
    OutboundAliases aliases;
    CHECK(publish_to(aliases, "a", 1) == Sent{1, with_topic});
    CHECK(publish_to(aliases, "a", 1) == Sent{1, alias_only});
    CHECK(publish_to(aliases, "b", 1) == Sent{1, with_topic});
    CHECK(publish_to(aliases, "a", 1) == Sent{1, with_topic});
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
