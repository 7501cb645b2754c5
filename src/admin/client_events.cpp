#include "admin/client_events.hpp"

#include <chrono>

#include <nlohmann/json.hpp>

#include "broker/broker.hpp"
#include "net/socket.hpp"

namespace mqttools::admin {

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// What every event says about the client.
nlohmann::json client_fields(const broker::Connection& c) {
    nlohmann::json j;
    const auto [host, port] = broker::split_peer(net::peer_address(c.fd()));
    j["clientid"] = c.client_id;
    j["username"] = c.has_username ? nlohmann::json(c.username) : nlohmann::json(nullptr);
    j["ipaddress"] = host;
    j["sockport"] = net::local_port(c.fd());
    j["proto_name"] = "MQTT";
    j["proto_ver"] = static_cast<int>(c.version);
    return j;
}

}  // namespace

std::string disconnect_reason(ReasonCode reason, bool by_peer, bool normal_disconnect) {
    if (normal_disconnect) return "normal";
    if (by_peer) return "tcp_closed";
    switch (reason) {
        case ReasonCode::administrative_action: return "kicked";
        case ReasonCode::session_taken_over: return "takenover";
        case ReasonCode::keep_alive_timeout: return "keepalive_timeout";
        case ReasonCode::server_shutting_down: return "shutdown";
        case ReasonCode::protocol_error:
        case ReasonCode::malformed_packet: return "protocol_error";
        case ReasonCode::not_authorized: return "not_authorized";
        default: return std::string(reason_code_name(reason));
    }
}

ClientEvents::ClientEvents(net::Reactor& reactor, broker::Broker& broker, std::string node)
    : reactor_(reactor), broker_(broker), prefix_("$SYS/brokers/" + node + "/clients/") {
    broker_.set_client_observer(this);
}

ClientEvents::~ClientEvents() {
    broker_.set_client_observer(nullptr);
    reactor_.cancel_timer(timer_);
}

void ClientEvents::client_connected(const broker::Connection& c) {
    nlohmann::json j = client_fields(c);
    const std::int64_t ts = now_ms();
    j["keepalive"] = c.keep_alive;
    j["clean_start"] = c.clean_start;
    j["expiry_interval"] = c.session ? c.session->expiry_interval : 0;
    j["connected_at"] = ts;
    j["connack"] = 0;
    j["ts"] = ts;
    queue(prefix_ + c.client_id + "/connected", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void ClientEvents::client_disconnected(const broker::Connection& c, ReasonCode reason, bool by_peer) {
    nlohmann::json j = client_fields(c);
    const std::int64_t ts = now_ms();
    j["reason"] = disconnect_reason(reason, by_peer, c.sent_disconnect());
    j["disconnected_at"] = ts;
    j["ts"] = ts;
    queue(prefix_ + c.client_id + "/disconnected", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void ClientEvents::queue(std::string topic, std::string payload) {
    // A bound, so a connection storm cannot grow this without limit
    // between two turns (10,000 clients connecting at once still fit).
    if (pending_.size() >= 100000) return;
    pending_.emplace_back(std::move(topic), std::move(payload));
    if (!timer_) timer_ = reactor_.add_timer_after(std::chrono::microseconds(1), [this] { flush(); });
}

void ClientEvents::flush() {
    timer_ = {};
    auto events = std::move(pending_);
    pending_.clear();
    for (const auto& [topic, payload] : events) broker_.publish_internal(topic, payload, false);
}

}  // namespace mqttools::admin
