// The bounded received-message queue (ClientOptions::max_queued_messages):
// a client whose application does not read stops reading its socket, so the
// broker is pushed back by TCP flow control, while the connection stays up;
// once the application reads, every message arrives, in order.
#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>

#include "fake_broker.hpp"
#include "mqttools/client.hpp"
#include "mqttoolsd_process.hpp"

using namespace mqttools;
using namespace std::chrono_literals;
using test_support::FakeBroker;
using test_support::Mqttoolsd;
using test_support::RawPacket;

namespace {

using Clock = std::chrono::steady_clock;

std::string counter_payload(std::size_t i, std::size_t size) {
    char digits[16];
    std::snprintf(digits, sizeof digits, "%08zu", i);
    std::string p(digits);
    p.resize(size, 'x');
    return p;
}

// `count` QoS 1 PUBLISHes (ids 1..count) encoded back to back; ends[i] is
// where message i+1 ends in the stream.
struct PublishStream {
    std::vector<std::byte> bytes;
    std::vector<std::size_t> ends;

    PublishStream(std::size_t count, std::size_t payload_size) {
        for (std::size_t i = 0; i < count; ++i) {
            const std::string payload = counter_payload(i, payload_size);
            PublishPacket p;
            p.qos = QoS::at_least_once;
            p.packet_id = static_cast<std::uint16_t>(i + 1);
            p.topic = "bp/t";
            p.payload = as_bytes(payload);
            const std::size_t size = encoded_size(p, ProtocolVersion::v5);
            const std::size_t at = bytes.size();
            bytes.resize(at + size);
            (void)encode(p, ProtocolVersion::v5, std::span<std::byte>(bytes).subspan(at, size));
            ends.push_back(bytes.size());
        }
    }
};

// Writes without blocking from `offset`, in pieces that end on message
// boundaries (so that a PINGRESP can go in between); returns false when the
// socket accepted nothing for `stall` (its buffers, and the peer's, are full).
bool send_until_stalled(int fd, const PublishStream& s, std::size_t& offset, std::chrono::milliseconds stall) {
    while (offset < s.bytes.size()) {
        auto boundary = std::lower_bound(s.ends.begin(), s.ends.end(), offset + 64 * 1024);
        const std::size_t end = boundary == s.ends.end() ? s.bytes.size() : *boundary;
        const ssize_t n = ::send(fd, s.bytes.data() + offset, end - offset, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            offset += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) throw std::runtime_error("send failed");
        pollfd p{fd, POLLOUT, 0};
        if (::poll(&p, 1, static_cast<int>(stall.count())) == 0) return false;
    }
    return true;
}

bool at_boundary(const PublishStream& s, std::size_t offset) {
    return offset == 0 || std::binary_search(s.ends.begin(), s.ends.end(), offset);
}

}  // namespace

TEST_CASE("a full message queue stops reading: flow control, acks only once queued, keep-alive kept") {
    FakeBroker broker;
    constexpr std::size_t bound = 100;
    constexpr std::size_t total = 60000;  // ~25 MB: more than loopback socket buffers hold
    ClientOptions o;
    o.host = "127.0.0.1";
    o.port = broker.port();
    o.connect_delays.emplace();
    o.keep_alive_s = 1;
    o.response_timeout = 1s;
    o.max_queued_messages = bound;
    Client c(o);
    std::thread starter([&] { broker.handshake(); });
    c.start();
    starter.join();
    REQUIRE(c.messages().capacity() == bound);

    const PublishStream stream(total, 400);
    std::size_t offset = 0;
    // The client reads `bound` messages, then no more: the writes stall,
    // and stay stalled once the queue is full.
    CHECK_FALSE(send_until_stalled(broker.fd(), stream, offset, 500ms));
    const auto fill_deadline = Clock::now() + 5s;
    while (c.messages().size() < bound && Clock::now() < fill_deadline) std::this_thread::sleep_for(10ms);
    CHECK_FALSE(send_until_stalled(broker.fd(), stream, offset, 500ms));
    CHECK(offset < stream.bytes.size());
    CHECK(c.messages().size() == bound);
    CHECK(c.messages().high_water() == bound);

    // Exactly the queued messages are acknowledged, and while the queue is
    // full the client keeps pinging (keep alive 1 s) and is not timed out
    // for the PINGRESP it cannot read (more than keep alive + response
    // timeout pass here).
    std::vector<std::uint16_t> acked;
    int pings = 0;
    const auto quiet_until = Clock::now() + 3s;
    while (Clock::now() < quiet_until) {
        auto p = broker.read_nowait();
        if (!p) {
            std::this_thread::sleep_for(10ms);
            continue;
        }
        if (p->header.type == PacketType::puback) {
            acked.push_back(p->as<AckPacket>().packet_id);
        } else if (p->header.type == PacketType::pingreq) {
            ++pings;  // unanswered: without the pause rule the client would time out
        } else {
            FAIL("unexpected packet type " << static_cast<int>(p->header.type));
        }
    }
    REQUIRE(acked.size() == bound);
    for (std::size_t i = 0; i < bound; ++i) CHECK(acked[i] == i + 1);
    CHECK(pings >= 2);
    CHECK(c.connected());
    CHECK(c.messages().size() == bound);

    // The application reads: everything arrives in order, the queue never
    // holds more than the bound, and every message is acknowledged.
    std::atomic<std::size_t> received{0};
    std::atomic<bool> in_order{true};
    std::thread reader([&] {
        for (std::size_t i = 0; i < total; ++i) {
            auto m = c.messages().pop(10s);
            if (!m || m->connection_lost || m->payload != counter_payload(i, 400)) {
                in_order = false;
                return;
            }
            received = i + 1;
        }
    });
    // The PINGREQs sent while paused are answered now, between messages,
    // as a broker would; so are later ones.
    int owed_pingresps = pings;
    const std::vector<std::byte> pingresp{std::byte{0xD0}, std::byte{0x00}};
    const auto deadline = Clock::now() + 30s;
    while ((offset < stream.bytes.size() || acked.size() < total) && Clock::now() < deadline) {
        send_until_stalled(broker.fd(), stream, offset, 0ms);
        while (owed_pingresps > 0 && at_boundary(stream, offset) &&
               ::send(broker.fd(), pingresp.data(), pingresp.size(), MSG_DONTWAIT | MSG_NOSIGNAL) == 2) {
            --owed_pingresps;
        }
        bool any = false;
        while (auto p = broker.read_nowait()) {
            any = true;
            if (p->header.type == PacketType::puback) acked.push_back(p->as<AckPacket>().packet_id);
            if (p->header.type == PacketType::pingreq) ++owed_pingresps;
        }
        if (!any) {
            pollfd p{broker.fd(), static_cast<short>(POLLIN | (offset < stream.bytes.size() ? POLLOUT : 0)), 0};
            ::poll(&p, 1, 100);
        }
    }
    reader.join();
    CHECK(in_order);
    CHECK(received == total);
    REQUIRE(acked.size() == total);
    bool acks_in_order = true;
    for (std::size_t i = 0; i < total; ++i) acks_in_order = acks_in_order && acked[i] == i + 1;
    CHECK(acks_in_order);
    CHECK(c.messages().high_water() == bound);
    CHECK(c.connected());
}

TEST_CASE("mqttoolsd: a subscriber that does not read holds at most the bound; at QoS 1 none is lost") {
    REQUIRE(std::filesystem::exists(test_support::mqttoolsd_path()));
    // The broker keeps what the subscriber cannot take yet.
    Mqttoolsd broker("max_queued_messages = 0\n");
    constexpr std::size_t bound = 200;
    constexpr std::size_t total = 20000;
    ClientOptions so;
    so.host = "127.0.0.1";
    so.port = broker.port();
    so.connect_delays.emplace();
    so.response_timeout = 3s;
    so.max_queued_messages = bound;
    so.subscriptions = {{"bp/#", 0, QoS::at_least_once}};
    Client sub(so);
    sub.start();

    ClientOptions po = so;
    po.subscriptions.clear();
    Client pub(po);
    pub.start();
    for (std::size_t i = 0; i < total; ++i) pub.publish("bp/t", counter_payload(i, 10), false, QoS::at_least_once);
    pub.flush(20s);  // the broker has every message

    // Give the subscriber's I/O thread time to fill its queue and pause.
    const auto fill_deadline = Clock::now() + 5s;
    while (sub.messages().size() < bound && Clock::now() < fill_deadline) std::this_thread::sleep_for(10ms);
    std::this_thread::sleep_for(200ms);
    CHECK(sub.messages().size() == bound);
    CHECK(sub.messages().high_water() == bound);
    CHECK(sub.connected());

    for (std::size_t i = 0; i < total; ++i) {
        auto m = sub.messages().pop(10s);
        REQUIRE(m);
        REQUIRE_FALSE(m->connection_lost);
        REQUIRE(m->payload == counter_payload(i, 10));
    }
    CHECK_FALSE(sub.messages().pop(200ms));  // no duplicates
    CHECK(sub.messages().high_water() == bound);
}

TEST_CASE("max_queued_messages = 0 leaves the queue unbounded") {
    MessageQueue q;
    CHECK(q.capacity() == 0);
    for (int i = 0; i < 3; ++i) q.push(Message{});
    CHECK_FALSE(q.full_or_notify());
    CHECK(q.high_water() == 3);

    MessageQueue bounded(2);
    int woken = 0;
    bounded.on_space([&] { ++woken; });
    bounded.push(Message{});
    CHECK_FALSE(bounded.full_or_notify());
    bounded.push(Message{});
    CHECK(bounded.full_or_notify());
    CHECK(woken == 0);
    (void)bounded.try_pop();
    CHECK(woken == 1);  // once per full_or_notify()
    (void)bounded.try_pop();
    CHECK(woken == 1);
}
