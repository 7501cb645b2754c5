// Connects to an MQTT broker, subscribes to /test/# and prints every
// message (the seed's subscriber example).
//   subscriber [HOST [PORT]]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "mqttools/client.hpp"

int main(int argc, char** argv) {
    mqttools::ClientOptions options;
    options.host = argc > 1 ? argv[1] : "localhost";
    options.port = static_cast<std::uint16_t>(argc > 2 ? std::atoi(argv[2]) : 1883);
    try {
        mqttools::Client client(options);
        client.start();
        client.subscribe("/test/#");
        for (;;) {
            const mqttools::Message message = client.messages().pop();
            if (message.connection_lost) {
                std::puts("Broker connection lost!");
                return 1;
            }
            std::printf("Topic:   %s\n", message.topic.c_str());
            std::printf("Message: %s\n", message.payload.c_str());
            std::fflush(stdout);
        }
    } catch (const mqttools::ClientError& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
