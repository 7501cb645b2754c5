// The broker's side of the bridges: create, replace and remove them as the
// config asks (startup and SIGHUP). A bridge whose table is unchanged keeps
// its connection and its queue; local clients are never touched.
// Also the receiving side: bridges of other brokers that connect here
// (Mosquitto's try_private, our own handshake) and the loop rules.
#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

#include "bridge/bridge.hpp"
#include "broker/broker.hpp"

namespace mqttools::broker {

void Broker::sync_bridges(const std::vector<config::Bridge>& wanted) {
    std::vector<std::unique_ptr<Bridge>> changed;
    // Removed or changed: stopped (state 0 published) and destroyed.
    for (auto it = bridges_.begin(); it != bridges_.end();) {
        const config::Bridge& have = (*it)->settings();
        const auto same = std::find(wanted.begin(), wanted.end(), have);
        if (same != wanted.end()) {
            ++it;
            continue;
        }
        const bool renamed_away = std::none_of(wanted.begin(), wanted.end(),
                                               [&](const config::Bridge& b) { return b.name == have.name; });
        spdlog::info("Bridge {}: {}.", have.name, renamed_away ? "removed from the configuration" : "configuration changed, restarting");
        (*it)->stop();
        if (renamed_away) {
            (*it)->forget_stored();
        } else {
            // Its queue goes to the new one, made below.
            changed.push_back(std::move(*it));
        }
        it = bridges_.erase(it);
    }
    // Added (or changed, just removed above).
    for (const config::Bridge& b : wanted) {
        const bool running = std::any_of(bridges_.begin(), bridges_.end(),
                                         [&](const std::unique_ptr<Bridge>& x) { return x->settings().name == b.name; });
        if (running) continue;
        bridges_.push_back(std::make_unique<Bridge>(*this, b));
        for (auto& old : changed) {
            if (old->settings().name == b.name) bridges_.back()->take_queue(*old);
        }
        bridges_.back()->start();
    }
}

std::uint64_t Broker::broker_id() {
    if (broker_id_ == 0) {
        std::random_device rd;
        broker_id_ = ((std::uint64_t{rd()} << 32) | rd()) | 1u;  // never 0
        broker_id_text_ = fmt::format("{:016x}", broker_id_);
    }
    return broker_id_;
}

const std::string& Broker::broker_id_text() {
    broker_id();
    return broker_id_text_;
}

void Broker::accept_bridge(Connection& c, const ConnectPacket& p, ConnackPacket& ack) {
    Session& s = *c.session;
    c.bridge_peer = p.bridge;
    s.peer_broker = 0;
    if (p.bridge) spdlog::info("Client {} is a bridge (try_private).", c.client_id);
    if (p.version != ProtocolVersion::v5 || p.properties.user_property_count == 0) return;
    PropertyReader r(p.properties.raw);
    Property prop;
    while (r.next(prop)) {
        if (prop.id != PropertyId::user_property || prop.string != bridge_property) continue;
        const std::uint64_t id = parse_broker_id(prop.value);
        // A bridge to ourselves has nothing to tell apart.
        if (id == 0 || id == broker_id()) return;
        s.peer_broker = id;
        bridge_ack_[0] = StringPair{bridge_property, broker_id_text()};
        ack.properties.user_properties = std::span<const StringPair>(bridge_ack_, 1);
        spdlog::info("Client {} is the bridge of mqttoolsd {}.", c.client_id, prop.value);
        return;
    }
}

bool Broker::bridge_loop(const Session& target, std::string_view topic) {
    // It came from that broker (through either link between us): back
    // there it would loop.
    if (route_from_ && route_from_->peer_broker == target.peer_broker) return true;
    if (target.bridge) return false;
    // The bridge of a broker we also bridge to ourselves: when our bridge
    // sends this topic there, that copy is the one; this link would
    // deliver it a second time (both brokers bridging the same topics to
    // each other).
    for (const auto& b : bridges_) {
        if (b->remote_broker() == target.peer_broker && b->sends(topic)) return true;
    }
    return false;
}

std::vector<BridgeCounters> Broker::bridge_counters() const {
    std::vector<BridgeCounters> out;
    out.reserve(bridges_.size());
    for (const auto& b : bridges_) out.push_back(b->counters());
    return out;
}

}  // namespace mqttools::broker
