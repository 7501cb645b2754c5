// The broker's side of persistence (broker/persistence.hpp): what it tells
// the store on each change to durable state, the output held until the
// store reports the batch on disk, and the state loaded at start-up.
// Only sessions with a Session Expiry Interval > 0 are stored: one that
// ends with its connection has nothing to resume, except the will of a
// connected client (a crash must not lose it).
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <iterator>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

constexpr std::uint32_t never_expires = 0xFFFFFFFF;

// Batch numbers wrap in the connection's 32 bits: serial number order.
bool batch_done(std::uint32_t held, std::uint64_t durable) {
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(durable) - held) >= 0;
}

}  // namespace

WallTime wall_now() noexcept {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

WallTime to_wall(Clock::time_point t, Clock::time_point now, WallTime wall) noexcept {
    return wall + std::chrono::duration_cast<std::chrono::milliseconds>(t - now).count();
}

Clock::time_point from_wall(WallTime t, Clock::time_point now, WallTime wall) noexcept {
    return now + std::chrono::milliseconds(t - wall);
}

void Broker::store_changed(Session* s, bool output_depends) {
    ++store_ops_;
    // A connected client's output carries what depends on this change
    // (its PUBLISH with a durable packet id, a PUBREL). A message only
    // queued for it changes nothing it is sent.
    if (output_depends && s && s->connection && s->connection->state != Connection::State::closing) {
        hold(*s->connection);
    }
}

void Broker::hold(Connection& c) {
    // While the store fails nothing would release it: serve without the
    // promise (QoS 1/2 and retained PUBLISH are refused meanwhile).
    if (store_degraded_) return;
    c.held_batch = static_cast<std::uint32_t>(store_->current_batch());
    if (!c.held) {
        c.held = true;
        held_.push_back(&c);
    }
}

void Broker::release_held(Connection& c) {
    c.held = false;
    auto it = std::find(held_.begin(), held_.end(), &c);
    if (it != held_.end()) {
        *it = held_.back();
        held_.pop_back();
    }
}

void Broker::on_store_result(const CommitResult& r) {
    store_durable_ = std::max(store_durable_, r.durable);
    store_stats_.database_bytes = r.database_bytes;
    store_stats_.wal_bytes = r.wal_bytes;
    store_stats_.wal_checkpoints = r.checkpoints;
    std::vector<Connection*> held;
    held.swap(held_);
    for (Connection* c : held) {
        if (batch_done(c->held_batch, store_durable_)) {
            c->held = false;
            c->pause_reads(false);
            mark_dirty(*c);
            // Messages that queued meanwhile go out now (pump() waits while
            // the connection's batch is being committed).
            if (c->session && c->session->outbound && c->state == Connection::State::connected) pump(*c->session);
        } else if (r.failed != 0 && batch_done(c->held_batch, r.failed)) {
            // Its answers claim what did not reach the disk: never send
            // them. The client resends (QoS 1/2) on its next connection.
            spdlog::warn("Client {}: closing without its acknowledgements (the store could not write them).",
                         c->client_id);
            held_.push_back(c);  // release_held() takes it off when it closes
            close_connection(*c, ReasonCode::unspecified_error, false);
        } else {
            held_.push_back(c);
        }
    }
    if (r.failed != 0 && !r.healthy) {
        if (!store_degraded_) {
            spdlog::error("Persistence: writes are failing; refusing QoS 1/2 and retained messages until they work again.");
        }
        store_degraded_ = true;
        store_stats_.healthy = false;
    } else if (r.healthy && store_degraded_) {
        spdlog::info("Persistence: writes work again; accepting QoS 1/2 and retained messages.");
        store_degraded_ = false;
        store_stats_.healthy = true;
    }
    store_stats_.commit_failures = r.failures;
    if (!durable_waiters_.empty()) {
        // A callback may add a waiter (a pipelined request): walk a copy.
        auto waiters = std::move(durable_waiters_);
        durable_waiters_.clear();
        for (auto& [batch, done] : waiters) {
            if (batch <= store_durable_) {
                done(true);
            } else if (r.failed != 0 && batch <= r.failed) {
                done(false);
            } else {
                durable_waiters_.emplace_back(batch, std::move(done));
            }
        }
    }
}

void Broker::when_durable(std::function<void(bool)> done) {
    if (!store_) {
        done(true);
        return;
    }
    durable_waiters_.emplace_back(store_->current_batch(), std::move(done));
}

void Broker::persist_message(const MessagePtr& m) {
    if (m->store_id != 0) return;
    m->store_id = next_message_id_++;
    store_->put_message(m);
}

void Broker::persist_session(Session& s) {
    Connection* c = s.connection;
    const bool connected = c != nullptr && c->state != Connection::State::closing;
    if (s.expiry_interval == 0) {
        // No longer kept beyond its connection (reconnected with expiry 0).
        if (s.stored) persist_session_end(s);
        // Its will is, while the client is connected: after a crash the
        // session is one whose connection closed without DISCONNECT, so the
        // will goes out at start-up (spec 3.1.2.5); a clean disconnect or
        // the session's end deletes the row (end_session).
        if (!s.will || !connected) return;
        s.will_stored = true;
    }
    const bool first = !s.stored && s.expiry_interval != 0;
    if (s.expiry_interval != 0) s.stored = true;
    StoredSession row;
    row.client_id = s.client_id;
    row.expiry_interval = s.expiry_interval;
    row.connected = connected;
    if (c && c->has_username) row.username = c->username;
    const WallTime wall = wall_now();
    if (!row.connected && s.expiry_interval != never_expires) {
        row.expires_at = wall + std::int64_t{s.expiry_interval} * 1000;
    }
    if (s.will) {
        row.will = s.will->message;
        row.will_expiry = s.will->expiry_interval;
        row.will_delay = s.will->delay;
        if (!row.connected && s.will_timer) row.will_at = to_wall(s.will_timer.when, reactor_.now(), wall);
    }
    store_->put_session(row);
    if (first) {
        // A session that becomes durable brings what it already holds.
        for (const auto& [filter, options] : s.subscriptions) store_->put_subscription(s.client_id, filter, options);
    }
    store_changed(&s);
}

void Broker::persist_session_end(Session& s) {
    s.stored = false;
    s.will_stored = false;
    store_->erase_session(s.client_id);
    if (s.outbound) {
        for (auto* list : {&s.outbound->inflight, &s.outbound->queue}) {
            for (OutboundMessage& m : *list) m.store_seq = 0;
        }
    }
    store_changed(&s);
}

void Broker::persist_subscription(Session& s, std::string_view filter, const SubscriptionOptions* options) {
    if (!s.stored) return;
    if (options) {
        store_->put_subscription(s.client_id, filter, *options);
    } else {
        store_->erase_subscription(s.client_id, filter);
    }
    store_changed(&s);
}

void Broker::persist_enqueued(Session& s, OutboundMessage& m) {
    if (!s.stored || !m.message) return;
    persist_message(m.message);
    m.store_seq = s.out().next_store_seq++;
    store_->put_outbound(s.client_id, m.store_seq, m);
    store_changed(&s, false);
}

void Broker::persist_outbound_state(Session& s, const OutboundMessage& m) {
    if (!s.stored || m.store_seq == 0) return;
    store_->update_outbound(s.client_id, m.store_seq, m.state, m.packet_id);
    // A QoS 1 PUBLISH goes out at once: if a crash loses its row, the
    // message is sent again from the row committed before (at least once)
    // or, never acknowledged to its publisher, resent by it. Its PUBACK
    // may then come before the row is written, and the store writes
    // neither (sqlite_store.cpp). QoS 2 packet ids and PUBREL pending must
    // be on disk first: a redelivery after a crash must reuse them.
    if (m.qos == QoS::at_least_once && m.state == OutboundMessage::State::awaiting_puback) return;
    store_changed(&s);
}

void Broker::persist_outbound_done(Session& s, const OutboundMessage& m) {
    if (!s.stored || m.store_seq == 0) return;
    // Nothing is answered for it (a PUBACK, a PUBCOMP): its connection is
    // not held. A packet id it frees is reused only in a later change,
    // which commits after this one.
    store_->erase_outbound(s.client_id, m.store_seq);
}

void Broker::persist_inbound(Session& s, std::uint16_t packet_id, bool insert) {
    if (!s.stored) return;
    if (insert) {
        store_->put_inbound_qos2(s.client_id, packet_id);
    } else {
        store_->erase_inbound_qos2(s.client_id, packet_id);
    }
    store_changed(&s);
}

void Broker::persist_retained(std::string_view topic, const MessagePtr& message) {
    if (message) {
        persist_message(message);
        store_->put_retained(message);
    } else {
        store_->erase_retained(topic);
    }
    store_changed(nullptr);
}

void Broker::set_persistence(Persistence* store, LoadedState&& loaded) {
    store_ = store;
    if (!store_) return;
    store_stats_.enabled = true;
    store_->on_result([this](const CommitResult& r) { on_store_result(r); });
    next_message_id_ = std::max<std::uint64_t>(loaded.next_message_id, 1);
    const auto now = reactor_.now();
    const WallTime wall = wall_now();
    for (MessagePtr& m : loaded.retained) {
        if (m->expired(now)) continue;
        retained_.set(m);
        ++store_stats_.retained_loaded;
    }
    std::vector<Session*> restored;
    for (LoadedSession& ls : loaded.sessions) {
        if (sessions_.find(ls.session.client_id)) continue;
        restore_session(ls, now, wall);
        restored.push_back(sessions_.find(ls.session.client_id));
    }
    // Deadlines that passed while the broker was down take effect now,
    // once every session is back (a will may go to any of them).
    for (Session* s : restored) {
        if (s->will && !s->will_timer) publish_will(*s);
    }
    for (Session* s : restored) {
        if (!s->expiry_timer && s->expiry_interval != never_expires) expire_session(*s);
    }
    for (const Ban& b : loaded.bans) bans_.add(b);  // expired ones were not loaded
    adopt_bridge_queues();  // bridge_store.cpp
    store_->submit();
    // The loaded rows were copied into sessions: give their memory back
    // rather than keep the start-up peak (as after mass session expiry).
    loaded = LoadedState{};
    ::malloc_trim(0);
}

void Broker::restore_session(LoadedSession& ls, Clock::time_point now, WallTime wall) {
    StoredSession& row = ls.session;
    Session& s = *sessions_.create(row.client_id);
    s.stored = true;
    s.expiry_interval = row.expiry_interval;
    // What it may read, as bound at its last CONNECT (security_hooks.cpp):
    // a queued message it may not read is still never delivered.
    s.acl = bound_acl(s.client_id, row.username ? std::optional<std::string_view>(*row.username) : std::nullopt,
                      nullptr, false);
    for (auto& [filter, options] : ls.subscriptions) {
        trie_.subscribe(filter, &s, options, true);  // a session just made has none
        s.subscriptions.emplace(filter, options);
    }
    std::uint64_t last_seq = 0;
    for (auto it = ls.outbound.begin(); it != ls.outbound.end();) {
        // Moved node by node into the session's lists (splice: no copy).
        auto next = std::next(it);
        const OutboundMessage& m = *it;
        last_seq = std::max(last_seq, m.store_seq);
        OutboundState& out = s.out();
        if (m.state == OutboundMessage::State::queued) {
            if (m.message) {
                out.queued_bytes += m.message->memory_size();
                out.queue.splice(out.queue.end(), ls.outbound, it);
                ++store_stats_.messages_loaded;
            }
        } else if (m.message || m.state == OutboundMessage::State::awaiting_pubcomp) {
            out.inflight.splice(out.inflight.end(), ls.outbound, it);
            ++store_stats_.messages_loaded;
        }
        it = next;
    }
    if (s.outbound) s.outbound->next_store_seq = last_seq + 1;
    for (std::uint16_t id : ls.inbound_qos2) s.inbound_qos2.insert(id);
    ++store_stats_.sessions_loaded;

    // A client connected at the crash lost its connection then, without
    // DISCONNECT: its will is due after its delay, and the session's expiry
    // starts (spec 3.1.2.5, 3.1.3.2.2). Both count from now.
    Clock::time_point will_due{};
    Clock::time_point expires{};
    if (row.connected) {
        if (s.expiry_interval != never_expires) expires = now + std::chrono::seconds(s.expiry_interval);
        if (row.will) will_due = now + std::chrono::seconds(std::min(row.will_delay, s.expiry_interval));
    } else {
        if (row.expires_at != 0) expires = from_wall(row.expires_at, now, wall);
        if (row.will && row.will_at != 0) will_due = from_wall(row.will_at, now, wall);
    }
    if (row.will) {
        Will w;
        w.message = row.will;
        w.expiry_interval = row.will_expiry;
        w.delay = row.will_delay;
        s.will = std::make_unique<Will>(std::move(w));
        if (will_due > now) {
            Session* sp = &s;
            s.will_timer = reactor_.add_timer(will_due, [this, sp] {
                sp->will_timer = {};
                publish_will(*sp);
            });
        }
    }
    if (s.expiry_interval != never_expires && expires > now) {
        Session* sp = &s;
        s.expiry_timer = reactor_.add_timer(expires, [this, sp] {
            sp->expiry_timer = {};
            expire_session(*sp);
        });
    }
    // Written back as disconnected, with the deadlines just set.
    if (row.connected) persist_session(s);
}

}  // namespace mqttools::broker
