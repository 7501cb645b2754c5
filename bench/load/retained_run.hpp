// mqtt_load --scenario retained: the retained flood (issue 17, scenario 4).
#pragma once

#include "load_options.hpp"

namespace bench {

// One publisher stores `topics` retained messages (QoS 0, `size` bytes),
// then `subs` clients subscribe to `#` one after another (each as soon as
// the previous one's SUBACK came), and every PUBLISH is counted. Reports
// the time from the first SUBSCRIBE until all got every message, and the
// broker's RSS and peak RSS. One JSON object on stdout.
int run_retained(const LoadOptions& o);

}  // namespace bench
