// Every session the broker knows, by client id (in RAM; the seam where
// persistence would plug in later). Timers and routing state are the
// broker's business: this is only the table.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "broker/session.hpp"

namespace mqttools::broker {

class SessionStore {
public:
    Session* find(std::string_view client_id) const;
    // Creates a session; the id must not be in use.
    Session* create(std::string_view client_id);
    // Destroys the session (the caller has unhooked subscriptions and timers).
    void erase(Session* session);

    std::size_t size() const noexcept { return sessions_.size(); }

    template <class F>
    void for_each(F&& fn) const {
        for (const auto& [id, s] : sessions_) fn(*s);
    }

    // Visits the sessions of the buckets from `bucket` on until at least
    // `budget` sessions were seen, and moves `bucket` past them: a listing
    // of 100,000 sessions goes a slice per reactor turn. Sessions added or
    // removed between slices (or a rehash) may be missed or seen twice,
    // as with any live listing. Returns false when no bucket is left.
    template <class F>
    bool scan(std::size_t& bucket, std::size_t budget, F&& fn) const {
        std::size_t seen = 0;
        for (; bucket < sessions_.bucket_count() && seen < budget; ++bucket) {
            for (auto it = sessions_.begin(bucket); it != sessions_.end(bucket); ++it, ++seen) fn(*it->second);
        }
        return bucket < sessions_.bucket_count();
    }

private:
    // Keyed by a view of the session's own client_id (a Session never moves
    // and its id never changes), so the id is stored once, not twice.
    std::unordered_map<std::string_view, std::unique_ptr<Session>> sessions_;
};

}  // namespace mqttools::broker
