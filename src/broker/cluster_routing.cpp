// Messages, retained updates and session claims that arrive from other
// nodes of a cluster (broker/cluster_link.hpp). A message from NATS is the
// MQTT 5 PUBLISH the sending node encoded: decoded here like a client's,
// then routed through this node's trie, which applies the MQTT matching
// rules exactly (the NATS subjects only choose which nodes get it).
#include <spdlog/spdlog.h>

#include "bridge/bridge.hpp"
#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

struct Decoded {
    PublishPacket packet;
    bool ok = false;
};

Decoded decode(Bytes packet) {
    Decoded d;
    const Frame f = read_frame(packet);
    if (f.status != FrameStatus::complete || f.header.type != PacketType::publish ||
        f.header.packet_size() != packet.size()) {
        return d;
    }
    auto p = decode_publish(f.header, packet.subspan(f.header.header_size), ProtocolVersion::v5, Sender::server);
    if (!p) return d;
    d.packet = *p;
    d.ok = true;
    return d;
}

MessageView view_of_packet(const PublishPacket& p) {
    MessageView m;
    m.topic = p.topic;
    m.payload = p.payload;
    m.properties = p.properties.raw;
    m.qos = p.qos;
    m.retain = p.retain;
    m.expiry_interval = p.properties.message_expiry_interval;
    return m;
}

}  // namespace

void Broker::set_cluster(ClusterLink* link) {
    cluster_ = link;
    if (!cluster_) return;
    sessions_.for_each([this](Session& s) {
        for (const auto& [filter, options] : s.subscriptions) cluster_->interest_added(filter);
    });
    for (const auto& b : bridges_) b->add_cluster_interest();
}

// This node's members of `shared` ("$share/NAME/filter") that `topic`
// matches, or null; the routing scratch lists are left empty.
SharedGroup* Broker::local_group(std::string_view topic, std::string_view shared) {
    const auto sf = parse_shared_filter(shared);
    forms_.clear();
    matches_.clear();
    groups_.clear();
    targets_.clear();
    ids_.clear();
    if (!sf) return nullptr;
    trie_.match(topic, matches_, groups_);
    matches_.clear();
    SharedGroup* group = nullptr;
    for (SharedGroup* g : groups_) {
        if (g->name != sf->share_name || g->members.empty()) continue;
        const auto& subs = g->members.front().session->subscriptions;
        if (subs.find(shared) != subs.end()) {
            group = g;
            break;
        }
    }
    groups_.clear();
    return group;
}

bool Broker::route_from_cluster(Bytes packet, std::string_view shared, std::uint64_t origin, std::uint64_t seq,
                                bool packed) {
    const Decoded d = decode(packet);
    if (!d.ok || d.packet.topic.empty()) {
        spdlog::warn("Cluster: undecodable message from another node dropped.");
        return false;
    }
    MessageView m = view_of_packet(d.packet);
    m.cluster_origin = origin;
    m.cluster_seq = seq;
    // A session resuming here may get this message from the stream too
    // (session_replica.cpp): it had it live.
    if (!replays_.empty() && m.qos != QoS::at_most_once && origin != 0) {
        late_seen_.insert_or_assign({origin, seq}, ++late_arrivals_);
    }
    if (m.qos == QoS::at_most_once) {
        // The very bytes another node encoded: an MQTT 5 subscriber of the
        // same wire form gets them without an encode (deliver_qos0).
        m.raw = packet;
        m.raw_version = ProtocolVersion::v5;
    }
    if (shared.empty()) {
        collect_targets(nullptr, m.topic, packed ? &cluster_route_ : nullptr);
        deliver(m);
        return true;
    }
    // The one group NATS picked this node for: same name and filter.
    SharedGroup* group = local_group(m.topic, shared);
    if (!group) return false;  // its last member left while the message crossed
    deliver_to_group(*group, shared, m);
    return true;
}

// One member of `group` (round robin, connected ones first) gets `m`; in a
// cluster, noted as taken (note_shared_taken).
void Broker::deliver_to_group(SharedGroup& group, std::string_view shared, MessageView& m) {
    groups_.push_back(&group);
    merge_matches(nullptr);
    if (cluster_ && !targets_.empty()) note_shared_taken(shared, *targets_.front().session, m, targets_.front().qos);
    deliver(m);
}

// Before the member gets it: the cluster notes who took the message
// (nats_groups.cpp), so that the survivors of this node know which of the
// group's messages were here. At QoS 0 for this member it is done at once.
void Broker::note_shared_taken(std::string_view group, Session& s, const MessageView& m, QoS qos) {
    if (m.qos == QoS::at_most_once || m.cluster_origin == 0 || s.bridge) return;
    const ClusterMessageId id{m.cluster_origin, m.cluster_seq};
    cluster_->shared_taken(group, s.client_id, s.replicated, id);
    if (qos == QoS::at_most_once) cluster_->shared_done(s.client_id, id);
}

// Spec 4.8.2: a QoS 1 message its member did not acknowledge, or any it
// was not sent yet, SHOULD go to another member of the group when the
// member's session ends; a QoS 2 message once sent MUST NOT
// [MQTT-4.8.2-5]: it is that member's.
std::vector<Broker::SharedHandback> Broker::shared_unfinished(const Session& s) const {
    std::vector<SharedHandback> out;
    if (!s.outbound || shutting_down_ || cluster_fenced_ || s.bridge) return out;
    auto add = [&](const OutboundMessage& m) {
        if (!m.from_shared || !m.message) return;
        for (const auto& [filter, options] : s.subscriptions) {
            const auto sf = parse_shared_filter(filter);
            if (sf && topic_matches(sf->filter, m.message->topic)) {
                out.push_back(SharedHandback{std::string(filter), m.message});
                return;
            }
        }
    };
    for (const OutboundMessage& m : s.outbound->inflight) {
        if (m.state == OutboundMessage::State::awaiting_puback || m.held_for_record) add(m);
    }
    for (const OutboundMessage& m : s.outbound->queue) {
        if (m.qos == QoS::at_least_once || !m.maybe_sent) add(m);
    }
    return out;
}

void Broker::end_session_handing_back(Session& s) {
    std::vector<SharedHandback> unfinished = shared_unfinished(s);
    end_session(s);  // its subscriptions go first: it is no member any more
    if (!unfinished.empty()) hand_back_shared(unfinished);
}

void Broker::hand_back_shared(std::vector<SharedHandback>& messages) {
    const auto now = reactor_.now();
    for (SharedHandback& h : messages) {
        if (h.message->expired(now)) continue;  // [MQTT-3.3.2-5]
        MessageView v = view_of(h.message, now);
        // A member of the same group on this node first; in a cluster, else
        // the group's other nodes (NATS' queue group picks one; this node
        // left the group before, on the same connection: nats_groups.cpp).
        SharedGroup* group = local_group(v.topic, h.group);
        if (!group) {
            if (cluster_) cluster_->redispatch(h.group, v);
            continue;
        }
        spdlog::debug("A message of {} goes to another member (its member's session ended).", h.group);
        deliver_to_group(*group, h.group, v);
    }
}

// A message replayed from the stream for one session (session_replica.cpp):
// routed to that session's matching subscriptions only.
// `shared`: through its shared subscription (the first that matches).
void Broker::route_to_session(Session& s, Bytes packet, std::uint64_t origin, std::uint64_t seq, bool shared) {
    const Decoded d = decode(packet);
    if (!d.ok || d.packet.topic.empty()) return;
    MessageView m = view_of_packet(d.packet);
    m.cluster_origin = origin;
    m.cluster_seq = seq;
    if (!shared) {
        collect_targets(nullptr, m.topic);
        std::erase_if(targets_, [&s](const Target& t) { return t.session != &s; });
        deliver(m);
        return;
    }
    forms_.clear();
    targets_.clear();
    ids_.clear();
    for (const auto& [filter, o] : s.subscriptions) {
        const auto sf = parse_shared_filter(filter);
        if (!sf || !topic_matches(sf->filter, m.topic)) continue;
        Target t{&s, o.qos, o.retain_as_published, 0, 0, true};
        if (o.identifier != 0) {
            ids_.push_back(o.identifier);
            t.ids_count = 1;
        }
        targets_.push_back(t);
        note_shared_taken(filter, s, m, o.qos);
        break;
    }
    deliver(m);
}

bool Broker::retained_from_cluster(Bytes packet, std::uint32_t age_seconds) {
    const Decoded d = decode(packet);
    if (!d.ok || d.packet.topic.empty()) return false;
    if (!config_.retain_available) return true;
    MessageView m = view_of_packet(d.packet);
    m.retain = true;
    if (m.payload.empty()) {
        retained_.erase(m.topic);  // a delete from any node [MQTT-3.3.1-6]
        return true;
    }
    if (m.expiry_interval) {
        // The Message Expiry Interval counts from the publication.
        if (*m.expiry_interval <= age_seconds) {
            retained_.erase(m.topic);
            return true;
        }
        *m.expiry_interval -= age_seconds;
    }
    retained_.set(make_message(m, reactor_.now()));
    return true;
}

bool Broker::session_claimed_elsewhere(std::string_view client_id, std::string_view node, bool wants_state) {
    // A CONNECT parked here for this id lost the race to a newer claim: it
    // was first, so it is accepted and then taken over, as on one node
    // when two CONNECTs with one id follow each other ([MQTT-3.1.4-3]).
    std::vector<Connection*> lost;
    for (auto [conn, p] : parked_with(client_id)) lost.push_back(conn);
    for (Connection* conn : lost) resume_parked(*conn);
    Session* s = sessions_.find(std::string(client_id));
    if (!s) return !lost.empty();
    s->replicated = false;  // the claiming node writes its record
    spdlog::info("Client {} connected to another node: closing here (session taken over).", s->client_id);
    if (s->connection) close_connection(*s->connection, ReasonCode::session_taken_over, true);  // [MQTT-3.1.4-3]
    s = sessions_.find(std::string(client_id));
    if (!s) {
        // It ended with its connection (Session Expiry 0): nothing to hand
        // over, but the waiting node need not wait any longer.
        if (wants_state && cluster_) cluster_->send_session(node, client_id, {});
        return true;
    }
    // The session lives on at the other node: no delayed will from here
    // ([MQTT-3.1.3-9]: it reconnected in time), and no copy left behind.
    reactor_.cancel_timer(s->will_timer);
    s->will_timer = {};
    s->will.reset();
    if (wants_state && cluster_) {
        // Subscriptions, queued and in-flight messages, inbound QoS 2 ids
        // go to the node that claimed it (session_transfer.cpp); what
        // still arrives here follows when that node asks.
        if (s->handing_over) end_handover(*s);
        cluster_->send_session(node, s->client_id, export_session(*s));
        begin_sending_handover(*s, node);
        return true;
    }
    end_session(*s);
    return true;
}

}  // namespace mqttools::broker
