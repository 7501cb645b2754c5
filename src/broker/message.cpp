#include "broker/message.hpp"

namespace mqttools::broker {

std::optional<std::uint32_t> Message::remaining_expiry(Clock::time_point now) const noexcept {
    if (!expires_at) return std::nullopt;
    if (*expires_at <= now) return 0;
    auto left = std::chrono::ceil<std::chrono::seconds>(*expires_at - now).count();
    return static_cast<std::uint32_t>(left);
}

MessagePtr make_message(const MessageView& view, Clock::time_point now) {
    if (view.stored) return view.stored;
    auto m = std::make_shared<Message>();
    m->topic.assign(view.topic);
    m->payload.assign(as_string(view.payload));
    m->properties.assign(as_string(view.properties));
    m->qos = view.qos;
    m->retain = view.retain;
    if (view.expiry_interval) m->expires_at = now + std::chrono::seconds(*view.expiry_interval);
    m->cluster_origin = view.cluster_origin;
    m->cluster_seq = view.cluster_seq;
    return m;
}

MessageView view_of(const MessagePtr& message, Clock::time_point now) {
    MessageView v;
    v.topic = message->topic;
    v.payload = message->payload_bytes();
    v.properties = message->property_bytes();
    v.qos = message->qos;
    v.retain = message->retain;
    v.expiry_interval = message->remaining_expiry(now);
    v.stored = message;
    v.cluster_origin = message->cluster_origin;
    v.cluster_seq = message->cluster_seq;
    return v;
}

}  // namespace mqttools::broker
