// Compact containers for the subscription trie's nodes (subscription_trie.cpp).
// A million subscriptions make about two million nodes, nearly all with one
// child or one subscriber: a std::unordered_map, a std::vector and a
// std::string per node came to a few hundred bytes each (docs/profiling.md,
// "Subscription tree"). These keep one child or one subscriber inline, a few
// children in a small array, and only wide nodes (past kArrayMax children)
// in an open-addressing hash table.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string_view>

#include "broker/session.hpp"

namespace mqttools::broker {

struct Subscriber {
    Session* session = nullptr;
    SubscriptionOptions options;
};

namespace trie {

inline std::uint32_t hash_level(std::string_view level) noexcept {
    return static_cast<std::uint32_t>(std::hash<std::string_view>{}(level));
}

// A node's children by level. N has `std::string_view level() const` and
// `std::uint32_t hash` (hash_level of its level, kept so that a table
// grows, shrinks and deletes without hashing the strings again).
template <class N>
class ChildSet {
public:
    static constexpr std::uint32_t kArrayMax = 8;  // past this, a hash table

    ChildSet() noexcept : one_(nullptr) {}
    ~ChildSet() { release(); }
    ChildSet(const ChildSet&) = delete;
    ChildSet& operator=(const ChildSet&) = delete;

    std::uint32_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }

    // The child at `level`, or null. A small set compares the levels
    // directly (no hash computed on the PUBLISH path).
    N* find(std::string_view level) const noexcept {
        if (cap_ == 0) return size_ != 0 && one_->level() == level ? one_ : nullptr;
        if (cap_ <= kArrayMax) {
            for (std::uint32_t i = 0; i < size_; ++i) {
                if (items_[i]->level() == level) return items_[i];
            }
            return nullptr;
        }
        const std::uint32_t h = hash_level(level);
        const std::uint32_t mask = cap_ - 1;
        for (std::uint32_t i = h & mask;; i = (i + 1) & mask) {
            N* c = items_[i];
            if (!c) return nullptr;
            if (c->hash == h && c->level() == level) return c;
        }
    }

    // Adds a child whose level is not in the set yet.
    void insert(N* child) {
        if (cap_ == 0) {
            if (size_ == 0) {
                one_ = child;
                size_ = 1;
                return;
            }
            N* first = one_;
            items_ = new N*[2];
            items_[0] = first;
            items_[1] = child;
            cap_ = 2;
            size_ = 2;
            return;
        }
        if (cap_ <= kArrayMax) {
            if (size_ == cap_) {
                if (cap_ < kArrayMax) {
                    to_array(cap_ * 2);
                } else {
                    to_table(2 * kArrayMax);
                    put(child);
                    ++size_;
                    return;
                }
            }
            items_[size_++] = child;
            return;
        }
        // Linear probing stays short below 3/4 full.
        if ((size_ + 1) * 4 > cap_ * 3) to_table(cap_ * 2);
        put(child);
        ++size_;
    }

    // Removes a child that is in the set; shrinks when it has emptied out.
    void erase(N* child) noexcept {
        if (cap_ == 0) {
            one_ = nullptr;
            size_ = 0;
            return;
        }
        if (cap_ <= kArrayMax) {
            for (std::uint32_t i = 0; i < size_; ++i) {
                if (items_[i] == child) {
                    items_[i] = items_[--size_];
                    break;
                }
            }
            if (size_ <= 1) {
                to_inline();
            } else if (size_ * 4 <= cap_) {
                to_array(cap_ / 2);
            }
            return;
        }
        const std::uint32_t mask = cap_ - 1;
        std::uint32_t i = child->hash & mask;
        while (items_[i] != child) i = (i + 1) & mask;
        // Backward-shift deletion: later entries of the probe run move into
        // the hole unless their home slot lies cyclically within (hole, j].
        for (std::uint32_t j = (i + 1) & mask; items_[j]; j = (j + 1) & mask) {
            const std::uint32_t home = items_[j]->hash & mask;
            const bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
            if (stays) continue;
            items_[i] = items_[j];
            i = j;
        }
        items_[i] = nullptr;
        --size_;
        if (size_ <= kArrayMax / 2) {
            to_array(kArrayMax);
        } else if (size_ * 8 < cap_ && cap_ > 2 * kArrayMax) {
            to_table(cap_ / 2);
        }
    }

    template <class F>
    void for_each(F&& f) const {
        if (cap_ == 0) {
            if (size_ != 0) f(one_);
            return;
        }
        const std::uint32_t n = cap_ <= kArrayMax ? size_ : cap_;
        for (std::uint32_t i = 0; i < n; ++i) {
            if (items_[i]) f(items_[i]);
        }
    }

private:
    void release() noexcept {
        if (cap_ != 0) delete[] items_;
        one_ = nullptr;
        cap_ = 0;
        size_ = 0;
    }

    // Moves every child into fresh storage of the given form.
    void to_inline() noexcept {
        N* only = size_ != 0 ? first() : nullptr;
        const std::uint32_t n = size_;
        release();
        one_ = only;
        size_ = n;
    }
    void to_array(std::uint32_t cap) {
        N** fresh = new N*[cap];
        std::uint32_t n = 0;
        for_each([&](N* c) { fresh[n++] = c; });
        release();
        items_ = fresh;
        cap_ = cap;
        size_ = n;
    }
    void to_table(std::uint32_t cap) {
        N** fresh = new N*[cap]();
        const std::uint32_t mask = cap - 1;
        std::uint32_t n = 0;
        for_each([&](N* c) {
            std::uint32_t i = c->hash & mask;
            while (fresh[i]) i = (i + 1) & mask;
            fresh[i] = c;
            ++n;
        });
        release();
        items_ = fresh;
        cap_ = cap;
        size_ = n;
    }
    void put(N* child) noexcept {
        const std::uint32_t mask = cap_ - 1;
        std::uint32_t i = child->hash & mask;
        while (items_[i]) i = (i + 1) & mask;
        items_[i] = child;
    }
    N* first() const noexcept {
        N* found = nullptr;
        for_each([&](N* c) {
            if (!found) found = c;
        });
        return found;
    }

    // cap_ 0: `one_` (size 0 or 1); 2..kArrayMax: an unsorted array of
    // size_ children; above: a power-of-two table, null = free slot.
    union {
        N* one_;
        N** items_;
    };
    std::uint32_t size_ = 0;
    std::uint32_t cap_ = 0;
};

// The subscribers at a node: one inline (most filters have one), more in
// an array. Order does not matter: erase swaps in the last one.
class SubscriberList {
public:
    SubscriberList() noexcept : one_{} {}
    ~SubscriberList() {
        if (cap_ != 0) delete[] many_;
    }
    SubscriberList(const SubscriberList&) = delete;
    SubscriberList& operator=(const SubscriberList&) = delete;

    std::uint32_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    Subscriber* begin() noexcept { return cap_ == 0 ? &one_ : many_; }
    Subscriber* end() noexcept { return begin() + size_; }
    const Subscriber* begin() const noexcept { return cap_ == 0 ? &one_ : many_; }
    const Subscriber* end() const noexcept { return begin() + size_; }

    Subscriber* find(const Session* session) noexcept {
        for (Subscriber& s : *this) {
            if (s.session == session) return &s;
        }
        return nullptr;
    }

    void push_back(const Subscriber& s) {
        if (cap_ == 0 && size_ == 0) {
            one_ = s;
            size_ = 1;
            return;
        }
        if (cap_ == 0 || size_ == cap_) grow(cap_ == 0 ? 2 : cap_ * 2);
        many_[size_++] = s;
    }

    void erase(Subscriber* s) noexcept {
        *s = *(end() - 1);
        --size_;
        if (cap_ == 0) return;
        if (size_ <= 1) {
            const Subscriber last = size_ != 0 ? many_[0] : Subscriber{};
            delete[] many_;
            cap_ = 0;
            one_ = last;
        } else if (size_ * 4 <= cap_) {
            grow(cap_ / 2);
        }
    }

private:
    void grow(std::uint32_t cap) {
        Subscriber* fresh = new Subscriber[cap];
        std::memcpy(static_cast<void*>(fresh), begin(), size_ * sizeof(Subscriber));
        if (cap_ != 0) delete[] many_;
        many_ = fresh;
        cap_ = cap;
    }

    union {
        Subscriber one_;
        Subscriber* many_;
    };
    std::uint32_t size_ = 0;
    std::uint32_t cap_ = 0;  // 0: one_ holds the only subscriber, if any
};

}  // namespace trie
}  // namespace mqttools::broker
