#include "broker/auth/topic_filter.hpp"

namespace mqttools::auth {
namespace {

// Walks the '/'-separated levels of a topic or filter without copying.
class Levels {
public:
    explicit Levels(std::string_view s) noexcept : s_(s) {}
    bool next(std::string_view& level) noexcept {
        if (done_) return false;
        const auto slash = s_.find('/', pos_);
        if (slash == std::string_view::npos) {
            level = s_.substr(pos_);
            done_ = true;
        } else {
            level = s_.substr(pos_, slash - pos_);
            pos_ = slash + 1;
        }
        return true;
    }

private:
    std::string_view s_;
    std::size_t pos_ = 0;
    bool done_ = false;
};

bool is_wild(std::string_view level) noexcept { return level == "+" || level == "#"; }
bool is_dollar(std::string_view s) noexcept { return !s.empty() && s.front() == '$'; }

}  // namespace

bool valid_filter(std::string_view filter) noexcept {
    if (filter.empty() || filter.find('\0') != std::string_view::npos) return false;
    Levels levels(filter);
    std::string_view level;
    bool after_hash = false;
    while (levels.next(level)) {
        if (after_hash) return false;  // '#' must be last [MQTT-4.7.1-1]
        if (level.find_first_of("+#") != std::string_view::npos && !is_wild(level)) return false;
        after_hash = level == "#";
    }
    return true;
}

bool topic_matches(std::string_view filter, std::string_view topic) noexcept {
    if (is_dollar(topic) && !filter.empty() && (filter.front() == '+' || filter.front() == '#')) {
        return false;  // [MQTT-4.7.2-1]
    }
    Levels f(filter), t(topic);
    std::string_view fl, tl;
    while (true) {
        const bool hf = f.next(fl);
        const bool ht = t.next(tl);
        if (!hf) return !ht;
        if (fl == "#") return true;  // this level and all below, or none ("a/#" matches "a")
        if (!ht) return false;
        if (fl != "+" && fl != tl) return false;
    }
}

bool filters_intersect(std::string_view a, std::string_view b) noexcept {
    Levels la(a), lb(b);
    std::string_view x, y;
    bool first = true;
    while (true) {
        const bool ha = la.next(x);
        const bool hb = lb.next(y);
        if (!ha && !hb) return true;
        if (!ha) return y == "#";  // "a" and "a/#" share the topic "a"
        if (!hb) return x == "#";
        if (first && ((is_wild(x) && is_dollar(y)) || (is_wild(y) && is_dollar(x)))) return false;
        first = false;
        if (x == "#" || y == "#") return true;
        if (x != "+" && y != "+" && x != y) return false;
    }
}

bool filter_covers(std::string_view outer, std::string_view inner) noexcept {
    Levels lo(outer), li(inner);
    std::string_view o, i;
    bool first = true;
    while (true) {
        const bool ho = lo.next(o);
        const bool hi = li.next(i);
        if (!ho) return !hi;
        if (!hi) return o == "#";
        if (first && is_wild(o) && is_dollar(i)) return false;
        first = false;
        if (o == "#") return true;
        if (o == "+") {
            if (i == "#") return false;
            continue;
        }
        if (o != i) return false;  // a literal covers only the same literal
    }
}

std::string_view strip_shared_prefix(std::string_view filter) noexcept {
    if (!filter.starts_with("$share/")) return filter;
    const auto rest = filter.substr(7);
    const auto slash = rest.find('/');
    return slash == std::string_view::npos ? filter : rest.substr(slash + 1);
}

}  // namespace mqttools::auth
