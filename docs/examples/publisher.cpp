// Connects to an MQTT broker and publishes the message bar to the topic
// /test/mqttools/foo (the seed's publisher example).
//   publisher [HOST [PORT]]
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "mqttools/client.hpp"

int main(int argc, char** argv) {
    mqttools::ClientOptions options;
    options.host = argc > 1 ? argv[1] : "localhost";
    options.port = static_cast<std::uint16_t>(argc > 2 ? std::atoi(argv[2]) : 1883);
    options.connect_delays.emplace();  // one attempt: report a broker that is down
    try {
        mqttools::Client client(options);
        client.start();
        client.publish("/test/mqttools/foo", "bar");
        // Wait until the broker has the message, then disconnect cleanly.
        client.flush(std::chrono::seconds(5));
        client.stop();
    } catch (const mqttools::ClientError& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
