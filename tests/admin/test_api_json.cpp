// The API's hand-written JSON entries (api_util.cpp): what a listing page
// is made of must read back as the same values through a real JSON parser,
// whatever bytes a client id or topic holds.
#include <catch2/catch.hpp>

#include <string>

#include "admin/api_util.hpp"

using mqttools::admin::Json;

namespace {

std::string round_trip(const std::string& s) {
    std::string out;
    mqttools::admin::append_json_string(out, s);
    return Json::parse(out).get<std::string>();
}

}  // namespace

TEST_CASE("JSON strings are escaped and read back unchanged") {
    for (const std::string& s : {std::string(""), std::string("plain/id-1"), std::string("quote\" back\\slash"),
                                std::string("line\nfeed\r\ttab"), std::string("\x01\x1f ctl", 5),
                                std::string("nul\0in", 6), std::string("utf-8 \xc3\xa9\xe2\x82\xac")}) {
        CHECK(round_trip(s) == s);
    }
    std::string out;
    mqttools::admin::append_json_string(out, "a\x01");
    CHECK(out == "\"a\\u0001\"");
}

TEST_CASE("invalid UTF-8 is replaced, never thrown") {
    CHECK(round_trip("bad \xff byte") == "bad \xef\xbf\xbd byte");
}

TEST_CASE("a subscription entry reads back with its fields") {
    mqttools::broker::SubscriptionOptions o;
    o.qos = mqttools::QoS::at_least_once;
    o.no_local = true;
    o.retain_handling = 2;
    std::string out;
    mqttools::admin::append_subscription_json(out, "c\"1", "$share/g1/a/#", o, "node@host");
    const Json j = Json::parse(out);
    CHECK(j["node"] == "node@host");
    CHECK(j["clientid"] == "c\"1");
    CHECK(j["topic"] == "$share/g1/a/#");
    CHECK(j["qos"] == 1);
    CHECK(j["nl"] == 1);
    CHECK(j["rap"] == 0);
    CHECK(j["rh"] == 2);
    CHECK(j["share_group"] == "g1");
}
