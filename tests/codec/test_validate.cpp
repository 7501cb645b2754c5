// UTF-8 rules (spec 1.5.4), topic names, filters, shared subscriptions and
// matching (spec 4.7, 4.8).
#include "util.hpp"

using namespace codec_test;

TEST_CASE("MQTT UTF-8 rules", "[validate][utf8]") {
    CHECK(is_valid_utf8(""));
    CHECK(is_valid_utf8("plain ascii text that is longer than eight bytes"));
    CHECK(is_valid_utf8("\xc3\xa9"));          // é
    CHECK(is_valid_utf8("\xe2\x82\xac"));      // €
    CHECK(is_valid_utf8("\xf0\x9f\x98\x80"));  // U+1F600
    CHECK(is_valid_utf8("\xef\xbb\xbf"));      // BOM is allowed [MQTT-1.5.4-3]
    CHECK(is_valid_utf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF
    CHECK(is_valid_utf8("\xed\x9f\xbf"));      // U+D7FF
    CHECK(is_valid_utf8("\xee\x80\x80"));      // U+E000

    using namespace std::string_view_literals;
    CHECK(!is_valid_utf8("a\0b"sv));            // U+0000 [MQTT-1.5.4-2]
    CHECK(!is_valid_utf8("abcdefgh\0ijk"sv));    // U+0000 in the fast path
    CHECK(!is_valid_utf8("\xed\xa0\x80"));       // U+D800 surrogate [MQTT-1.5.4-1]
    CHECK(!is_valid_utf8("\xed\xbf\xbf"));       // U+DFFF surrogate
    CHECK(!is_valid_utf8("\xc0\x80"));           // overlong U+0000
    CHECK(!is_valid_utf8("\xc1\xbf"));           // overlong
    CHECK(!is_valid_utf8("\xe0\x9f\xbf"));       // overlong 3-byte
    CHECK(!is_valid_utf8("\xf0\x8f\xbf\xbf"));   // overlong 4-byte
    CHECK(!is_valid_utf8("\xf4\x90\x80\x80"));   // above U+10FFFF
    CHECK(!is_valid_utf8("\xf5\x80\x80\x80"));
    CHECK(!is_valid_utf8("\xff"));
    CHECK(!is_valid_utf8("\x80"));               // lone continuation
    CHECK(!is_valid_utf8("\xc3"));               // truncated
    CHECK(!is_valid_utf8("abcdefgh\xe2\x82"));   // truncated after the fast path
    CHECK(!is_valid_utf8("\xe2\x28\xa1"));       // bad continuation
}

TEST_CASE("topic names", "[validate][topic]") {
    CHECK(check_topic_name("a") == ReasonCode::success);
    CHECK(check_topic_name("a/b/c") == ReasonCode::success);
    CHECK(check_topic_name("/") == ReasonCode::success);
    CHECK(check_topic_name("$SYS/broker") == ReasonCode::success);
    CHECK(check_topic_name("a b/\xc3\xa9") == ReasonCode::success);
    CHECK(check_topic_name("") == ReasonCode::topic_name_invalid);
    CHECK(check_topic_name("a/+") == ReasonCode::topic_name_invalid);  // [MQTT-3.3.2-2]
    CHECK(check_topic_name("#") == ReasonCode::topic_name_invalid);
    CHECK(check_topic_name("a/b#") == ReasonCode::topic_name_invalid);
    CHECK(check_topic_name("\xff") == ReasonCode::topic_name_invalid);
}

TEST_CASE("topic filters", "[validate][filter]") {
    const char* valid[] = {"#", "+", "a", "a/b", "a/+", "+/+", "a/#", "+/#", "/", "a//b", "/#", "$SYS/#",
                           "sport/tennis/+/stats", "$share/g/a/b", "$share/g/#", "$share/group/+/x", "$share/g//"};
    for (const char* f : valid) {
        INFO(f);
        CHECK(check_topic_filter(f) == ReasonCode::success);
    }
    const char* invalid[] = {"", "a#", "a/#/b", "#/a", "a+", "a/+b", "++", "##", "\xc0\x80",
                             "$share/", "$share/g", "$share/g/", "$share//a", "$share/g+/a", "$share/#/a",
                             "$share/g/a/#/b"};
    for (const char* f : invalid) {
        INFO(f);
        CHECK(check_topic_filter(f) == ReasonCode::topic_filter_invalid);
    }
}

TEST_CASE("parse_shared_filter", "[validate][shared]") {
    auto s = parse_shared_filter("$share/grp/a/+/c");
    REQUIRE(s);
    CHECK(s->share_name == "grp");
    CHECK(s->filter == "a/+/c");
    CHECK(!parse_shared_filter("a/b"));
    CHECK(!parse_shared_filter("$sharex/g/a"));
    CHECK(!parse_shared_filter("$SYS/a"));
    auto t = parse_shared_filter("$share/grp");
    REQUIRE(t);
    CHECK(t->share_name == "grp");
    CHECK(t->filter.empty());
}

TEST_CASE("topic_matches (spec 4.7 examples)", "[validate][match]") {
    struct Case {
        const char* filter;
        const char* topic;
        bool match;
    };
    const Case cases[] = {
        {"sport/tennis/player1/#", "sport/tennis/player1", true},
        {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
        {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
        {"sport/#", "sport", true},
        {"#", "sport/tennis", true},
        {"#", "/", true},
        {"sport/tennis/+", "sport/tennis/player1", true},
        {"sport/tennis/+", "sport/tennis/player1/ranking", false},
        {"sport/+", "sport", false},
        {"sport/+", "sport/", true},
        {"+/+", "/finance", true},
        {"/+", "/finance", true},
        {"+", "/finance", false},
        {"+/#", "a", true},
        {"a/b", "a/b", true},
        {"a/b", "a/bc", false},
        {"a/b", "a", false},
        {"a", "a/b", false},
        {"a//b", "a//b", true},
        {"a/+/b", "a//b", true},
        {"#", "$SYS/x", false},  // [MQTT-4.7.2-1]
        {"+/monitor/Clients", "$SYS/monitor/Clients", false},
        {"$SYS/#", "$SYS/monitor/Clients", true},
        {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
        {"a/#", "a/b/c/d", true},
        {"a/+/+", "a/b", false},
    };
    for (const auto& c : cases) {
        INFO(c.filter << " vs " << c.topic);
        CHECK(topic_matches(c.filter, c.topic) == c.match);
    }
}

TEST_CASE("names of reason codes and packet types", "[validate][names]") {
    CHECK(reason_code_name(ReasonCode::malformed_packet) == "Malformed Packet");
    CHECK(reason_code_name(ReasonCode::protocol_error) == "Protocol Error");
    CHECK(reason_code_name(ReasonCode::not_authorized) == "Not authorized");
    CHECK(reason_code_name(ReasonCode::success) == "Success");
    CHECK(reason_code_name(static_cast<ReasonCode>(0x7F)) == "Unknown reason code");
    CHECK(packet_type_name(PacketType::publish) == "PUBLISH");
    CHECK(packet_type_name(PacketType::auth) == "AUTH");
    CHECK(packet_type_name(PacketType::unsuback) == "UNSUBACK");
}
