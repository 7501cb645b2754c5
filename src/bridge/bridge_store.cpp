// A bridge's outbound QoS 1/2 queue in the durable store (persistence on):
// messages queued for a remote that is down survive a restart. The queue is
// stored through the same Persistence calls as a client session's queue,
// under a key that no client can use: 0xFF never occurs in UTF-8, and MQTT
// client ids are well-formed UTF-8 ([MQTT-1.5.4-1]). At start-up the broker
// restores it as a session like any other; the bridge takes its queue and
// the session object goes (Broker::adopt_bridge_queues).
//
// The publisher's PUBACK/PUBREC waits for the queue row like for a client
// session's (Broker::handle_packet holds the connection's output when the
// store changed). Packet ids and PUBREC are written as they change, without
// holding anything: after a crash a message may go to the remote once more
// (QoS 1 allows it; QoS 2 after a crash between PUBLISH and the commit).
#include <algorithm>

#include <spdlog/spdlog.h>

#include "bridge/bridge.hpp"
#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

constexpr std::string_view key_prefix = "\xFF" "bridge/";
constexpr std::uint32_t never_expires = 0xFFFFFFFF;

OutboundMessage::State state_of(QoS qos, bool inflight, bool released) {
    if (!inflight) return OutboundMessage::State::queued;
    if (released) return OutboundMessage::State::awaiting_pubcomp;
    return qos == QoS::at_least_once ? OutboundMessage::State::awaiting_puback
                                     : OutboundMessage::State::awaiting_pubrec;
}

}  // namespace

bool Bridge::is_store_key(std::string_view client_id) noexcept { return client_id.starts_with(key_prefix); }

void Bridge::store_enqueued(Outgoing& o) {
    Persistence* store = broker_.store_;
    if (!store || !o.message) return;
    if (!stored_) {
        // The session row: never expires, never connected; the queue rows
        // hang off it (and go with it in forget_stored).
        StoredSession row;
        row.client_id = store_key_;
        row.expiry_interval = never_expires;
        store->put_session(row);
        stored_ = true;
    }
    broker_.persist_message(o.message);
    o.store_seq = next_store_seq_++;
    OutboundMessage m;
    m.message = o.message;
    m.qos = o.qos;
    m.retain = o.retain;
    m.store_seq = o.store_seq;
    store->put_outbound(store_key_, o.store_seq, m);
    broker_.store_changed(nullptr, false);
}

void Bridge::store_state(const Outgoing& o) {
    Persistence* store = broker_.store_;
    if (!store || o.store_seq == 0) return;
    store->update_outbound(store_key_, o.store_seq,
                           state_of(o.qos, o.step != Outgoing::Step::queued, o.step == Outgoing::Step::pubcomp),
                           o.packet_id);
    broker_.store_changed(nullptr, false);
}

void Bridge::store_done(Outgoing& o) {
    Persistence* store = broker_.store_;
    if (!store || o.store_seq == 0) return;
    store->erase_outbound(store_key_, o.store_seq);
    o.store_seq = 0;
    broker_.store_changed(nullptr, false);
}

bool Bridge::requeue(Outgoing& o) {
    if (!o.message) return true;  // only PUBREL left: the topic is not sent again
    if (!map_out(o.message->topic, out_topic_)) return false;
    o.topic.clear();
    if (out_topic_ != o.message->topic) o.topic = out_topic_;
    return true;
}

void Bridge::adopt_stored(Session& restored) {
    stored_ = true;
    std::uint64_t last = 0;
    std::size_t dropped = 0;
    if (restored.outbound) {
        OutboundState& out = *restored.outbound;
        last = out.next_store_seq > 0 ? out.next_store_seq - 1 : 0;
        // In flight first ([MQTT-4.4.0-1] order), then the queue.
        for (auto* list : {&out.inflight, &out.queue}) {
            for (OutboundMessage& m : *list) {
                last = std::max(last, m.store_seq);
                Outgoing o;
                o.message = std::move(m.message);
                o.qos = m.qos;
                o.retain = m.retain;
                o.packet_id = m.packet_id;
                o.store_seq = m.store_seq;
                switch (m.state) {
                    case OutboundMessage::State::queued: o.step = Outgoing::Step::queued; break;
                    case OutboundMessage::State::awaiting_puback: o.step = Outgoing::Step::puback; break;
                    case OutboundMessage::State::awaiting_pubrec: o.step = Outgoing::Step::pubrec; break;
                    case OutboundMessage::State::awaiting_pubcomp: o.step = Outgoing::Step::pubcomp; break;
                }
                if (!requeue(o) || (o.step != Outgoing::Step::pubcomp && !o.message)) {
                    ++dropped;  // its topic is no longer bridged
                    store_done(o);
                    continue;
                }
                if (o.step == Outgoing::Step::queued) {
                    queued_bytes_ += o.message->memory_size();
                    queue_.push_back(std::move(o));
                } else {
                    inflight_ids_.insert(o.packet_id);
                    last_packet_id_ = std::max(last_packet_id_, o.packet_id);
                    inflight_.push_back(std::move(o));
                }
            }
        }
        out.inflight.clear();
        out.queue.clear();
        out.queued_bytes = 0;
    }
    next_store_seq_ = last + 1;
    if (!queue_.empty() || !inflight_.empty() || dropped != 0) {
        spdlog::info("Bridge {}: {} stored messages loaded for the remote{}.", cfg_.name, queue_.size() + inflight_.size(),
                     dropped ? fmt::format(" ({} dropped: their topics are no longer bridged)", dropped) : "");
    }
    // Its connection may be up already (CONNACK can come before the store
    // is opened only in tests); otherwise the CONNACK sends them.
    if (state_ == State::connected) {
        resume_inflight(true);
        pump();
    } else if (state_ == State::stopped && cfg_.start_type == config::BridgeStart::lazy &&
               queue_.size() >= cfg_.threshold) {
        connect_next();
    }
}

void Bridge::take_queue(Bridge& old) {
    stored_ = old.stored_;
    next_store_seq_ = old.next_store_seq_;
    old.stored_ = false;  // the rows are ours now
    // What was in flight on the old connection is sent again as new on
    // ours (possibly to another remote); a message already PUBREC'd was
    // delivered: done.
    for (auto* list : {&old.inflight_, &old.queue_}) {
        for (Outgoing& o : *list) {
            if (o.step == Outgoing::Step::pubcomp || !requeue(o)) {
                if (o.step != Outgoing::Step::pubcomp) ++stats_.dropped;
                store_done(o);
                continue;
            }
            if (o.step != Outgoing::Step::queued) {
                o.step = Outgoing::Step::queued;
                o.packet_id = 0;
                store_state(o);
            }
            queued_bytes_ += o.message->memory_size();
            queue_.push_back(std::move(o));
        }
        list->clear();
    }
    old.inflight_ids_ = PacketIdSet{};
    old.queued_bytes_ = 0;
}

void Bridge::forget_stored() {
    if (!stored_ || !broker_.store_) return;
    broker_.store_->erase_session(store_key_);
    broker_.store_changed(nullptr, false);
    stored_ = false;
}

void Broker::adopt_bridge_queues() {
    for (auto& b : bridges_) {
        if (Session* s = sessions_.find(b->store_key())) {
            b->adopt_stored(*s);
            sessions_.erase(s);
        }
    }
    // Queues of bridges no longer in the configuration: nothing will send
    // them.
    std::vector<Session*> stale;
    sessions_.for_each([&](Session& s) {
        if (Bridge::is_store_key(s.client_id)) stale.push_back(&s);
    });
    for (Session* s : stale) {
        spdlog::info("Persistence: dropping the stored queue of a bridge no longer configured ({}).",
                     s->client_id.substr(1));
        store_->erase_session(s->client_id);
        sessions_.erase(s);
    }
}

}  // namespace mqttools::broker
