// SUBSCRIBE/SUBACK and UNSUBSCRIBE/UNSUBACK (spec 3.8-3.11), and retained
// messages sent to a new subscription (Retain Handling, 3.8.3.1).
#include <algorithm>
#include <array>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

std::size_t filter_levels(std::string_view filter) {
    if (auto shared = parse_shared_filter(filter)) filter = shared->filter;
    return static_cast<std::size_t>(std::count(filter.begin(), filter.end(), '/')) + 1;
}

}  // namespace

bool Broker::add_subscription(std::string_view filter, Session* s, const SubscriptionOptions& options) {
    if (!trie_.subscribe(filter, s, options)) return false;
    if (cluster_) cluster_->interest_added(filter);
    return true;
}

bool Broker::remove_subscription(std::string_view filter, Session* s) {
    if (!trie_.unsubscribe(filter, s)) return false;
    if (cluster_) cluster_->interest_removed(filter);
    return true;
}

void Broker::handle_subscribe(Connection& c, const FixedHeader& header, Bytes body) {
    auto decoded = decode_subscribe(header, body, c.version);
    if (!decoded) {
        close_connection(c, decoded.error(), true);
        return;
    }
    const SubscribePacket& p = *decoded;
    Session& s = *c.session;
    const std::uint32_t identifier = p.properties.subscription_identifier.value_or(0);

    // Retained messages go out after the SUBACK: remember what to send.
    struct Pending {
        std::string_view filter;
        SubscriptionOptions options;
    };
    std::vector<Pending> retained_for;
    std::vector<std::byte> codes;
    codes.reserve(p.subscriptions.size());

    std::size_t cursor = 0;
    Subscription sub;
    if (s.acl) {
        // Every filter's ACL answer first: when one is to come (an HTTP ACL
        // check), nothing of this SUBSCRIBE is done yet; it waits with what
        // follows it and is handled again then (answers are kept by then).
        bool waiting = false;
        while (p.subscriptions.next(cursor, sub)) {
            if (check_topic_filter(sub.filter) == ReasonCode::success &&
                authorize_subscribe(c, sub.filter) == auth::Verdict::pending)
                waiting = true;
        }
        if (waiting) {
            hold_for_acl(c);
            return;
        }
        cursor = 0;
    }
    while (p.subscriptions.next(cursor, sub)) {
        ReasonCode rc;
        const bool is_new = s.subscriptions.find(sub.filter) == s.subscriptions.end();
        if (check_topic_filter(sub.filter) != ReasonCode::success ||
            (cluster_ && !cluster_->accepts_filter(sub.filter))) {
            rc = ReasonCode::topic_filter_invalid;
        } else if (authorize_subscribe(c, sub.filter) != auth::Verdict::allow) {
            rc = ReasonCode::not_authorized;
        } else if ((config_.max_topic_levels != 0 && filter_levels(sub.filter) > config_.max_topic_levels) ||
                   (is_new && config_.max_subscriptions_per_client != 0 &&
                    s.subscriptions.size() >= config_.max_subscriptions_per_client) ||
                   (is_new && memory_exceeded())) {
            rc = ReasonCode::quota_exceeded;
        } else {
            SubscriptionOptions o;
            o.qos = sub.qos;
            o.no_local = sub.no_local;
            o.retain_as_published = sub.retain_as_published;
            if (c.bridge_peer) {
                // A 3.1.1 bridge cannot ask for these: its own messages are
                // not sent back to it, and retain flags cross as published
                // (what Mosquitto does for try_private).
                o.no_local = true;
                o.retain_as_published = true;
            }
            o.retain_handling = sub.retain_handling;
            o.identifier = identifier;
            add_subscription(sub.filter, &s, o);
            if (is_new) {
                s.subscriptions.emplace(sub.filter, o);
            } else {
                s.subscriptions.find(sub.filter)->second = o;
            }
            if (s.stored) persist_subscription(s, sub.filter, &o);
            rc = static_cast<ReasonCode>(sub.qos);
            // Retained messages: never for shared subscriptions (spec
            // 4.8.2); Retain Handling 0 always, 1 only when new, 2 never.
            const bool shared = parse_shared_filter(sub.filter).has_value();
            if (!shared && (o.retain_handling == 0 || (o.retain_handling == 1 && is_new))) {
                retained_for.push_back(Pending{sub.filter, o});
            }
        }
        codes.push_back(static_cast<std::byte>(rc));
    }
    if (cluster_) {
        if (s.replicated) replicate_session(s);
        if (const std::uint64_t ticket = cluster_->interest_ticket(!retained_for.empty())) {
            // The node's NATS subscription is not in place yet (a client
            // that publishes on another node once it has this SUBACK would
            // miss its own message), or the retained store may lack what
            // another node stored a moment ago. The SUBACK, its retained
            // messages and the client's next packets wait for the link.
            // Spec 3.8.4 would let matching messages go first, but clients
            // written against single-node brokers expect the SUBACK first:
            // what is sent to the client meanwhile collects behind it.
            HeldSuback& held = held_subacks_[&c];
            held.ticket = ticket;
            held.packet_id = p.packet_id;
            held.codes = std::move(codes);
            held.retained.clear();
            for (const Pending& r : retained_for) held.retained.emplace_back(std::string(r.filter), r.options);
            c.pause_reading();
            c.begin_deferral();
            return;
        }
    }
    SubackPacket ack;
    ack.packet_id = p.packet_id;
    ack.reason_codes = codes;
    c.send(ack);
    for (const Pending& r : retained_for) deliver_retained(c, r.filter, r.options);
}

void Broker::handle_unsubscribe(Connection& c, const FixedHeader& header, Bytes body) {
    auto decoded = decode_unsubscribe(header, body, c.version);
    if (!decoded) {
        close_connection(c, decoded.error(), true);
        return;
    }
    const UnsubscribePacket& p = *decoded;
    Session& s = *c.session;
    std::vector<std::byte> codes;
    codes.reserve(p.filters.size());
    std::size_t cursor = 0;
    std::string_view filter;
    if (s.acl) {
        // As for SUBSCRIBE: when an answer is still to come, the whole
        // UNSUBSCRIBE waits and is handled again then.
        bool waiting = false;
        while (p.filters.next(cursor, filter)) {
            if (authorize_unsubscribe(c, filter) == auth::Verdict::pending) waiting = true;
        }
        if (waiting) {
            hold_for_acl(c);
            return;
        }
        cursor = 0;
    }
    while (p.filters.next(cursor, filter)) {
        // The ACL first, as Mosquitto: a denied filter is answered 0x87
        // whether or not it was subscribed, and nothing is removed.
        if (s.acl && authorize_unsubscribe(c, filter) != auth::Verdict::allow) {
            codes.push_back(static_cast<std::byte>(ReasonCode::not_authorized));
            continue;
        }
        auto it = s.subscriptions.find(filter);
        if (it == s.subscriptions.end()) {
            codes.push_back(static_cast<std::byte>(ReasonCode::no_subscription_existed));
            continue;
        }
        remove_subscription(filter, &s);
        if (s.stored) persist_subscription(s, filter, nullptr);
        s.subscriptions.erase(it);
        codes.push_back(static_cast<std::byte>(ReasonCode::success));
    }
    if (s.replicated) replicate_session(s);
    UnsubackPacket ack;
    ack.packet_id = p.packet_id;
    ack.reason_codes = codes;
    c.send(ack);
}

}  // namespace mqttools::broker
