// Connection set-up paced across reactor turns (see Broker::setup_readable
// in broker.hpp). A TLS server handshake's first step (key share and
// certificate signature) costs about half a millisecond, a plain CONNECT
// with its CONNACK some 30 microseconds; a storm of either must not hold
// the clients that are already connected.
#include <chrono>

#include "broker/broker.hpp"
#include "broker/connection.hpp"

namespace mqttools::broker {

void Broker::run_setup_step(Connection& c, bool settled) {
    const auto start = net::Clock::now();
    if (settled) {
        resume_parked(c);  // CONNACK (or the refusal) now
    } else {
        c.read_setup();
    }
    // Its answer (CONNACK, handshake records) is written now rather than in
    // before_sleep's flush, so that the budget counts the write too: for a
    // plain CONNECT the write to loopback costs as much as the CONNECT.
    if (c.dirty && c.state != Connection::State::closing) c.flush();
    setup_time_ += net::Clock::now() - start;
}

void Broker::setup_readable(Connection& c) {
    // First come, first served: while some wait, a newly readable one
    // queues behind them even if this turn's budget is not spent.
    if (setup_queue_.empty() && setup_time_ < setup_time_per_turn) {
        run_setup_step(c);
        return;
    }
    c.queue_setup(true);  // EPOLLIN off until its turn
    setup_queue_.push_back(&c);
}

// The reactor's deferred work: after the turn's output went out (client
// connections and the cluster's NATS wire), so that a storm's set-ups
// delay no message routed in the turn. The budget spans this and the
// next dispatch (setup_readable).
void Broker::resume_setups() {
    setup_time_ = {};
    if (setup_queue_.empty() && settled_queue_.empty()) return;
    // CONNECTs whose claims settled first: they were read before any
    // still queued, and each holds a parked copy of its packet.
    while (!settled_queue_.empty() && setup_time_ < setup_time_per_turn) {
        const auto [c, seq] = settled_queue_.front();
        settled_queue_.pop_front();
        // Gone meanwhile (closed, taken over, timed out; the pointer may
        // even be a new connection's): only the same parking goes on.
        if (auto it = parked_.find(c); it != parked_.end() && it->second.seq == seq) run_setup_step(*c, true);
    }
    while (!setup_queue_.empty() && setup_time_ < setup_time_per_turn) {
        Connection* c = setup_queue_.front();
        setup_queue_.pop_front();
        c->queue_setup(false);
        if (c->state == Connection::State::closing) continue;
        // It was readable when queued and nothing has read it since.
        run_setup_step(*c);
    }
    // The rest go on next turn, which must not sleep waiting for events
    // they will not report (their EPOLLIN is off); and what the set-ups
    // queued for others (a takeover's DISCONNECT, a will, the store's
    // batch, connections to close) goes out in that turn's before_sleep.
    reactor_.skip_next_wait();
}

}  // namespace mqttools::broker
