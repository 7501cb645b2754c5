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

private:
    // Keyed by a view of the session's own client_id (a Session never moves
    // and its id never changes), so the id is stored once, not twice.
    std::unordered_map<std::string_view, std::unique_ptr<Session>> sessions_;
};

}  // namespace mqttools::broker
