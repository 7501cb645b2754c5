// The broker's side of the bridges: create, replace and remove them as the
// config asks (startup and SIGHUP). A bridge whose table is unchanged keeps
// its connection and its queue; local clients are never touched.
#include <algorithm>

#include <spdlog/spdlog.h>

#include "broker/bridge.hpp"
#include "broker/broker.hpp"

namespace mqttools::broker {

void Broker::sync_bridges(const std::vector<config::Bridge>& wanted) {
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
        it = bridges_.erase(it);
    }
    // Added (or changed, just removed above).
    for (const config::Bridge& b : wanted) {
        const bool running = std::any_of(bridges_.begin(), bridges_.end(),
                                         [&](const std::unique_ptr<Bridge>& x) { return x->settings().name == b.name; });
        if (running) continue;
        bridges_.push_back(std::make_unique<Bridge>(*this, b));
        bridges_.back()->start();
    }
}

std::vector<BridgeCounters> Broker::bridge_counters() const {
    std::vector<BridgeCounters> out;
    out.reserve(bridges_.size());
    for (const auto& b : bridges_) out.push_back(b->counters());
    return out;
}

}  // namespace mqttools::broker
