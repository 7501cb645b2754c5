// Topic level splitting shared by the subscription trie and the retained store.
#pragma once

#include <string_view>

namespace mqttools::broker {

// Splits off the first level of a topic or filter: returns it and advances
// `rest`; `at_end` becomes true when it was the last level. "a//b" has an
// empty middle level, as the spec counts levels (4.7.1).
inline std::string_view next_level(std::string_view& rest, bool& at_end) noexcept {
    auto slash = rest.find('/');
    if (slash == std::string_view::npos) {
        auto level = rest;
        rest = {};
        at_end = true;
        return level;
    }
    auto level = rest.substr(0, slash);
    rest.remove_prefix(slash + 1);
    return level;
}

}  // namespace mqttools::broker
