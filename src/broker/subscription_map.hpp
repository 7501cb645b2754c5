// A session's own subscriptions: topic filter (as subscribed, "$share/..."
// included) -> options. Read on SUBSCRIBE and UNSUBSCRIBE, walked when the
// session ends, is stored or moves. A std::map node plus a heap string per
// filter came to about 128 bytes per subscription (docs/profiling.md,
// "Subscription tree"); here one heap block holds the options and the
// filter's characters, found through an open-addressing table of pointers
// (about 60 bytes for a 20-character filter). Iteration order is the
// table's, not sorted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "mqttools/packets.hpp"

namespace mqttools::broker {

struct SubscriptionOptions {
    QoS qos = QoS::at_most_once;  // granted maximum QoS
    bool no_local = false;
    bool retain_as_published = false;
    std::uint8_t retain_handling = 0;
    std::uint32_t identifier = 0;  // Subscription Identifier, 0 = none
};

class SubscriptionMap {
    struct Entry;

public:
    // What an iterator shows, shaped like a std::map's value:
    // `for (const auto& [filter, options] : map)`, `it->second`.
    template <class Options>
    struct Item {
        std::string_view first;
        Options& second;
    };

    template <bool Const>
    class Iter {
    public:
        using Options = std::conditional_t<Const, const SubscriptionOptions, SubscriptionOptions>;
        Iter() = default;
        // `it->second`: the item lives in a temporary that forwards `->`.
        struct Arrow {
            Item<Options> item;
            const Item<Options>* operator->() const noexcept { return &item; }
        };
        Item<Options> operator*() const noexcept { return {filter_of(*slot_), options_of(*slot_)}; }
        Arrow operator->() const noexcept { return {**this}; }
        Iter& operator++() noexcept {
            ++slot_;
            skip();
            return *this;
        }
        bool operator==(const Iter& o) const noexcept { return slot_ == o.slot_; }

    private:
        friend class SubscriptionMap;
        Iter(Entry* const* slot, Entry* const* end) noexcept : slot_(slot), end_(end) { skip(); }
        void skip() noexcept {
            while (slot_ != end_ && !*slot_) ++slot_;
        }
        Entry* const* slot_ = nullptr;
        Entry* const* end_ = nullptr;
    };
    using iterator = Iter<false>;
    using const_iterator = Iter<true>;

    SubscriptionMap() noexcept = default;
    ~SubscriptionMap() { clear(); }
    SubscriptionMap(const SubscriptionMap&) = delete;
    SubscriptionMap& operator=(const SubscriptionMap&) = delete;

    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }

    iterator begin() noexcept { return {slots_, slots_ + cap_}; }
    iterator end() noexcept { return {slots_ + cap_, slots_ + cap_}; }
    const_iterator begin() const noexcept { return {slots_, slots_ + cap_}; }
    const_iterator end() const noexcept { return {slots_ + cap_, slots_ + cap_}; }

    iterator find(std::string_view filter) noexcept {
        Entry* const* slot = lookup(filter);
        return slot ? iterator(slot, slots_ + cap_) : end();
    }
    const_iterator find(std::string_view filter) const noexcept {
        Entry* const* slot = lookup(filter);
        return slot ? const_iterator(slot, slots_ + cap_) : end();
    }

    // Adds the filter unless it is there (then nothing changes, as
    // std::map::emplace). True when added.
    bool emplace(std::string_view filter, const SubscriptionOptions& options);
    // Adds the filter or replaces its options.
    void assign(std::string_view filter, const SubscriptionOptions& options);
    // Invalidates every iterator.
    void erase(iterator it) noexcept;
    void clear() noexcept;

private:
    static std::string_view filter_of(const Entry* e) noexcept;
    static SubscriptionOptions& options_of(Entry* e) noexcept;
    Entry* const* lookup(std::string_view filter) const noexcept;
    void rehash(std::uint32_t cap);

    Entry** slots_ = nullptr;  // power-of-two table, null = free; none while empty
    std::uint32_t size_ = 0;
    std::uint32_t cap_ = 0;
};

}  // namespace mqttools::broker
