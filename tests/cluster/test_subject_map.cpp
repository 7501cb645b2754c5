// Topic -> NATS subject mapping: injective, and a filter's subjects match a
// topic's subject exactly when MQTT matching says so (property tests over
// random topics and filters drawn from an alphabet full of the characters
// that are special to one protocol or the other).
#include <random>
#include <map>

#include <catch2/catch.hpp>

#include "cluster/subject_map.hpp"
#include "mqttools/codec.hpp"

using namespace mqttools;
using namespace mqttools::cluster;

namespace {

const std::string prefix = "mqtt.m";

std::string subject_of(std::string_view topic) {
    std::string s;
    topic_subject(s, prefix, topic);
    return s;
}

bool cluster_matches(std::string_view filter, std::string_view topic) {
    const std::string subject = subject_of(topic);
    for (const auto& pattern : filter_subjects(prefix, filter)) {
        if (subject_matches(pattern, subject)) return true;
    }
    return false;
}

// Levels from a small alphabet so that random topics and filters collide
// often: NATS specials (. * > space), MQTT specials ($ in front), '%' (our
// escape), '_', non-ASCII, empty levels.
const std::vector<std::string> atoms = {"", "a", "b", ".", "*", ">", " ", "$", "$a", "%", "%41", "_", "é", "a.b",
                                        "a b", "A", "-", "\xe2\x82\xac"};

std::string random_topic(std::mt19937& rng) {
    std::uniform_int_distribution<int> levels(1, 4);
    std::uniform_int_distribution<std::size_t> pick(0, atoms.size() - 1);
    std::string t;
    const int n = levels(rng);
    for (int i = 0; i < n; ++i) {
        if (i) t.push_back('/');
        t += atoms[pick(rng)];
    }
    return t;
}

std::string random_filter(std::mt19937& rng) {
    std::uniform_int_distribution<int> levels(1, 4);
    std::uniform_int_distribution<std::size_t> pick(0, atoms.size() + 3);
    std::string f;
    const int n = levels(rng);
    for (int i = 0; i < n; ++i) {
        if (i) f.push_back('/');
        const std::size_t k = pick(rng);
        if (k < atoms.size()) {
            f += atoms[k];
        } else if (k == atoms.size() + 3 && i == n - 1) {
            f += "#";
        } else {
            f += "+";
        }
    }
    return f;
}

}  // namespace

TEST_CASE("topic subjects are plain NATS tokens") {
    CHECK(subject_of("a/b") == "mqtt.m.t.a.b");
    CHECK(subject_of("/") == "mqtt.m.t.%.%");
    CHECK(subject_of("a.b/*/>") == "mqtt.m.t.a%2Eb.%2A.%3E");
    CHECK(subject_of("$SYS/x y") == "mqtt.m.s.%24SYS.x%20y");
    CHECK(subject_of("%41") == "mqtt.m.t.%2541");
    CHECK(subject_of("\xc3\xa9") == "mqtt.m.t.%C3%A9");
    for (const auto& t : {"a/b", "/", "a.b/*/>", "$SYS/x y", "%41", "a//b", "\xc3\xa9/_-"}) {
        const std::string s = subject_of(t);
        for (char ch : s) CHECK((static_cast<unsigned char>(ch) > ' ' && static_cast<unsigned char>(ch) < 0x7f));
        CHECK(subject_topic(prefix, s) == std::optional<std::string>(t));
    }
}

TEST_CASE("filter subjects") {
    using V = std::vector<std::string>;
    CHECK(filter_subjects(prefix, "#") == V{"mqtt.m.t.>"});
    CHECK(filter_subjects(prefix, "a/#") == V{"mqtt.m.t.a", "mqtt.m.t.a.>"});
    CHECK(filter_subjects(prefix, "+/b") == V{"mqtt.m.t.*.b"});
    CHECK(filter_subjects(prefix, "$SYS/#") == V{"mqtt.m.s.%24SYS", "mqtt.m.s.%24SYS.>"});
    CHECK(filter_subjects(prefix, "a/+/#") == V{"mqtt.m.t.a.*", "mqtt.m.t.a.*.>"});
    CHECK(queue_name("g", "a/+") != queue_name("g", "a/#"));
    CHECK(queue_name("g.h", "a") != queue_name("g", "h/a"));
}

TEST_CASE("the mapping is injective over random topics") {
    std::mt19937 rng(12345);
    std::map<std::string, std::string> seen;  // subject -> topic
    for (int i = 0; i < 20000; ++i) {
        const std::string t = random_topic(rng);
        if (check_topic_name(t) != ReasonCode::success) continue;
        const std::string s = subject_of(t);
        auto [it, fresh] = seen.emplace(s, t);
        if (!fresh) REQUIRE(it->second == t);
        REQUIRE(subject_topic(prefix, s) == std::optional<std::string>(t));
    }
    CHECK(seen.size() > 1000);
}

TEST_CASE("a filter's subjects match exactly when MQTT matching says so") {
    std::mt19937 rng(2026);
    std::size_t matched = 0;
    std::size_t compared = 0;
    for (int i = 0; i < 3000; ++i) {
        const std::string f = random_filter(rng);
        if (check_topic_filter(f) != ReasonCode::success) continue;
        for (int j = 0; j < 30; ++j) {
            const std::string t = j % 3 == 0 ? random_topic(rng) : [&] {
                // Topics shaped like the filter match more often.
                std::string x = f;
                for (std::size_t k = 0; k < x.size(); ++k) {
                    if (x[k] == '+') x[k] = 'a';
                    if (x[k] == '#') x.replace(k, 1, atoms[rng() % atoms.size()]);
                }
                return x;
            }();
            if (check_topic_name(t) != ReasonCode::success) continue;
            const bool mqtt = topic_matches(f, t);
            INFO("filter '" << f << "' topic '" << t << "'");
            REQUIRE(cluster_matches(f, t) == mqtt);
            matched += mqtt;
            ++compared;
        }
    }
    CHECK(compared > 30000);
    CHECK(matched > 3000);  // both outcomes exercised
}

TEST_CASE("NATS subject matching as the server applies it") {
    CHECK(subject_matches("a.*", "a.b"));
    CHECK_FALSE(subject_matches("a.*", "a"));
    CHECK_FALSE(subject_matches("a.*", "a.b.c"));
    CHECK(subject_matches("a.>", "a.b.c"));
    CHECK_FALSE(subject_matches("a.>", "a"));
    CHECK(subject_matches("a", "a"));
    CHECK_FALSE(subject_matches("a", "ab"));
}
