// mqtt_load: the benchmark load generator. One process, one epoll set, many
// MQTT 5 connections built on the project's codec.
//
// Traffic scenarios (pairs, fanin, fanout; QoS 0 or 1, fixed rate or
// saturated) carry a CLOCK_MONOTONIC send timestamp and the publisher's index
// in every payload. Messages sent inside the measured window are counted at
// the subscribers: delivered msg/s, latency percentiles and lost messages.
// The broker's CPU time and RSS are read at the window's start and after the
// drain, giving CPU microseconds per delivered message.
//
// With --procs N (fixed rate), the clients are split over N forked
// processes sending on one schedule; this process reads the broker's CPU
// and merges their counts and latency histograms. A process that holds
// only subscribers may batch its reads (--read-batch-us).
//
// The idle scenario (idle_run.cpp) opens many connections from several
// 127.0.0.x source addresses, in worker processes within RLIMIT_NOFILE, to
// one broker or to the nodes of a cluster (--ports), and reports the RSS
// growth per connection of each.
//
// The result is one JSON object on stdout; progress and errors go to stderr.
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "load_client.hpp"
#include "idle_run.hpp"
#include "latency_hist.hpp"
#include "load_options.hpp"
#include "retained_run.hpp"

using namespace mqttools;
using namespace bench;

namespace {

// The broker's CPU time plus that of --extra-pids (a cluster: every node
// and nats-server), summed; RSS is the broker's.
ProcSample sample_all(const LoadOptions& o) {
    ProcSample s = sample_process(o.broker_pid);
    std::size_t start = 0;
    while (start < o.extra_pids.size()) {
        std::size_t comma = o.extra_pids.find(',', start);
        if (comma == std::string::npos) comma = o.extra_pids.size();
        const int pid = std::atoi(o.extra_pids.substr(start, comma - start).c_str());
        if (pid > 0) {
            const ProcSample e = sample_process(pid);
            s.cpu_s += e.cpu_s;
            s.user_s += e.user_s;
            s.system_s += e.system_s;
        }
        start = comma + 1;
    }
    return s;
}

}  // namespace

namespace {

// --tls: one client context for every connection (and the idle workers
// forked later).
std::shared_ptr<const net::TlsContext> tls_context;

constexpr std::size_t max_latency_samples = 30'000'000;
constexpr std::size_t max_pending_per_pub = 1u << 20;

// What a traffic run reports (one process, or several merged).
struct TrafficTotals {
    bool ok = false;
    double window_s = 0;
    std::uint64_t sent = 0, expected = 0, received = 0;
    double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;  // µs
    ProcSample start, end;                                 // the broker(s)
    double gen_cpu_s = 0, gen_wall_s = 0;                  // the generator process(es)
    std::uint64_t skipped = 0, behind = 0, stalls = 0, unacked = 0, acked = 0, bad = 0;
    double drain_s = 0;
    int stuck_dropped = 0;
    std::string gen_cpu_by_proc = "[]";  // --procs: JSON array of each process' CPU seconds
    std::string error;
};

int print_traffic(const LoadOptions& o, const TrafficTotals& t) {
    const std::uint64_t lost = t.expected > t.received ? t.expected - t.received : 0;
    const double cpu_s = t.end.ok && t.start.ok ? t.end.cpu_s - t.start.cpu_s : 0;
    const double per_msg = t.received > 0 ? 1e6 / static_cast<double>(t.received) : 0;
    std::printf(
        "{\"ok\": %s, \"label\": \"%s\", \"scenario\": \"%s\", \"qos\": %d, \"pubs\": %d, \"subs\": %d, "
        "\"rate_target\": %.0f, \"size\": %d, \"window_s\": %.3f, \"sent\": %" PRIu64 ", \"expected\": %" PRIu64
        ", \"received\": %" PRIu64 ", \"lost\": %" PRIu64 ", \"sent_per_s\": %.1f, \"delivered_per_s\": %.1f, "
        "\"lat_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}, "
        "\"broker_cpu_s\": %.6f, \"broker_user_s\": %.2f, \"broker_sys_s\": %.2f, \"cpu_us_per_msg\": %.3f, "
        "\"broker_rss_kb\": %ld, \"gen_cpu_pct\": %.1f, \"gen_cpu_us_per_msg\": %.3f, \"procs\": %d, "
        "\"read_batch_us\": %d, \"gen_cpu_s_by_proc\": %s, \"skipped\": %" PRIu64 ", \"behind\": %" PRIu64 ", \"stalls\": %" PRIu64
        ", \"unacked\": %" PRIu64 ", \"acked\": %" PRIu64 ", \"bad_packets\": %" PRIu64
        ", \"drain_s\": %.3f, \"stuck\": %d, \"stuck_dropped\": %d, \"rss_peak_kb\": %ld, \"error\": \"%s\"}\n",
        t.ok && t.error.empty() ? "true" : "false", json_escape(o.label).c_str(), scenario_name(o.scenario), o.qos,
        o.pubs, o.subs, o.rate, o.size, t.window_s, t.sent, t.expected, t.received, lost,
        t.window_s > 0 ? static_cast<double>(t.sent) / t.window_s : 0,
        t.window_s > 0 ? static_cast<double>(t.received) / t.window_s : 0, t.p50, t.p90, t.p99, t.p999, t.max, cpu_s,
        t.end.user_s - t.start.user_s, t.end.system_s - t.start.system_s, cpu_s * per_msg, t.end.rss_kb,
        t.gen_wall_s > 0 ? t.gen_cpu_s / t.gen_wall_s * 100 : 0, t.gen_cpu_s * per_msg, o.procs,
        o.procs > 1 ? o.read_batch_us : 0, t.gen_cpu_by_proc.c_str(), t.skipped, t.behind, t.stalls, t.unacked, t.acked, t.bad, t.drain_s,
        o.stuck, t.stuck_dropped, t.end.hwm_kb, json_escape(t.error).c_str());
    std::fflush(stdout);
    return t.ok && t.error.empty() ? 0 : 1;
}

// One process' part of a run split over --procs processes (run_procs is
// the parent). count 1: the whole run in this process.
struct Slice {
    int index = 0;
    int count = 1;
    int to_parent = -1;
    int from_parent = -1;
};

class TrafficRun {
public:
    TrafficRun(const LoadOptions& o, Slice slice) : o_(o), slice_(slice) {}

    int run() {
        if (slice_.count > 1) return run_child();
        if (!setup()) return report(false);
        traffic();
        return report(true);
    }

private:
    bool split() const noexcept { return slice_.count > 1; }

    // Which clients this process holds. pairs: pair i in process i % count;
    // fan-in and fan-out: the single client (the subscriber, the publisher)
    // alone in process 0 and the many spread over the others, so that a
    // process holding only subscribers can batch its reads.
    bool mine(Role r, int i) const noexcept {
        if (!split()) return true;
        if (o_.scenario == Scenario::pairs) return i % slice_.count == slice_.index;
        const bool single = (o_.scenario == Scenario::fanin) == (r == Role::subscriber);
        if (single) return slice_.index == 0;
        return slice_.index != 0 && i % (slice_.count - 1) == slice_.index - 1;
    }

    // The child's side of run_procs: "ready" once connected, "go T0" from
    // the parent, "sent N" at the end of the window, "total N" (every
    // process' sent messages) back, then the result lines.
    int run_child() {
        const bool ok = setup();
        write_line(slice_.to_parent, ok ? "ready" : "fail " + error_);
        if (!ok) return 1;
        std::string buf, line;
        if (!read_line(slice_.from_parent, buf, line, now_ns() + seconds_ns(o_.connect_timeout_s + 60)) ||
            line.rfind("go ", 0) != 0) {
            return 1;
        }
        t0_ = std::strtoll(line.c_str() + 3, nullptr, 10);
        traffic();
        const TrafficTotals t = totals(true);
        char head[512];
        std::snprintf(head, sizeof head,
                      "result %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                      " %" PRIu64 " %" PRIu64 " %.6f %.6f %.6f",
                      t.sent, t.expected, t.received, t.skipped, t.behind, t.stalls, t.unacked, t.acked, t.bad,
                      t.gen_cpu_s, t.window_s, t.drain_s);
        write_line(slice_.to_parent, head);
        write_line(slice_.to_parent, "hist " + hist_.serialize());
        write_line(slice_.to_parent, "error " + error_);
        return 0;
    }

    std::string topic_for(std::uint32_t i) const {
        switch (o_.scenario) {
        case Scenario::pairs: return o_.topic_prefix + "bench/p/" + std::to_string(i);
        case Scenario::fanin: return o_.topic_prefix + "bench/in";
        default: return o_.topic_prefix + "bench/out";
        }
    }

    bool setup() {
        fanout_ = o_.scenario == Scenario::pairs ? 1 : static_cast<std::uint64_t>(o_.subs);
        std::string prefix = "bl" + std::to_string(getpid()) + "-";
        by_index_.assign(static_cast<std::size_t>(o_.pubs), nullptr);
        for (int i = 0; i < o_.subs; ++i) {
            if (!mine(Role::subscriber, i)) continue;
            ++local_subs_;
            Conn& c = cs_.add(Role::subscriber, static_cast<std::uint32_t>(i), prefix + "s" + std::to_string(i), "",
                              65536);
            c.filter = topic_for(static_cast<std::uint32_t>(i));
            c.sub_qos = o_.qos;
            c.session_expiry = static_cast<std::uint32_t>(o_.session_expiry);
        }
        for (int i = 0; i < o_.pubs; ++i) {
            if (!mine(Role::publisher, i)) continue;
            Conn& c = cs_.add(Role::publisher, static_cast<std::uint32_t>(i), prefix + "p" + std::to_string(i), "",
                              4096);
            make_template(c);
            pubs_.push_back(&c);
            by_index_[static_cast<std::size_t>(i)] = &c;
        }
        // This process' share of the rate: its publishers' share.
        rate_ = o_.rate * static_cast<double>(pubs_.size()) / static_cast<double>(o_.pubs);
        if (split() && pubs_.empty() && o_.read_batch_us > 0) read_batch_ns_ = o_.read_batch_us * 1000LL;
        for (int i = 0; i < o_.stuck; ++i) {
            // A small receive window: the broker's socket to it fills at once,
            // then its output queue grows.
            Conn& c = cs_.add(Role::subscriber, static_cast<std::uint32_t>(i), prefix + "x" + std::to_string(i), "",
                              4096);
            c.filter = o_.topic_prefix + "bench/#";
            c.sub_qos = o_.qos;
            c.rcvbuf = 16 * 1024;
            stuck_.push_back(&c);
        }
        cs_.set_handler([this](Conn& c, const FixedHeader& h, Bytes p, std::int64_t now) { on_packet(c, h, p, now); });
        if (!o_.websocket_path.empty()) cs_.set_websocket(o_.websocket_path);
        if (tls_context) cs_.set_tls(tls_context);
        for (auto& c : cs_.conns()) {
            const bool elsewhere = c->role == Role::subscriber && o_.sub_port != 0;
            cs_.start_connect(*c, o_.host, elsewhere ? o_.sub_port : o_.port);
        }
        std::int64_t deadline = now_ns() + seconds_ns(o_.connect_timeout_s);
        std::size_t total = cs_.conns().size();
        while (cs_.ready_count() < total && cs_.closed_count() == 0 && now_ns() < deadline) cs_.poll(5'000'000);
        if (cs_.ready_count() < total) {
            error_ = "setup: " + std::to_string(cs_.ready_count()) + "/" + std::to_string(total) +
                     " connections ready; " + cs_.last_error();
            return false;
        }
        for (Conn* c : stuck_) cs_.detach(*c);
        return true;
    }

    // After the run: a stuck subscriber the broker dropped reads to EOF (or
    // a reset) once it reads again; one still connected keeps getting data.
    // Reads and discards for at most 3 s in all.
    void check_stuck() {
        const std::int64_t end = now_ns() + seconds_ns(3);
        std::vector<std::byte> sink(256 * 1024);
        for (Conn* c : stuck_) {
            while (now_ns() < end) {
                pollfd p{c->fd.get(), POLLIN, 0};
                const int ms = static_cast<int>(std::max<std::int64_t>((end - now_ns()) / 1'000'000, 1));
                if (::poll(&p, 1, std::min(ms, 500)) <= 0) break;  // quiet: still connected
                const ssize_t n = ::read(c->fd.get(), sink.data(), sink.size());
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                if (n <= 0) {
                    ++stuck_dropped_;
                    break;
                }
            }
        }
    }

    void make_template(Conn& c) {
        std::string topic = topic_for(c.role_index);
        std::vector<std::byte> payload(static_cast<std::size_t>(o_.size));
        PublishPacket p;
        p.qos = static_cast<QoS>(o_.qos);
        p.topic = topic;
        p.packet_id = o_.qos > 0 ? 1 : 0;
        p.payload = payload;
        c.tmpl.resize(encoded_size(p, wire_version));
        c.tmpl.resize(encode(p, wire_version, c.tmpl));
        Frame f = read_frame(c.tmpl);
        c.payload_off = c.tmpl.size() - payload.size();
        c.packet_id_off = f.header.header_size + 2 + topic.size();
        std::uint32_t idx = c.role_index;
        std::memcpy(c.tmpl.data() + c.payload_off + 8, &idx, 4);
        if (o_.qos > 0) c.id_in_use.assign(65536, 0);
    }

    // Queues one PUBLISH on a publisher (and writes it when `flush`); false
    // when the publisher may not send now (QoS 1 quota, socket backlog).
    bool send_one(Conn& c, std::int64_t now, bool flush) {
        if (c.state != ConnState::ready || c.pending_out() > max_pending_per_pub) return false;
        if (o_.qos > 0) {
            std::uint32_t quota = std::min<std::uint32_t>(c.receive_maximum, 65535);
            if (c.inflight >= quota) return false;
            while (c.id_in_use[c.next_id] != 0) c.next_id = static_cast<std::uint16_t>(c.next_id % 65535 + 1);
            std::uint16_t id = c.next_id;
            c.id_in_use[id] = 1;
            ++c.inflight;
            c.next_id = static_cast<std::uint16_t>(id % 65535 + 1);
            c.tmpl[c.packet_id_off] = static_cast<std::byte>(id >> 8);
            c.tmpl[c.packet_id_off + 1] = static_cast<std::byte>(id & 0xff);
        }
        std::memcpy(c.tmpl.data() + c.payload_off, &now, 8);
        auto seq = static_cast<std::uint32_t>(c.seq++);
        std::memcpy(c.tmpl.data() + c.payload_off + 12, &seq, 4);
        cs_.queue(c, c.tmpl);
        if (flush) cs_.flush(c);
        ++c.sent;
        ++sent_total_;
        if (now >= m0_ && now < m1_) ++sent_window_;
        return true;
    }

    void on_packet(Conn& c, const FixedHeader& h, Bytes packet, std::int64_t now) {
        Bytes body = packet.subspan(h.header_size);
        if (h.type == PacketType::publish && c.role == Role::subscriber) {
            auto p = decode_publish(h, body, wire_version, Sender::server);
            if (!p) {
                ++bad_packets_;
                return;
            }
            const PublishPacket& pub = p.value();
            if (pub.qos == QoS::at_least_once) {
                std::byte buf[8];
                AckPacket ack;
                ack.packet_id = pub.packet_id;
                cs_.queue(c, Bytes(buf, encode(ack, wire_version, buf)));
            }
            if (pub.payload.size() < 16) {
                ++bad_packets_;
                return;
            }
            std::int64_t ts = 0;
            std::uint32_t idx = 0;
            std::memcpy(&ts, pub.payload.data(), 8);
            std::memcpy(&idx, pub.payload.data() + 8, 4);
            if (idx < by_index_.size() && by_index_[idx] != nullptr) ++by_index_[idx]->delivered;
            if (ts >= m0_ && ts < m1_) {
                ++received_window_;
                const auto lat = static_cast<std::uint32_t>(std::clamp<std::int64_t>(now - ts, 0, UINT32_MAX));
                if (split()) {
                    hist_.add(lat);
                } else if (latencies_.size() < max_latency_samples) {
                    latencies_.push_back(lat);
                }
            }
            ++received_total_;
            return;
        }
        if (h.type == PacketType::puback && c.role == Role::publisher) {
            auto a = decode_ack(h, body, wire_version);
            if (!a || c.id_in_use.empty() || c.id_in_use[a.value().packet_id] == 0) {
                ++bad_packets_;
                return;
            }
            c.id_in_use[a.value().packet_id] = 0;
            --c.inflight;
            ++c.acked;
            if (is_error(a.value().reason)) ++puback_errors_;
            return;
        }
    }

    // --read-batch-us: after a wake-up that found data, let more gather.
    void batch_pause(int events) const {
        if (read_batch_ns_ <= 0 || events <= 0) return;
        const timespec ts{0, static_cast<long>(read_batch_ns_)};
        nanosleep(&ts, nullptr);
    }

    void traffic() {
        if (!split()) t0_ = now_ns();
        // Split: every process starts its schedule at the parent's t0.
        for (std::int64_t now = now_ns(); now < t0_; now = now_ns()) cs_.poll(t0_ - now);
        m0_ = t0_ + seconds_ns(o_.warmup_s);
        m1_ = m0_ + seconds_ns(o_.duration_s);
        const std::int64_t drain_end = m1_ + seconds_ns(o_.drain_s);
        if (split()) {
            // The histogram instead.
        } else if (o_.rate > 0) {
            std::size_t expect = static_cast<std::size_t>(o_.rate * o_.duration_s * static_cast<double>(fanout_) * 1.05);
            latencies_.reserve(std::min(expect + 1024, max_latency_samples));
        } else {
            latencies_.reserve(4'000'000);
        }
        bool sampled = false;
        std::size_t rr = 0;
        std::vector<std::int64_t> last_progress(pubs_.size(), t0_);
        std::vector<std::uint64_t> last_delivered(pubs_.size(), 0);
        std::int64_t now = now_ns();
        while (now < m1_) {
            if (!sampled && now >= m0_) {
                if (!split()) start_ = sample_all(o_);  // else the parent does
                gen_cpu0_ = self_cpu_s();
                sampled = true;
            }
            std::int64_t wait = 2'000'000;
            if (o_.rate > 0 && pubs_.empty()) {
                // Subscribers only (--procs): nothing to send.
            } else if (o_.rate > 0) {
                auto target = static_cast<std::uint64_t>(static_cast<double>(now - t0_) * rate_ / 1e9);
                std::uint64_t due = target > scheduled_ ? target - scheduled_ : 0;
                auto cap = static_cast<std::uint64_t>(rate_ * 0.1) + 1;  // 100 ms of catch-up at most
                if (due > cap) {
                    behind_ += due - cap;
                    scheduled_ += due - cap;
                    due = cap;
                }
                for (std::uint64_t i = 0; i < due; ++i) {
                    Conn& c = *pubs_[rr];
                    rr = (rr + 1) % pubs_.size();
                    ++scheduled_;
                    if (!send_one(c, now, true)) ++skipped_;
                }
                auto next = t0_ + static_cast<std::int64_t>(static_cast<double>(scheduled_ + 1) * 1e9 / rate_);
                wait = std::clamp<std::int64_t>(next - now, 0, 2'000'000);
            } else {
                saturate(now, last_progress, last_delivered);
                wait = 1'000'000;
            }
            if (!sampled) wait = std::min(wait, std::max<std::int64_t>(m0_ - now, 0));
            wait = std::min(wait, std::max<std::int64_t>(m1_ - now, 0));
            batch_pause(cs_.poll(wait));
            now = now_ns();
            if (cs_.closed_count() > 0) break;
        }
        if (!sampled) {
            if (!split()) start_ = sample_all(o_);
            gen_cpu0_ = self_cpu_s();
        }
        m1_ = std::min(m1_, now);
        send_end_ = now;
        expected_ = sent_window_ * fanout_;
        if (split()) {
            // Subscribers here get what every process' publishers sent
            // (pairs: this process' own publishers).
            write_line(slice_.to_parent, "sent " + std::to_string(sent_window_));
            std::string buf, line;
            std::uint64_t total = 0;
            // Reading on meanwhile: a late message's latency must not
            // include the wait for the other processes.
            for (;;) {
                pollfd p{slice_.from_parent, POLLIN, 0};
                if (::poll(&p, 1, 0) > 0) {
                    if (read_line(slice_.from_parent, buf, line, now_ns() + seconds_ns(1)) &&
                        line.rfind("total ", 0) == 0) {
                        total = std::strtoull(line.c_str() + 6, nullptr, 10);
                    }
                    break;
                }
                if (now_ns() > drain_end + seconds_ns(10)) break;
                batch_pause(cs_.poll(1'000'000));
            }
            expected_ = o_.scenario == Scenario::pairs ? sent_window_ : total * local_subs_;
            now = now_ns();
        }
        while (now < drain_end && cs_.closed_count() == 0 && (received_window_ < expected_ || unacked() > 0)) {
            batch_pause(cs_.poll(2'000'000));
            now = now_ns();
        }
        end_time_ = now;
        if (!split()) end_ = sample_all(o_);
        gen_cpu1_ = self_cpu_s();
        check_stuck();
        if (cs_.closed_count() > 0) error_ = "connection lost: " + cs_.last_error();
    }

    // Saturated mode: each publisher keeps `window` messages in flight
    // (sent but not yet seen by its subscribers), written in one batch.
    void saturate(std::int64_t now, std::vector<std::int64_t>& last_progress,
                  std::vector<std::uint64_t>& last_delivered) {
        const std::uint64_t window = static_cast<std::uint64_t>(o_.window) * fanout_;
        for (std::size_t i = 0; i < pubs_.size(); ++i) {
            Conn& c = *pubs_[i];
            if (c.delivered != last_delivered[i]) {
                last_delivered[i] = c.delivered;
                last_progress[i] = now;
            } else if (now - last_progress[i] > 500'000'000) {
                // QoS 0 messages may be dropped: forget them after 500 ms of
                // silence instead of waiting forever.
                ++stalls_;
                c.delivered = c.sent * fanout_;
                last_delivered[i] = c.delivered;
                last_progress[i] = now;
            }
            bool queued = false;
            while (c.sent * fanout_ < c.delivered + window) {
                if (!send_one(c, now, false)) break;
                queued = true;
            }
            if (queued) cs_.flush(c);
        }
    }

    std::uint64_t unacked() const {
        std::uint64_t n = 0;
        for (const Conn* c : pubs_) n += c->inflight;
        return n;
    }

    // This process' figures; exact percentiles unless split (the parent
    // merges the histograms then).
    TrafficTotals totals(bool ok) const {
        TrafficTotals t;
        t.ok = ok;
        t.window_s = static_cast<double>(m1_ - m0_) / 1e9;
        t.sent = sent_window_;
        t.expected = expected_;
        t.received = received_window_;
        if (!split()) {
            std::vector<std::uint32_t> lat = latencies_;
            std::sort(lat.begin(), lat.end());
            auto pct = [&](double p) -> double {
                if (lat.empty()) return 0;
                auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(lat.size() - 1) + 0.5);
                return static_cast<double>(lat[std::min(i, lat.size() - 1)]) / 1000.0;
            };
            t.p50 = pct(50);
            t.p90 = pct(90);
            t.p99 = pct(99);
            t.p999 = pct(99.9);
            t.max = lat.empty() ? 0.0 : static_cast<double>(lat.back()) / 1000.0;
        }
        t.start = start_;
        t.end = end_;
        t.gen_cpu_s = gen_cpu1_ - gen_cpu0_;
        t.gen_wall_s = static_cast<double>(end_time_ - m0_) / 1e9;
        t.skipped = skipped_;
        t.behind = behind_;
        t.stalls = stalls_;
        t.unacked = unacked();
        for (const Conn* c : pubs_) t.acked += c->acked;
        t.bad = bad_packets_;
        t.drain_s = static_cast<double>(end_time_ - send_end_) / 1e9;
        t.stuck_dropped = stuck_dropped_;
        t.error = error_;
        return t;
    }

    int report(bool ok) { return print_traffic(o_, totals(ok)); }

    const LoadOptions& o_;
    Slice slice_;
    ClientSet cs_;
    std::vector<Conn*> pubs_;
    std::vector<Conn*> by_index_;  // publisher index -> its connection here, or null
    std::size_t local_subs_ = 0;
    double rate_ = 0;
    std::int64_t read_batch_ns_ = 0;
    std::uint64_t expected_ = 0;
    LatencyHistogram hist_;
    std::vector<Conn*> stuck_;
    int stuck_dropped_ = 0;
    std::uint64_t fanout_ = 1;
    std::int64_t t0_ = 0, m0_ = 0, m1_ = 0, send_end_ = 0, end_time_ = 0;
    std::uint64_t scheduled_ = 0, sent_total_ = 0, sent_window_ = 0, received_window_ = 0, received_total_ = 0;
    std::uint64_t skipped_ = 0, behind_ = 0, stalls_ = 0, bad_packets_ = 0, puback_errors_ = 0;
    std::vector<std::uint32_t> latencies_;
    ProcSample start_, end_;
    double gen_cpu0_ = 0, gen_cpu1_ = 0;
    std::string error_;
};

// --procs N: the clients split over N forked processes (TrafficRun::mine),
// all sending on one schedule from the same t0; this process reads the
// brokers' CPU around the window and merges the results: counts summed,
// latency histograms merged.
int run_procs(const LoadOptions& o) {
    TrafficTotals t;
    if (o.rate <= 0 || o.stuck > 0 || (o.scenario != Scenario::pairs && o.procs < 2)) {
        t.error = "--procs needs a fixed --rate and no --stuck";
        return print_traffic(o, t);
    }
    struct Child {
        pid_t pid = -1;
        int in = -1;   // from the child
        int out = -1;  // to the child
        std::string buf;
    };
    std::vector<Child> kids;
    for (int k = 0; k < o.procs; ++k) {
        int up[2], down[2];
        if (pipe(up) != 0 || pipe(down) != 0) return 1;
        const pid_t pid = fork();
        if (pid == 0) {
            ::close(up[0]);
            ::close(down[1]);
            for (auto& other : kids) {
                ::close(other.in);
                ::close(other.out);
            }
            TrafficRun run(o, Slice{k, o.procs, up[1], down[0]});
            const int rc = run.run();
            std::fflush(stdout);
            _exit(rc);
        }
        ::close(up[1]);
        ::close(down[0]);
        kids.push_back({pid, up[0], down[1], {}});
    }
    auto finish = [&](TrafficTotals& totals) {
        for (auto& c : kids) ::close(c.out);  // a child still waiting reads EOF and ends
        for (auto& c : kids) {
            int status = 0;
            waitpid(c.pid, &status, 0);
            ::close(c.in);
        }
        return print_traffic(o, totals);
    };
    std::string line;
    for (auto& c : kids) {
        if (!read_line(c.in, c.buf, line, now_ns() + seconds_ns(o.connect_timeout_s + 10)) || line != "ready") {
            t.error = line.rfind("fail ", 0) == 0 ? line.substr(5) : "a generator process did not get ready";
            return finish(t);
        }
    }
    // Every process starts its schedule at t0; the window opens at t0 + warm-up.
    const std::int64_t t0 = now_ns() + 20'000'000;
    for (auto& c : kids) write_line(c.out, "go " + std::to_string(t0));
    const std::int64_t m0 = t0 + seconds_ns(o.warmup_s);
    const std::int64_t m1 = m0 + seconds_ns(o.duration_s);
    while (now_ns() < m0) {
        const std::int64_t left = m0 - now_ns();
        const timespec ts{static_cast<time_t>(left / 1'000'000'000), static_cast<long>(left % 1'000'000'000)};
        nanosleep(&ts, nullptr);
    }
    t.start = sample_all(o);
    std::uint64_t total = 0;
    for (auto& c : kids) {
        if (!read_line(c.in, c.buf, line, m1 + seconds_ns(10)) || line.rfind("sent ", 0) != 0) {
            t.error = "a generator process did not finish its window";
            return finish(t);
        }
        total += std::strtoull(line.c_str() + 5, nullptr, 10);
    }
    for (auto& c : kids) write_line(c.out, "total " + std::to_string(total));
    LatencyHistogram hist;
    bool ok = true;
    for (auto& c : kids) {
        std::string head, h, err;
        if (!read_line(c.in, c.buf, head, m1 + seconds_ns(o.drain_s + 20)) ||
            !read_line(c.in, c.buf, h, now_ns() + seconds_ns(5)) || !read_line(c.in, c.buf, err, now_ns() + seconds_ns(5))) {
            t.error = "a generator process did not report";
            return finish(t);
        }
        std::uint64_t v[9] = {};
        double gen_cpu = 0, window = 0, drain = 0;
        if (std::sscanf(head.c_str(),
                        "result %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                        " %" SCNu64 " %" SCNu64 " %lf %lf %lf",
                        &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &gen_cpu, &window,
                        &drain) != 12 ||
            h.rfind("hist ", 0) != 0 || !hist.parse(h.substr(5))) {
            t.error = "a generator process reported garbage";
            return finish(t);
        }
        t.sent += v[0];
        t.expected += v[1];
        t.received += v[2];
        t.skipped += v[3];
        t.behind += v[4];
        t.stalls += v[5];
        t.unacked += v[6];
        t.acked += v[7];
        t.bad += v[8];
        t.gen_cpu_s += gen_cpu;
        char cpu[32];
        std::snprintf(cpu, sizeof cpu, "%s%.4f", t.gen_cpu_by_proc.size() > 2 ? ", " : "", gen_cpu);
        t.gen_cpu_by_proc.insert(t.gen_cpu_by_proc.size() - 1, cpu);
        t.window_s = t.window_s == 0 ? window : std::min(t.window_s, window);
        t.drain_s = std::max(t.drain_s, drain);
        if (err.size() > 6 && t.error.empty()) {
            t.error = err.substr(6);
            ok = false;
        }
    }
    t.end = sample_all(o);
    t.gen_wall_s = static_cast<double>(now_ns() - m0) / 1e9;
    t.ok = ok;
    t.p50 = hist.percentile_us(50);
    t.p90 = hist.percentile_us(90);
    t.p99 = hist.percentile_us(99);
    t.p999 = hist.percentile_us(99.9);
    t.max = hist.max_us();
    return finish(t);
}

}  // namespace

int main(int argc, char** argv) {
    LoadOptions o;
    if (!parse_load_options(argc, argv, o)) return 2;
    std::signal(SIGPIPE, SIG_IGN);
    raise_nofile_limit();
    if (!o.tls.empty()) {
        net::TlsClientSettings settings;
        settings.verify_peer = false;
        settings.tls_version = o.tls == "1.3" ? "tlsv1.3" : "tlsv1.2";
        try {
            tls_context = net::TlsContext::make_client(settings);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "mqtt_load: TLS: %s\n", e.what());
            return 2;
        }
    }
    if (o.scenario == Scenario::idle) return run_idle(o, tls_context);
    if (o.scenario == Scenario::retained) return run_retained(o);
    if (o.scenario == Scenario::fanout) o.pubs = 1;
    if (o.scenario == Scenario::fanin) o.subs = 1;
    if (o.procs > 1) return run_procs(o);
    TrafficRun run(o, Slice{});
    return run.run();
}
