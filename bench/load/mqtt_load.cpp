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
// The idle scenario opens many connections from several 127.0.0.x source
// addresses (one address' ephemeral ports would run out), in worker
// processes of at most RLIMIT_NOFILE connections each, and reports the
// broker's RSS growth per connection.
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
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "load_client.hpp"
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

constexpr std::int64_t ns_per_s = 1'000'000'000;
constexpr std::size_t max_latency_samples = 30'000'000;
constexpr std::size_t max_pending_per_pub = 1u << 20;

std::int64_t seconds_ns(double s) { return static_cast<std::int64_t>(s * 1e9); }

double self_cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\';
        if (static_cast<unsigned char>(ch) < 0x20) continue;
        out += ch;
    }
    return out;
}

class TrafficRun {
public:
    explicit TrafficRun(const LoadOptions& o) : o_(o) {}

    int run() {
        if (!setup()) return report(false);
        traffic();
        return report(true);
    }

private:
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
        for (int i = 0; i < o_.subs; ++i) {
            Conn& c = cs_.add(Role::subscriber, static_cast<std::uint32_t>(i), prefix + "s" + std::to_string(i), "",
                              65536);
            c.filter = topic_for(static_cast<std::uint32_t>(i));
            c.sub_qos = o_.qos;
            c.session_expiry = static_cast<std::uint32_t>(o_.session_expiry);
        }
        for (int i = 0; i < o_.pubs; ++i) {
            Conn& c = cs_.add(Role::publisher, static_cast<std::uint32_t>(i), prefix + "p" + std::to_string(i), "",
                              4096);
            make_template(c);
            pubs_.push_back(&c);
        }
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
            if (idx < pubs_.size()) ++pubs_[idx]->delivered;
            if (ts >= m0_ && ts < m1_) {
                ++received_window_;
                if (latencies_.size() < max_latency_samples) {
                    std::int64_t lat = now - ts;
                    latencies_.push_back(static_cast<std::uint32_t>(std::clamp<std::int64_t>(lat, 0, UINT32_MAX)));
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

    void traffic() {
        t0_ = now_ns();
        m0_ = t0_ + seconds_ns(o_.warmup_s);
        m1_ = m0_ + seconds_ns(o_.duration_s);
        const std::int64_t drain_end = m1_ + seconds_ns(o_.drain_s);
        if (o_.rate > 0) {
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
                start_ = sample_all(o_);
                gen_cpu0_ = self_cpu_s();
                sampled = true;
            }
            std::int64_t wait = 2'000'000;
            if (o_.rate > 0) {
                auto target = static_cast<std::uint64_t>(static_cast<double>(now - t0_) * o_.rate / 1e9);
                std::uint64_t due = target > scheduled_ ? target - scheduled_ : 0;
                auto cap = static_cast<std::uint64_t>(o_.rate * 0.1) + 1;  // 100 ms of catch-up at most
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
                auto next = t0_ + static_cast<std::int64_t>(static_cast<double>(scheduled_ + 1) * 1e9 / o_.rate);
                wait = std::clamp<std::int64_t>(next - now, 0, 2'000'000);
            } else {
                saturate(now, last_progress, last_delivered);
                wait = 1'000'000;
            }
            if (!sampled) wait = std::min(wait, std::max<std::int64_t>(m0_ - now, 0));
            wait = std::min(wait, std::max<std::int64_t>(m1_ - now, 0));
            cs_.poll(wait);
            now = now_ns();
            if (cs_.closed_count() > 0) break;
        }
        if (!sampled) {
            start_ = sample_all(o_);
            gen_cpu0_ = self_cpu_s();
        }
        m1_ = std::min(m1_, now);
        send_end_ = now;
        const std::uint64_t expected = sent_window_ * fanout_;
        while (now < drain_end && cs_.closed_count() == 0 && (received_window_ < expected || unacked() > 0)) {
            cs_.poll(2'000'000);
            now = now_ns();
        }
        end_time_ = now;
        end_ = sample_all(o_);
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

    int report(bool ok) {
        std::vector<std::uint32_t> lat = latencies_;
        std::sort(lat.begin(), lat.end());
        auto pct = [&](double p) -> double {
            if (lat.empty()) return 0;
            auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(lat.size() - 1) + 0.5);
            return static_cast<double>(lat[std::min(i, lat.size() - 1)]) / 1000.0;
        };
        double window_s = static_cast<double>(m1_ - m0_) / 1e9;
        std::uint64_t expected = sent_window_ * fanout_;
        std::uint64_t lost = expected > received_window_ ? expected - received_window_ : 0;
        double cpu_s = end_.ok && start_.ok ? end_.cpu_s - start_.cpu_s : 0;
        double cpu_us_per_msg = received_window_ > 0 ? cpu_s * 1e6 / static_cast<double>(received_window_) : 0;
        double gen_wall = static_cast<double>(end_time_ - m0_) / 1e9;
        std::uint64_t acked = 0;
        for (const Conn* c : pubs_) acked += c->acked;
        std::printf(
            "{\"ok\": %s, \"label\": \"%s\", \"scenario\": \"%s\", \"qos\": %d, \"pubs\": %d, \"subs\": %d, "
            "\"rate_target\": %.0f, \"size\": %d, \"window_s\": %.3f, \"sent\": %" PRIu64 ", \"expected\": %" PRIu64
            ", \"received\": %" PRIu64 ", \"lost\": %" PRIu64 ", \"sent_per_s\": %.1f, \"delivered_per_s\": %.1f, "
            "\"lat_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}, "
            "\"broker_cpu_s\": %.6f, \"broker_user_s\": %.2f, \"broker_sys_s\": %.2f, \"cpu_us_per_msg\": %.3f, "
            "\"broker_rss_kb\": %ld, \"gen_cpu_pct\": %.1f, \"skipped\": %" PRIu64 ", \"behind\": %" PRIu64
            ", \"stalls\": %" PRIu64 ", \"unacked\": %" PRIu64 ", \"acked\": %" PRIu64 ", \"bad_packets\": %" PRIu64
            ", \"drain_s\": %.3f, \"stuck\": %d, \"stuck_dropped\": %d, \"rss_peak_kb\": %ld, \"error\": \"%s\"}\n",
            ok && error_.empty() ? "true" : "false", json_escape(o_.label).c_str(), scenario_name(o_.scenario), o_.qos,
            o_.pubs, o_.subs, o_.rate, o_.size, window_s, sent_window_, expected, received_window_, lost,
            window_s > 0 ? static_cast<double>(sent_window_) / window_s : 0,
            window_s > 0 ? static_cast<double>(received_window_) / window_s : 0, pct(50), pct(90), pct(99), pct(99.9),
            lat.empty() ? 0.0 : static_cast<double>(lat.back()) / 1000.0, cpu_s, end_.user_s - start_.user_s,
            end_.system_s - start_.system_s, cpu_us_per_msg, end_.rss_kb,
            gen_wall > 0 ? (gen_cpu1_ - gen_cpu0_) / gen_wall * 100 : 0, skipped_, behind_, stalls_, unacked(), acked,
            bad_packets_, static_cast<double>(end_time_ - send_end_) / 1e9, o_.stuck, stuck_dropped_, end_.hwm_kb,
            json_escape(error_).c_str());
        std::fflush(stdout);
        return ok && error_.empty() ? 0 : 1;
    }

    const LoadOptions& o_;
    ClientSet cs_;
    std::vector<Conn*> pubs_;
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

// ------------------------------------------------------------------ idle

// A worker holds connections [first, first + count). It writes
// "held N failed M SECONDS ERROR" when its handshakes are over, keeps the
// connections open until the parent closes `control`, then writes
// "closed N" and exits.
[[noreturn]] void idle_worker(const LoadOptions& o, int first, int count, int report_fd, int control_fd) {
    ClientSet cs;
    cs.set_credentials(o.username, o.password);
    if (tls_context) cs.set_tls(tls_context);
    std::string prefix = "bi" + std::to_string(getpid()) + "-";
    for (int i = 0; i < count; ++i) {
        int n = first + i;
        std::string src = "127.0.0." + std::to_string(2 + n % o.src_addrs);
        Conn& c = cs.add(Role::idle, static_cast<std::uint32_t>(n), prefix + std::to_string(n), src, 64);
        c.keep_alive = static_cast<std::uint16_t>(o.keep_alive);  // default 0: no PINGREQ while idle
        c.tree_filters = static_cast<std::uint16_t>(o.subs_per_conn);
    }
    std::int64_t start = now_ns();
    std::int64_t deadline = start + seconds_ns(o.connect_timeout_s);
    std::size_t next = 0;
    auto& conns = cs.conns();
    while (now_ns() < deadline) {
        while (next < conns.size() && cs.handshaking() < static_cast<std::size_t>(o.handshake_window)) {
            cs.start_connect(*conns[next++], o.host, o.port);
        }
        if (cs.ready_count() + cs.closed_count() >= conns.size()) break;
        cs.poll(5'000'000);
    }
    std::size_t held = cs.ready_count();
    std::size_t failed = conns.size() - held;
    std::string why = cs.last_error();
    if (cs.handshaking() > 0 || next < conns.size()) {
        why = std::to_string(cs.handshaking()) + " handshakes unfinished and " + std::to_string(conns.size() - next) +
              " not started after " + std::to_string(static_cast<int>(o.connect_timeout_s)) + " s" +
              (why.empty() ? "" : "; last error: " + why);
    }
    std::string line = "held " + std::to_string(held) + " failed " + std::to_string(failed) + " " +
                       std::to_string(static_cast<double>(now_ns() - start) / 1e9) + " " + why + "\n";
    (void)!::write(report_fd, line.data(), line.size());
    std::size_t closed_before = cs.closed_count();
    // Hold until the parent closes the control pipe; bounded in time.
    std::int64_t hold_end = now_ns() + seconds_ns(o.hold_s + o.connect_timeout_s + 30);
    while (now_ns() < hold_end) {
        pollfd p{control_fd, POLLIN, 0};
        if (::poll(&p, 1, 0) > 0) break;
        cs.poll(20'000'000);
    }
    line = "closed " + std::to_string(cs.closed_count() - closed_before) + "\n";
    (void)!::write(report_fd, line.data(), line.size());
    _exit(0);
}

int run_idle(const LoadOptions& o) {
    std::uint64_t nofile = raise_nofile_limit();
    int per_worker = static_cast<int>(std::max<std::uint64_t>(nofile, 200) - 100);
    int workers = (o.conns + per_worker - 1) / per_worker;
    ProcSample before = sample_process(o.broker_pid);
    struct Worker {
        pid_t pid;
        int report;
        int control;
        std::string buf;
    };
    std::vector<Worker> ws;
    std::int64_t start = now_ns();
    for (int w = 0; w < workers; ++w) {
        int first = w * per_worker;
        int count = std::min(per_worker, o.conns - first);
        int rep[2], ctl[2];
        if (pipe(rep) != 0 || pipe(ctl) != 0) return 1;
        pid_t pid = fork();
        if (pid == 0) {
            ::close(rep[0]);
            ::close(ctl[1]);
            for (auto& other : ws) {
                ::close(other.report);
                ::close(other.control);
            }
            idle_worker(o, first, count, rep[1], ctl[0]);
        }
        ::close(rep[1]);
        ::close(ctl[0]);
        ws.push_back({pid, rep[0], ctl[1], {}});
    }
    // Reads one line from every worker, waiting at most `limit_ns`.
    auto read_lines = [&](std::int64_t limit_ns) {
        std::int64_t end = now_ns() + limit_ns;
        std::vector<std::string> lines(ws.size());
        for (std::size_t i = 0; i < ws.size(); ++i) {
            while (ws[i].buf.find('\n') == std::string::npos && now_ns() < end) {
                pollfd p{ws[i].report, POLLIN, 0};
                if (::poll(&p, 1, static_cast<int>((end - now_ns()) / 1'000'000) + 1) <= 0) continue;
                char tmp[512];
                ssize_t n = ::read(ws[i].report, tmp, sizeof tmp);
                if (n <= 0) break;
                ws[i].buf.append(tmp, static_cast<std::size_t>(n));
            }
            auto nl = ws[i].buf.find('\n');
            if (nl != std::string::npos) {
                lines[i] = ws[i].buf.substr(0, nl);
                ws[i].buf.erase(0, nl + 1);
            }
        }
        return lines;
    };
    auto first_lines = read_lines(seconds_ns(o.connect_timeout_s + 10));
    double connect_s = static_cast<double>(now_ns() - start) / 1e9;
    long held = 0, failed = 0;
    std::string error;
    for (auto& l : first_lines) {
        long h = 0, f = 0;
        double secs = 0;
        int used = 0;
        if (std::sscanf(l.c_str(), "held %ld failed %ld %lf %n", &h, &f, &secs, &used) >= 3) {
            held += h;
            failed += f;
            if (f > 0 && error.empty()) error = l.substr(static_cast<std::size_t>(used));
        } else if (error.empty()) {
            error = "worker did not report";
        }
    }
    ProcSample cpu_after_connect = sample_process(o.broker_pid);
    // For a caller that loads the broker meanwhile (bench/production.py's
    // subscription tree: traffic with the tree in place).
    std::fprintf(stderr, "connected %ld\n", held);
    std::fflush(stderr);
    // Let the broker finish whatever follows the CONNACKs before reading RSS.
    usleep(500'000);
    ProcSample after = sample_process(o.broker_pid);
    usleep(static_cast<useconds_t>(o.hold_s * 1e6));
    ProcSample after_hold = sample_process(o.broker_pid);
    for (auto& w : ws) ::close(w.control);
    auto second_lines = read_lines(seconds_ns(10));
    long closed = 0;
    for (auto& l : second_lines) {
        long c = 0;
        if (std::sscanf(l.c_str(), "closed %ld", &c) == 1) closed += c;
    }
    for (auto& w : ws) {
        int status = 0;
        waitpid(w.pid, &status, 0);
        ::close(w.report);
    }
    double per_conn = held > 0 ? static_cast<double>(after.rss_kb - before.rss_kb) * 1024.0 / static_cast<double>(held) : 0;
    double cpu_per_conn_us = held > 0 ? (cpu_after_connect.cpu_s - before.cpu_s) * 1e6 / static_cast<double>(held) : 0;
    // With --subs-per-conn: per subscription, the connections' own cost included.
    const double subs = static_cast<double>(held) * o.subs_per_conn;
    const double per_sub = subs > 0 ? static_cast<double>(after.rss_kb - before.rss_kb) * 1024.0 / subs : 0;
    const double subs_per_s = subs > 0 && connect_s > 0 ? subs / connect_s : 0;
    std::printf(
        "{\"ok\": %s, \"label\": \"%s\", \"scenario\": \"idle\", \"conns\": %d, \"held\": %ld, \"failed\": %ld, "
        "\"closed_during_hold\": %ld, \"workers\": %d, \"nofile\": %" PRIu64 ", \"src_addrs\": %d, "
        "\"connect_s\": %.3f, \"rss_before_kb\": %ld, \"rss_after_kb\": %ld, \"rss_after_hold_kb\": %ld, "
        "\"rss_per_conn_bytes\": %.1f, \"broker_cpu_us_per_conn\": %.2f, \"subscriptions\": %.0f, "
        "\"rss_per_sub_bytes\": %.1f, \"subs_per_s\": %.0f, \"error\": \"%s\"}\n",
        held == o.conns && closed == 0 ? "true" : "false", json_escape(o.label).c_str(), o.conns, held, failed, closed,
        workers, nofile, o.src_addrs, connect_s, before.rss_kb, after.rss_kb, after_hold.rss_kb, per_conn,
        cpu_per_conn_us, subs, per_sub, subs_per_s, json_escape(error).c_str());
    std::fflush(stdout);
    return held == o.conns && closed == 0 ? 0 : 1;
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
    if (o.scenario == Scenario::idle) return run_idle(o);
    if (o.scenario == Scenario::retained) return run_retained(o);
    if (o.scenario == Scenario::fanout) o.pubs = 1;
    if (o.scenario == Scenario::fanin) o.subs = 1;
    TrafficRun run(o);
    return run.run();
}
