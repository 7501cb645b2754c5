// The $SYS topic tree, with Mosquitto's names and payload formats, so
// dashboards written for Mosquitto work unchanged. The daemon calls update()
// every sys_interval seconds and publishes what it returns as retained
// messages; like Mosquitto, a value is republished only when it changed.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "daemon/stats.hpp"

namespace mqttools::daemon {

struct SysMessage {
    std::string topic;
    std::string payload;
};

class SysTopics {
public:
    using Clock = std::chrono::steady_clock;

    SysTopics(std::string version, Clock::time_point start);

    // Everything on the first call (and after reset()), changed values after.
    std::vector<SysMessage> update(const BrokerStats& stats, Clock::time_point now);

    // Forget what was published: the next update() republishes every topic
    // (used if the retained store was cleared).
    void reset();

private:
    // One exponentially-smoothed per-minute rate, as Mosquitto's calc_load().
    struct Load {
        double one = 0;
        double five = 0;
        double fifteen = 0;
        std::uint64_t last_count = 0;
    };
    void add_load(std::vector<SysMessage>& out, const std::string& name, Load& load,
                  std::uint64_t count, double seconds);
    void add(std::vector<SysMessage>& out, const std::string& topic, std::string payload);

    std::string version_;
    Clock::time_point start_;
    Clock::time_point last_update_;
    bool first_ = true;
    std::map<std::string, std::string> published_;
    std::map<std::string, Load> loads_;
};

}  // namespace mqttools::daemon
