#include "idle_run.hpp"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "load_client.hpp"

using namespace mqttools;

namespace bench {

namespace {

// The brokers an idle run connects to: one (--port, --broker-pid) or the
// nodes of a cluster (--ports, --node-pids).
struct Targets {
    std::vector<int> ports;
    std::vector<int> pids;  // 0: not read
};

Targets targets_of(const LoadOptions& o) {
    Targets t;
    if (o.ports.empty()) {
        t.ports = {o.port};
        t.pids = {o.broker_pid};
    } else {
        t.ports = o.ports;
        t.pids = o.node_pids;
        t.pids.resize(t.ports.size(), 0);
    }
    return t;
}

// A worker holds connections [first, first + count). When its handshakes
// are over it writes "held N failed M SECONDS H0,H1,... ERROR" (Hk: held on
// the k-th port), keeps the connections open until the parent closes
// `control`, then writes "closed N" and exits.
[[noreturn]] void idle_worker(const LoadOptions& o, const Targets& t,
                              const std::shared_ptr<const net::TlsContext>& tls, int first, int count, int report_fd,
                              int control_fd) {
    ClientSet cs;
    cs.set_credentials(o.username, o.password);
    if (tls) cs.set_tls(tls);
    const std::size_t nports = t.ports.size();
    std::string prefix = "bi" + std::to_string(getpid()) + "-";
    for (int i = 0; i < count; ++i) {
        const int n = first + i;
        // Sources rotate per node so that each node sees every source
        // address (the ports run out per source, destination pair).
        std::string src = "127.0.0." + std::to_string(2 + (n / static_cast<int>(nports)) % o.src_addrs);
        Conn& c = cs.add(Role::idle, static_cast<std::uint32_t>(n), prefix + std::to_string(n), src, 64);
        c.keep_alive = static_cast<std::uint16_t>(o.keep_alive);  // default 0: no PINGREQ while idle
        c.tree_filters = static_cast<std::uint16_t>(o.subs_per_conn);
        // --session-expiry: the sessions outlive the run (bench/admin.py
        // fills the session table this way).
        c.session_expiry = static_cast<std::uint32_t>(o.session_expiry);
    }
    std::int64_t start = now_ns();
    std::int64_t deadline = start + seconds_ns(o.connect_timeout_s);
    std::size_t next = 0;
    auto& conns = cs.conns();
    while (now_ns() < deadline) {
        while (next < conns.size() && cs.handshaking() < static_cast<std::size_t>(o.handshake_window)) {
            Conn& c = *conns[next++];
            cs.start_connect(c, o.host, t.ports[c.role_index % nports]);
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
    std::vector<long> per_port(nports, 0);
    for (auto& c : conns) {
        if (c->state == ConnState::ready) ++per_port[c->role_index % nports];
    }
    std::string ports;
    for (std::size_t k = 0; k < nports; ++k) ports += (k ? "," : "") + std::to_string(per_port[k]);
    std::string line = "held " + std::to_string(held) + " failed " + std::to_string(failed) + " " +
                       std::to_string(static_cast<double>(now_ns() - start) / 1e9) + " " + ports + " " + why + "\n";
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

std::vector<ProcSample> sample_each(const std::vector<int>& pids) {
    std::vector<ProcSample> out;
    for (int pid : pids) out.push_back(pid > 0 ? sample_process(pid) : ProcSample{});
    return out;
}

long rss_sum(const std::vector<ProcSample>& s) {
    long kb = 0;
    for (const auto& x : s) kb += x.rss_kb;
    return kb;
}

double cpu_sum(const std::vector<ProcSample>& s) {
    double cpu = 0;
    for (const auto& x : s) cpu += x.cpu_s;
    return cpu;
}

}  // namespace

int run_idle(const LoadOptions& o, std::shared_ptr<const net::TlsContext> tls) {
    const Targets t = targets_of(o);
    const std::size_t nports = t.ports.size();
    std::vector<int> extra;
    if (!o.extra_pids.empty() && !parse_int_list(o.extra_pids, extra)) extra.clear();
    std::uint64_t nofile = raise_nofile_limit();
    const int per_worker_max = static_cast<int>(std::max<std::uint64_t>(nofile, 200) - 100);
    // Evenly split: workers of nearly equal size, each within the file limit.
    const int workers = std::max((o.conns + per_worker_max - 1) / per_worker_max, std::min(o.procs, o.conns));
    const int per_worker = (o.conns + workers - 1) / workers;
    const std::vector<ProcSample> before = sample_each(t.pids);
    const std::vector<ProcSample> extra_before = sample_each(extra);
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
        if (count <= 0) break;
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
            idle_worker(o, t, tls, first, count, rep[1], ctl[0]);
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
    std::vector<long> held_on(nports, 0);
    std::string error;
    for (auto& l : first_lines) {
        long h = 0, f = 0;
        double secs = 0;
        int used = 0;
        char ports[1024] = {};
        if (std::sscanf(l.c_str(), "held %ld failed %ld %lf %1023s %n", &h, &f, &secs, ports, &used) >= 4) {
            held += h;
            failed += f;
            const std::string list = ports;  // "H0,H1,...": held per port
            std::size_t k = 0, at = 0;
            while (k < nports && at <= list.size()) {
                std::size_t comma = list.find(',', at);
                if (comma == std::string::npos) comma = list.size();
                held_on[k++] += std::atol(list.substr(at, comma - at).c_str());
                at = comma + 1;
            }
            if (f > 0 && error.empty()) error = l.substr(static_cast<std::size_t>(used));
        } else if (error.empty()) {
            error = "worker did not report";
        }
    }
    const std::vector<ProcSample> after_connect = sample_each(t.pids);
    const std::vector<ProcSample> extra_after_connect = sample_each(extra);
    // For a caller that loads the broker meanwhile (bench/production.py's
    // subscription tree: traffic with the tree in place).
    std::fprintf(stderr, "connected %ld\n", held);
    std::fflush(stderr);
    // Let the brokers finish whatever follows the CONNACKs before reading RSS.
    usleep(500'000);
    const std::vector<ProcSample> after = sample_each(t.pids);
    const std::vector<ProcSample> extra_after = sample_each(extra);
    usleep(static_cast<useconds_t>(o.hold_s * 1e6));
    const std::vector<ProcSample> after_hold = sample_each(t.pids);
    const std::vector<ProcSample> extra_after_hold = sample_each(extra);
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
    // What the connections' end costs (a cluster releases each ended
    // session's ownership entry, issue 26): the brokers' CPU from the end of
    // the hold until they are idle again (under 5 ms of CPU in 250 ms, at
    // most 20 s).
    std::vector<ProcSample> after_close = sample_each(t.pids);
    std::vector<ProcSample> extra_after_close = sample_each(extra);
    for (int i = 0; i < 80; ++i) {
        usleep(250'000);
        const auto now = sample_each(t.pids);
        const auto extra_now = sample_each(extra);
        const double busy = cpu_sum(now) - cpu_sum(after_close) + cpu_sum(extra_now) - cpu_sum(extra_after_close);
        after_close = now;
        extra_after_close = extra_now;
        if (busy < 0.005) break;
    }
    const double close_cpu_per_conn_us =
        held > 0 ? (cpu_sum(after_close) - cpu_sum(after_hold)) * 1e6 / static_cast<double>(held) : 0;
    const double extra_close_cpu_per_conn_us =
        held > 0 ? (cpu_sum(extra_after_close) - cpu_sum(extra_after_hold)) * 1e6 / static_cast<double>(held) : 0;
    const long grown_kb = rss_sum(after) - rss_sum(before);
    // Over all nodes: the mean bytes per connection per node.
    const double per_conn = held > 0 ? static_cast<double>(grown_kb) * 1024.0 / static_cast<double>(held) : 0;
    const double cpu_per_conn_us =
        held > 0 ? (cpu_sum(after_connect) - cpu_sum(before)) * 1e6 / static_cast<double>(held) : 0;
    const double extra_cpu_per_conn_us =
        held > 0 ? (cpu_sum(extra_after_connect) - cpu_sum(extra_before)) * 1e6 / static_cast<double>(held) : 0;
    // With --subs-per-conn: per subscription, the connections' own cost included.
    const double subs = static_cast<double>(held) * o.subs_per_conn;
    const double per_sub = subs > 0 ? static_cast<double>(grown_kb) * 1024.0 / subs : 0;
    const double subs_per_s = subs > 0 && connect_s > 0 ? subs / connect_s : 0;
    std::string nodes = "[";
    for (std::size_t k = 0; k < nports; ++k) {
        const long grown = after[k].rss_kb - before[k].rss_kb;
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "%s{\"port\": %d, \"pid\": %d, \"held\": %ld, \"rss_before_kb\": %ld, \"rss_after_kb\": %ld, "
                      "\"rss_after_hold_kb\": %ld, \"rss_per_conn_bytes\": %.1f, \"cpu_us_per_conn\": %.2f}",
                      k ? ", " : "", t.ports[k], t.pids[k], held_on[k], before[k].rss_kb, after[k].rss_kb,
                      after_hold[k].rss_kb,
                      held_on[k] > 0 ? static_cast<double>(grown) * 1024.0 / static_cast<double>(held_on[k]) : 0,
                      held_on[k] > 0 ? (after_connect[k].cpu_s - before[k].cpu_s) * 1e6 / static_cast<double>(held_on[k])
                                     : 0);
        nodes += buf;
    }
    nodes += "]";
    std::string others = "[";
    for (std::size_t k = 0; k < extra.size(); ++k) {
        char buf[256];
        std::snprintf(buf, sizeof buf, "%s{\"pid\": %d, \"rss_before_kb\": %ld, \"rss_after_kb\": %ld, \"cpu_s\": %.3f}",
                      k ? ", " : "", extra[k], extra_before[k].rss_kb, extra_after[k].rss_kb,
                      extra_after_connect[k].cpu_s - extra_before[k].cpu_s);
        others += buf;
    }
    others += "]";
    std::printf(
        "{\"ok\": %s, \"label\": \"%s\", \"scenario\": \"idle\", \"conns\": %d, \"held\": %ld, \"failed\": %ld, "
        "\"closed_during_hold\": %ld, \"workers\": %d, \"nofile\": %" PRIu64 ", \"src_addrs\": %d, "
        "\"connect_s\": %.3f, \"rss_before_kb\": %ld, \"rss_after_kb\": %ld, \"rss_after_hold_kb\": %ld, "
        "\"rss_per_conn_bytes\": %.1f, \"broker_cpu_us_per_conn\": %.2f, \"extra_cpu_us_per_conn\": %.2f, "
        "\"broker_close_cpu_us_per_conn\": %.2f, \"extra_close_cpu_us_per_conn\": %.2f, "
        "\"subscriptions\": %.0f, \"rss_per_sub_bytes\": %.1f, \"subs_per_s\": %.0f, \"nodes\": %s, "
        "\"others\": %s, \"error\": \"%s\"}\n",
        held == o.conns && closed == 0 ? "true" : "false", json_escape(o.label).c_str(), o.conns, held, failed, closed,
        static_cast<int>(ws.size()), nofile, o.src_addrs, connect_s, rss_sum(before), rss_sum(after),
        rss_sum(after_hold), per_conn, cpu_per_conn_us, extra_cpu_per_conn_us, close_cpu_per_conn_us,
        extra_close_cpu_per_conn_us, subs, per_sub, subs_per_s,
        nodes.c_str(), others.c_str(), json_escape(error).c_str());
    std::fflush(stdout);
    return held == o.conns && closed == 0 ? 0 : 1;
}

}  // namespace bench
