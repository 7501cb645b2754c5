#include "broker/session_store.hpp"

namespace mqttools::broker {

Session* SessionStore::find(std::string_view client_id) const {
    auto it = sessions_.find(client_id);
    return it == sessions_.end() ? nullptr : it->second.get();
}

Session* SessionStore::create(std::string_view client_id) {
    auto session = std::make_unique<Session>(std::string(client_id));
    Session* raw = session.get();
    sessions_.emplace(raw->client_id, std::move(session));
    return raw;
}

void SessionStore::erase(Session* session) {
    if (!session) return;
    auto it = sessions_.find(std::string_view(session->client_id));
    if (it != sessions_.end() && it->second.get() == session) sessions_.erase(it);
}

}  // namespace mqttools::broker
