#include "broker/subscription_map.hpp"

#include <cstring>
#include <functional>
#include <new>

namespace mqttools::broker {

// One heap block: the options, then the filter's characters.
struct SubscriptionMap::Entry {
    SubscriptionOptions options;
    std::uint32_t length;
};

namespace {

std::uint32_t hash_filter(std::string_view filter) noexcept {
    return static_cast<std::uint32_t>(std::hash<std::string_view>{}(filter));
}

}  // namespace

std::string_view SubscriptionMap::filter_of(const Entry* e) noexcept {
    return {reinterpret_cast<const char*>(e + 1), e->length};
}

SubscriptionOptions& SubscriptionMap::options_of(Entry* e) noexcept { return e->options; }

SubscriptionMap::Entry* const* SubscriptionMap::lookup(std::string_view filter) const noexcept {
    if (size_ == 0) return nullptr;
    const std::uint32_t mask = cap_ - 1;
    for (std::uint32_t i = hash_filter(filter) & mask;; i = (i + 1) & mask) {
        Entry* e = slots_[i];
        if (!e) return nullptr;
        if (filter_of(e) == filter) return slots_ + i;
    }
}

bool SubscriptionMap::emplace(std::string_view filter, const SubscriptionOptions& options) {
    if (lookup(filter)) return false;
    // Linear probing stays short below 3/4 full.
    if ((size_ + 1) * 4 > cap_ * 3) rehash(cap_ == 0 ? 4 : cap_ * 2);
    auto* e = static_cast<Entry*>(::operator new(sizeof(Entry) + filter.size()));
    e->options = options;
    e->length = static_cast<std::uint32_t>(filter.size());
    std::memcpy(reinterpret_cast<char*>(e + 1), filter.data(), filter.size());
    const std::uint32_t mask = cap_ - 1;
    std::uint32_t i = hash_filter(filter) & mask;
    while (slots_[i]) i = (i + 1) & mask;
    slots_[i] = e;
    ++size_;
    return true;
}

void SubscriptionMap::assign(std::string_view filter, const SubscriptionOptions& options) {
    if (Entry* const* slot = lookup(filter)) {
        (*slot)->options = options;
    } else {
        emplace(filter, options);
    }
}

void SubscriptionMap::erase(iterator it) noexcept {
    std::uint32_t i = static_cast<std::uint32_t>(it.slot_ - slots_);
    ::operator delete(slots_[i]);
    // Backward-shift deletion: later entries of the probe run move into the
    // hole unless their home slot lies cyclically within (hole, j].
    const std::uint32_t mask = cap_ - 1;
    for (std::uint32_t j = (i + 1) & mask; slots_[j]; j = (j + 1) & mask) {
        const std::uint32_t home = hash_filter(filter_of(slots_[j])) & mask;
        const bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays) continue;
        slots_[i] = slots_[j];
        i = j;
    }
    slots_[i] = nullptr;
    --size_;
    if (size_ == 0) {
        clear();
    } else if (size_ * 8 < cap_ && cap_ > 8) {
        rehash(cap_ / 2);
    }
}

void SubscriptionMap::clear() noexcept {
    for (std::uint32_t i = 0; i < cap_; ++i) ::operator delete(slots_[i]);
    delete[] slots_;
    slots_ = nullptr;
    size_ = 0;
    cap_ = 0;
}

void SubscriptionMap::rehash(std::uint32_t cap) {
    Entry** fresh = new Entry*[cap]();
    const std::uint32_t mask = cap - 1;
    for (std::uint32_t k = 0; k < cap_; ++k) {
        Entry* e = slots_[k];
        if (!e) continue;
        std::uint32_t i = hash_filter(filter_of(e)) & mask;
        while (fresh[i]) i = (i + 1) & mask;
        fresh[i] = e;
    }
    delete[] slots_;
    slots_ = fresh;
    cap_ = cap;
}

}  // namespace mqttools::broker
