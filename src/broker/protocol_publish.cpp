// PUBLISH in (spec 3.3) and the router: match, merge overlapping
// subscriptions, pick shared-subscription members, and deliver. A QoS 0
// delivery to an online client is encoded once per distinct wire form into
// a pooled shared buffer; nothing is copied per subscriber.
#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "bridge/bridge.hpp"
#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

std::size_t topic_levels(std::string_view topic) {
    return static_cast<std::size_t>(std::count(topic.begin(), topic.end(), '/')) + 1;
}

}  // namespace

void Broker::handle_publish(Connection& c, const FixedHeader& header, Bytes body) {
    auto decoded = decode_publish(header, body, c.version, Sender::client);
    if (!decoded) {
        close_connection(c, decoded.error(), true);
        return;
    }
    const PublishPacket& p = *decoded;
    std::string_view topic = p.topic;
    // Topic aliases, client -> broker (spec 3.3.2.3.4).
    if (p.properties.topic_alias) {
        const std::uint16_t alias = *p.properties.topic_alias;
        if (alias == 0 || alias > config_.topic_alias_maximum) {
            close_connection(c, ReasonCode::topic_alias_invalid, true);  // [MQTT-3.3.2-8], [MQTT-3.3.2-9]
            return;
        }
        // Allocated on first use: most clients never send an alias.
        auto& in = c.topic_aliases().in;
        if (in.empty()) in.resize(std::size_t{config_.topic_alias_maximum} + 1);
        std::string& slot = in[alias];
        if (topic.empty()) {
            if (slot.empty()) {
                close_connection(c, ReasonCode::protocol_error, true);  // unknown alias
                return;
            }
            topic = slot;
        } else {
            slot.assign(topic);
            topic = slot;
        }
    }
    if (p.retain && !config_.retain_available) {
        close_connection(c, ReasonCode::retain_not_supported, true);  // [MQTT-3.3.1-14]
        return;
    }
    Session& s = *c.session;
    ++stats_.publish_received;
    stats_.publish_bytes_received += p.payload.size();

    if (p.qos == QoS::exactly_once) {
        if (s.inbound_qos2.contains(p.packet_id)) {
            // Already received and routed: acknowledge again, route nothing
            // (exactly once, method B of spec 4.3.3).
            send_publish_ack(c, AckPacket{PacketType::pubrec, p.packet_id, ReasonCode::success, {}}, 0);
            return;
        }
        // More unreleased QoS 2 messages than our Receive Maximum
        // ([MQTT-3.3.4-9]).
        if (s.inbound_qos2.size() >= config_.receive_maximum) {
            close_connection(c, ReasonCode::receive_maximum_exceeded, true);
            return;
        }
    }

    ReasonCode rc = ReasonCode::success;
    if (config_.message_size_limit != 0 && p.payload.size() > config_.message_size_limit) {
        rc = ReasonCode::packet_too_large;
    } else if (config_.max_topic_levels != 0 && topic_levels(topic) > config_.max_topic_levels) {
        rc = ReasonCode::quota_exceeded;
    } else if (const auth::Verdict v = authorize_publish(c, topic); v != auth::Verdict::allow) {
        if (v == auth::Verdict::pending) [[unlikely]] {
            // The answer is to come (an HTTP ACL check): this PUBLISH and
            // what follows it wait, and it is handled again then.
            --stats_.publish_received;
            hold_for_acl(c);
            return;
        }
        rc = ReasonCode::not_authorized;
    } else if (const ReasonCode refused =
                   cluster_ ? cluster_->publish_refusal(topic, p.payload.size() + p.properties.raw.size() + topic.size())
                            : ReasonCode::success;
               refused != ReasonCode::success) {
        // The other nodes could not get it (docs/cluster.md, "Limits").
        rc = refused;
        if (c.version != ProtocolVersion::v5 && p.qos != QoS::at_most_once) {
            close_connection(c, rc, false);  // 3.1.1: no negative PUBACK ([MQTT-3.3.5-2])
            return;
        }
    } else if (!p.payload.empty() && memory_exceeded()) {
        // memory_limit: refuse new work; an empty retained message only frees memory.
        rc = ReasonCode::quota_exceeded;
    } else if (store_degraded_ && (p.qos != QoS::at_most_once || p.retain)) {
        // The store cannot write: refuse what would have to be kept rather
        // than acknowledge what a crash would lose.
        ++store_stats_.refused;
        rc = ReasonCode::quota_exceeded;
        if (c.version != ProtocolVersion::v5 && p.qos != QoS::at_most_once) {
            // 3.1.1 has no negative PUBACK: close rather than acknowledge
            // ([MQTT-3.3.5-2] allows either; only closing keeps the promise).
            close_connection(c, rc, false);
            return;
        }
    } else if (is_dynsec_control(topic)) [[unlikely]] {
        // Commands for dynamic security: handled, answered, never routed.
        acknowledge_publish(c, p, rc, 0);
        handle_dynsec_control(c, p.payload);
        return;
    } else {
        MessageView m;
        m.topic = topic;
        m.payload = p.payload;
        m.properties = p.properties.raw;
        m.qos = p.qos;
        m.retain = p.retain;
        m.expiry_interval = p.properties.message_expiry_interval;
        if (p.qos == QoS::at_most_once && !p.properties.topic_alias) {
            m.raw = Bytes(body.data() - header.header_size, header.packet_size());
            m.raw_version = c.version;
        }
        // In a cluster 0x10 waits for NATS to say whether another node
        // took it (cluster_holds.cpp).
        std::uint64_t ticket = 0;
        if (cluster_) {
            publish_to_cluster(m);  // before a Message is made of it
            ticket = cluster_->publish_ticket();
        }
        if (p.retain) {
            if (p.payload.empty()) {
                retained_.erase(topic);  // [MQTT-3.3.1-6]
            } else {
                m.stored = make_message(m, reactor_.now());
                retained_.set(m.stored);
            }
            if (store_) persist_retained(topic, m.stored);
        }
        // The publisher gets its acknowledgement before any copy of its own
        // message (as from Mosquitto): match first, acknowledge, deliver.
        // The route cache is for clients that publish often: one that
        // publishes now and then (most devices) never allocates it.
        RouteCache* cache = c.extras || c.published_recently ? &c.more().route : nullptr;
        c.published_recently = true;
        const bool no_local_match = collect_targets(&s, topic, cache) == 0;
        if (no_local_match && !cluster_) rc = ReasonCode::no_matching_subscribers;
        acknowledge_publish(c, p, rc, ticket, no_local_match && ticket != 0);
        deliver(m);
        return;
    }
    acknowledge_publish(c, p, rc, 0);
}

void Broker::acknowledge_publish(Connection& c, const PublishPacket& p, ReasonCode rc, std::uint64_t ticket,
                                 bool no_local_match) {
    if (p.qos == QoS::at_least_once) {
        send_publish_ack(c, AckPacket{PacketType::puback, p.packet_id, rc, {}}, ticket, no_local_match);
    } else if (p.qos == QoS::exactly_once) {
        if (!is_error(rc)) {
            c.session->inbound_qos2.insert(p.packet_id);
            if (c.session->stored) persist_inbound(*c.session, p.packet_id, true);
        }
        send_publish_ack(c, AckPacket{PacketType::pubrec, p.packet_id, rc, {}}, ticket, no_local_match);
    } else if (is_error(rc)) {
        ++stats_.publish_dropped;
    }
}

std::size_t Broker::route(Session* from, MessageView& m) {
    const std::size_t n = collect_targets(from, m.topic);
    deliver(m);
    return n;
}

std::size_t Broker::collect_targets(Session* from, std::string_view topic, RouteCache* cache) {
    forms_.clear();
    route_from_ = from;
    const std::uint64_t generation = trie_.generation();
    if (cache && cache->generation == generation && cache->topic == topic) {
        targets_.assign(cache->targets.begin(), cache->targets.end());
        ids_.assign(cache->ids.begin(), cache->ids.end());
        return targets_.size();
    }
    matches_.clear();
    groups_.clear();
    targets_.clear();
    ids_.clear();
    trie_.match(topic, matches_, groups_);
    // In a cluster a NATS queue group picks the member of a shared
    // subscription (cluster_routing.cpp), so each message reaches one
    // member cluster-wide.
    if (cluster_) groups_.clear();
    merge_matches(from);
    if (cache && groups_.empty()) {
        cache->topic.assign(topic);
        cache->generation = generation;
        cache->targets.assign(targets_.begin(), targets_.end());
        cache->ids.assign(ids_.begin(), ids_.end());
    }
    return targets_.size();
}

void Broker::merge_matches(Session* from) {
    route_from_ = from;
    if (matches_.empty() && groups_.empty()) return;

    // One delivery per session however many of its subscriptions match:
    // the highest QoS, every Subscription Identifier (spec 3.3.4).
    std::sort(matches_.begin(), matches_.end(),
              [](const Subscriber* a, const Subscriber* b) { return a->session < b->session; });
    for (std::size_t i = 0; i < matches_.size();) {
        Session* s = matches_[i]->session;
        Target t{s, QoS::at_most_once, false, static_cast<std::uint32_t>(ids_.size()), 0};
        bool any = false;
        for (; i < matches_.size() && matches_[i]->session == s; ++i) {
            const SubscriptionOptions& o = matches_[i]->options;
            if (o.no_local && s == from) continue;  // [MQTT-3.8.3-3]
            any = true;
            t.qos = std::max(t.qos, o.qos);
            t.retain_as_published = t.retain_as_published || o.retain_as_published;
            if (o.identifier != 0) {
                ids_.push_back(o.identifier);
                ++t.ids_count;
            }
        }
        if (any) targets_.push_back(t);
    }
    // Shared subscriptions: one member per group, round robin, preferring
    // members that are connected (spec 4.8.2).
    for (SharedGroup* g : groups_) {
        const std::size_t n = g->members.size();
        if (n == 0) continue;
        std::size_t pick = g->next % n;
        for (std::size_t k = 0; k < n; ++k) {
            const std::size_t i = (g->next + k) % n;
            if (g->members[i].session->connection) {
                pick = i;
                break;
            }
        }
        g->next = pick + 1;
        const Subscriber& sub = g->members[pick];
        Target t{sub.session, sub.options.qos, sub.options.retain_as_published,
                 static_cast<std::uint32_t>(ids_.size()), 0, true};
        if (sub.options.identifier != 0) {
            ids_.push_back(sub.options.identifier);
            t.ids_count = 1;
        }
        targets_.push_back(t);
    }
}

void Broker::deliver(MessageView& m) {
    for (const Target& t : targets_) {
        Session& s = *t.session;
        const QoS qos = std::min(m.qos, t.qos);
        // Retain As Published, else the flag is cleared on forwarding
        // ([MQTT-3.3.1-12], [MQTT-3.3.1-13]).
        const bool retain = t.retain_as_published && m.retain;
        // A bridge to or from another mqttoolsd: not back where it came from.
        if (s.peer_broker != 0 && bridge_loop(s, m.topic)) [[unlikely]] continue;
        if (s.bridge) [[unlikely]] {
            // A bridge's out topics: the bridge sends or queues it.
            static_cast<BridgeSession&>(s).owner.forward(m, qos, retain);
            continue;
        }
        std::span<const std::uint32_t> ids(ids_.data() + t.ids_begin, t.ids_count);
        if (s.acl) {
            if (const auth::Verdict v = authorize_delivery(s, m.topic); v != auth::Verdict::allow) {
                if (v == auth::Verdict::pending) [[unlikely]] {
                    if (!m.stored) m.stored = make_message(m, reactor_.now());
                    hold_delivery(s, m.stored, qos, retain, ids);
                }
                continue;
            }
        }
        if (qos == QoS::at_most_once) {
            Connection* c = s.connection;
            if (c && c->state == Connection::State::connected) deliver_qos0(*c, m, retain, ids);
            continue;  // QoS 0 is not queued for absent clients
        }
        if (!m.stored) m.stored = make_message(m, reactor_.now());
        OutboundMessage out;
        out.message = m.stored;
        out.qos = qos;
        out.retain = retain;
        out.from_shared = t.shared;
        out.subscription_ids.assign(ids.begin(), ids.end());
        enqueue(s, std::move(out));
    }
}

bool Broker::over_output_bound(Connection& c) {
    if (c.output_bytes() < config_.max_client_output_bytes) return false;
    ++stats_.publish_dropped;
    if (!c.drop_logged) {
        c.drop_logged = true;
        spdlog::warn("Client {} is not reading fast enough: dropping QoS 0 messages (output over {} bytes).",
                     c.client_id, config_.max_client_output_bytes);
    }
    return true;
}

std::uint16_t Broker::outbound_alias(Connection& c, std::string_view topic, bool& topic_included) {
    topic_included = true;
    if (c.topic_alias_maximum_out == 0) return 0;
    const auto a = c.topic_aliases().out.assign(topic, c.topic_alias_maximum_out);
    topic_included = a.topic_included;
    return a.alias;
}

void Broker::deliver_qos0(Connection& c, const MessageView& m, bool retain, std::span<const std::uint32_t> ids) {
    if (over_output_bound(c)) return;
    bool topic_included = true;
    const std::uint16_t alias = outbound_alias(c, m.topic, topic_included);
    // Find or make this wire form.
    WireForm* form = nullptr;
    for (WireForm& f : forms_) {
        if (f.version == c.version && f.retain == retain && f.alias == alias && f.topic_included == topic_included &&
            std::equal(ids.begin(), ids.end(), ids_.begin() + f.ids_begin, ids_.begin() + f.ids_begin + f.ids_count)) {
            form = &f;
            break;
        }
    }
    if (!form) {
        std::size_t size = 0;
        net::BufferRef buffer;
        if (!m.raw.empty() && m.raw_version == c.version && retain == m.retain && alias == 0 && ids.empty()) {
            // The very bytes the publisher sent: one copy, no encode.
            size = m.raw.size();
            buffer = net::BufferRef(size);
            std::memcpy(buffer.data(), m.raw.data(), size);
        } else {
            PublishPacket p;
            p.qos = QoS::at_most_once;
            p.retain = retain;
            p.topic = topic_included ? m.topic : std::string_view{};
            p.payload = m.payload;
            if (c.version == ProtocolVersion::v5) {
                p.properties.passthrough = m.properties;
                p.properties.passthrough_mask = forwarded_properties;
                p.properties.message_expiry_interval = m.expiry_interval;
                if (alias != 0) p.properties.topic_alias = alias;
                p.properties.subscription_identifiers = ids;
            }
            size = encoded_size(p, c.version);
            if (size == 0) {
                if (alias != 0 && topic_included) c.extras->aliases.out.forget(m.topic);
                return;
            }
            buffer = net::BufferRef(size);
            encode(p, c.version, {buffer.data(), size});
        }
        const auto begin = static_cast<std::uint32_t>(ids.data() - ids_.data());
        forms_.push_back(WireForm{c.version, retain, alias, topic_included, begin,
                                  static_cast<std::uint32_t>(ids.size()), std::move(buffer),
                                  static_cast<std::uint32_t>(size)});
        form = &forms_.back();
    }
    if (form->size > c.max_packet_size_out) {
        // Too large for this client: not sent ([MQTT-3.1.2-25]), counted.
        ++stats_.publish_dropped;
        if (alias != 0 && topic_included) c.extras->aliases.out.forget(m.topic);
        return;
    }
    c.send_shared(form->buffer, form->size);
    ++stats_.publish_sent;
    stats_.publish_bytes_sent += m.payload.size();
}

}  // namespace mqttools::broker
