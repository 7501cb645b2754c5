// The live cross-node path on the reactor (issue 26): the data connection
// spoken by NatsWire on the reactor's own socket instead of libnats' reader,
// delivery and link threads (docs/profiling.md: those hops and libnats'
// parser and message objects were most of a crossing message's cost).
//
// Contracts kept from the libnats path (nats_link.cpp), which still carries
// this connection when TLS or .creds are configured:
//  * reply subjects "_o.ORIGIN.SEQ" / "_p.ORIGIN.SEQ.TICKET" name each
//    message (once per node, the tail of a hand-over, replays);
//  * a QoS 1/2 publish's PUBACK waits until NATS has it: after a turn that
//    published any, a request to a subject nobody subscribes to
//    ("_n.ORIGIN", reply "_p.ORIGIN.b.N"); nats-server handles a
//    connection's commands in order, so its "no responders" answer means
//    every earlier PUB was routed. No answer within 2 s (hold_timeout with
//    sessions = "replicated"): confirmed anyway; NATS down: at once, the
//    messages counted as lost;
//  * a SUBACK waits for a PING sent behind its SUBs (then for the control
//    connection's, on the link thread, as before);
//  * connected/disconnected drive the durable replay (on_link_state).

#include <algorithm>
#include <cstdio>

#include <spdlog/spdlog.h>

#include "cluster/nats_cluster.hpp"
#include "cluster/nats_durable.hpp"
#include "cluster/nats_shared.hpp"
#include "cluster/subject_map.hpp"

namespace mqttools::cluster {

namespace {

// Subscription ids of the data connection: interest ids (32 bits) as they
// are, the node's own subscriptions above them.
constexpr std::uint64_t sid_claims = (std::uint64_t{1} << 32) + 1;
constexpr std::uint64_t sid_session = sid_claims + 1;
constexpr std::uint64_t sid_bulk = sid_claims + 2;
constexpr std::uint64_t sid_answers = sid_claims + 3;
constexpr std::uint64_t sid_stored = sid_claims + 4;  // the message stream's answers (StreamOut)

void append_hex(std::string& out, std::uint64_t v) {
    char digits[16];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v != 0);
    while (n > 0) out.push_back(digits[--n]);
}

void append_decimal(std::string& out, std::uint64_t v) {
    char buf[20];
    char* p = buf + sizeof buf;
    do {
        *--p = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    out.append(p, static_cast<std::size_t>(buf + sizeof buf - p));
}

// "_o.ORIGIN.SEQ" or "_p.ORIGIN.SEQ.TICKET" -> origin, seq.
bool parse_origin(std::string_view reply, std::uint64_t& origin, std::uint64_t& seq) {
    if (reply.size() < 6 || reply[0] != '_' || (reply[1] != 'o' && reply[1] != 'p') || reply[2] != '.') return false;
    std::size_t i = 3;
    origin = 0;
    for (; i < reply.size() && reply[i] != '.'; ++i) {
        const char c = reply[i];
        const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return false;
        origin = origin * 16 + static_cast<std::uint64_t>(v);
    }
    if (i >= reply.size()) return false;
    seq = 0;
    for (++i; i < reply.size() && reply[i] != '.'; ++i) {
        if (reply[i] < '0' || reply[i] > '9') return false;
        seq = seq * 10 + static_cast<std::uint64_t>(reply[i] - '0');
    }
    return i == reply.size() || reply[1] == 'p';
}

bool last_number(std::string_view s, std::uint64_t& n) {
    const std::size_t dot = s.rfind('.');
    if (dot == s.npos || dot + 1 == s.size()) return false;
    n = 0;
    for (const char c : s.substr(dot + 1)) {
        if (c < '0' || c > '9') return false;
        n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return true;
}

}  // namespace

void NatsCluster::start_wire() {
    NatsWire::Options o;
    o.urls = shared_->config.nats_urls;
    o.name = "mqttoolsd " + node_id_ + " data";
    o.user = shared_->config.username;
    o.pass = shared_->config.password;
    o.echo = false;  // a node never gets its own message back
    o.max_out_bytes = max_out_bytes;
    o.linger = std::chrono::microseconds(shared_->config.batch_time_us);
    const config::Cluster& c = shared_->config;
    o.tls.on = !c.cafile.empty() || !c.certfile.empty();
    for (const auto& u : c.nats_urls) o.tls.on = o.tls.on || u.rfind("tls://", 0) == 0;
    o.tls.cafile = c.cafile;
    o.tls.certfile = c.certfile;
    o.tls.keyfile = c.keyfile;
    wire_ = std::make_unique<NatsWire>(reactor_, *this, std::move(o));
    const std::uint64_t origin = shared_->origin;
    reply_prefix_o_ = "_o.";
    append_hex(reply_prefix_o_, origin);
    reply_prefix_o_.push_back('.');
    reply_prefix_p_ = "_p.";
    append_hex(reply_prefix_p_, origin);
    reply_prefix_p_.push_back('.');
    nobody_subject_ = "_n.";
    append_hex(nobody_subject_, origin);
    wire_->subscribe(sid_claims, prefix_ + ".claim");
    std::string mine = prefix_ + ".session.";
    append_level_token(mine, node_id_);
    wire_->subscribe(sid_session, mine);
    wire_->subscribe(sid_bulk, prefix_ + ".b.>");
    wire_->subscribe(sid_answers, reply_prefix_p_ + ">");
    if (shared_->durable) {
        stream_out_ = std::make_unique<StreamOut>(
            reactor_, *wire_, *shared_->durable, prefix_ + ".q", origin,
            std::chrono::milliseconds(shared_->config.hold_timeout),
            [this](std::uint64_t ticket, bool stored) { durable_result(ticket, stored); },
            [this](std::uint64_t ticket) { confirm_live_upto(ticket); });
        wire_->subscribe(sid_stored, stream_out_->answers_subject());
    }
    reactor_.set_before_sleep_last([this] { flush_wire(); });
    wire_->start();
}

bool NatsCluster::send_live(Bytes bytes, bool confirm) {
    const std::string_view payload(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    if (!wire_) {
        return shared_->push_out(Op::publish_live, 0, confirm ? 1 : 0, subject_, {}, payload.data(), payload.size());
    }
    // A QoS 0 PUBLISH right behind one of the same subject (a publisher's
    // burst) joins its NATS message (pack_marker): numbered by the first.
    const bool joinable = !confirm && !payload.empty() && payload[0] != bulk_marker;
    if (joinable && live_pushed_ + 1 == join_next_ &&
        wire_->join_last(subject_, payload, pack_marker,
                         std::min<std::size_t>(pack_limit, static_cast<std::size_t>(std::max<std::int64_t>(
                                                               wire_->max_payload() - bulk_slack, 0))))) {
        ++join_next_;
        shared_->messages_out.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    // The numbers publish() gives it next (live_pushed_, publishes_pushed_).
    reply_.assign(confirm ? reply_prefix_p_ : reply_prefix_o_);
    append_decimal(reply_, live_pushed_ + 1);
    if (confirm) {
        reply_.push_back('.');
        append_decimal(reply_, publishes_pushed_ + 1);
    }
    // Not up (or over the output bound): counted as lost, never kept for
    // after a reconnect (it would reach only the nodes that re-subscribed
    // by then); its PUBACK is not held (flush_wire).
    if (wire_->publish_trusted(subject_, reply_, payload, joinable)) {
        join_next_ = live_pushed_ + 2;
        shared_->messages_out.fetch_add(1, std::memory_order_relaxed);
    } else {
        shared_->lost_out.fetch_add(1, std::memory_order_relaxed);
    }
    return true;
}

bool NatsCluster::send_plain(std::string_view subject, std::string_view a, std::string_view b, bool bulk) {
    if (wire_) {
        if (wire_->publish2(subject, {}, a, b)) return true;
        if (!bulk) {
            ++unsent_control_;
            if ((unsent_control_ & (unsent_control_ - 1)) == 0) {
                spdlog::warn("Cluster: NATS is down: session claims/hand-overs not sent so far: {}", unsent_control_);
            }
        }
        return !bulk;  // a hand-over that could not go is not a full queue
    }
    std::string joined;
    joined.reserve(a.size() + b.size());
    joined.append(a).append(b);
    return shared_->push_out(bulk ? Op::publish_bulk : Op::publish, 0, 0, subject, {}, joined.data(), joined.size());
}

void NatsCluster::send_barrier(bool retained) {
    // Behind the SUBs on the data connection first; the link thread then
    // does the control connection's part and the retained catch-up.
    if (wire_ && wire_->ping()) {
        wire_barriers_.emplace_back(barrier_, retained);
        return;
    }
    shared_->push_out(Op::barrier, 0, retained ? 1 : 0, {}, {}, &barrier_, sizeof barrier_);
}

void NatsCluster::on_wire_pong() {
    if (wire_barriers_.empty()) return;
    const auto [barrier, retained] = wire_barriers_.front();
    wire_barriers_.pop_front();
    shared_->push_out(Op::barrier, 0, retained ? 1 : 0, {}, {}, &barrier, sizeof barrier);
}

void NatsCluster::on_wire_up(bool again) {
    shared_->max_payload.store(wire_->max_payload());
    if (stream_out_) stream_out_->on_wire_up();
    if (!again) {
        spdlog::info("Cluster: connected to NATS.");
        return;
    }
    shared_->reconnects.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("Cluster: reconnected to NATS (interest re-subscribed).");
    on_link_state(true, wall_ns());
}

void NatsCluster::on_wire_down() {
    shared_->disconnects.fetch_add(1, std::memory_order_relaxed);
    // SUBACKs waiting for a PONG that will not come: their subscriptions
    // are re-sent on reconnect (docs/cluster.md says what is missed).
    for (const auto& [barrier, retained] : wire_barriers_) {
        shared_->push_out(Op::barrier, 0, retained ? 1 : 0, {}, {}, &barrier, sizeof barrier);
    }
    wire_barriers_.clear();
    // sessions = "replicated": what NATS drops meanwhile is replayed from
    // the stream once the link is back; disconnect_after counts from here.
    on_link_state(false, wall_ns());
}

void NatsCluster::on_wire_message(const nats::ServerMessage& m) {
    const auto* data = m.payload.data();
    const std::size_t len = m.payload.size();
    if (m.sid < sid_claims) {
        std::uint64_t origin = 0;
        std::uint64_t seq = 0;
        if (!parse_origin(m.reply, origin, seq)) origin = seq = 0;
        shared_->messages_in.fetch_add(1, std::memory_order_relaxed);
        on_live(data, len, origin, seq);
        return;
    }
    switch (m.sid) {
        case sid_claims:
            on_claim(m.payload);
            break;
        case sid_session:
            on_session(m.payload);
            break;
        case sid_bulk:
            on_bulk_part(data, len);
            break;
        case sid_stored:
            if (stream_out_) stream_out_->on_answer(m);
            break;
        case sid_answers: {
            // "No responders" to "_p.ORIGIN.b.N" (the batch barrier) or to
            // "_p.ORIGIN.SEQ.TICKET" (that message reached no other node).
            std::uint64_t n = 0;
            if (nats::header_status(m.headers) != 503 || !last_number(m.subject, n)) break;
            const std::string_view rest = m.subject.substr(reply_prefix_p_.size());
            if (rest.size() > 2 && rest[0] == 'b' && rest[1] == '.') {
                confirm_live_upto(n);
            } else if (n > live_sent_ && n > publishes_confirmed_) {
                unreceived_.push_back(n);
            }
            break;
        }
        default:
            break;
    }
}

void NatsCluster::on_live(const char* data, std::size_t len, std::uint64_t origin, std::uint64_t seq) {
    if (len > 0 && data[0] == pack_marker) {
        // Consecutive messages of one origin: seq, seq + 1, ...
        std::uint64_t n = 0;
        for_each_packed(data + 1, len - 1, [&](const char* packet, std::size_t size) {
            if (n++ > 0) shared_->messages_in.fetch_add(1, std::memory_order_relaxed);
            on_live_one(packet, size, origin, origin != 0 ? seq++ : 0, true);
        });
        return;
    }
    on_live_one(data, len, origin, seq, false);
}

void NatsCluster::on_live_one(const char* data, std::size_t len, std::uint64_t origin, std::uint64_t seq,
                              bool packed) {
    if (origin != 0) {
        // A second copy through another of our subscriptions. (The map's
        // nodes stay put: the last origin's entry is kept at hand.)
        if (origin != cached_origin_ || !cached_last_) {
            cached_last_ = &last_seq_[origin];
            cached_origin_ = origin;
        }
        std::uint64_t& last = *cached_last_;
        if (seq <= last) return;
        last = seq;
        if (recovering_) seen_live_.insert({origin, seq});
    }
    if (len > 0 && data[0] == bulk_marker) {
        on_bulk_reference(tag_live, data, len, origin, seq);
    } else if (!broker_.route_from_cluster(Bytes(reinterpret_cast<const std::byte*>(data), len), {}, origin, seq,
                                           packed)) {
        shared_->lost_in_queue.fetch_add(1);
    }
}

void NatsCluster::confirm_live_upto(std::uint64_t n) {
    while (!wire_sent_.empty() && wire_sent_.front().first <= n) wire_sent_.pop_front();
    if (n <= live_sent_) return;
    live_sent_ = n;
    release_publishes();
}

// Before the reactor sleeps, after the broker's flush: this turn's QoS 1/2
// publishes get their batch barrier, then everything goes in one send.
void NatsCluster::flush_wire() {
    if (publishes_pushed_ > wire_barrier_sent_) {
        const std::uint64_t n = publishes_pushed_;
        wire_barrier_sent_ = n;
        // The turn's last QoS 1/2 message went on with its stream request
        // behind it: that request's answer is the barrier (StreamOut).
        bool sent = stream_out_ && stream_out_->sent_with_live() == n;
        if (!sent) {
            std::string reply = reply_prefix_p_ + "b.";
            append_decimal(reply, n);
            sent = wire_->publish(nobody_subject_, reply, {});
        }
        if (sent) {
            wire_sent_.emplace_back(n, reactor_.now());
            if (!wire_sweep_timer_) {
                wire_sweep_timer_ = reactor_.add_timer_after(std::chrono::milliseconds(250), [this] {
                    wire_sweep_timer_ = {};
                    sweep_wire();
                });
            }
        } else {
            // Down: not held (the messages were counted as lost). Released
            // on the next turn, whose flush sends the PUBACKs.
            wire_confirm_now_ = n;
            if (!wire_confirm_timer_) {
                wire_confirm_timer_ = reactor_.add_timer_after(std::chrono::milliseconds(0), [this] {
                    wire_confirm_timer_ = {};
                    confirm_live_upto(wire_confirm_now_);
                });
            }
        }
    }
    wire_->flush_or_linger();
}

void NatsCluster::sweep_wire() {
    // As long as a PUBACK may wait for the stream with sessions =
    // "replicated" (a loaded NATS answers late; confirming early could
    // acknowledge a message whose live copy never left this node).
    const auto wait = shared_->durable ? std::max<std::chrono::milliseconds>(
                                             std::chrono::seconds(2),
                                             std::chrono::milliseconds(shared_->config.hold_timeout))
                                       : std::chrono::milliseconds(2000);
    const auto too_old = reactor_.now() - wait;
    std::uint64_t upto = 0;
    while (!wire_sent_.empty() && wire_sent_.front().second < too_old) {
        upto = wire_sent_.front().first;
        wire_sent_.pop_front();
    }
    if (upto != 0) confirm_live_upto(upto);
    if (!wire_sent_.empty()) {
        wire_sweep_timer_ = reactor_.add_timer_after(std::chrono::milliseconds(250), [this] {
            wire_sweep_timer_ = {};
            sweep_wire();
        });
    }
}

}  // namespace mqttools::cluster
