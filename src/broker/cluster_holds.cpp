// What a cluster node holds back until NATS confirms (cluster_link.hpp): a
// SUBACK until the node's new interest is in place, a PUBACK/PUBREC until
// the message it acknowledges has reached NATS. Whatever else is sent to
// the client meanwhile collects behind them (Connection::begin_deferral):
// the client sees its SUBACK before the messages its subscription matched
// and its PUBACK before its own message comes back, as from one broker.
#include <algorithm>

#include "broker/broker.hpp"

namespace mqttools::broker {

void Broker::release_deferred(Connection& c) {
    if (!c.output_deferred) return;
    const bool acks_held = c.held_acks() != 0;
    if (acks_held && c.extras->pings_held != 0) return;  // hold_pingresp
    if (auto it = held_subacks_.find(&c); it != held_subacks_.end()) {
        // A SUBACK still held: what collected may match its subscription
        // and waits for it. Confirmed already, it waited only for these
        // acknowledgements (of PUBLISH packets sent before the SUBSCRIBE).
        if (!acks_held && it->second.ticket <= interest_confirmed_) release_suback(c);
        return;
    }
    const std::unique_ptr<net::OutputQueue> collected = c.end_deferral();
    if (collected) c.append_output(*collected);
    // Still waiting for a later ticket: what comes from now on is behind
    // that one; what came so far goes out (a client that publishes without
    // waiting may then see a copy of its message before the PUBACK, which
    // MQTT allows; holding it all could delay its output without end).
    if (acks_held) c.begin_deferral();
}

void Broker::interest_confirmed(std::uint64_t ticket) {
    interest_confirmed_ = std::max(interest_confirmed_, ticket);
    std::vector<Connection*> ready;
    for (const auto& [conn, held] : held_subacks_) {
        // A SUBACK goes after the PUBACKs still held for the client's
        // earlier PUBLISH packets (publishes_confirmed releases it then).
        if (held.ticket <= ticket && conn->held_acks() == 0) ready.push_back(conn);
    }
    for (Connection* conn : ready) {
        if (held_subacks_.contains(conn)) release_suback(*conn);  // else closed meanwhile
    }
    // Sessions taken over from another node: their interest is in place,
    // so what that node collected meanwhile can come (session_transfer.cpp).
    for (auto& [session, h] : handovers_) {
        if (!h.sending && !h.tail_asked && h.ticket <= ticket) ask_for_tail(*session, h);
    }
    // Sessions resumed from their record: the replay may start.
    std::vector<std::string> replay;
    for (const auto& [client_id, r] : replays_) {
        if (!r.started && r.ticket <= ticket) replay.push_back(client_id);
    }
    for (const std::string& id : replay) start_replay(id);
}

void Broker::release_suback(Connection& c) {
    auto it = held_subacks_.find(&c);
    HeldSuback held = std::move(it->second);
    held_subacks_.erase(it);
    // The SUBACK, then its retained messages, then what matched the
    // subscription meanwhile.
    const std::unique_ptr<net::OutputQueue> collected = c.end_deferral();
    SubackPacket ack;
    ack.packet_id = held.packet_id;
    ack.reason_codes = held.codes;
    c.send(ack);
    for (const auto& [filter, options] : held.retained) deliver_retained(c, filter, options);
    if (collected) c.append_output(*collected);
    if (c.state == Connection::State::connected) c.resume_reading();
}

void Broker::send_publish_ack(Connection& c, const AckPacket& ack, std::uint64_t ticket, bool no_local_match) {
    const std::uint32_t held = c.held_acks();
    if (ticket == 0 && held == 0) {
        c.send_now(ack);
        return;
    }
    // Behind the acknowledgements already held for this client: they go
    // out in the order of the PUBLISH packets.
    const bool own = ticket != 0;
    if (ticket == 0) {
        ticket = held_acks_.back().ticket;
        no_local_match = false;  // not a message of its own
    }
    held_acks_.push_back(HeldAck{&c, ticket, ack, no_local_match, false, own});
    ++c.more().acks_held;
    c.begin_deferral();
}

// A PINGREQ while acknowledgements are held: its PINGRESP is collected
// behind them, and nothing collected is released until they have all gone
// (a client that pings to know its publishes are done gets the PINGRESP
// after their PUBACKs and after the messages that came meanwhile).
void Broker::hold_pingresp(Connection& c) {
    held_acks_.push_back(HeldAck{&c, held_acks_.back().ticket, AckPacket{}, false, true, false});
    ++c.more().acks_held;
    ++c.more().pings_held;
}

void Broker::publishes_confirmed(std::uint64_t ticket) {
    // Tickets only grow, so the front is the oldest.
    std::vector<Connection*> touched;
    std::vector<Connection*> refused_311;
    while (!held_acks_.empty() && held_acks_.front().ticket <= ticket) {
        HeldAck h = held_acks_.front();
        held_acks_.pop_front();
        Connection& c = *h.connection;
        --c.extras->acks_held;
        // Not stored durably in time (sessions = "replicated"): refused,
        // never acknowledged into the void; the publisher sends it again.
        const ReasonCode refused = h.own && !h.pingresp && cluster_ ? cluster_->publish_refused(h.ticket)
                                                                    : ReasonCode::success;
        if (refused != ReasonCode::success && h.ack.reason == ReasonCode::success) {
            if (h.ack.type == PacketType::pubrec && c.session) {
                c.session->inbound_qos2.erase(h.ack.packet_id);  // not received: a resend is new
                if (c.session->stored) persist_inbound(*c.session, h.ack.packet_id, false);
            }
            if (c.version != ProtocolVersion::v5) {
                // 3.1.1 has no negative PUBACK: close instead ([MQTT-3.3.5-2]).
                if (refused_311.empty() || refused_311.back() != &c) refused_311.push_back(&c);
                continue;
            }
            h.ack.reason = refused;
        }
        // Nobody here and, as NATS answered, no other node: what a single
        // node says ([MQTT-3.4.2.1] 0x10 No matching subscribers).
        if (h.no_local_match && h.ack.reason == ReasonCode::success && cluster_ &&
            cluster_->reached_no_node(h.ticket)) {
            h.ack.reason = ReasonCode::no_matching_subscribers;
        }
        if (h.pingresp) {
            --c.extras->pings_held;
        } else {
            c.send_now(h.ack);
        }
        if (touched.empty() || touched.back() != &c) touched.push_back(&c);
    }
    // Once per connection: a client with many acknowledgements released
    // at once appears in runs.
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (Connection* c : touched) release_deferred(*c);
    std::sort(refused_311.begin(), refused_311.end());
    refused_311.erase(std::unique(refused_311.begin(), refused_311.end()), refused_311.end());
    for (Connection* c : refused_311) {
        if (c->state == Connection::State::connected) close_connection(*c, ReasonCode::unspecified_error, false);
    }
}

void Broker::drop_holds(Connection& c) {
    if (!held_subacks_.empty()) held_subacks_.erase(&c);
    if (c.held_acks() != 0) {
        std::erase_if(held_acks_, [&c](const HeldAck& h) { return h.connection == &c; });
        c.extras->acks_held = 0;
        c.extras->pings_held = 0;
    }
    // What collected is dropped with the connection (its QoS 1/2 messages
    // stay in flight in the session, resent with DUP on the next
    // connection); the DISCONNECT that follows must go out.
    if (c.output_deferred) c.end_deferral();
}

}  // namespace mqttools::broker
