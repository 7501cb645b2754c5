// A node that lost touch with its cluster (issue 25, docs/cluster.md "What
// survives what"). Two cases, both driven by the cluster link:
//
// * Cut off from NATS for longer than `[cluster] disconnect_after`: the
//   node can neither store QoS 1/2 messages nor reach the other nodes, so
//   its clients are better served elsewhere. It disconnects them (MQTT 5:
//   DISCONNECT 0x9C Use another server) and refuses CONNECTs (0x88 Server
//   unavailable) until NATS is back; their sessions resume on another node
//   from the cluster's records.
// * Frozen (SIGSTOP, a paused VM) or with its link broken: meanwhile other
//   nodes may have resumed its sessions (their claims never reached it).
//   The link fences the node while it asks the ownership bucket about every
//   session held here: no queued message goes out (another node may be
//   sending it), no record is written (it would overwrite the new owner's),
//   no will is sent (the new owner decides). A session another node owns
//   is dropped without a trace (its connection, if the client never closed
//   it, gets DISCONNECT 0x8E Session taken over); the rest goes on.
#include <spdlog/spdlog.h>

#include "broker/broker.hpp"

namespace mqttools::broker {

void Broker::cluster_cut_off(bool cut) {
    if (cut == cluster_cut_) return;
    cluster_cut_ = cut;
    if (!cut) {
        spdlog::info("Cluster: NATS is back; accepting clients again.");
        return;
    }
    std::vector<Connection*> open;
    for (const auto& c : connections_) {
        if (c && c->state != Connection::State::closing) open.push_back(c.get());
    }
    spdlog::warn("Cluster: cut off from NATS for longer than disconnect_after: disconnecting {} client(s) so that "
                 "they fail over to other nodes; refusing new ones until NATS is back.",
                 open.size());
    for (Connection* c : open) {
        // Its session stays here in RAM (the cluster's record is what other
        // nodes resume); the will is the cluster's too once another node
        // takes it, so none is sent from here now.
        if (c->state == Connection::State::connected && c->session) c->will_suppressed = true;
        close_connection(*c, ReasonCode::use_another_server, true);
    }
}

void Broker::cluster_fence(bool on) {
    if (on == cluster_fenced_) return;
    cluster_fenced_ = on;
    if (on) {
        spdlog::warn("Cluster: checking which sessions other nodes took while this node was out of touch.");
        return;
    }
    std::vector<Session*> kept;
    sessions_.for_each([&](const Session& s) { kept.push_back(const_cast<Session*>(&s)); });
    for (Session* s : kept) {
        if (s->replicated) replicate_session(*s);
        if (s->will_after_fence) {
            s->will_after_fence = false;
            publish_will(*s);
        }
        if (s->connection && s->connection->state == Connection::State::connected) pump(*s);
    }
}

void Broker::session_owned_elsewhere(std::string_view client_id) {
    Session* s = sessions_.find(client_id);
    if (!s) return;
    spdlog::info("Client {}: another node took its session while this node was out of touch; dropping it here.",
                 s->client_id);
    s->replicated = false;  // the record is the new owner's
    s->will.reset();
    s->will_after_fence = false;
    if (Connection* c = s->connection) {
        c->will_suppressed = true;
        close_connection(*c, ReasonCode::session_taken_over, true);  // [MQTT-3.1.4-3]
    }
    if (Session* left = sessions_.find(client_id)) end_session(*left);
}

}  // namespace mqttools::broker
