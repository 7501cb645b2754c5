// What the management API (src/admin) and client lifecycle events need
// from the broker: the banned list it enforces at CONNECT, and an
// observer told of every client that connects or goes. The broker knows
// nothing of HTTP or JSON.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mqttools/reason_code.hpp"

namespace mqttools::broker {

class Connection;

// EMQX's banned table: a client id, a username or a peer address ("as"),
// until a time or for ever. A banned client is refused at CONNECT (0x8A
// Banned) and, when the ban is added, kicked if connected (0x98).
struct Ban {
    enum class Kind : std::uint8_t { clientid, username, peerhost };
    Kind as = Kind::clientid;
    std::string who;
    std::string by;      // who added it ("mqttools_api" by default)
    std::string reason;
    std::int64_t at = 0;     // Unix seconds when added
    std::int64_t until = 0;  // Unix seconds when it ends; 0: never
};

std::string_view ban_kind_name(Ban::Kind kind) noexcept;
bool parse_ban_kind(std::string_view name, Ban::Kind& kind) noexcept;

class BanList {
public:
    // False when (as, who) is already banned.
    bool add(Ban ban);
    bool remove(Ban::Kind as, std::string_view who);
    // The ban that refuses this client now, if any (expired ones are dropped).
    const Ban* match(std::string_view client_id, std::string_view username, std::string_view host,
                     std::int64_t now);
    // Every ban still in force, ordered by kind and name.
    std::vector<Ban> list(std::int64_t now);
    bool empty() const noexcept { return bans_.empty(); }

private:
    const Ban* find(Ban::Kind as, std::string_view who, std::int64_t now);
    std::map<std::pair<Ban::Kind, std::string>, Ban> bans_;
};

// Told on the reactor thread; must not close connections or route
// messages from inside the call (queue, then act later).
class ClientObserver {
public:
    virtual void client_connected(const Connection& c) = 0;
    virtual void client_disconnected(const Connection& c, ReasonCode reason, bool by_peer) = 0;

protected:
    ~ClientObserver() = default;
};

// "127.0.0.1:5000" / "[::1]:5000" -> {"127.0.0.1", 5000} / {"::1", 5000}.
std::pair<std::string, std::uint16_t> split_peer(std::string_view address);

}  // namespace mqttools::broker
