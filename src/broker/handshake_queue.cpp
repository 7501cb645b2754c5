// TLS handshakes paced across reactor turns (see Broker::handshake_readable
// in broker.hpp). A server handshake's first step (key share and
// certificate signature) costs about half a millisecond; a storm of them
// must not hold the clients that are already connected.
#include <chrono>

#include "broker/broker.hpp"
#include "broker/connection.hpp"

namespace mqttools::broker {

void Broker::run_handshake_step(Connection& c) {
    const auto start = net::Clock::now();
    c.read_handshake();
    handshake_time_ += net::Clock::now() - start;
}

void Broker::handshake_readable(Connection& c) {
    // First come, first served: while some wait, a newly readable one
    // queues behind them even if this turn's budget is not spent.
    if (handshake_queue_.empty() && handshake_time_ < handshake_time_per_turn) {
        run_handshake_step(c);
        return;
    }
    c.queue_handshake(true);  // EPOLLIN off until its turn
    handshake_queue_.push_back(&c);
}

void Broker::resume_handshakes() {
    while (!handshake_queue_.empty() && handshake_time_ < handshake_time_per_turn) {
        Connection* c = handshake_queue_.front();
        handshake_queue_.pop_front();
        c->queue_handshake(false);
        if (c->state == Connection::State::closing) continue;
        // It was readable when queued and nothing has read it since.
        run_handshake_step(*c);
    }
    // The rest go on next turn, which must not sleep waiting for events
    // they will not report (their EPOLLIN is off).
    if (!handshake_queue_.empty()) reactor_.skip_next_wait();
}

}  // namespace mqttools::broker
