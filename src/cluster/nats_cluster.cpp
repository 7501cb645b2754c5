#include "cluster/nats_cluster.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <deque>
#include <mutex>
#include <thread>

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include "cluster/nats_durable.hpp"
#include "cluster/nats_shared.hpp"
#include "cluster/subject_map.hpp"
#include "mqttools/codec.hpp"

namespace mqttools::cluster {

// The reactor side: what the broker calls (broker::ClusterLink) and what
// the threads hand back through the in queue (drain_inbound).

NatsCluster::NatsCluster(net::Reactor& reactor, broker::Broker& broker, const config::Cluster& config,
                         std::string node_id)
    : reactor_(reactor), broker_(broker), node_id_(std::move(node_id)), prefix_(config.subject_prefix),
      live_root_(prefix_ + ".m"), shared_(std::make_unique<Shared>()) {
    shared_->config = config;
    shared_->node_id = node_id_;
    shared_->prefix = prefix_;
}

std::unique_ptr<NatsCluster> NatsCluster::start(net::Reactor& reactor, broker::Broker& broker,
                                                const config::Cluster& config, std::string node_id,
                                                std::string& error) {
    std::unique_ptr<NatsCluster> c(new NatsCluster(reactor, broker, config, std::move(node_id)));
    c->eventfd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!c->eventfd_ || !reactor.add(c->eventfd_.get(), EPOLLIN, c.get())) {
        error = std::string("cluster: eventfd: ") + std::strerror(errno);
        return nullptr;
    }
    c->shared_->eventfd = c->eventfd_.get();
    Shared* s = c->shared_.get();
    s->origin = (wall_ns() * 0x9E3779B97F4A7C15ULL) ^ static_cast<std::uint64_t>(::getpid());
    if (s->origin == 0) s->origin = 1;
    if (config.replicated) s->durable = new Durable(*s);
    // The data connection on the reactor (with TLS too: nats_tls.hpp)
    // unless it needs .creds, which only libnats speaks here (docs/cluster.md).
    const bool wire = config.credentials.empty();
    s->wire = wire;
    if (wire) c->start_wire();
    // The link thread and every thread libnats starts from it block all
    // signals: SIGTERM/SIGHUP must reach the reactor's signalfd, never a
    // libnats thread (whose default action would kill the process).
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    s->link_thread = std::thread([s] { s->link_main(); });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    c->install_fence();
    spdlog::info("Cluster: node {} joining over NATS {}.", c->node_id_, fmt::join(config.nats_urls, ", "));
    return c;
}

NatsCluster::~NatsCluster() {
    // Sessions that ended last are released before the KV thread stops.
    if (release_armed_) reactor_.cancel_timer(release_timer_);
    release_ended();
    if (wire_) {
        // Wills published during shutdown still go out (best effort, 1 s).
        reactor_.set_before_sleep_last(nullptr);
        flush_wire();
        wire_->flush_blocking(1000);
        reactor_.cancel_timer(wire_confirm_timer_);
        reactor_.cancel_timer(wire_sweep_timer_);
        stream_out_.reset();
        wire_.reset();
    }
    {
        std::lock_guard lock(shared_->out_mutex);
        shared_->stop = true;
    }
    shared_->out_cv.notify_all();
    {
        std::lock_guard lock(shared_->js_mutex);
        shared_->js_cv.notify_all();
    }
    if (shared_->link_thread.joinable()) shared_->link_thread.join();
    if (link_replay_timer_) reactor_.cancel_timer(link_replay_timer_);
    remove_fence();
    delete shared_->durable;
    shared_->durable = nullptr;
    if (eventfd_) reactor_.remove(eventfd_.get());
    // Every connection and subscription is destroyed above; wait (bounded)
    // for libnats' own threads to release what they still hold. nats_Close()
    // returns at once, and a message its delivery thread had just created
    // was then reported as a leak by LeakSanitizer at exit.
    if (nats_CloseAndWait(2000) != NATS_OK) spdlog::debug("Cluster: libnats still closing after 2 s.");
}

void NatsCluster::interest_added(std::string_view filter) { change_interest(filter, true); }
void NatsCluster::interest_removed(std::string_view filter) { change_interest(filter, false); }

void NatsCluster::change_interest(std::string_view filter, bool add) {
    std::string_view plain = filter;
    std::string queue;
    std::uint32_t tag = tag_live;
    if (auto sf = parse_shared_filter(filter)) {
        plain = sf->filter;
        queue = queue_name(sf->share_name, sf->filter);
        auto [it, fresh] = shared_tags_.try_emplace(std::string(filter), 0);
        if (fresh) {
            it->second = tag_shared_base + static_cast<std::uint32_t>(shared_filters_.size());
            shared_filters_.emplace_back(filter);
        }
        tag = it->second;
    }
    std::vector<std::string> subjects = filter_subjects(prefix_ + ".m", plain);
    // A group's member also takes the messages other nodes hand back to the
    // group (a member's session ended, a node died: nats_groups.cpp).
    if (!queue.empty()) subjects.push_back(prefix_ + ".g." + queue);
    for (std::string& subject : subjects) {
        if (subject.size() + queue.size() > max_subject_bytes) {
            // Refused for clients (accepts_filter); a bridge's topic: local only.
            if (add) spdlog::warn("Cluster: interest in {:.64}... is too long for NATS; it stays on this node.", filter);
            continue;
        }
        std::string key = subject;
        if (!queue.empty()) key.append(1, ' ').append(queue);  // ' ' never occurs in either
        auto it = interest_.find(key);
        if (add) {
            if (it == interest_.end()) it = interest_.emplace(std::move(key), Interest{}).first;
            if (it->second.count++ == 0) {
                it->second.id = next_interest_id_++;
                ++subscribes_pushed_;
                if (wire_ && queue.empty()) {
                    wire_->subscribe(it->second.id, subject);
                    shared_->subscriptions.fetch_add(1, std::memory_order_relaxed);
                } else {
                    shared_->push_out(queue.empty() ? Op::subscribe : Op::queue_subscribe, it->second.id, tag,
                                      subject, queue, nullptr, 0);
                }
            }
        } else if (it != interest_.end() && --it->second.count == 0) {
            if (wire_ && queue.empty()) {
                wire_->unsubscribe(it->second.id);
                shared_->subscriptions.fetch_sub(1, std::memory_order_relaxed);
            } else {
                shared_->push_out(Op::unsubscribe, it->second.id, 0, {}, {}, nullptr, 0);
            }
            interest_.erase(it);
        }
    }
}

void NatsCluster::live_subject(std::string_view topic) {
    if (topic.size() > 256) {  // not kept: the cache stays small (1,024 slots of short topics)
        topic_subject(subject_, live_root_, topic);
        return;
    }
    SubjectSlot& slot = subject_cache_[std::hash<std::string_view>{}(topic) & (subject_cache_.size() - 1)];
    if (slot.subject.empty() || slot.topic != topic) {
        topic_subject(slot.subject, live_root_, topic);
        slot.topic.assign(topic);
    }
    subject_.assign(slot.subject);
}

ReasonCode NatsCluster::publish_refusal(std::string_view topic, std::size_t) const {
    // Any size crosses (in parts beyond max_payload: publish_bulk).
    // A subject is at most 3 bytes per topic byte (%XX): measure only when
    // that bound is over the limit.
    if (prefix_.size() + 5 + 3 * topic.size() > max_subject_bytes) {
        std::string subject;
        topic_subject(subject, prefix_ + ".m", topic);
        if (subject.size() > max_subject_bytes) return ReasonCode::topic_name_invalid;
    }
    return ReasonCode::success;
}

bool NatsCluster::accepts_filter(std::string_view filter) const {
    std::string_view plain = filter;
    std::string queue;
    if (auto sf = parse_shared_filter(filter)) {
        plain = sf->filter;
        queue = queue_name(sf->share_name, sf->filter);
    }
    if (prefix_.size() + 5 + 3 * plain.size() + queue.size() <= max_subject_bytes) return true;
    for (const std::string& subject : filter_subjects(prefix_ + ".m", plain)) {
        if (subject.size() + queue.size() > max_subject_bytes) return false;
    }
    return true;
}

std::uint64_t NatsCluster::interest_ticket(bool retained) {
    if (subscribes_pushed_ != subscribes_at_barrier_ ||
        (retained && (shared_->retained_ready.load() || shared_->retained_soon.load()))) {
        subscribes_at_barrier_ = subscribes_pushed_;
        ++barrier_;
        send_barrier(retained);
    }
    // An older barrier still pending covers interest this SUBSCRIBE shares
    // (a filter another session subscribed to a moment ago).
    return barrier_ > confirmed_ ? barrier_ : 0;
}

bool NatsCluster::reached_no_node(std::uint64_t ticket) {
    // Asked in ticket order while the acknowledgements are released.
    while (!unreceived_.empty() && unreceived_.front() < ticket) unreceived_.pop_front();
    return !unreceived_.empty() && unreceived_.front() == ticket;
}

void NatsCluster::publish(const broker::MessageView& m) {
    last_publish_ticket_ = 0;
    last_publish_id_ = {};
    const Bytes bytes = encode_message(m);
    if (bytes.empty()) {
        shared_->lost_out.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    live_subject(m.topic);
    if (subject_.size() > max_subject_bytes) {
        // Refused before it reached here for clients (publish_refusal);
        // a will or a bridge's message that NATS would not take (a long
        // subject would cost the connection) stays on this node.
        const std::uint64_t n = shared_->lost_out.fetch_add(1, std::memory_order_relaxed) + 1;
        if ((n & (n - 1)) == 0) {
            spdlog::warn("Cluster: a message whose topic is too long for NATS stays on this node (subject {} bytes).",
                         subject_.size());
        }
        return;
    }
    const bool confirm = m.qos != QoS::at_most_once;
    const bool bulk = static_cast<std::int64_t>(bytes.size() + bulk_slack) > shared_->max_payload.load();
    const bool pushed = bulk ? publish_bulk(bytes, confirm) : send_live(bytes, confirm);
    if (!pushed) {
        shared_->lost_out.fetch_add(1, std::memory_order_relaxed);
    } else {
        // The link thread numbers publish_live ops in the order pushed
        // (live_seq): the same count.
        last_publish_id_ = {shared_->origin, ++live_pushed_};
        if (confirm) last_publish_ticket_ = ++publishes_pushed_;
        if (confirm && shared_->durable && !bulk) {
            // Also into the message stream; the PUBACK waits for it too.
            // (Not a message over max_payload: the stream cannot hold it;
            // it crosses live only, docs/cluster.md "Limits".)
            durable_pending_.emplace_back(last_publish_ticket_, false);
            if (stream_out_) {
                // PREFIX.q + the live subject's levels, right behind the live copy.
                stream_out_->push(std::string_view(subject_).substr(live_root_.size()),
                                  {reinterpret_cast<const char*>(bytes.data()), bytes.size()}, last_publish_ticket_,
                                  live_pushed_);
            } else {
                std::string durable_subject;
                topic_subject(durable_subject, prefix_ + ".q", m.topic);
                shared_->durable->push(std::move(durable_subject), bytes.data(), bytes.size(), last_publish_ticket_,
                                       shared_->origin, live_pushed_);
            }
        }
    }
    if (m.retain) {
        // Its live copy does not linger (batch_time): the stream's copy,
        // sent by the JetStream thread, must not overtake it, or a node
        // could give a client subscribing there after this publish the
        // message twice, as retained and then live.
        if (wire_) wire_->send_this_turn();
        // The retained stream keeps it (or, empty, the deletion) for every
        // node, including nodes that start later.
        topic_subject(subject_, prefix_ + ".r", m.topic);  // retained: rare
        if (!shared_->push_retained(subject_, bytes.data(), bytes.size(), last_publish_ticket_, m.payload.empty())) {
            shared_->lost_out.fetch_add(1, std::memory_order_relaxed);
        } else if (last_publish_ticket_ != 0) {
            retained_pending_.push_back(last_publish_ticket_);
        }
    }
}

Bytes NatsCluster::encode_message(const broker::MessageView& m) {
    // A v5 QoS 0 PUBLISH without a topic alias, as the client sent it.
    if (m.qos == QoS::at_most_once && !m.raw.empty() && m.raw_version == ProtocolVersion::v5) return m.raw;
    PublishPacket p;
    p.qos = m.qos;
    p.retain = m.retain;
    p.topic = m.topic;
    p.packet_id = m.qos == QoS::at_most_once ? 0 : 1;  // required on the wire, unused by the receiver
    p.payload = m.payload;
    p.properties.passthrough = m.properties;
    p.properties.passthrough_mask = broker::forwarded_properties;
    p.properties.message_expiry_interval = m.expiry_interval;
    const std::size_t size = encoded_size(p, ProtocolVersion::v5);
    if (size == 0) return {};
    encoded_.resize(size);
    encode(p, ProtocolVersion::v5, {encoded_.data(), size});
    return {encoded_.data(), size};
}

// A message over max_payload: its parts on PREFIX.b.ORIGIN, then its
// reference on subject_ (BulkHeader). False: over the out queue's bound.
bool NatsCluster::publish_bulk(Bytes bytes, bool confirm) {
    const auto max_payload = static_cast<std::size_t>(std::max<std::int64_t>(shared_->max_payload.load(), 4096));
    const std::size_t part = max_payload - sizeof(BulkHeader) - bulk_slack;
    const auto count = static_cast<std::uint32_t>((bytes.size() + part - 1) / part);
    if (wire_ ? !wire_->has_room(bytes.size()) : !shared_->out_room(bytes.size() + count * sizeof(BulkHeader))) {
        return false;
    }
    if (bulk_subject_.empty()) {
        char origin_hex[24];
        std::snprintf(origin_hex, sizeof origin_hex, "%llx", static_cast<unsigned long long>(shared_->origin));
        bulk_subject_ = prefix_ + ".b." + origin_hex;
    }
    BulkHeader h{shared_->origin, live_pushed_ + 1, 0, count, bytes.size()};
    for (std::size_t off = 0; off < bytes.size(); off += part, ++h.index) {
        const std::size_t n = std::min(part, bytes.size() - off);
        send_plain(bulk_subject_, {reinterpret_cast<const char*>(&h), sizeof h},
                   {reinterpret_cast<const char*>(bytes.data()) + off, n}, true);
    }
    h.index = 0;
    char reference[1 + sizeof h];
    reference[0] = bulk_marker;
    std::memcpy(reference + 1, &h, sizeof h);
    return send_live({reinterpret_cast<const std::byte*>(reference), sizeof reference}, confirm);
}

void NatsCluster::route_live(std::uint32_t tag, Bytes bytes, std::uint64_t origin, std::uint64_t seq) {
    if (tag == tag_live) {
        if (!broker_.route_from_cluster(bytes, {}, origin, seq)) shared_->lost_in_queue.fetch_add(1);
    } else if (tag >= tag_shared_base && tag - tag_shared_base < shared_filters_.size()) {
        if (origin != 0) {
            std::uint64_t& last = shared_last_[origin];
            last = std::max(last, seq);
        }
        if (!broker_.route_from_cluster(bytes, shared_filters_[tag - tag_shared_base], origin, seq)) {
            shared_->lost_in_queue.fetch_add(1);
        }
    }
}

void NatsCluster::on_bulk_part(const char* data, std::size_t len) {
    BulkHeader h;
    if (len < sizeof h) return;
    std::memcpy(&h, data, sizeof h);
    const auto key = std::pair(h.origin, h.seq);
    auto it = bulks_.find(key);
    if (h.index == 0 && (it == bulks_.end() || it->second.count == 0)) {
        if (h.total > max_in_bytes || bulk_bytes_ + h.total > max_in_bytes) {
            shared_->lost_in_queue.fetch_add(1);
            if (it != bulks_.end()) bulks_.erase(it);
            return;
        }
        if (it == bulks_.end()) it = bulks_.emplace(key, Bulk{}).first;
        it->second.count = h.count;
        it->second.data.reserve(h.total);
        it->second.counted = h.total;
        bulk_bytes_ += h.total;
        it->second.at = reactor_.now();
    }
    if (it == bulks_.end() || it->second.count == 0 || h.index != it->second.next) {
        // A part missing before this one (NATS dropped it): incomplete.
        if (it != bulks_.end() && it->second.count != 0 && h.index > it->second.next) {
            it->second.next = it->second.count + 1;  // never completes; expires
        }
        return;
    }
    Bulk& b = it->second;
    const auto* p = reinterpret_cast<const std::byte*>(data + sizeof h);
    b.data.insert(b.data.end(), p, p + (len - sizeof h));
    if (++b.next < b.count) return;
    if (b.data.size() != h.total) {
        b.next = b.count + 1;
        return;
    }
    for (const std::uint32_t tag : b.waiting_tags) route_live(tag, {b.data.data(), b.data.size()}, h.origin, h.seq);
    b.waiting_tags.clear();
    b.at = reactor_.now();  // kept a moment for references through other subscriptions
}

void NatsCluster::on_bulk_reference(std::uint32_t tag, const char* data, std::size_t len, std::uint64_t origin,
                                    std::uint64_t seq) {
    BulkHeader h;
    if (len < 1 + sizeof h) return;
    std::memcpy(&h, data + 1, sizeof h);
    auto [it, fresh] = bulks_.try_emplace(std::pair(h.origin, h.seq));
    Bulk& b = it->second;
    if (fresh) b.at = reactor_.now();
    if (b.count != 0 && b.next == b.count) {
        route_live(tag, {b.data.data(), b.data.size()}, origin, seq);
    } else {
        b.waiting_tags.push_back(tag);  // its parts are still coming (another connection)
    }
}

void NatsCluster::expire_bulks() {
    const auto too_old = reactor_.now() - bulk_wait;
    for (auto it = bulks_.begin(); it != bulks_.end();) {
        if (it->second.at >= too_old) {
            ++it;
            continue;
        }
        if (!it->second.waiting_tags.empty()) shared_->lost_in_queue.fetch_add(it->second.waiting_tags.size());
        bulk_bytes_ -= it->second.counted;
        it = bulks_.erase(it);
    }
}

// Session ownership: the last claim wins, ordered by (stamp, node id), the
// same total order on every node; the stamp is the KV revision the claim's
// compare-and-set got (kv_main). Two simultaneous CONNECTs with one client
// id on two nodes: the bucket orders their writes; each node gets the
// other's claim; the node whose claim is newer keeps its client, the other
// accepts its client and closes it with 0x8E, so exactly one owner remains
// (while NATS carries the claims; see docs/cluster.md for partitions).
void NatsCluster::claim_session(std::string_view client_id, bool want_state) {
    ++pending_claims_[std::string(client_id)].count;
    shared_->push_claim(client_id, want_state);
}

void NatsCluster::session_ended(std::string_view client_id) {
    if (ended_.size() >= 1'000'000) return;  // bounded; such an entry stays
    ended_.emplace_back(std::string(client_id), reactor_.now());
    if (release_armed_) return;
    release_armed_ = true;
    release_timer_ = reactor_.add_timer_after(std::chrono::milliseconds(200), [this] {
        release_armed_ = false;
        release_ended();
    });
}

void NatsCluster::release_ended() {
    std::vector<std::string> released;
    for (std::size_t n = 0; n < release_batch && !ended_.empty(); ++n) {
        auto [id, at] = std::move(ended_.front());
        ended_.pop_front();
        if (pending_claims_.count(id) != 0 || broker_.has_session(id)) continue;  // in use again
        // A claim settled here since the session ended belongs to a
        // CONNECT still waiting (for the session's state from another
        // node): its entry must stay.
        if (auto c = claims_.find(id); c != claims_.end() && c->second.at >= at) continue;
        claims_.erase(id);
        released.push_back(std::move(id));
    }
    shared_->push_releases(released);
    if (ended_.empty() || release_armed_) return;
    // The rest after the sockets ready now (a timer due at once would fire
    // in this same turn).
    release_armed_ = true;
    release_timer_ = reactor_.add_timer_after(std::chrono::microseconds(1), [this] {
        release_armed_ = false;
        release_ended();
    });
}

void NatsCluster::forget_old_claims(net::Clock::time_point now) {
    while (!claims_by_age_.empty() && now - claims_by_age_.front().second > std::chrono::seconds(60)) {
        auto& [id, at] = claims_by_age_.front();
        // Settled again since (a newer entry further on) or erased: not this one's.
        if (auto c = claims_.find(id); c != claims_.end() && c->second.at == at) claims_.erase(c);
        claims_by_age_.pop_front();
    }
}

void NatsCluster::on_claimed(std::string_view client_id, std::uint64_t stamp, std::uint32_t flags) {
    const auto now = reactor_.now();
    std::string id(client_id);
    PendingClaim pending;
    if (auto it = pending_claims_.find(id); it != pending_claims_.end()) {
        pending = it->second;
        if (--it->second.count == 0) pending_claims_.erase(it);
    }
    claims_[id] = Claim{stamp, now};
    claims_by_age_.emplace_back(id, now);
    forget_old_claims(now);
    if (pending.remote_stamp != 0 && std::pair(pending.remote_stamp, std::string_view(pending.remote_node)) >
                                         std::pair(stamp, std::string_view(node_id_))) {
        // A newer claim from another node came while ours was settling.
        claims_.erase(id);
        if (broker_.has_session(id)) forget_record(client_id);
        if (broker_.session_claimed_elsewhere(client_id, pending.remote_node, pending.remote_wants_state)) {
            ++takeovers_in_;
        }
        return;
    }
    // Clean Start 0 with replicated sessions and no session here: the
    // record bucket, the sessions' durable home, has the last word. Another
    // node owned the id: the CONNECT waits for its hand-over, then reads
    // the record. Nobody else did (this node owned it already: a resume
    // refused here a moment ago, or this node restarted under its id; or
    // no owner at all: after the ownership bucket lost its leader the claim
    // was seen to find no owner of a session whose record was written
    // before): the record is read at once rather than a new session
    // started over the one the cluster keeps (Session Present 0).
    using AfterClaim = broker::Broker::AfterClaim;
    AfterClaim next = AfterClaim::go_on;
    if ((flags & claim_wants_state) != 0) {
        if ((flags & claim_other_owner) != 0) {
            next = AfterClaim::wait_for_state;
        } else if (replicates_sessions() && !broker_.has_session(id)) {
            next = AfterClaim::read_record;
        }
    }
    spdlog::debug("Cluster: claim of {} settled (flags {}): {}.", id, flags,
                  next == AfterClaim::go_on ? "goes on" : next == AfterClaim::wait_for_state ? "waits for its owner"
                                                                                        : "reads its record");
    broker_.claim_settled(client_id, next);
    if ((stamp & kv_stamp_bit) == 0 || reclaims_.count(id) != 0) reclaim_unordered(id);
}

void NatsCluster::send_session(std::string_view node, std::string_view client_id, std::string_view state) {
    // MQTT strings never hold U+0000 [MQTT-1.5.4-2]: NUL ends the client id.
    std::string payload;
    payload.reserve(client_id.size() + 1 + state.size());
    payload.append(client_id).append(1, '\0').append(state);
    std::string subject = prefix_ + ".session.";
    append_level_token(subject, node);
    if (send_plain(subject, payload, {}, false)) {
        if (is_session_state(state)) ++sessions_sent_;
    } else {
        spdlog::warn("Cluster: the session of {} could not be handed to {} (queue full).", std::string(client_id),
                     std::string(node));
    }
}

void NatsCluster::on_session(std::string_view payload) {
    const std::size_t nul = payload.find('\0');
    if (nul == payload.npos) return;
    if (is_session_state(payload.substr(nul + 1))) ++sessions_received_;
    broker_.session_arrived(payload.substr(0, nul), payload.substr(nul + 1));
}

void NatsCluster::on_claim(std::string_view payload) {
    const std::size_t a = payload.find(' ');
    const std::size_t b = a == payload.npos ? payload.npos : payload.find(' ', a + 1);
    if (b == payload.npos) return;
    std::uint64_t stamp = 0;
    for (const char ch : payload.substr(0, a)) {
        if (ch < '0' || ch > '9') return;
        stamp = stamp * 10 + static_cast<std::uint64_t>(ch - '0');
    }
    const std::string_view node = payload.substr(a + 1, b - a - 1);
    if (payload.size() < b + 3 || payload[b + 2] != ' ') return;
    const bool wants_state = payload[b + 1] == 's';
    const std::size_t c = payload.find(' ', b + 3);
    if (c == payload.npos) return;
    const std::string_view previous = payload.substr(b + 3, c - b - 3);
    const std::string_view client_id = payload.substr(c + 1);
    if (node == node_id_) return;
    if (auto p = pending_claims_.find(std::string(client_id)); p != pending_claims_.end()) {
        // Ours is still settling: compared when its stamp is known.
        PendingClaim& pc = p->second;
        if (std::pair(stamp, node) > std::pair(pc.remote_stamp, std::string_view(pc.remote_node))) {
            pc.remote_stamp = stamp;
            pc.remote_node.assign(node);
            pc.remote_wants_state = wants_state;
        }
        return;
    }
    auto it = claims_.find(std::string(client_id));
    if (it != claims_.end() && std::pair(it->second.stamp, std::string_view(node_id_)) > std::pair(stamp, node)) {
        return;  // our claim is the newer one: the other node gives way
    }
    if (it != claims_.end()) claims_.erase(it);
    if (broker_.has_session(client_id)) forget_record(client_id);
    // A dead node's session being taken over here (nats_nodes.cpp), its
    // record not read or its replay not done: given up without a trace
    // and without an answer, so the claimer reads the record itself.
    if (adopting_.erase(std::string(client_id)) != 0 || broker_.abandon_adoption(client_id)) return;
    if (broker_.session_claimed_elsewhere(client_id, node, wants_state)) {
        ++takeovers_in_;
    } else if (wants_state && previous == node_id_) {
        // The bucket says we held it, but the session is gone (expired,
        // or ended with its connection): the claimer need not wait.
        send_session(node, client_id, {});
    }
}

void NatsCluster::on_io(std::uint32_t) {
    std::uint64_t n = 0;
    while (::read(eventfd_.get(), &n, sizeof n) == static_cast<ssize_t>(sizeof n)) {
    }
    drain_inbound();
}

void NatsCluster::drain_inbound() {
    inbound_.clear();
    {
        std::lock_guard lock(shared_->in_mutex);
        inbound_.swap(shared_->in);
    }
    reactor_.refresh_now();
    std::size_t pos = 0;
    InHeader h;
    while (next_header(inbound_, pos, h)) {
        const char* data = inbound_.data() + pos;
        pos += h.len;
        const Bytes bytes(reinterpret_cast<const std::byte*>(data), h.len);
        switch (h.tag) {
            case tag_live:
                on_live(data, h.len, h.origin, h.seq);
                break;
            case tag_bulk:
                on_bulk_part(data, h.len);
                break;
            case tag_retained:
                if (broker_.retained_from_cluster(bytes, h.age)) ++retained_in_;
                break;
            case tag_claim:
                on_claim(std::string_view(data, h.len));
                break;
            case tag_session:
                on_session(std::string_view(data, h.len));
                break;
            case tag_claimed:
                on_claimed(std::string_view(data, h.len), h.seq, h.age);
                break;
            case tag_unreceived:
                if (h.seq > publishes_confirmed_) unreceived_.push_back(h.seq);
                break;
            case tag_sent:
                live_sent_ = std::max(live_sent_, h.seq);
                release_publishes();
                break;
            case tag_link_down:
            case tag_link_up:
                on_link_state(h.tag == tag_link_up, h.seq);
                break;
            case tag_loaded:
            case tag_replay:
                on_replica(h.tag, h.age, std::string_view(data, h.len), h.origin, h.seq);
                break;
            case tag_durable:
                durable_result(h.seq, h.age == 0);
                break;
            case tag_stored:
                while (!retained_pending_.empty() && retained_pending_.front() <= h.seq) retained_pending_.pop_front();
                release_publishes();
                break;
            case tag_confirmed:
                if (h.seq > confirmed_) {
                    confirmed_ = h.seq;
                    broker_.interest_confirmed(confirmed_);
                }
                break;
            case tag_log:
                spdlog::warn("{}", std::string_view(data, h.len));
                break;
            default:
                if (h.len > 0 && data[0] == bulk_marker) {
                    on_bulk_reference(h.tag, data, h.len, h.origin, h.seq);
                } else if (h.len > 0 && data[0] == pack_marker) {
                    // A queue group's pick of a pack: all of it (nats_shared.hpp).
                    std::uint64_t seq = h.seq;
                    for_each_packed(data + 1, h.len - 1, [&](const char* packet, std::size_t size) {
                        route_live(h.tag, Bytes(reinterpret_cast<const std::byte*>(packet), size), h.origin,
                                   h.origin != 0 ? seq++ : 0);
                    });
                } else {
                    route_live(h.tag, bytes, h.origin, h.seq);
                }
                break;
        }
    }
    if (!bulks_.empty()) expire_bulks();
    // Keep the larger buffer's capacity on this side; hand an empty one back.
    if (inbound_.capacity() > (4u << 20)) std::vector<char>().swap(inbound_);
}

// QoS 1/2 publishes are confirmed to the broker (their PUBACKs go) in
// order, once NATS has them and, for retained ones, the stream too.
void NatsCluster::release_publishes() {
    std::uint64_t upto = live_sent_;
    if (!retained_pending_.empty()) upto = std::min(upto, retained_pending_.front() - 1);
    if (!durable_pending_.empty()) upto = std::min(upto, durable_pending_.front().first - 1);
    if (upto <= publishes_confirmed_) return;
    publishes_confirmed_ = upto;
    broker_.publishes_confirmed(publishes_confirmed_);
    while (!unreceived_.empty() && unreceived_.front() <= publishes_confirmed_) unreceived_.pop_front();
}

broker::ClusterCounters NatsCluster::counters() const {
    broker::ClusterCounters c;
    c.links_total = 2;
    for (natsConnection* conn : {shared_->data.load(), shared_->control.load()}) {
        if (conn && natsConnection_Status(conn) == NATS_CONN_STATUS_CONNECTED) ++c.links_up;
    }
    if (wire_ && wire_->up()) ++c.links_up;
    c.nodes_connected = c.links_up == c.links_total ? 1 : 0;
    {
        std::lock_guard lock(shared_->unreachable_mutex);
        // Either connection's first failure names the URL and why (the
        // control connection's may come first: issue 30, item 5).
        const std::string& unreachable =
            wire_ && !wire_->unreachable().empty() ? wire_->unreachable() : shared_->unreachable;
        c.status = c.nodes_connected ? "connected"
                   : !unreachable.empty() ? "NATS unreachable (" + unreachable + ")"
                                          : "NATS link down, reconnecting";
    }
    c.messages_out = shared_->messages_out.load();
    c.messages_in = shared_->messages_in.load();
    c.messages_lost_out = shared_->lost_out.load();
    c.messages_lost_in = shared_->lost_in_queue.load() + shared_->lost_in_nats.load();
    c.disconnects = shared_->disconnects.load();
    c.reconnects = shared_->reconnects.load();
    c.remote_interest = shared_->subscriptions.load();
    c.retained_in = retained_in_;
    c.takeovers_in = takeovers_in_;
    c.retained_stored = shared_->retained_stored.load();
    c.sessions_sent = sessions_sent_;
    c.sessions_received = sessions_received_;
    return c;
}

}  // namespace mqttools::cluster
namespace mqttools::cluster {

// The stream's answer for one durable QoS 1/2 publish (tag_durable): its
// acknowledgement may go once every earlier one's has (release_publishes).
void NatsCluster::durable_result(std::uint64_t ticket, bool stored) {
    auto it = std::lower_bound(durable_pending_.begin(), durable_pending_.end(), ticket,
                               [](const auto& p, std::uint64_t t) { return p.first < t; });
    if (it == durable_pending_.end() || it->first != ticket) return;
    it->second = true;
    if (!stored) refused_.push_back(ticket);
    while (!durable_pending_.empty() && durable_pending_.front().second) durable_pending_.pop_front();
    release_publishes();
}

ReasonCode NatsCluster::publish_refused(std::uint64_t ticket) {
    auto it = std::find(refused_.begin(), refused_.end(), ticket);
    if (it == refused_.end()) return ReasonCode::success;
    refused_.erase(it);
    return ReasonCode::unspecified_error;
}

}  // namespace mqttools::cluster
