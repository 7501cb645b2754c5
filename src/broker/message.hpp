// A message the broker keeps beyond the read that brought it: retained
// messages, QoS 1/2 deliveries, queued messages of offline sessions, wills.
// Copied once from the receive buffer, then shared (immutable) by every
// session that holds it. QoS 0 messages to online subscribers never become
// a Message: they are encoded straight from the receive buffer. A big
// payload is not copied into the subscribers' output either: their output
// queues refer to it (Broker::send_publish), so it exists once however many
// subscribers are still reading it. Immutable once shared: the queues and
// the store thread read it without a lock.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mqttools/packets.hpp"
#include "net/reactor.hpp"

namespace mqttools::broker {

using net::Clock;

// The properties a server forwards unchanged, in their order ([MQTT-3.3.2-17],
// [MQTT-3.3.2-18], [MQTT-3.3.2-20], 3.3.2.3.2): everything else (Topic
// Alias, Message Expiry, Subscription Identifier) is rewritten per delivery.
inline constexpr std::uint64_t forwarded_properties =
    property_bit(PropertyId::payload_format_indicator) | property_bit(PropertyId::content_type) |
    property_bit(PropertyId::response_topic) | property_bit(PropertyId::correlation_data) |
    property_bit(PropertyId::user_property);

struct Message {
    std::string topic;
    std::string payload;
    std::string properties;  // the publisher's raw property bytes (filtered on encode)
    QoS qos = QoS::at_most_once;
    bool retain = false;
    std::optional<Clock::time_point> expires_at;  // from Message Expiry Interval
    // Its row in the durable store (broker/persistence.hpp); 0 = not stored.
    // Set once on the reactor thread before the store first sees it.
    mutable std::uint64_t store_id = 0;
    // Set by the retained store when a newer retained message (or a delete)
    // replaced this one: a paced retained delivery not yet at it skips it,
    // because the subscriber got the replacement live.
    mutable bool superseded = false;
    // In a cluster: the publishing node's instance and that node's sequence
    // number on NATS (0, 0 = none), unique cluster-wide. A session moving
    // between nodes gets messages from both for a moment; these tell which
    // it already has (session_transfer.cpp).
    std::uint64_t cluster_origin = 0;
    std::uint64_t cluster_seq = 0;

    Bytes payload_bytes() const noexcept { return as_bytes(payload); }
    Bytes property_bytes() const noexcept { return as_bytes(properties); }
    bool expired(Clock::time_point now) const noexcept { return expires_at && *expires_at <= now; }
    // Seconds left, rounded up so an unexpired message never says 0.
    std::optional<std::uint32_t> remaining_expiry(Clock::time_point now) const noexcept;
    std::size_t memory_size() const noexcept { return sizeof(Message) + topic.size() + payload.size() + properties.size(); }
};

using MessagePtr = std::shared_ptr<const Message>;

// What routing needs to know about a message, as views. `stored` is set
// when the message already exists as a Message (a retained or queued one)
// so a QoS 1/2 delivery can share it instead of copying.
struct MessageView {
    std::string_view topic;
    Bytes payload;
    Bytes properties;
    QoS qos = QoS::at_most_once;
    bool retain = false;
    std::optional<std::uint32_t> expiry_interval;  // seconds left
    MessagePtr stored;
    // The PUBLISH exactly as received, when a QoS 0 subscriber of the same
    // protocol version may get these very bytes (QoS 0, no topic alias):
    // copied instead of encoded (deliver_qos0). Empty otherwise.
    Bytes raw;
    ProtocolVersion raw_version = ProtocolVersion::v5;
    std::uint64_t cluster_origin = 0;  // as in Message
    std::uint64_t cluster_seq = 0;
};

MessagePtr make_message(const MessageView& view, Clock::time_point now);
MessageView view_of(const MessagePtr& message, Clock::time_point now);

}  // namespace mqttools::broker
