// Helpers shared by the API's handlers (api.cpp, api_lists.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "admin/api.hpp"
#include "broker/session.hpp"

namespace mqttools::admin {

using Json = nlohmann::json;

// The query string's parameters; a repeated one keeps every value.
class Query {
public:
    // False (and `error` set to a 400) on a malformed query string.
    bool parse(std::string_view query, http::Response& error);
    std::optional<std::string> get(std::string_view name) const;
    std::vector<std::string> all(std::string_view name) const;
    // An integer in [min, max]; the default when absent; false (with a 400)
    // when present but not such a number.
    bool integer(std::string_view name, std::int64_t min, std::int64_t max, std::int64_t& out,
                 http::Response& error) const;

private:
    std::vector<std::pair<std::string, std::string>> items_;
};

// page (from 1) and limit (1..10,000, 100 by default), as EMQX's.
struct Paging {
    std::size_t page = 1;
    std::size_t limit = 100;
    std::optional<std::size_t> offset;  // _offset: where the page starts, instead of page
    bool parse(const Query& q, http::Response& error);
    std::size_t first() const noexcept { return offset ? *offset : (page - 1) * limit; }
    // {"page","limit","count","hasnext"}
    Json meta(std::size_t count) const;
};

http::Response json_response(int status, const Json& body);

// RFC 3339 with milliseconds in UTC: "2026-12-07T05:00:00.123+00:00".
std::string rfc3339(std::int64_t unix_ms);
std::int64_t unix_ms_now();

// A JSON string ("..." with escapes; invalid UTF-8 replaced by U+FFFD).
void append_json_string(std::string& out, std::string_view s);
// One client as EMQX lists it, appended to `out` as a JSON object.
void append_client_json(std::string& out, const broker::Session& s, std::string_view node);
// One subscription: node, clientid, topic, qos, nl, rap, rh (share_group).
void append_subscription_json(std::string& out, std::string_view client_id, std::string_view filter,
                              const broker::SubscriptionOptions& o, std::string_view node);

}  // namespace mqttools::admin
