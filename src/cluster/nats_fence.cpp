// A node out of touch with its cluster (issue 25; the broker's side is
// broker/cluster_fence.cpp, which says what each case does to clients).
//
// * Cut off: the data link to NATS down for longer than `[cluster]
//   disconnect_after` (0: never). The link's own connected/disconnected
//   notifications (tag_link_down / tag_link_up) drive a timer; when it
//   fires the broker sends its clients away until the link is back.
// * Out of touch: the reactor did not run for over a second (SIGSTOP, a
//   paused VM; Reactor::set_on_stall, called before that turn's sockets are
//   served), or the link came back after a break. Claims other nodes made
//   meanwhile may never arrive (NATS core is at most once), so the node
//   asks the ownership bucket (nats_owners.cpp) who owns each session it
//   holds, fenced until the answers are in; a session another node owns is
//   dropped. Only with sessions = "replicated" (the bucket's questions run
//   on the durable thread, nats_durable.hpp, as the session records do).
#include <algorithm>

#include <spdlog/spdlog.h>

#include "cluster/nats_durable.hpp"
#include "cluster/nats_shared.hpp"

namespace mqttools::cluster {

namespace {

// Longer than any turn of a healthy reactor, shorter than the 1.5 s another
// node waits for this one before it resumes a session from its record.
constexpr auto stall_bound = std::chrono::milliseconds(1000);
// A check JetStream could not answer (the link still coming back) is tried
// again every second, the node fenced meanwhile (its deliveries wait: kept
// short, a JetStream leader election can take seconds); after this long the node
// goes on with what it holds (and checks again when its link is back).
constexpr auto audit_retry = std::chrono::milliseconds(1000);
constexpr auto audit_give_up = std::chrono::seconds(3);

}  // namespace

void NatsCluster::install_fence() {
    reactor_.set_on_stall(stall_bound, [this](net::Clock::duration overrun) {
        spdlog::warn("Cluster: this node did not run for {} ms (stopped or starved); checking its sessions' owners.",
                     std::chrono::duration_cast<std::chrono::milliseconds>(overrun).count());
        start_audit();
    });
}

void NatsCluster::remove_fence() {
    reactor_.set_on_stall({}, nullptr);
    if (cut_timer_) reactor_.cancel_timer(cut_timer_);
    cut_timer_ = {};
    if (audit_timer_) reactor_.cancel_timer(audit_timer_);
    audit_timer_ = {};
    for (auto& [id, r] : reclaims_) reactor_.cancel_timer(r.timer);
    reclaims_.clear();
}

void NatsCluster::fence_link_state(bool up) {
    const std::uint32_t bound = shared_->config.disconnect_after;
    if (!up) {
        if (bound == 0 || cut_off_ || cut_timer_) return;
        cut_timer_ = reactor_.add_timer_after(std::chrono::milliseconds(bound), [this] {
            cut_timer_ = {};
            cut_off_ = true;
            broker_.cluster_cut_off(true);
        });
        return;
    }
    if (cut_timer_) reactor_.cancel_timer(cut_timer_);
    cut_timer_ = {};
    if (cut_off_) {
        cut_off_ = false;
        broker_.cluster_cut_off(false);
    }
    start_audit();
}

void NatsCluster::start_audit() {
    Durable* d = shared_->durable;
    if (!d) return;
    if (auditing_) {
        audit_again_ = true;  // the sessions held now, after this check
        return;
    }
    auditing_ = true;
    if (audit_timer_) reactor_.cancel_timer(audit_timer_);
    audit_timer_ = {};
    if (!broker_.cluster_fenced()) audit_since_ = reactor_.now();
    broker_.cluster_fence(true);
    std::vector<std::string> ids;
    broker_.sessions().for_each([&](const broker::Session& s) { ids.push_back(s.client_id); });
    d->post([d, ids = std::move(ids), bucket = stream_name(prefix_, "MQTT_OWNERS_"), node = node_id_](jsCtx* js) {
        kvStore* kv = nullptr;
        bool ok = js && js_KeyValue(&kv, js, bucket.c_str()) == NATS_OK;
        std::string out;
        for (std::size_t i = 0; ok && i < ids.size(); ++i) {
            kvEntry* e = nullptr;
            const natsStatus st = kvStore_Get(&e, kv, kv_key(ids[i]).c_str());
            // No key: nobody claimed it since (a key another node released
            // after taking it would be gone too, but so would every key of
            // a nats-server that lost its store): kept.
            if (st == NATS_NOT_FOUND) continue;
            if (st != NATS_OK) {
                ok = false;
                break;
            }
            const std::string_view owner(static_cast<const char*>(kvEntry_Value(e)),
                                         static_cast<std::size_t>(kvEntry_ValueLen(e)));
            if (owner != node) {
                out.assign(ids[i]).push_back('\0');
                out.append(owner);
                d->shared.push_in(tag_loaded, loaded_owner_lost, out.data(), out.size(), 0, kvEntry_Revision(e));
            }
            kvEntry_Destroy(e);
        }
        if (kv) kvStore_Destroy(kv);
        d->shared.push_in(tag_loaded, loaded_audit_end, ok ? "1" : "0", 1);
    });
}

// A claim settled without the owners bucket (NATS frozen or down,
// JetStream electing a leader: nats_owners.cpp then stamps it by the wall
// clock) loses to every claim the bucket ordered, so the node that held
// the id before keeps its client and session as well: two owners once
// NATS is back. A Clean Start 1 CONNECT goes on that way with a new
// session (broker/session_replica.cpp, refuse_unsettled); while its
// client is connected here the node claims the id again, 1 s later, then
// less often (at most every 30 s, 12 times), until the bucket orders a
// claim, which the other node obeys: it closes its connection with 0x8E
// and drops its session, the one-owner rule of the bucket-ordered claims.
// Only a session whose client is connected here is claimed again: an
// offline one is claimed by its client's next CONNECT, wherever that is,
// and claiming it from here could take it from a node the client joined
// since (its claim still on its way here).
bool NatsCluster::connected_here(const std::string& client_id) const {
    const broker::Session* s = broker_.sessions().find(client_id);
    return s && s->connection;
}

void NatsCluster::reclaim_unordered(const std::string& client_id) {
    constexpr int max_attempts = 12;
    const auto c = claims_.find(client_id);
    const bool ordered = c != claims_.end() && (c->second.stamp & kv_stamp_bit) != 0;
    Durable* d = shared_->durable;
    auto it = reclaims_.find(client_id);
    // Whether its client is connected here is asked when the timer fires,
    // not now: a claim settles before its CONNECT attaches the session (a
    // new session is made after on_claimed; a resume may still read the
    // record), so a check here left every such claim unordered for good,
    // and the owners bucket, made on a claim, not made at all.
    if (ordered || !d || d->passthrough() || (it != reclaims_.end() && it->second.attempts >= max_attempts)) {
        if (it == reclaims_.end()) return;
        if (!ordered && it->second.attempts >= max_attempts && connected_here(client_id)) {
            spdlog::warn("Cluster: the claim on client id {} was never ordered by the ownership bucket; checked "
                         "again when the node's link is back.", client_id);
        }
        reactor_.cancel_timer(it->second.timer);
        reclaims_.erase(it);
        return;
    }
    Reclaim& r = reclaims_[client_id];
    if (r.timer) return;  // the next one is set
    const auto delay = std::chrono::seconds(std::min(1 << r.attempts, 30));
    ++r.attempts;
    r.timer = reactor_.add_timer_after(delay, [this, client_id] {
        auto it = reclaims_.find(client_id);
        if (it == reclaims_.end()) return;
        it->second.timer = {};
        // A claim under way (this node's): its settling decides.
        if (pending_claims_.count(client_id) != 0) return;
        const auto c = claims_.find(client_id);
        if (c != claims_.end() && (c->second.stamp & kv_stamp_bit) != 0) {
            reclaims_.erase(it);
            return;
        }
        if (!connected_here(client_id)) {
            // Its CONNECT still being set up (a resume reading the record,
            // the set-up queue): looked at again, twice at most; gone or
            // offline: its next CONNECT claims it, wherever that is.
            if (it->second.attempts < 3) {
                reclaim_unordered(client_id);
            } else {
                reclaims_.erase(it);
            }
            return;
        }
        claim_session(client_id, false);
    });
}

void NatsCluster::on_audit(std::uint32_t kind, std::string_view data, std::uint64_t revision) {
    if (kind == loaded_owner_lost) {
        const std::size_t nul = data.find('\0');
        if (nul == data.npos) return;
        const std::string id(data.substr(0, nul));
        // The client came back here since the bucket was read: a claim of
        // ours still settling, or one the bucket ordered after what was read.
        if (pending_claims_.count(id) != 0) return;
        if (auto c = claims_.find(id);
            c != claims_.end() && (c->second.stamp & kv_stamp_bit) != 0 && (c->second.stamp & ~kv_stamp_bit) > revision) {
            return;
        }
        claims_.erase(id);
        if (broker_.has_session(id)) {
            ++takeovers_in_;
            forget_record(id);
            broker_.session_owned_elsewhere(id);
        }
        return;
    }
    auditing_ = false;
    if (data != "1") {
        if (reactor_.now() - audit_since_ < audit_give_up) {
            audit_timer_ = reactor_.add_timer_after(audit_retry, [this] {
                audit_timer_ = {};
                start_audit();
            });
            return;
        }
        spdlog::warn("Cluster: could not ask the ownership bucket (JetStream unreachable); going on with the "
                     "sessions held here, checked again once the link is back.");
    }
    if (audit_again_) {
        audit_again_ = false;
        start_audit();
        return;
    }
    broker_.cluster_fence(false);
}

}  // namespace mqttools::cluster
