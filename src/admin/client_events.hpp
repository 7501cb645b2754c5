// client_events = true: EMQX's client lifecycle events as MQTT messages,
//   $SYS/brokers/NODE/clients/CLIENTID/connected
//   $SYS/brokers/NODE/clients/CLIENTID/disconnected
// with EMQX's JSON payloads (clientid, username, ipaddress, sockport,
// proto_name, proto_ver, keepalive, clean_start, expiry_interval,
// connected_at / disconnected_at and reason, ts). The broker tells the
// observer while it connects or closes a client; the messages are
// published right after, on the next reactor turn, never from inside the
// broker's own call.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "broker/admin_view.hpp"
#include "net/reactor.hpp"

namespace mqttools::broker {
class Broker;
}

namespace mqttools::admin {

class ClientEvents final : public broker::ClientObserver {
public:
    ClientEvents(net::Reactor& reactor, broker::Broker& broker, std::string node);
    ~ClientEvents();
    ClientEvents(const ClientEvents&) = delete;
    ClientEvents& operator=(const ClientEvents&) = delete;

    void client_connected(const broker::Connection& c) override;
    void client_disconnected(const broker::Connection& c, ReasonCode reason, bool by_peer) override;

private:
    void queue(std::string topic, std::string payload);
    void flush();

    net::Reactor& reactor_;
    broker::Broker& broker_;
    std::string prefix_;  // "$SYS/brokers/NODE/clients/"
    std::vector<std::pair<std::string, std::string>> pending_;
    net::Reactor::TimerId timer_{};
};

// EMQX's reason for a disconnection ("normal", "kicked", "takenover",
// "keepalive_timeout", "tcp_closed", ...).
std::string disconnect_reason(ReasonCode reason, bool by_peer, bool normal_disconnect);

}  // namespace mqttools::admin
