// mqtt_forwarder: the do-nothing floor the broker is compared against.
//
// It accepts MQTT connections on 127.0.0.1:PORT, answers CONNECT with a bare
// CONNACK and SUBSCRIBE with a SUBACK (exact topics only, no wildcards, no
// sessions, no retained messages, no authentication), and copies each
// PUBLISH unchanged to the connections subscribed to its exact topic. That is
// read + frame + write and nothing else; subscribers' writes are gathered per
// reactor turn (one write per subscriber per epoll_wait), the batching a real
// broker may also do without delaying anything.
//
// QoS 1 is done the minimum way a correct broker must: the publisher gets a
// PUBACK (Success) for each QoS 1 PUBLISH [MQTT-4.3.2-5]; each subscriber
// granted QoS 1 gets the PUBLISH at QoS 1 under a packet id the forwarder
// assigns for that subscriber (only the two id bytes are rewritten, DUP and
// RETAIN cleared [MQTT-3.3.1-3] [MQTT-3.3.1-12]); at most Receive Maximum of
// them (from the subscriber's CONNECT, default 65535) are unacknowledged at
// once [MQTT-3.3.4-9], the rest wait in a per-subscriber queue, and each
// PUBACK from the subscriber frees its id and releases one queued message. A
// QoS 0 subscriber gets a QoS 1 message re-framed at QoS 0. Sessions are not
// kept (every connection is a clean start with no expiry), so an in-flight
// message needs no copy for redelivery. QoS 2 is not offered: the CONNACK
// says Maximum QoS 1 and a QoS 2 PUBLISH closes the connection.
//
//   mqtt_forwarder -p PORT [--host 127.0.0.1] [--max-inflight N]
//   (SIGINT/SIGTERM stop it; --max-inflight caps every subscriber's window
//   below its Receive Maximum, like Mosquitto's max_inflight_messages)
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "bench_util.hpp"
#include "mqttools/codec.hpp"

using namespace mqttools;

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

// A subscriber's output is dropped beyond this many pending bytes rather than
// growing without bound (counted and printed at exit).
constexpr std::size_t max_pending_out = 64u << 20;
// The same bound for the messages waiting for a subscriber's QoS 1 window.
constexpr std::size_t max_queued_bytes = 64u << 20;

struct Conn;

// One subscription: the connection and the QoS granted in its SUBACK.
struct Sub {
    Conn* conn;
    std::uint8_t qos;
};

struct Conn {
    bench::UniqueFd fd;
    std::uint32_t id = 0;
    ProtocolVersion version = ProtocolVersion::v5;
    std::vector<std::byte> in = std::vector<std::byte>(16384);
    std::size_t in_len = 0;
    std::vector<std::byte> out;
    std::size_t out_off = 0;
    bool dirty = false;     // in the flush list of this turn
    bool want_out = false;  // EPOLLOUT registered
    bool closed = false;
    // QoS 1 towards this connection as a subscriber: its Receive Maximum,
    // the ids awaiting its PUBACK, and the PUBLISH packets (whole, their id
    // bytes still the publisher's) waiting for a free slot in the window.
    std::uint16_t receive_maximum = 65535;
    std::uint32_t inflight = 0;
    std::uint16_t next_id = 1;
    std::vector<std::uint8_t> id_in_use;  // 65536 flags, allocated on first use
    std::vector<std::byte> queued;
    std::size_t queued_off = 0;
    // The subscriber list of the last topic this connection published to:
    // a publisher nearly always repeats its topic, so the hash lookup is
    // usually replaced by one string compare.
    std::string last_topic;
    std::vector<Sub>* last_subs = nullptr;
};

class Forwarder {
public:
    Forwarder(int listen_fd, std::uint16_t max_inflight)
        : listen_(listen_fd), ep_(epoll_create1(EPOLL_CLOEXEC)), max_inflight_(max_inflight) {}

    int run() {
        if (!ep_.valid()) return 1;
        add(listen_.get(), EPOLLIN, 0);
        std::vector<epoll_event> events(512);
        while (!g_stop) {
            int n = epoll_wait(ep_.get(), events.data(), static_cast<int>(events.size()), 500);
            if (n < 0) {
                if (errno == EINTR) continue;
                std::perror("epoll_wait");
                return 1;
            }
            for (int i = 0; i < n; ++i) {
                std::uint64_t key = events[i].data.u64;
                if (key == 0) {
                    accept_all();
                    continue;
                }
                Conn* c = find(key);
                if (c == nullptr || c->closed) continue;
                if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(*c);
                if (!c->closed && (events[i].events & EPOLLOUT)) flush(*c);
            }
            for (Conn* c : dirty_) {
                c->dirty = false;
                if (!c->closed) flush(*c);
            }
            dirty_.clear();
            reap();
        }
        std::fprintf(stderr, "mqtt_forwarder: forwarded %llu (QoS 1: %llu, queued for a window %llu), dropped %llu\n",
                     static_cast<unsigned long long>(forwarded_), static_cast<unsigned long long>(forwarded_qos1_),
                     static_cast<unsigned long long>(queued_total_), static_cast<unsigned long long>(dropped_));
        return 0;
    }

private:
    void add(int fd, std::uint32_t events, std::uint64_t key) {
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = key;
        epoll_ctl(ep_.get(), EPOLL_CTL_ADD, fd, &ev);
    }

    Conn* find(std::uint64_t key) {
        auto it = conns_.find(static_cast<std::uint32_t>(key));
        return it == conns_.end() ? nullptr : it->second.get();
    }

    void accept_all() {
        for (int i = 0; i < 256; ++i) {
            int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;
            bench::set_nodelay(fd);
            auto c = std::make_unique<Conn>();
            c->fd.reset(fd);
            c->id = next_id_++;
            add(fd, EPOLLIN, c->id);
            conns_.emplace(c->id, std::move(c));
        }
    }

    void on_readable(Conn& c) {
        for (int round = 0; round < 16 && !c.closed; ++round) {
            if (c.in.size() - c.in_len < 4096) c.in.resize(c.in.size() * 2);
            std::size_t space = c.in.size() - c.in_len;
            ssize_t n = ::read(c.fd.get(), c.in.data() + c.in_len, space);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                close_conn(c);
                return;
            }
            if (n < 0) return;
            c.in_len += static_cast<std::size_t>(n);
            parse(c);
            if (static_cast<std::size_t>(n) < space) return;
        }
    }

    void parse(Conn& c) {
        std::size_t off = 0;
        while (!c.closed) {
            Bytes rest(c.in.data() + off, c.in_len - off);
            Frame f = read_frame(rest);
            if (f.status == FrameStatus::need_more) break;
            if (f.status == FrameStatus::error) {
                close_conn(c);
                return;
            }
            Bytes packet = rest.first(f.header.packet_size());
            handle(c, f.header, packet);
            off += f.header.packet_size();
        }
        if (off > 0 && !c.closed) {
            std::memmove(c.in.data(), c.in.data() + off, c.in_len - off);
            c.in_len -= off;
        }
    }

    void handle(Conn& c, const FixedHeader& h, Bytes packet) {
        Bytes body = packet.subspan(h.header_size);
        switch (h.type) {
        case PacketType::publish: forward(c, h, packet, body); break;
        case PacketType::connect: {
            auto p = decode_connect(h, body);
            if (!p) {
                close_conn(c);
                return;
            }
            c.version = p.value().version;
            // Absent Receive Maximum means 65535 (spec 3.1.2.11.3).
            if (p.value().properties.receive_maximum) c.receive_maximum = *p.value().properties.receive_maximum;
            ConnackPacket ack;
            // No QoS 2 here: a v5 client must then not send it [MQTT-3.2.2-12].
            if (c.version == ProtocolVersion::v5) ack.properties.maximum_qos = 1;
            send_packet(c, ack);
            break;
        }
        case PacketType::subscribe: {
            auto p = decode_subscribe(h, body, c.version);
            if (!p) {
                close_conn(c);
                return;
            }
            std::vector<std::byte> codes;
            Subscription s;
            std::size_t cursor = 0;
            while (p.value().subscriptions.next(cursor, s)) {
                // Granted QoS: what was asked, at most 1 (the reason code is the QoS).
                auto granted = std::min<std::uint8_t>(static_cast<std::uint8_t>(s.qos), 1);
                topics_[std::string(s.filter)].push_back(Sub{&c, granted});
                codes.push_back(static_cast<std::byte>(granted));
            }
            SubackPacket ack;
            ack.packet_id = p.value().packet_id;
            ack.reason_codes = codes;
            send_packet(c, ack);
            break;
        }
        case PacketType::puback: on_puback(c, body); break;
        case PacketType::pingreq: send_packet(c, PingrespPacket{}); break;
        case PacketType::disconnect: close_conn(c); break;
        default: break;  // the rest: ignored
        }
    }

    template <class P>
    void send_packet(Conn& c, const P& p) {
        std::byte buf[512];
        std::size_t n = 0;
        if constexpr (std::is_same_v<P, ConnectPacket>) {
            n = encode(p, buf);
        } else {
            n = encode(p, c.version, buf);
        }
        append(c, Bytes(buf, n));
    }

    void forward(Conn& from, const FixedHeader& h, Bytes packet, Bytes body) {
        if (body.size() < 2) return;
        std::size_t len = (std::to_integer<std::size_t>(body[0]) << 8) | std::to_integer<std::size_t>(body[1]);
        if (body.size() < 2 + len) return;
        const unsigned qos = (h.flags >> 1) & 3;
        if (qos >= 2) {
            close_conn(from);  // QoS 2 is beyond our CONNACK's Maximum QoS; 3 is malformed
            return;
        }
        if (qos == 1 && body.size() < 4 + len) return;
        std::string_view topic = as_string(body.subspan(2, len));
        if (from.last_subs == nullptr || topic != from.last_topic) {
            auto it = topics_.find(std::string(topic));
            if (it == topics_.end()) it = topics_.emplace(std::string(topic), std::vector<Sub>{}).first;
            from.last_topic.assign(topic);
            from.last_subs = &it->second;
        }
        if (qos == 0) {
            for (const Sub& sub : *from.last_subs) {
                append(*sub.conn, packet);
                ++forwarded_;
            }
            return;
        }
        // Where the packet id sits in the whole packet: after the fixed
        // header and the topic.
        const std::size_t id_off = h.header_size + 2 + len;
        for (const Sub& sub : *from.last_subs) {
            if (sub.qos == 0) {
                append_as_qos0(*sub.conn, packet, id_off);
            } else {
                deliver_qos1(*sub.conn, packet, id_off);
            }
            ++forwarded_;
        }
        // PUBACK, reason Success, no properties: the 4-byte form [MQTT-3.4.2-1].
        const std::byte ack[4] = {std::byte{0x40}, std::byte{0x02}, packet[id_off], packet[id_off + 1]};
        append(from, Bytes(ack, sizeof ack));
    }

    std::uint32_t window(const Conn& c) const noexcept {
        std::uint32_t w = c.receive_maximum == 0 ? 65535u : c.receive_maximum;
        return max_inflight_ > 0 && max_inflight_ < w ? max_inflight_ : w;
    }

    // A QoS 1 message for subscriber `s`: sent now when its window has room,
    // else queued (after anything already queued, keeping the order).
    void deliver_qos1(Conn& s, Bytes packet, std::size_t id_off) {
        if (s.closed) return;
        if (s.inflight < window(s) && s.queued_off == s.queued.size()) {
            send_qos1(s, packet, id_off);
            return;
        }
        if (s.queued.size() - s.queued_off + packet.size() > max_queued_bytes) {
            ++dropped_;
            return;
        }
        s.queued.insert(s.queued.end(), packet.begin(), packet.end());
        ++queued_total_;
    }

    // Appends the PUBLISH to the subscriber's output under a fresh packet id.
    void send_qos1(Conn& s, Bytes packet, std::size_t id_off) {
        const std::size_t at = s.out.size();
        if (!append(s, packet)) return;
        if (s.id_in_use.empty()) s.id_in_use.assign(65536, 0);
        // A free id always exists: at most 65535 are in use [MQTT-2.2.1-3].
        while (s.id_in_use[s.next_id] != 0) s.next_id = static_cast<std::uint16_t>(s.next_id % 65535 + 1);
        const std::uint16_t id = s.next_id;
        s.id_in_use[id] = 1;
        ++s.inflight;
        ++forwarded_qos1_;
        s.next_id = static_cast<std::uint16_t>(id % 65535 + 1);
        // A new delivery: DUP 0 [MQTT-3.3.1-3]; RETAIN 0 as no subscription
        // here asks Retain As Published [MQTT-3.3.1-12].
        s.out[at] &= std::byte{0xf6};
        s.out[at + id_off] = static_cast<std::byte>(id >> 8);
        s.out[at + id_off + 1] = static_cast<std::byte>(id & 0xff);
    }

    // A QoS 1 PUBLISH re-framed at QoS 0 for a QoS 0 subscription
    // [MQTT-3.8.4-8]: no packet id, remaining length 2 less.
    void append_as_qos0(Conn& s, Bytes packet, std::size_t id_off) {
        const FixedHeader h = read_frame(packet).header;
        std::byte head[5];
        head[0] = std::byte{0x30};
        std::uint32_t rl = h.remaining_length - 2;
        std::size_t n = 1;
        do {
            auto digit = static_cast<std::uint8_t>(rl % 128);
            rl /= 128;
            head[n++] = static_cast<std::byte>(rl > 0 ? digit | 0x80 : digit);
        } while (rl > 0);
        const std::size_t at = s.out.size();
        if (!append(s, Bytes(head, n))) return;
        if (!append(s, packet.subspan(h.header_size, id_off - h.header_size)) ||
            !append(s, packet.subspan(id_off + 2))) {
            s.out.resize(at);  // never a partial packet
        }
    }

    // A subscriber's PUBACK frees its id and lets one queued message go.
    void on_puback(Conn& c, Bytes body) {
        if (body.size() < 2 || c.id_in_use.empty()) return;
        const auto id = static_cast<std::uint16_t>((std::to_integer<unsigned>(body[0]) << 8) |
                                                   std::to_integer<unsigned>(body[1]));
        if (c.id_in_use[id] == 0) return;  // not ours in flight: nothing to release
        c.id_in_use[id] = 0;
        --c.inflight;
        while (c.inflight < window(c) && c.queued_off < c.queued.size()) {
            Bytes rest(c.queued.data() + c.queued_off, c.queued.size() - c.queued_off);
            const FixedHeader h = read_frame(rest).header;
            const std::size_t len =
                (std::to_integer<std::size_t>(rest[h.header_size]) << 8) | std::to_integer<std::size_t>(rest[h.header_size + 1]);
            send_qos1(c, rest.first(h.packet_size()), h.header_size + 2 + len);
            c.queued_off += h.packet_size();
        }
        if (c.queued_off == c.queued.size()) {
            c.queued.clear();
            c.queued_off = 0;
        } else if (c.queued_off > 65536 && c.queued_off * 2 > c.queued.size()) {
            c.queued.erase(c.queued.begin(), c.queued.begin() + static_cast<std::ptrdiff_t>(c.queued_off));
            c.queued_off = 0;
        }
    }

    bool append(Conn& c, Bytes data) {
        if (c.closed) return false;
        if (c.out.size() - c.out_off + data.size() > max_pending_out) {
            ++dropped_;
            return false;
        }
        c.out.insert(c.out.end(), data.begin(), data.end());
        if (!c.dirty) {
            c.dirty = true;
            dirty_.push_back(&c);
        }
        return true;
    }

    void flush(Conn& c) {
        while (c.out_off < c.out.size()) {
            ssize_t n = ::write(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off);
            if (n > 0) {
                c.out_off += static_cast<std::size_t>(n);
                continue;
            }
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n < 0 && errno == EINTR) continue;
            close_conn(c);
            return;
        }
        if (c.out_off == c.out.size()) {
            c.out.clear();
            c.out_off = 0;
        }
        bool want = c.out_off < c.out.size();
        if (want != c.want_out) {
            epoll_event ev{};
            ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
            ev.data.u64 = c.id;
            epoll_ctl(ep_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
            c.want_out = want;
        }
    }

    void close_conn(Conn& c) {
        if (c.closed) return;
        c.closed = true;
        for (auto& [topic, subs] : topics_) std::erase_if(subs, [&c](const Sub& s) { return s.conn == &c; });
        epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
        c.fd.reset();
        closed_.push_back(c.id);
    }

    // Closed connections are freed after the turn, when no event or flush
    // list can still point at them.
    void reap() {
        for (std::uint32_t id : closed_) conns_.erase(id);
        closed_.clear();
    }

    bench::UniqueFd listen_;
    bench::UniqueFd ep_;
    std::unordered_map<std::uint32_t, std::unique_ptr<Conn>> conns_;
    std::unordered_map<std::string, std::vector<Sub>> topics_;
    std::vector<Conn*> dirty_;
    std::vector<std::uint32_t> closed_;
    std::uint32_t next_id_ = 1;
    std::uint64_t forwarded_ = 0;
    std::uint64_t dropped_ = 0;
    std::uint64_t forwarded_qos1_ = 0;
    std::uint64_t queued_total_ = 0;
    std::uint16_t max_inflight_ = 0;  // 0: Receive Maximum only
};

}  // namespace

int main(int argc, char** argv) {
    std::string host = "127.0.0.1";
    int port = 0;
    long max_inflight = 0;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "-p" || a == "--port") && i + 1 < argc) {
            port = std::atoi(argv[++i]);
        } else if (a == "--host" && i + 1 < argc) {
            host = argv[++i];
        } else if (a == "--max-inflight" && i + 1 < argc) {
            max_inflight = std::strtol(argv[++i], nullptr, 10);
            if (max_inflight < 0 || max_inflight > 65535) max_inflight = -1;
        } else {
            max_inflight = -1;
        }
        if (max_inflight < 0) {
            std::fprintf(stderr, "usage: mqtt_forwarder -p PORT [--host 127.0.0.1] [--max-inflight 0..65535]\n");
            return 2;
        }
    }
    if (host.rfind("127.", 0) != 0) {
        std::fprintf(stderr, "mqtt_forwarder: only 127.0.0.0/8 addresses\n");
        return 2;
    }
    bench::raise_nofile_limit();
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGPIPE, SIG_IGN);
    int fd = bench::listen_tcp(host, port, 4096);
    if (fd < 0) {
        std::perror("mqtt_forwarder: listen");
        return 1;
    }
    Forwarder fwd(fd, static_cast<std::uint16_t>(max_inflight));
    return fwd.run();
}
