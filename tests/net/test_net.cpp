#include <sys/socket.h>
#include <sys/uio.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "net/output_queue.hpp"
#include <netinet/in.h>
#include <sys/epoll.h>

#include "net/reactor.hpp"
#include "net/shared_buffer.hpp"
#include "net/socket.hpp"
#include "net/unique_fd.hpp"

using namespace mqttools;
using namespace mqttools::net;

namespace {

std::string drain(OutputQueue& q, std::size_t step) {
    std::string out;
    while (!q.empty()) {
        iovec iov[64];
        int n = q.fill_iov(iov, 64);
        std::size_t take = 0;
        for (int i = 0; i < n && take < step; ++i) {
            std::size_t k = std::min(step - take, iov[i].iov_len);
            out.append(static_cast<const char*>(iov[i].iov_base), k);
            take += k;
        }
        q.consume(take);
    }
    return out;
}

}  // namespace

TEST_CASE("output queue keeps order across shared and private bytes", "[net]") {
    BufferRef shared(16);
    std::memcpy(shared.data(), "SHARED", 6);
    for (std::size_t step : {1u, 3u, 7u, 1000u}) {
        OutputQueue q;
        auto a = q.reserve(3);
        std::memcpy(a.data(), "abc", 3);
        q.commit(3);
        q.append(shared, 0, 6);
        auto b = q.reserve(2);
        std::memcpy(b.data(), "de", 2);
        q.commit(2);
        auto c = q.reserve(2);  // appended to the same private buffer
        std::memcpy(c.data(), "fg", 2);
        q.commit(2);
        q.append(shared, 2, 4);
        CHECK(q.bytes() == 17);
        CHECK(drain(q, step) == "abcSHAREDdefgARED");
        CHECK(q.bytes() == 0);
    }
    CHECK(shared.get()->refs == 1);  // every queue reference was dropped
}

TEST_CASE("output queue grows past its ring size", "[net]") {
    BufferRef shared(4);
    std::memcpy(shared.data(), "xy", 2);
    OutputQueue q;
    for (int i = 0; i < 1000; ++i) q.append(shared, 0, 2);
    CHECK(q.bytes() == 2000);
    CHECK(shared.get()->refs == 1001);
    q.consume(1001);
    CHECK(q.bytes() == 999);
    q.clear();
    CHECK(shared.get()->refs == 1);
}

TEST_CASE("output queue splice moves another queue's bytes behind its own", "[net]") {
    // A connection collects output behind a held SUBACK, then appends it.
    BufferRef shared(8);
    std::memcpy(shared.data(), "LIVE", 4);
    OutputQueue out;
    OutputQueue aside;
    auto a = out.reserve(2);
    std::memcpy(a.data(), "ok", 2);
    out.commit(2);
    for (int i = 0; i < 5; ++i) aside.append(shared, 0, 4);  // past the inline ring
    auto t = aside.reserve(1);
    std::memcpy(t.data(), "!", 1);
    aside.commit(1);
    auto s = out.reserve(3);  // the SUBACK, queued after the hold ended
    std::memcpy(s.data(), "ACK", 3);
    out.commit(3);
    out.splice(aside);
    CHECK(aside.empty());
    CHECK(aside.bytes() == 0);
    CHECK(out.bytes() == 26);
    auto more = out.reserve(1);  // still appends at the tail
    std::memcpy(more.data(), ".", 1);
    out.commit(1);
    CHECK(shared.get()->refs == 6);  // moved, not shared again
    CHECK(drain(out, 5) == "okACKLIVELIVELIVELIVELIVE!.");
    CHECK(shared.get()->refs == 1);
    aside.append(shared, 0, 2);  // the emptied queue is usable
    CHECK(drain(aside, 10) == "LI");
}

TEST_CASE("an external buffer refers to its owner's bytes and keeps the owner alive", "[net]") {
    // A big stored payload queued to several outputs: no copy, and the
    // owner lives until the last queue has written its slice.
    auto owner = std::make_shared<const std::string>("PAYLOAD-BYTES");
    std::weak_ptr<const std::string> watch = owner;
    const Bytes bytes(reinterpret_cast<const std::byte*>(owner->data()), owner->size());
    OutputQueue q1;
    OutputQueue q2;
    {
        BufferRef ref = BufferRef::external(owner, bytes);
        CHECK(ref.data() == bytes.data());
        auto head = q1.reserve(2);
        std::memcpy(head.data(), "h1", 2);
        q1.commit(2);
        q1.append(ref, 0, static_cast<std::uint32_t>(bytes.size()));
        q2.append(BufferRef::external(owner, bytes), 8, 5);
        auto tail = q1.reserve(1);  // not written into the external slice
        std::memcpy(tail.data(), "!", 1);
        q1.commit(1);
    }
    owner.reset();
    CHECK(!watch.expired());
    CHECK(drain(q1, 4) == "h1PAYLOAD-BYTES!");
    CHECK(!watch.expired());  // q2 still refers to it
    CHECK(drain(q2, 1000) == "BYTES");
    CHECK(watch.expired());
}

TEST_CASE("shared buffers are recycled", "[net]") {
    SharedBuffer* first = acquire_buffer(100);
    release_buffer(first);
    SharedBuffer* second = acquire_buffer(200);  // same size class
    CHECK(second == first);
    CHECK(second->capacity >= 200);
    release_buffer(second);
}

TEST_CASE("reactor timers fire in order and can be cancelled", "[net]") {
    Reactor r;
    REQUIRE(r.valid());
    std::vector<int> fired;
    auto now = Clock::now();
    r.add_timer(now + std::chrono::milliseconds(20), [&] { fired.push_back(2); });
    r.add_timer(now + std::chrono::milliseconds(10), [&] { fired.push_back(1); });
    auto id = r.add_timer(now + std::chrono::milliseconds(15), [&] { fired.push_back(99); });
    r.cancel_timer(id);
    r.cancel_timer(id);  // twice: no-op
    r.add_timer(now + std::chrono::milliseconds(30), [&] { r.stop(); });
    r.run();
    CHECK(fired == std::vector<int>{1, 2});
    CHECK(Clock::now() - now >= std::chrono::milliseconds(30));
}

TEST_CASE("listen, accept with TCP_NODELAY, read readiness through the reactor", "[net]") {
    std::string error;
    UniqueFd listener = listen_tcp("127.0.0.1", 0, error);
    REQUIRE(listener.valid());
    std::uint16_t port = local_port(listener.get());
    REQUIRE(port != 0);

    UniqueFd client(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);

    struct Acceptor : IoHandler {
        int listen_fd = -1;
        UniqueFd accepted;
        std::string peer;
        Reactor* reactor = nullptr;
        void on_io(std::uint32_t) override {
            accepted = accept_tcp(listen_fd, peer);
            reactor->stop();
        }
    } acceptor;
    Reactor r;
    acceptor.listen_fd = listener.get();
    acceptor.reactor = &r;
    REQUIRE(r.add(listener.get(), EPOLLIN, &acceptor));
    r.add_timer_after(std::chrono::seconds(2), [&] { r.stop(); });
    r.run();
    REQUIRE(acceptor.accepted.valid());
    CHECK(acceptor.peer.rfind("127.0.0.1:", 0) == 0);

    std::string bind_error;
    UniqueFd clash = listen_tcp("127.0.0.1", port, bind_error);
    CHECK_FALSE(clash.valid());
    CHECK(bind_error.find("cannot bind") != std::string::npos);
}
