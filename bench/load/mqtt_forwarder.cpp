// mqtt_forwarder: the do-nothing floor the broker is compared against.
//
// It accepts MQTT connections on 127.0.0.1:PORT, answers CONNECT with a bare
// CONNACK and SUBSCRIBE with a SUBACK (exact topics only, no wildcards, no
// sessions, no retained messages, no authentication), and copies each
// PUBLISH unchanged to the connections subscribed to its exact topic. That is
// read + frame + write and nothing else; subscribers' writes are gathered per
// reactor turn (one write per subscriber per epoll_wait), the batching a real
// broker may also do without delaying anything. A QoS 1 PUBLISH is answered
// with a PUBACK so the QoS 1 scenario can run against it too.
//
//   mqtt_forwarder -p PORT [--host 127.0.0.1]   (SIGINT/SIGTERM stop it)
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

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
    // The subscriber list of the last topic this connection published to:
    // a publisher nearly always repeats its topic, so the hash lookup is
    // usually replaced by one string compare.
    std::string last_topic;
    std::vector<Conn*>* last_subs = nullptr;
};

class Forwarder {
public:
    explicit Forwarder(int listen_fd) : listen_(listen_fd), ep_(epoll_create1(EPOLL_CLOEXEC)) {}

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
        std::fprintf(stderr, "mqtt_forwarder: forwarded %llu, dropped %llu\n",
                     static_cast<unsigned long long>(forwarded_), static_cast<unsigned long long>(dropped_));
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
            ConnackPacket ack;
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
                auto& subs = topics_[std::string(s.filter)];
                subs.push_back(&c);
                codes.push_back(static_cast<std::byte>(s.qos));
            }
            SubackPacket ack;
            ack.packet_id = p.value().packet_id;
            ack.reason_codes = codes;
            send_packet(c, ack);
            break;
        }
        case PacketType::pingreq: send_packet(c, PingrespPacket{}); break;
        case PacketType::disconnect: close_conn(c); break;
        default: break;  // PUBACKs from subscribers and the rest: ignored
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
        std::string_view topic = as_string(body.subspan(2, len));
        if (from.last_subs == nullptr || topic != from.last_topic) {
            auto it = topics_.find(std::string(topic));
            if (it == topics_.end()) it = topics_.emplace(std::string(topic), std::vector<Conn*>{}).first;
            from.last_topic.assign(topic);
            from.last_subs = &it->second;
        }
        for (Conn* sub : *from.last_subs) {
            append(*sub, packet);
            ++forwarded_;
        }
        if (((h.flags >> 1) & 3) == 1 && body.size() >= 4 + len) {
            AckPacket ack;
            ack.packet_id = static_cast<std::uint16_t>((std::to_integer<unsigned>(body[2 + len]) << 8) |
                                                       std::to_integer<unsigned>(body[3 + len]));
            send_packet(from, ack);
        }
    }

    void append(Conn& c, Bytes data) {
        if (c.closed) return;
        if (c.out.size() - c.out_off + data.size() > max_pending_out) {
            ++dropped_;
            return;
        }
        c.out.insert(c.out.end(), data.begin(), data.end());
        if (!c.dirty) {
            c.dirty = true;
            dirty_.push_back(&c);
        }
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
        for (auto& [topic, subs] : topics_) std::erase(subs, &c);
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
    std::unordered_map<std::string, std::vector<Conn*>> topics_;
    std::vector<Conn*> dirty_;
    std::vector<std::uint32_t> closed_;
    std::uint32_t next_id_ = 1;
    std::uint64_t forwarded_ = 0;
    std::uint64_t dropped_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    std::string host = "127.0.0.1";
    int port = 0;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "-p" || a == "--port") && i + 1 < argc) {
            port = std::atoi(argv[++i]);
        } else if (a == "--host" && i + 1 < argc) {
            host = argv[++i];
        } else {
            std::fprintf(stderr, "usage: mqtt_forwarder -p PORT [--host 127.0.0.1]\n");
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
    Forwarder fwd(fd);
    return fwd.run();
}
