// The broker's side of the management API (src/admin): the banned list,
// kicks, retained deletes, API publishes, and client lifecycle events.
#include <chrono>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

std::string_view ban_kind_name(Ban::Kind kind) noexcept {
    switch (kind) {
        case Ban::Kind::clientid: return "clientid";
        case Ban::Kind::username: return "username";
        case Ban::Kind::peerhost: return "peerhost";
    }
    return "clientid";
}

bool parse_ban_kind(std::string_view name, Ban::Kind& kind) noexcept {
    if (name == "clientid") {
        kind = Ban::Kind::clientid;
    } else if (name == "username") {
        kind = Ban::Kind::username;
    } else if (name == "peerhost") {
        kind = Ban::Kind::peerhost;
    } else {
        return false;
    }
    return true;
}

bool BanList::add(Ban ban) {
    auto key = std::make_pair(ban.as, ban.who);
    const auto now = unix_now();
    if (auto it = bans_.find(key); it != bans_.end()) {
        if (it->second.until == 0 || it->second.until > now) return false;
        bans_.erase(it);  // an expired one is replaced
    }
    bans_.emplace(std::move(key), std::move(ban));
    return true;
}

bool BanList::remove(Ban::Kind as, std::string_view who) {
    return bans_.erase(std::make_pair(as, std::string(who))) > 0;
}

const Ban* BanList::find(Ban::Kind as, std::string_view who, std::int64_t now) {
    auto it = bans_.find(std::make_pair(as, std::string(who)));
    if (it == bans_.end()) return nullptr;
    if (it->second.until != 0 && it->second.until <= now) {
        bans_.erase(it);
        return nullptr;
    }
    return &it->second;
}

const Ban* BanList::match(std::string_view client_id, std::string_view username, std::string_view host,
                          std::int64_t now) {
    if (bans_.empty()) return nullptr;
    if (const Ban* b = find(Ban::Kind::clientid, client_id, now)) return b;
    if (!username.empty()) {
        if (const Ban* b = find(Ban::Kind::username, username, now)) return b;
    }
    return find(Ban::Kind::peerhost, host, now);
}

std::vector<Ban> BanList::list(std::int64_t now) {
    std::vector<Ban> out;
    for (auto it = bans_.begin(); it != bans_.end();) {
        if (it->second.until != 0 && it->second.until <= now) {
            it = bans_.erase(it);
        } else {
            out.push_back(it->second);
            ++it;
        }
    }
    return out;
}

std::pair<std::string, std::uint16_t> split_peer(std::string_view address) {
    const auto colon = address.rfind(':');
    if (colon == std::string_view::npos) return {std::string(address), 0};
    std::string_view host = address.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    unsigned port = 0;
    for (char ch : address.substr(colon + 1)) {
        if (ch < '0' || ch > '9') break;
        port = port * 10 + static_cast<unsigned>(ch - '0');
    }
    return {std::string(host), static_cast<std::uint16_t>(port)};
}

bool Broker::connect_banned(const Connection& c) {
    if (bans_.empty()) return false;
    const std::string host = split_peer(net::peer_address(c.fd())).first;
    const Ban* ban = bans_.match(c.client_id, c.has_username ? std::string_view(c.username) : std::string_view(),
                                 host, unix_now());
    if (!ban) return false;
    spdlog::info("Client {} from {} is banned ({} {}{}{}).", c.client_id, host, ban_kind_name(ban->as), ban->who,
                 ban->reason.empty() ? "" : ": ", ban->reason);
    return true;
}

std::size_t Broker::enforce_ban(const Ban& ban) {
    std::vector<Connection*> matched;
    for (const auto& conn : connections_) {
        Connection& c = *conn;
        if (c.state != Connection::State::connected) continue;
        bool hit = false;
        switch (ban.as) {
            case Ban::Kind::clientid: hit = c.client_id == ban.who; break;
            case Ban::Kind::username: hit = c.has_username && c.username == ban.who; break;
            case Ban::Kind::peerhost: hit = split_peer(net::peer_address(c.fd())).first == ban.who; break;
        }
        if (hit) matched.push_back(&c);
    }
    for (Connection* c : matched) close_connection(*c, ReasonCode::administrative_action, true);
    return matched.size();
}

bool Broker::add_ban(const Ban& ban) {
    if (!bans_.add(ban)) return false;
    if (store_) store_->put_ban(ban);
    if (admin_link_) admin_link_->ban_changed(ban, false);
    enforce_ban(ban);
    return true;
}

bool Broker::remove_ban(Ban::Kind as, std::string_view who) {
    if (!bans_.remove(as, who)) return false;
    if (store_) store_->erase_ban(as, who);
    if (admin_link_) {
        Ban gone;
        gone.as = as;
        gone.who = who;
        admin_link_->ban_changed(gone, true);
    }
    return true;
}

// Kept in this node's store too: a node that restarts while NATS is away
// still refuses what the cluster banned.
void Broker::ban_from_cluster(const Ban& ban, bool removed) {
    if (removed) {
        if (bans_.remove(ban.as, ban.who) && store_) store_->erase_ban(ban.as, ban.who);
        return;
    }
    if (ban.until != 0 && ban.until <= unix_now()) return;
    if (!bans_.add(ban)) return;  // ours coming back, or known already
    if (store_) store_->put_ban(ban);
    enforce_ban(ban);
}

bool Broker::kick(std::string_view client_id) {
    Session* s = sessions_.find(client_id);
    if (!s || !s->connection || s->connection->state != Connection::State::connected) return false;
    spdlog::info("Client {} kicked by the management API.", client_id);
    close_connection(*s->connection, ReasonCode::administrative_action, true);
    return true;
}

bool Broker::delete_retained(std::string_view topic) {
    if (!retained_.find(topic, reactor_.now())) return false;
    retained_.erase(topic);
    if (store_) persist_retained(topic, nullptr);
    if (cluster_) {
        // The other nodes forget it too: an empty retained message.
        MessageView m;
        m.topic = topic;
        m.retain = true;
        publish_to_cluster(m);
    }
    return true;
}

std::size_t Broker::publish_admin(MessageView& m) {
    if (cluster_) publish_to_cluster(m);  // before a Message is made of it
    if (m.retain) {
        if (m.payload.empty()) {
            retained_.erase(m.topic);
        } else {
            m.stored = make_message(m, reactor_.now());
            retained_.set(m.stored);
        }
        if (store_) persist_retained(m.topic, m.stored);
    }
    return route(nullptr, m);
}

}  // namespace mqttools::broker
