// The bridge's messages: topic mapping with Mosquitto's prefix rules, local
// -> remote delivery (QoS 0 sent or dropped and counted; QoS 1/2 queued,
// bounded by max_queued_messages/bytes, sent within the remote's Receive
// Maximum and resent after a reconnection), and remote -> local routing
// with QoS 1/2 acknowledgements (QoS 2 exactly once: method B, spec 4.3.3).
#include <algorithm>

#include <spdlog/spdlog.h>

#include "bridge/bridge.hpp"
#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

std::size_t queued_size(const MessagePtr& m) { return m ? m->memory_size() : 64; }

}  // namespace

template <class P>
bool Bridge::send(const P& packet) {
    if (!transport_) return false;
    const std::size_t size = encoded_size(packet, version_);
    if (size == 0 || size > remote_max_packet_) return false;  // [MQTT-3.1.2-24]
    const std::size_t at = out_.size();
    out_.resize(at + size);
    encode(packet, version_, MutableBytes(out_.data() + at, size));
    return true;
}

template bool Bridge::send(const PublishPacket&);
template bool Bridge::send(const DisconnectPacket&);
template bool Bridge::send(const PingreqPacket&);

// ---- topics

std::uint64_t parse_broker_id(std::string_view hex) noexcept {
    if (hex.size() != 16) return 0;
    std::uint64_t v = 0;
    for (char ch : hex) {
        unsigned d;
        if (ch >= '0' && ch <= '9') d = static_cast<unsigned>(ch - '0');
        else if (ch >= 'a' && ch <= 'f') d = static_cast<unsigned>(ch - 'a' + 10);
        else return 0;
        v = (v << 4) | d;
    }
    return v;
}

bool Bridge::sends(std::string_view local) const {
    for (const config::BridgeTopic& t : cfg_.topics) {
        if (!t.sends()) continue;
        if (t.pattern.empty()) {
            if (local == t.local_prefix) return true;
            continue;
        }
        if (local.substr(0, t.local_prefix.size()) != t.local_prefix) continue;
        const std::string_view rest = local.substr(t.local_prefix.size());
        if (!rest.empty() && topic_matches(t.pattern, rest)) return true;
    }
    return false;
}

bool Bridge::map_out(std::string_view local, std::string& remote) const {
    for (const config::BridgeTopic& t : cfg_.topics) {
        if (!t.sends()) continue;
        if (t.pattern.empty()) {
            // "" pattern: the prefixes are the whole topics.
            if (local != t.local_prefix) continue;
            remote.assign(t.remote_prefix);
            return true;
        }
        if (local.substr(0, t.local_prefix.size()) != t.local_prefix) continue;
        const std::string_view rest = local.substr(t.local_prefix.size());
        if (rest.empty() || !topic_matches(t.pattern, rest)) continue;
        remote.assign(t.remote_prefix);
        remote.append(rest);
        return true;
    }
    return false;
}

bool Bridge::map_in(std::string_view remote, std::string& local) const {
    for (const config::BridgeTopic& t : cfg_.topics) {
        if (!t.receives()) continue;
        if (t.pattern.empty()) {
            if (remote != t.remote_prefix) continue;
            local.assign(t.local_prefix);
            return true;
        }
        if (remote.substr(0, t.remote_prefix.size()) != t.remote_prefix) continue;
        const std::string_view rest = remote.substr(t.remote_prefix.size());
        if (rest.empty() || !topic_matches(t.pattern, rest)) continue;
        local.assign(t.local_prefix);
        local.append(rest);
        return true;
    }
    return false;
}

void Bridge::subscribe_local() {
    // One trie entry per distinct filter, at the highest QoS asked for it.
    // No Local: what the bridge itself routes in never goes straight back
    // out ([MQTT-3.8.3-3]); Retain As Published keeps the retain flag for
    // the remote ([MQTT-3.3.1-12]).
    for (const config::BridgeTopic& t : cfg_.topics) {
        if (!t.sends()) continue;
        const std::string filter = t.local_filter();
        SubscriptionOptions o;
        o.qos = static_cast<QoS>(t.qos);
        o.no_local = true;
        o.retain_as_published = true;
        auto it = session_.subscriptions.find(filter);
        if (it != session_.subscriptions.end()) {
            if (o.qos <= it->second.qos) continue;
        }
        session_.subscriptions.assign(filter, o);
        // In a cluster the out topics are interest like a client's: what
        // other nodes publish comes here to be sent to the remote.
        broker_.add_subscription(filter, &session_, o);
    }
}

void Bridge::unsubscribe_local() {
    for (const auto& [filter, options] : session_.subscriptions) broker_.remove_subscription(filter, &session_);
    session_.subscriptions.clear();
}

void Bridge::add_cluster_interest() {
    for (const auto& [filter, options] : session_.subscriptions) broker_.cluster_->interest_added(filter);
}

void Bridge::subscribe_remote() {
    std::vector<Subscription> subs;
    std::vector<std::string> filters;
    filters.reserve(cfg_.topics.size());
    for (const config::BridgeTopic& t : cfg_.topics) {
        if (!t.receives()) continue;
        filters.push_back(t.remote_filter());
    }
    std::size_t i = 0;
    for (const config::BridgeTopic& t : cfg_.topics) {
        if (!t.receives()) continue;
        Subscription s;
        s.filter = filters[i++];
        s.qos = static_cast<QoS>(t.qos);
        if (version_ == ProtocolVersion::v5) {
            // No Local: our own publications to the remote are not sent
            // back to us (no loop with `both`); Retain As Published: the
            // retain flag crosses as the publisher set it.
            s.no_local = true;
            s.retain_as_published = true;
        }
        subs.push_back(s);
    }
    if (subs.empty()) return;
    SubscribePacket p;
    p.packet_id = next_packet_id();
    p.subscriptions = SubscriptionList(subs);
    subscribe_id_ = p.packet_id;
    const std::size_t size = encoded_size(p, version_);
    if (size == 0) {
        fail("SUBSCRIBE cannot be encoded", true);
        return;
    }
    const std::size_t at = out_.size();
    out_.resize(at + size);
    encode(p, version_, MutableBytes(out_.data() + at, size));
}

// ---- local -> remote

void Bridge::forward(MessageView& m, QoS qos, bool retain) {
    if (!map_out(m.topic, out_topic_)) return;
    // bridge_outgoing_retain = false: for remotes that mishandle retained
    // messages from bridges (Mosquitto's key).
    if (!remote_retain_ || !cfg_.outgoing_retain) retain = false;
    qos = std::min(qos, remote_max_qos_);
    last_activity_ = broker_.reactor().now();
    if (qos == QoS::at_most_once) {
        if (state_ != State::connected) {
            drop("QoS 0 while the remote is not connected");
            return;
        }
        if (out_.size() - out_pos_ >= broker_.config().max_client_output_bytes) {
            drop("the remote is not reading fast enough");
            return;
        }
        PublishPacket p;
        p.qos = QoS::at_most_once;
        p.retain = retain;
        p.topic = out_topic_;
        p.payload = m.payload;
        if (version_ == ProtocolVersion::v5) {
            p.properties.passthrough = m.properties;
            p.properties.passthrough_mask = forwarded_properties;
            p.properties.message_expiry_interval = m.expiry_interval;
        }
        if (!send(p)) {
            drop("larger than the remote's Maximum Packet Size");
            return;
        }
        ++stats_.messages_sent;
        stats_.bytes_sent += m.payload.size();
        return;
    }
    if (!m.stored) m.stored = make_message(m, broker_.reactor().now());
    Outgoing o;
    o.message = m.stored;
    if (out_topic_ != m.topic) o.topic = out_topic_;
    o.qos = qos;
    o.retain = retain;
    enqueue(std::move(o));
}

void Bridge::drop(const char* why) {
    ++stats_.dropped;
    ++broker_.stats_.publish_dropped;
    if (!drop_logged_) {
        drop_logged_ = true;
        spdlog::warn("Bridge {}: dropping messages ({}).", cfg_.name, why);
    }
}

void Bridge::enqueue(Outgoing&& o, bool front) {
    const config::Config& c = broker_.config();
    const std::size_t size = queued_size(o.message);
    if (!front) {
        if (c.max_queued_messages != 0 && queue_.size() >= c.max_queued_messages) {
            drop("max_queued_messages reached");
            return;
        }
        if (c.max_queued_bytes != 0 && queued_bytes_ + size > c.max_queued_bytes) {
            drop("max_queued_bytes reached");
            return;
        }
    }
    queued_bytes_ += size;
    // The state message (front) is made again on each connection: not stored.
    if (!front) store_enqueued(o);
    if (front) {
        queue_.push_front(std::move(o));
    } else {
        queue_.push_back(std::move(o));
    }
    if (state_ == State::connected) {
        pump();
    } else if (state_ == State::stopped && cfg_.start_type == config::BridgeStart::lazy &&
               queue_.size() >= cfg_.threshold) {
        spdlog::info("Bridge {}: {} messages queued, connecting (lazy).", cfg_.name, queue_.size());
        connect_next();
    }
}

std::size_t Bridge::window() const noexcept {
    std::size_t w = version_ == ProtocolVersion::v5 ? remote_receive_maximum_ : 65535;
    const std::uint16_t local = broker_.config().max_inflight_messages;
    if (local != 0) w = std::min<std::size_t>(w, local);
    return std::max<std::size_t>(w, 1);
}

std::uint16_t Bridge::next_packet_id() {
    // Skip ids still in flight ([MQTT-2.2.1-3]).
    for (;;) {
        last_packet_id_ = static_cast<std::uint16_t>(last_packet_id_ + 1);
        if (last_packet_id_ != 0 && !inflight_ids_.contains(last_packet_id_)) return last_packet_id_;
    }
}

void Bridge::pump() {
    const auto now = broker_.reactor().now();
    const std::size_t w = window();
    while (state_ == State::connected && !queue_.empty() && inflight_.size() < w) {
        Outgoing o = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= std::min(queued_bytes_, queued_size(o.message));
        if (o.message->expired(now)) {
            drop("message expired while queued");  // spec 3.3.2.3.3
            store_done(o);
            continue;
        }
        o.packet_id = next_packet_id();
        o.step = o.qos == QoS::at_least_once ? Outgoing::Step::puback : Outgoing::Step::pubrec;
        if (!send_publish(o, false)) {
            drop("larger than the remote's Maximum Packet Size");
            store_done(o);
            continue;
        }
        store_state(o);
        inflight_ids_.insert(o.packet_id);
        inflight_.push_back(std::move(o));
    }
}

bool Bridge::send_publish(Outgoing& o, bool dup) {
    const Message& msg = *o.message;
    PublishPacket p;
    p.dup = dup;
    p.qos = o.qos;
    p.retain = o.retain;
    p.packet_id = o.packet_id;
    p.topic = o.topic.empty() ? std::string_view(msg.topic) : std::string_view(o.topic);
    p.payload = msg.payload_bytes();
    if (version_ == ProtocolVersion::v5) {
        p.properties.passthrough = msg.property_bytes();
        p.properties.passthrough_mask = forwarded_properties;
        // Counted down while it waited here ([MQTT-3.3.2-6]).
        p.properties.message_expiry_interval = msg.remaining_expiry(broker_.reactor().now());
    }
    if (!send(p)) return false;
    ++stats_.messages_sent;
    stats_.bytes_sent += msg.payload.size();
    return true;
}

void Bridge::resume_inflight(bool session_present) {
    drop_logged_ = false;
    // [MQTT-4.4.0-1]: unacknowledged PUBLISH again with DUP, PUBREL for
    // those already PUBREC'd, in the original order. Without the session
    // (a remote that restarted without persistence) a PUBREC'd message was
    // delivered already: it is done; the others are sent as new.
    for (auto it = inflight_.begin(); it != inflight_.end();) {
        if (it->step == Outgoing::Step::pubcomp) {
            if (!session_present) {
                inflight_ids_.erase(it->packet_id);
                store_done(*it);
                it = inflight_.erase(it);
                continue;
            }
            send(AckPacket{PacketType::pubrel, it->packet_id, ReasonCode::success, {}});
        } else {
            send_publish(*it, session_present);
        }
        ++it;
    }
}

void Bridge::on_ack(const FixedHeader& header, Bytes body) {
    auto decoded = decode_ack(header, body, version_);
    if (!decoded) {
        fail("malformed " + std::string(packet_type_name(header.type)) + " from the remote", true);
        return;
    }
    const AckPacket& a = *decoded;
    last_activity_ = broker_.reactor().now();
    auto find = [&](Outgoing::Step step) {
        return std::find_if(inflight_.begin(), inflight_.end(),
                            [&](const Outgoing& o) { return o.packet_id == a.packet_id && o.step == step; });
    };
    auto finish = [&](std::deque<Outgoing>::iterator it) {
        inflight_ids_.erase(it->packet_id);
        store_done(*it);
        inflight_.erase(it);
        pump();
    };
    switch (a.type) {
        case PacketType::puback: {
            auto it = find(Outgoing::Step::puback);
            if (it != inflight_.end()) finish(it);
            return;
        }
        case PacketType::pubrec: {
            auto it = find(Outgoing::Step::pubrec);
            if (it == inflight_.end()) {
                send(AckPacket{PacketType::pubrel, a.packet_id, ReasonCode::packet_identifier_not_found, {}});
                return;
            }
            if (is_error(a.reason)) {
                finish(it);  // refused by the remote: the flow ends (spec 4.3.3)
                return;
            }
            it->step = Outgoing::Step::pubcomp;
            it->message.reset();
            store_state(*it);
            send(AckPacket{PacketType::pubrel, a.packet_id, ReasonCode::success, {}});
            return;
        }
        case PacketType::pubcomp: {
            auto it = find(Outgoing::Step::pubcomp);
            if (it != inflight_.end()) finish(it);
            return;
        }
        case PacketType::pubrel: {
            const ReasonCode rc = inbound_qos2_.erase(a.packet_id) ? ReasonCode::success
                                                                   : ReasonCode::packet_identifier_not_found;
            send(AckPacket{PacketType::pubcomp, a.packet_id, rc, {}});
            return;
        }
        default:
            return;
    }
}

// ---- remote -> local

void Bridge::on_remote_publish(const FixedHeader& header, Bytes body) {
    auto decoded = decode_publish(header, body, version_, Sender::server);
    if (!decoded) {
        fail("malformed PUBLISH from the remote", true);
        return;
    }
    const PublishPacket& p = *decoded;
    if (p.properties.topic_alias) {
        // Our CONNECT allowed no topic aliases ([MQTT-3.2.2-17] applied to us).
        fail("the remote used a Topic Alias", true);
        return;
    }
    last_activity_ = broker_.reactor().now();
    if (p.qos == QoS::exactly_once && inbound_qos2_.contains(p.packet_id)) {
        // Routed already: acknowledge again, route nothing.
        send(AckPacket{PacketType::pubrec, p.packet_id, ReasonCode::success, {}});
        return;
    }
    ReasonCode rc = ReasonCode::success;
    if (map_in(p.topic, in_topic_)) {
        MessageView m;
        m.topic = in_topic_;
        m.payload = p.payload;
        m.properties = p.properties.raw;
        m.qos = p.qos;
        m.retain = p.retain;
        m.expiry_interval = p.properties.message_expiry_interval;
        ++stats_.messages_received;
        stats_.bytes_received += p.payload.size();
        if (route_in(m) == 0) rc = ReasonCode::no_matching_subscribers;
    } else {
        rc = ReasonCode::no_matching_subscribers;  // not one of our `in` topics
    }
    if (p.qos == QoS::at_least_once) {
        send(AckPacket{PacketType::puback, p.packet_id, rc, {}});
    } else if (p.qos == QoS::exactly_once) {
        inbound_qos2_.insert(p.packet_id);
        send(AckPacket{PacketType::pubrec, p.packet_id, rc, {}});
    }
}

std::size_t Bridge::route_in(MessageView& m) {
    if (m.retain && !broker_.config().retain_available) m.retain = false;
    // In a cluster, what the remote sends is for every node's clients, as
    // a local client's message is (docs/cluster.md: a bridge runs on one
    // node; that node's bridge also forwards what other nodes publish).
    if (broker_.cluster_) broker_.publish_to_cluster(m);
    if (m.retain) {
        // A retained message from the remote is retained here too, as a
        // local publisher's would be ([MQTT-3.3.1-5], [MQTT-3.3.1-6]).
        if (m.payload.empty()) {
            broker_.retained_.erase(m.topic);
        } else {
            m.stored = make_message(m, broker_.reactor().now());
            broker_.retained_.set(m.stored);
        }
        if (broker_.store_) broker_.persist_retained(m.topic, m.stored);
    }
    ++broker_.stats_.publish_received;
    broker_.stats_.publish_bytes_received += m.payload.size();
    return broker_.route(&session_, m);
}

void Bridge::flush() {
    if (!transport_) return;
    while (out_pos_ < out_.size()) {
        iovec iov{out_.data() + out_pos_, out_.size() - out_pos_};
        const net::IoResult r = transport_->write(&iov, 1);
        if (r.status == net::IoStatus::error) {
            fail("write failed");
            return;
        }
        if (r.status != net::IoStatus::ok || r.bytes == 0) break;
        out_pos_ += r.bytes;
    }
    if (out_pos_ == out_.size()) {
        out_.clear();
        out_pos_ = 0;
    } else if (out_pos_ > (1u << 20)) {
        out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(out_pos_));
        out_pos_ = 0;
    }
    if (transport_->has_pending() && transport_->flush().status == net::IoStatus::error) {
        fail("write failed");
        return;
    }
    update_events();
}

BridgeCounters Bridge::counters() const {
    BridgeCounters c = stats_;
    switch (state_) {
        case State::connected: c.state = "connected"; break;
        case State::resolving:
        case State::connecting:
        case State::awaiting_connack: c.state = "connecting"; break;
        case State::waiting: c.state = "waiting"; break;
        case State::stopped: c.state = "stopped"; break;
    }
    c.connected = state_ == State::connected;
    c.address = address_text_;
    c.queued = queue_.size() + inflight_.size();
    return c;
}

}  // namespace mqttools::broker
