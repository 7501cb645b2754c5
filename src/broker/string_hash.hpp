// Transparent hashing so unordered containers keyed by std::string can be
// searched with a std::string_view without building a string.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace mqttools::broker {

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

}  // namespace mqttools::broker
