// Topic filter relations the ACL needs (spec 4.7). The router has its own
// matcher for delivery; these also answer questions between two filters.
#pragma once

#include <string_view>

namespace mqttools::auth {

// A valid filter: '#' only as the whole last level, '+' only as a whole
// level, no NUL, not empty [MQTT-4.7.1-1..3].
bool valid_filter(std::string_view filter) noexcept;

// Does `topic` (a topic name) match `filter`? Wildcards at the first level
// do not match names starting with '$' [MQTT-4.7.2-1].
bool topic_matches(std::string_view filter, std::string_view topic) noexcept;

// Is there a topic name that matches both filters?
bool filters_intersect(std::string_view a, std::string_view b) noexcept;

// Does every topic name that matches `inner` also match `outer`?
bool filter_covers(std::string_view outer, std::string_view inner) noexcept;

// "$share/group/filter" -> "filter"; other filters unchanged.
std::string_view strip_shared_prefix(std::string_view filter) noexcept;

}  // namespace mqttools::auth
