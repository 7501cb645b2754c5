#include "retained_run.hpp"

#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "bench_util.hpp"
#include "load_client.hpp"

using namespace mqttools;

namespace bench {

namespace {

// VmHWM (peak RSS) from /proc/PID/status, in kB; 0 when unreadable.
long peak_rss_kb(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
    }
    return 0;
}

std::vector<std::byte> encode_packet(const auto& p) {
    std::vector<std::byte> out(encoded_size(p, ProtocolVersion::v5));
    out.resize(encode(p, ProtocolVersion::v5, out));
    return out;
}

}  // namespace

int run_retained(const LoadOptions& o) {
    ClientSet cs;
    cs.set_credentials(o.username, o.password);
    const std::string prefix = "br" + std::to_string(getpid()) + "-";
    std::uint64_t pingresps = 0;
    cs.set_handler([&](Conn& c, const FixedHeader& h, Bytes, std::int64_t) {
        // Retained copies only (RETAIN set, [MQTT-3.3.1-9]): a `#`
        // subscriber also gets the background load's live messages.
        if (h.type == PacketType::publish) {
            if ((h.flags & 1) != 0) ++c.delivered;
        } else if (h.type == PacketType::pingresp) {
            ++pingresps;
        }
    });
    std::string error;
    const std::int64_t deadline = now_ns() + static_cast<std::int64_t>(o.connect_timeout_s * 1e9);

    // 1. The retained messages, in batches of 1,000 PUBLISHes per write,
    // then a PINGREQ: its PINGRESP says the broker has stored them all.
    Conn& pub = cs.add(Role::publisher, 0, prefix + "p", "", 4096);
    cs.start_connect(pub, o.host, o.port);
    while (cs.ready_count() < 1 && cs.closed_count() == 0 && now_ns() < deadline) cs.poll(5'000'000);
    const ProcSample before = sample_process(o.broker_pid);
    const std::int64_t p0 = now_ns();
    std::vector<std::byte> payload(static_cast<std::size_t>(std::max(o.size, 1)), std::byte{'r'});
    for (int i = 0; i < o.topics && cs.closed_count() == 0; ++i) {
        const std::string topic = "bench/r/" + std::to_string(i / 1000) + "/" + std::to_string(i);
        PublishPacket p;
        p.retain = true;
        p.topic = topic;
        p.payload = payload;
        cs.queue(pub, encode_packet(p));
        if (i % 1000 == 999) {
            cs.flush(pub);
            while (pub.pending_out() > (1u << 20) && cs.closed_count() == 0 && now_ns() < deadline) cs.poll(1'000'000);
        }
    }
    const std::byte pingreq[2] = {std::byte{0xC0}, std::byte{0}};
    cs.send(pub, Bytes(pingreq, 2));
    while (pingresps == 0 && cs.closed_count() == 0 && now_ns() < deadline) cs.poll(5'000'000);
    const double store_s = static_cast<double>(now_ns() - p0) / 1e9;
    const ProcSample stored = sample_process(o.broker_pid);

    // 2. The subscribers, one after another.
    std::vector<Conn*> subs;
    for (int i = 0; i < o.subs; ++i) {
        Conn& c = cs.add(Role::subscriber, static_cast<std::uint32_t>(i), prefix + "s" + std::to_string(i), "",
                         256 * 1024);
        c.filter = "#";
        subs.push_back(&c);
    }
    const std::int64_t s0 = now_ns();
    std::size_t started = 0;
    std::int64_t last_done = s0;
    const auto want = static_cast<std::uint64_t>(o.topics);
    std::uint64_t received = 0;
    while (cs.closed_count() == 0 && now_ns() < deadline) {
        // The next subscriber connects once every earlier one has its SUBACK.
        if (started < subs.size() && cs.ready_count() == started + 1) cs.start_connect(*subs[started++], o.host, o.port);
        received = 0;
        std::size_t complete = 0;
        for (Conn* c : subs) {
            received += c->delivered;
            if (c->delivered >= want) ++complete;
        }
        if (complete == subs.size()) {
            last_done = now_ns();
            break;
        }
        cs.poll(2'000'000);
    }
    const ProcSample after = sample_process(o.broker_pid);
    const long peak = peak_rss_kb(o.broker_pid);
    const bool ok = cs.closed_count() == 0 && received == want * subs.size();
    if (!ok) error = cs.closed_count() ? "connection lost: " + cs.last_error() : "timed out";
    const double deliver_s = static_cast<double>(last_done - s0) / 1e9;
    std::printf(
        "{\"ok\": %s, \"label\": \"%s\", \"scenario\": \"retained\", \"topics\": %d, \"subs\": %d, \"size\": %d, "
        "\"store_s\": %.3f, \"deliver_s\": %.3f, \"received\": %" PRIu64 ", \"delivered_per_s\": %.1f, "
        "\"broker_cpu_s\": %.3f, \"rss_before_kb\": %ld, \"rss_stored_kb\": %ld, \"rss_after_kb\": %ld, "
        "\"rss_peak_kb\": %ld, \"error\": \"%s\"}\n",
        ok ? "true" : "false", o.label.c_str(), o.topics, o.subs, o.size, store_s, ok ? deliver_s : 0.0, received,
        ok && deliver_s > 0 ? static_cast<double>(received) / deliver_s : 0.0, after.cpu_s - stored.cpu_s,
        before.rss_kb, stored.rss_kb, after.rss_kb, peak, error.c_str());
    std::fflush(stdout);
    return ok ? 0 : 1;
}

}  // namespace bench
