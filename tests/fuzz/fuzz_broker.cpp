// libFuzzer target for the broker's per-connection packet handling, in
// process and without sockets: up to four clients, each an in-memory
// transport adopted by a real Broker, feed it arbitrary byte streams.
//
// Input: a sequence of records [ctl][len][len bytes] (len is one byte, or
// two big-endian bytes when ctl has bit 7 set). ctl bits 0-1 pick the
// client, bits 2-4 the operation:
//   0-3  bytes from the client (a connection is opened first if needed)
//   4    the client closes its end (EOF)
//   5    the client stops/starts reading (its writes block/unblock)
//   6    one reactor turn (flushes output, runs due timers)
//   7    the client's connection is dropped and a new one opened
// The broker runs with a password file, an ACL and small limits, so the
// security and quota paths are reached too. Any crash, sanitizer report,
// leak or hang is a bug.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"
#include "broker/auth/password_hash.hpp"
#include "net/reactor.hpp"
#include "net/transport.hpp"

using namespace mqttools;

namespace {

struct Client;

// A transport over memory: read() hands out what the fuzzer queued,
// write() swallows output (or refuses it while the client "stops reading").
class MemoryTransport final : public net::Transport {
public:
    explicit MemoryTransport(Client* owner);
    ~MemoryTransport() override;

    int fd() const noexcept override { return fd_.get(); }
    net::IoResult read(MutableBytes out) noexcept override {
        if (pos_ < input_.size()) {
            const std::size_t n = std::min(out.size(), input_.size() - pos_);
            std::copy_n(input_.data() + pos_, n, out.data());
            pos_ += n;
            if (pos_ == input_.size()) {
                input_.clear();
                pos_ = 0;
            }
            return {n, net::IoStatus::ok};
        }
        return {0, eof_ ? net::IoStatus::closed : net::IoStatus::would_block};
    }
    net::IoResult write(const iovec* iov, int count) noexcept override {
        if (blocked_) return {0, net::IoStatus::would_block};
        std::size_t n = 0;
        for (int i = 0; i < count; ++i) n += iov[i].iov_len;
        written_ += n;
        return {n, net::IoStatus::ok};
    }

    void push(const std::uint8_t* data, std::size_t size) {
        input_.insert(input_.end(), reinterpret_cast<const std::byte*>(data),
                      reinterpret_cast<const std::byte*>(data) + size);
    }
    void close_input() { eof_ = true; }
    void toggle_blocked() { blocked_ = !blocked_; }
    bool blocked() const { return blocked_; }
    void detach() { owner_ = nullptr; }

private:
    Client* owner_;
    net::UniqueFd fd_;  // an eventfd: the reactor needs a descriptor to watch; it never fires
    std::vector<std::byte> input_;
    std::size_t pos_ = 0;
    bool eof_ = false;
    bool blocked_ = false;
    std::size_t written_ = 0;
};

// The fuzzer's handle on one client. The broker owns the Connection (and
// with it the transport) and may destroy it whenever it closes; the
// transport's destructor clears these pointers.
struct Client {
    broker::Connection* connection = nullptr;
    MemoryTransport* transport = nullptr;
};

MemoryTransport::MemoryTransport(Client* owner)
    : owner_(owner), fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

MemoryTransport::~MemoryTransport() {
    if (owner_) {
        owner_->connection = nullptr;
        owner_->transport = nullptr;
    }
}

std::string write_temp(const char* name, const std::string& text) {
    std::string path = "/tmp/mqttools-fuzz-broker-" + std::to_string(::getpid()) + "-" + name;
    if (FILE* f = std::fopen(path.c_str(), "w")) {
        std::fputs(text.c_str(), f);
        std::fclose(f);
    }
    return path;
}

config::Config make_config() {
    config::Config cfg;
    cfg.allow_anonymous = true;
    // Cheap hashes: the fuzzer should spend its time in the protocol code.
    const auto alice = auth::make_password_hash("secret", auth::HashKind::pbkdf2_sha512, 1);
    const auto bob = auth::make_password_hash("pw", auth::HashKind::sha512);
    cfg.password_file = write_temp("passwd", "alice:" + auth::format_password_hash(*alice) + "\nbob:" +
                                                 auth::format_password_hash(*bob) + "\n");
    cfg.acl_file = write_temp("acl",
                              "topic read public/#\ntopic readwrite a/#\n"
                              "user alice\ntopic readwrite #\ntopic deny a/secret/#\n"
                              "user bob\ntopic write +/+\ntopic read $SYS/#\n"
                              "pattern readwrite c/%c/#\npattern read u/%u/#\n");
    cfg.max_connections = 3;
    cfg.max_queued_messages = 8;
    cfg.max_queued_bytes = 4096;
    cfg.max_inflight_messages = 2;
    cfg.max_subscriptions_per_client = 6;
    cfg.max_topic_levels = 6;
    cfg.max_client_output_bytes = 8192;
    cfg.max_packet_size = 16384;
    cfg.topic_alias_maximum = 3;
    cfg.receive_maximum = 4;
    return cfg;
}

const config::Config& fuzz_config() {
    static const config::Config cfg = make_config();
    return cfg;
}

void open_client(broker::Broker& broker, Client& c) {
    auto transport = std::make_unique<MemoryTransport>(&c);
    MemoryTransport* raw = transport.get();
    broker::Connection* conn = broker.adopt(std::move(transport));
    if (conn) {
        c.connection = conn;
        c.transport = raw;
    }
}

void drop_client(Client& c) {
    if (!c.transport) return;
    c.transport->close_input();
    c.connection->on_io(EPOLLIN);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    spdlog::set_level(spdlog::level::off);
    (void)fuzz_config();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    net::Reactor reactor;
    std::array<Client, 4> clients{};
    {
        broker::Broker broker(reactor, fuzz_config());
        std::size_t pos = 0;
        int turns = 0;
        while (pos < size && turns < 4096) {
            ++turns;
            const std::uint8_t ctl = data[pos++];
            std::size_t len = 0;
            if (ctl & 0x80) {
                if (pos + 2 > size) break;
                len = (std::size_t{data[pos]} << 8) | data[pos + 1];
                pos += 2;
            } else {
                if (pos + 1 > size) break;
                len = data[pos++];
            }
            len = std::min(len, size - pos);
            const std::uint8_t* chunk = data + pos;
            pos += len;
            Client& c = clients[ctl & 3];
            switch ((ctl >> 2) & 7) {
                case 4:
                    if (c.transport) drop_client(c);
                    break;
                case 5:
                    if (c.transport) {
                        c.transport->toggle_blocked();
                        if (!c.transport->blocked()) c.connection->on_io(EPOLLOUT);
                    }
                    break;
                case 6:
                    break;  // just the reactor turn below
                case 7:
                    drop_client(c);
                    reactor.run_once(std::chrono::milliseconds(0));
                    if (!c.transport) open_client(broker, c);
                    break;
                default:
                    if (!c.transport) open_client(broker, c);
                    if (c.transport) {
                        c.transport->push(chunk, len);
                        c.connection->on_io(EPOLLIN);
                    }
                    break;
            }
            // Flushes output, destroys closed connections, runs due timers.
            reactor.run_once(std::chrono::milliseconds(0));
        }
        broker.shutdown();
        reactor.run_once(std::chrono::milliseconds(0));
        // The broker's destructor destroys the remaining connections.
        for (Client& c : clients) {
            if (c.transport) c.transport->detach();
        }
    }
    return 0;
}
