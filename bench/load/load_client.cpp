#include "load_client.hpp"
#include "load_options.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

using namespace mqttools;

namespace bench {

namespace {

template <class P>
std::vector<std::byte> encode_v5(const P& p) {
    std::vector<std::byte> out(encoded_size(p, wire_version));
    out.resize(encode(p, wire_version, out));
    return out;
}

}  // namespace

std::string tree_filter(std::uint32_t n, std::uint32_t j) {
    const std::string base = "tree/" + std::to_string(n) + "/";
    switch (j % 10) {
    case 8: return base + "+/w" + std::to_string(j);
    case 9: return base + std::to_string(j) + "/#";
    default: return base + std::to_string(j) + "/state";
    }
}

ClientSet::ClientSet() : ep_(epoll_create1(EPOLL_CLOEXEC)) {}

Conn& ClientSet::add(Role role, std::uint32_t role_index, std::string client_id, std::string source,
                     std::size_t in_size) {
    auto c = std::make_unique<Conn>();
    c->index = static_cast<std::uint32_t>(conns_.size());
    c->role = role;
    c->role_index = role_index;
    c->client_id = std::move(client_id);
    c->source = std::move(source);
    c->in.resize(in_size);
    conns_.push_back(std::move(c));
    return *conns_.back();
}

bool ClientSet::start_connect(Conn& c, const std::string& host, int port) {
    const std::string& source = c.source;
    c.fd.reset(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    ++handshaking_;
    if (!c.fd.valid()) {
        close(c, std::string("socket: ") + std::strerror(errno));
        return false;
    }
    set_nodelay(c.fd.get());
    if (c.rcvbuf > 0) setsockopt(c.fd.get(), SOL_SOCKET, SO_RCVBUF, &c.rcvbuf, sizeof c.rcvbuf);
    if (!source.empty()) {
        // Let connect() pick the port for the full 4-tuple, so each source
        // address gets its own ephemeral port range towards the broker.
        int one = 1;
        setsockopt(c.fd.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        sockaddr_in src{};
        src.sin_family = AF_INET;
        inet_pton(AF_INET, source.c_str(), &src.sin_addr);
        if (bind(c.fd.get(), reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
            close(c, std::string("bind: ") + std::strerror(errno));
            return false;
        }
    }
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(static_cast<std::uint16_t>(port));
    inet_pton(AF_INET, host.c_str(), &dst.sin_addr);
    int r = ::connect(c.fd.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst);
    if (r != 0 && errno != EINPROGRESS) {
        close(c, std::string("connect: ") + std::strerror(errno));
        return false;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = c.index;
    c.want_out = true;
    epoll_ctl(ep_.get(), EPOLL_CTL_ADD, c.fd.get(), &ev);
    return true;
}

int ClientSet::poll(std::int64_t timeout_ns) {
    epoll_event events[256];
    if (timeout_ns < 0) timeout_ns = 0;
    timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000), static_cast<long>(timeout_ns % 1'000'000'000)};
    int n = epoll_pwait2(ep_.get(), events, 256, &ts, nullptr);
    if (n <= 0) return 0;
    std::int64_t now = now_ns();
    for (int i = 0; i < n; ++i) {
        Conn& c = *conns_[events[i].data.u64];
        if (c.state != ConnState::closed) on_event(c, events[i].events, now);
    }
    return n;
}

void ClientSet::on_event(Conn& c, std::uint32_t events, std::int64_t now) {
    if (c.state == ConnState::connecting) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            ++refused_;
            close(c, std::string("connect: ") + std::strerror(err));
            return;
        }
        on_connected(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_all(c, now);
    if (c.state != ConnState::closed && (events & EPOLLOUT)) flush(c);
}

void ClientSet::on_connected(Conn& c) {
    c.state = ConnState::wait_connack;
    if (tls_) {
        c.tls = std::make_unique<net::TlsSession>(tls_);
        if (!c.tls->valid() || c.tls->handshake() == net::TlsStatus::error) {
            close(c, "TLS: " + c.tls->last_error());
            return;
        }
        tls_output(c);
        flush(c);
        return;  // CONNECT once the handshake is done (tls_input)
    }
    if (!ws_path_.empty()) {
        c.ws_upgrading = true;
        c.ws_reader = std::make_unique<net::ws::FrameReader>(false, std::uint64_t{1} << 32);
        const std::string req = net::ws::make_request("127.0.0.1", ws_path_, net::ws::make_key());
        c.out.insert(c.out.end(), reinterpret_cast<const std::byte*>(req.data()),
                     reinterpret_cast<const std::byte*>(req.data() + req.size()));
        flush(c);
        return;
    }
    send_connect(c);
}

void ClientSet::send_connect(Conn& c) {
    ConnectPacket p;
    p.version = wire_version;
    p.clean_start = true;
    p.keep_alive = c.keep_alive;
    p.client_id = c.client_id;
    if (c.session_expiry != 0) p.properties.session_expiry_interval = c.session_expiry;
    if (!username_.empty()) {
        p.username = username_;
        p.password = as_bytes(password_);
    }
    std::vector<std::byte> out(encoded_size(p));
    out.resize(encode(p, out));
    send(c, out);
}

void ClientSet::read_all(Conn& c, std::int64_t now) {
    for (int round = 0; round < 16 && c.state != ConnState::closed; ++round) {
        if (c.in.size() - c.in_len < c.in.size() / 4) c.in.resize(c.in.size() * 2);
        std::size_t space = c.in.size() - c.in_len;
        ssize_t n = ::read(c.fd.get(), c.in.data() + c.in_len, space);
        if (n == 0) {
            close(c, "closed by the broker");
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            close(c, std::string("read: ") + std::strerror(errno));
            return;
        }
        if (c.tls) {
            c.in_len += tls_input(c, c.in_len, static_cast<std::size_t>(n));
        } else if (ws_path_.empty()) {
            c.in_len += static_cast<std::size_t>(n);
        } else {
            c.in_len += ws_input(c, c.in_len, static_cast<std::size_t>(n));
        }
        std::size_t off = 0;
        while (c.state != ConnState::closed) {
            Bytes rest(c.in.data() + off, c.in_len - off);
            Frame f = read_frame(rest);
            if (f.status == FrameStatus::need_more) break;
            if (f.status == FrameStatus::error) {
                close(c, "malformed frame from the broker");
                return;
            }
            dispatch(c, f.header, rest.first(f.header.packet_size()), now);
            off += f.header.packet_size();
        }
        if (c.state == ConnState::closed) return;
        if (off > 0) {
            std::memmove(c.in.data(), c.in.data() + off, c.in_len - off);
            c.in_len -= off;
        }
        if (static_cast<std::size_t>(n) < space) break;
    }
    // Acknowledgements queued by the handler go out once per read batch.
    if (c.state != ConnState::closed && c.pending_out() > 0) flush(c);
}

void ClientSet::dispatch(Conn& c, const FixedHeader& h, Bytes packet, std::int64_t now) {
    Bytes body = packet.subspan(h.header_size);
    if (c.state == ConnState::wait_connack) {
        if (h.type != PacketType::connack) {
            close(c, "expected CONNACK");
            return;
        }
        auto ack = decode_connack(h, body, wire_version);
        if (!ack || ack.value().reason != ReasonCode::success) {
            // The reason code says why (0x88: the auth service failed ...).
            close(c, std::string("CONNACK refused: ") +
                         std::string(ack ? reason_code_name(ack.value().reason) : "malformed"));
            return;
        }
        if (ack.value().properties.receive_maximum) c.receive_maximum = *ack.value().properties.receive_maximum;
        if (c.role == Role::subscriber || c.tree_filters > 0) {
            c.state = ConnState::wait_suback;
            std::vector<std::string> names;
            if (c.role == Role::subscriber) names.push_back(c.filter);
            for (std::uint32_t j = 0; j < c.tree_filters; ++j) names.push_back(tree_filter(c.role_index, j));
            std::vector<Subscription> subs(names.size());
            for (std::size_t k = 0; k < names.size(); ++k) {
                subs[k].filter = names[k];
                subs[k].qos = static_cast<QoS>(c.sub_qos);
            }
            SubscribePacket sp;
            sp.packet_id = 1;
            sp.subscriptions = SubscriptionList(std::span<const Subscription>(subs));
            send(c, encode_v5(sp));
        } else {
            c.state = ConnState::ready;
            --handshaking_;
            ++ready_;
        }
        return;
    }
    if (c.state == ConnState::wait_suback) {
        if (h.type != PacketType::suback) return;
        auto ack = decode_suback(h, body, wire_version);
        if (!ack || ack.value().reason_codes.empty() ||
            std::any_of(ack.value().reason_codes.begin(), ack.value().reason_codes.end(),
                        [](std::byte code) { return is_error(static_cast<ReasonCode>(code)); })) {
            close(c, "SUBSCRIBE refused");
            return;
        }
        c.state = ConnState::ready;
        --handshaking_;
        ++ready_;
        return;
    }
    if (h.type == PacketType::disconnect) {
        auto d = decode_disconnect(h, body, wire_version, Sender::server);
        close(c, std::string("DISCONNECT from the broker: ") +
                     std::string(d ? reason_code_name(d.value().reason) : "malformed"));
        return;
    }
    if (handler_) handler_(c, h, packet, now);
}

void ClientSet::send(Conn& c, Bytes data) {
    queue(c, data);
    flush(c);
}

void ClientSet::queue(Conn& c, Bytes data) {
    if (c.state == ConnState::closed) return;
    if (c.tls) {
        if (c.tls->write_plain(data).status == net::TlsStatus::error) {
            close(c, "TLS: " + c.tls->last_error());
            return;
        }
        tls_output(c);
        return;
    }
    if (ws_path_.empty()) {
        c.out.insert(c.out.end(), data.begin(), data.end());
        return;
    }
    // One masked binary frame per packet, as browsers send them; a cheap
    // xorshift mask (the broker under test does not care how random it is).
    c.ws_mask ^= c.ws_mask << 13;
    c.ws_mask ^= c.ws_mask >> 17;
    c.ws_mask ^= c.ws_mask << 5;
    std::uint8_t mask[4];
    std::memcpy(mask, &c.ws_mask, 4);
    const std::size_t at = c.out.size();
    c.out.resize(at + net::ws::max_header_size + data.size());
    const std::size_t h = net::ws::encode_header(c.out.data() + at, net::ws::Opcode::binary, true, data.size(), mask);
    net::ws::mask_copy(c.out.data() + at + h, data.data(), data.size(), mask, 0);
    c.out.resize(at + h + data.size());
}

std::size_t ClientSet::tls_input(Conn& c, std::size_t at, std::size_t n) {
    net::TlsSession& t = *c.tls;
    t.feed(Bytes(c.in.data() + at, n));  // copied into the session: the bytes may be overwritten
    if (!t.handshake_done()) {
        const net::TlsStatus st = t.handshake();
        tls_output(c);
        if (st == net::TlsStatus::error) {
            close(c, "TLS handshake: " + t.last_error());
            return 0;
        }
        if (!t.handshake_done()) return 0;
        send_connect(c);
        if (c.state == ConnState::closed) return 0;
    }
    std::size_t got = 0;
    for (;;) {
        if (c.in.size() - at - got < 4096) c.in.resize(c.in.size() * 2 + 4096);
        const net::TlsIo r = t.read_plain(MutableBytes(c.in.data() + at + got, c.in.size() - at - got));
        if (r.status == net::TlsStatus::ok && r.bytes > 0) {
            got += r.bytes;
            continue;
        }
        if (r.status == net::TlsStatus::want_read || r.status == net::TlsStatus::ok) break;
        close(c, r.status == net::TlsStatus::closed ? "TLS close_notify from the broker" : "TLS: " + t.last_error());
        return 0;
    }
    tls_output(c);  // session tickets, key updates
    return got;
}

void ClientSet::tls_output(Conn& c) {
    while (c.tls->pending_output() > 0) {
        const std::size_t at = c.out.size();
        c.out.resize(at + c.tls->pending_output());
        c.out.resize(at + c.tls->take_output(MutableBytes(c.out.data() + at, c.out.size() - at)));
    }
}

std::size_t ClientSet::ws_input(Conn& c, std::size_t at, std::size_t n) {
    std::byte* data = c.in.data() + at;
    if (c.ws_upgrading) {
        c.ws_head.append(reinterpret_cast<const char*>(data), n);
        const std::size_t end = c.ws_head.find("\r\n\r\n");
        if (end == std::string::npos) return 0;
        if (c.ws_head.rfind("HTTP/1.1 101", 0) != 0) {
            close(c, "WebSocket upgrade refused: " + c.ws_head.substr(0, c.ws_head.find('\r')));
            return 0;
        }
        n = c.ws_head.size() - end - 4;
        std::memcpy(data, c.ws_head.data() + end + 4, n);
        std::string().swap(c.ws_head);
        c.ws_upgrading = false;
        send_connect(c);
    }
    std::size_t rd = 0, wr = 0;
    while (rd < n && c.state != ConnState::closed) {
        const auto s = c.ws_reader->decode(data + rd, n - rd, data + wr);
        rd += s.consumed;
        wr += s.produced;
        using Event = net::ws::FrameReader::Event;
        // Brokers do not ping; a pong is ignored like any other control frame.
        if (s.event == Event::close || s.event == Event::error) {
            close(c, "WebSocket close from the broker");
            return 0;
        }
    }
    return wr;
}

void ClientSet::flush(Conn& c) {
    if (c.state == ConnState::closed || c.state == ConnState::connecting) return;
    while (c.out_off < c.out.size()) {
        ssize_t n = ::write(c.fd.get(), c.out.data() + c.out_off, c.out.size() - c.out_off);
        if (n > 0) {
            c.out_off += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        close(c, std::string("write: ") + std::strerror(errno));
        return;
    }
    if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
    }
    update_events(c);
}

void ClientSet::detach(Conn& c) {
    if (c.fd.valid()) epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
    c.stuck = true;
}

void ClientSet::update_events(Conn& c) {
    bool want = c.pending_out() > 0;
    if (want == c.want_out) return;
    epoll_event ev{};
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
    ev.data.u64 = c.index;
    epoll_ctl(ep_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
    c.want_out = want;
}

void ClientSet::close(Conn& c, const std::string& why) {
    if (c.state == ConnState::closed) return;
    if (c.state == ConnState::ready) {
        --ready_;
    } else {
        --handshaking_;
    }
    c.state = ConnState::closed;
    ++closed_;
    last_error_ = c.client_id + ": " + why;
    if (c.fd.valid()) epoll_ctl(ep_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
    c.fd.reset();
    std::vector<std::byte>().swap(c.in);
    std::vector<std::byte>().swap(c.out);
    c.out_off = 0;
}

}  // namespace bench
