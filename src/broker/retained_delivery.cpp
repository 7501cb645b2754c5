// Retained messages for a new subscription (spec 3.3.1.3, Retain Handling
// 3.8.3.1), sent after the SUBACK. A few matches go out at once; a large
// set (a dashboard subscribing to `#` over 100,000 retained topics) becomes
// a RetainedBacklog sent a slice per reactor turn, so other clients wait at
// most one slice, and only while the subscriber's output stays under a
// bound: a slow reader holds its own backlog back instead of having
// retained messages dropped at max_client_output_bytes or max_queued_messages.
#include <algorithm>
#include <array>

#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

// Matches sent in place; more become a backlog.
constexpr std::size_t inline_limit = 256;
// Per reactor turn: messages per connection, and for all connections.
constexpr std::size_t slice_per_connection = 512;
constexpr std::size_t slice_per_turn = 2048;
// A backlog waits while the connection's output holds this much (or half
// of max_client_output_bytes, if smaller): the socket drains it first.
constexpr std::size_t output_high_water = 512 * 1024;

}  // namespace

void Broker::deliver_retained(Connection& c, std::string_view filter, const SubscriptionOptions& options) {
    const auto now = reactor_.now();
    const bool backlog = c.extras && c.extras->retained;
    // The previous subscriber to this filter left a snapshot that is still
    // being sent and the store has not changed since: share it (no trie
    // walk, no second list). Messages that expired since are skipped when
    // their turn comes, as in any backlog.
    RetainedSnapshot snapshot;
    if (retained_shared_.generation == retained_.generation() && retained_shared_.filter == filter)
        snapshot = retained_shared_.messages.lock();
    if (!snapshot) {
        retained_scratch_.clear();
        retained_.match(filter, now, retained_scratch_);
        if (!backlog && retained_scratch_.size() <= inline_limit) {
            for (const MessagePtr& msg : retained_scratch_) send_retained(c, msg, options);
            retained_scratch_.clear();
            return;
        }
        // Behind an earlier backlog, even a small set waits its turn: the
        // retained messages keep their SUBSCRIBE order.
        if (retained_scratch_.empty()) return;
        auto made = std::make_shared<std::vector<MessagePtr>>();
        made->swap(retained_scratch_);
        snapshot = std::move(made);
        retained_shared_.filter.assign(filter);
        retained_shared_.generation = retained_.generation();
        retained_shared_.messages = snapshot;
    }
    RetainedBacklog::Batch batch;
    batch.messages = std::move(snapshot);
    batch.options = options;
    auto& owner = c.more().retained;
    if (!owner) {
        owner = std::make_unique<RetainedBacklog>();
        retained_work_.push_back(&c);
    }
    owner->batches.push_back(std::move(batch));
}

void Broker::send_retained(Connection& c, const MessagePtr& msg, const SubscriptionOptions& options) {
    Session& s = *c.session;
    std::array<std::uint32_t, 1> id{options.identifier};
    std::span<const std::uint32_t> ids(id.data(), options.identifier ? 1 : 0);
    const QoS qos = std::min(msg->qos, options.qos);
    if (const auth::Verdict v = authorize_delivery(s, msg->topic); v != auth::Verdict::allow) {
        if (v == auth::Verdict::pending) hold_delivery(s, msg, qos, true, ids);
        return;
    }
    // Sent because of a new subscription: the RETAIN flag is set
    // ([MQTT-3.3.1-9]).
    if (qos == QoS::at_most_once) {
        MessageView view = view_of(msg, reactor_.now());
        forms_.clear();
        ids_.assign(ids.begin(), ids.end());
        deliver_qos0(c, view, true, std::span<const std::uint32_t>(ids_.data(), ids_.size()));
    } else {
        OutboundMessage out;
        out.message = msg;
        out.qos = qos;
        out.retain = true;
        out.subscription_ids.assign(ids.begin(), ids.end());
        enqueue(s, std::move(out));
    }
}

// Full for now: output waiting for the socket, or (for QoS 1/2) a session
// queue that the client's acknowledgements have to drain first.
bool Broker::retained_blocked(Connection& c) {
    const std::size_t high = std::min<std::size_t>(output_high_water, config_.max_client_output_bytes / 2);
    if (c.output_bytes() >= std::max<std::size_t>(high, 1)) return true;
    const Session* s = c.session;
    if (!s || !s->outbound) return false;
    const std::size_t room = config_.max_queued_messages != 0 ? std::max<std::size_t>(config_.max_queued_messages / 2, 1)
                                                              : 1000;
    return s->outbound->queue.size() >= room;
}

std::size_t Broker::feed_retained(Connection& c, std::size_t budget) {
    RetainedBacklog& backlog = *c.extras->retained;
    const auto now = reactor_.now();
    std::size_t taken = 0;
    while (taken < budget && !backlog.batches.empty()) {
        RetainedBacklog::Batch& batch = backlog.batches.front();
        if (batch.next == batch.messages->size()) {
            backlog.batches.pop_front();
            continue;
        }
        // A QoS 0 copy would be dropped at the output bound and a QoS 1/2
        // one at the queue bound: wait for the client to read instead.
        if (retained_blocked(c)) break;
        ++taken;
        // A reference of its own: the snapshot may be shared, and the batch
        // goes if the connection does.
        const MessagePtr msg = (*batch.messages)[batch.next++];
        // Replaced or deleted since the SUBSCRIBE: the subscriber got the
        // newer state live, and must not see the older one after it.
        if (!msg->superseded && !msg->expired(now)) send_retained(c, msg, batch.options);
        if (c.state == Connection::State::closing || !c.extras || !c.extras->retained) return taken;
    }
    return taken;
}

void Broker::feed_retained() {
    std::size_t budget = slice_per_turn;
    bool more = false;
    // Round robin: the connections served this turn go to the back.
    std::size_t i = 0;
    for (; i < retained_work_.size() && budget > 0;) {
        Connection& c = *retained_work_[i];
        const std::size_t taken = feed_retained(c, std::min(budget, slice_per_connection));
        budget -= std::min(budget, taken);
        if (c.state == Connection::State::closing || !c.extras || !c.extras->retained) continue;  // removed
        if (c.extras->retained->batches.empty()) {
            drop_retained_backlog(c);
            continue;
        }
        if (!retained_blocked(c)) more = true;
        ++i;
    }
    if (i > 0 && i < retained_work_.size()) {
        std::rotate(retained_work_.begin(), retained_work_.begin() + static_cast<std::ptrdiff_t>(i),
                    retained_work_.end());
    }
    // Blocked backlogs need no spinning: the socket's EPOLLOUT (or the
    // client's PUBACK) wakes the reactor, and this runs again before it sleeps.
    if (more || budget == 0) reactor_.skip_next_wait();
}

void Broker::drop_retained_backlog(Connection& c) {
    c.extras->retained.reset();
    auto it = std::find(retained_work_.begin(), retained_work_.end(), &c);
    if (it != retained_work_.end()) retained_work_.erase(it);
}

}  // namespace mqttools::broker
