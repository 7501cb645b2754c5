// A NATS client connection owned by the reactor (issue 26): the node's data
// connection (its live messages, their interest, claims and hand-overs)
// without libnats' threads. A non-blocking socket on the reactor's epoll;
// what one turn produced leaves in one send right before the reactor sleeps
// (flush), or, with a linger, the live messages of several turns in one
// send (flush_or_linger); MSG/HMSG are parsed in place from the receive buffer
// (nats_protocol.hpp) and handed to the owner as views, no copy, no thread
// hop. PING/PONG keepalive, reconnect with back-off over the configured
// URLs, subscriptions re-sent on reconnect, INFO's max_payload respected.
//
// TLS (tls:// URLs, [cluster] cafile/certfile/keyfile) on the same socket,
// after the server's plaintext INFO (nats_tls.hpp). Not here: .creds (JWT +
// NKey signature): a node configured with them keeps libnats for this
// connection too (nats_link.cpp). user/password (and user:password@ in a
// URL) are sent in CONNECT.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/nats_protocol.hpp"
#include "cluster/nats_tls.hpp"
#include "net/reactor.hpp"
#include "net/unique_fd.hpp"

namespace mqttools::cluster {

class NatsWire final : public net::IoHandler {
public:
    class Events {
    public:
        // MSG/HMSG on one of our subscriptions; views valid during the call.
        virtual void on_wire_message(const nats::ServerMessage& m) = 0;
        // The answer to ping(), in the order of the pings.
        virtual void on_wire_pong() = 0;
        // Connected (CONNECT accepted, subscriptions re-sent); `again`: not
        // the first time.
        virtual void on_wire_up(bool again) = 0;
        // The connection was lost; unanswered pings are forgotten.
        virtual void on_wire_down() = 0;

    protected:
        ~Events() = default;
    };
    struct Options {
        std::vector<std::string> urls;  // nats:// or tls://[user:pass@]host[:port]
        std::string name;
        std::string user;
        std::string pass;
        bool echo = true;
        std::size_t max_out_bytes = 64u << 20;  // publish() refuses beyond it
        // How long publish_trusted()'s messages may wait for more before
        // they are sent ([cluster] batch_time); 0: every turn.
        std::chrono::microseconds linger{0};
        // Sent at once from this many bytes on, lingering or not.
        std::size_t linger_bytes = 64u << 10;
        NatsTlsSettings tls;                    // TLS when tls.on
    };

    NatsWire(net::Reactor& reactor, Events& events, Options options);
    ~NatsWire();
    NatsWire(const NatsWire&) = delete;
    NatsWire& operator=(const NatsWire&) = delete;

    // The first attempt (synchronous connect(2) start; the rest on the reactor).
    void start();
    bool up() const { return state_ == State::up; }
    std::int64_t max_payload() const { return info_.max_payload; }
    // Why the first attempts failed ("URL: reason"); empty once connected.
    const std::string& unreachable() const { return unreachable_; }

    // Kept across reconnects; sent now when up.
    void subscribe(std::uint64_t sid, std::string subject, std::string queue = {});
    void unsubscribe(std::uint64_t sid);
    // Appended to this turn's output. False when not up, over the output
    // bound, or the subject/reply would break the line.
    bool publish(std::string_view subject, std::string_view reply, std::string_view payload);
    // publish() for a subject and reply valid by construction (not checked
    // per message: the live path). The one kind of output that lingers;
    // everything else is urgent and takes what lingers with it. `joinable`:
    // later payloads for the same subject may join this one (join_last).
    bool publish_trusted(std::string_view subject, std::string_view reply, std::string_view payload,
                         bool joinable = false);
    // Appends `payload` to the payload of the last message, one NATS message
    // carrying both: when that message was a joinable publish_trusted() for
    // `subject`, nothing was queued after it, the joined payload stays
    // within `limit` bytes and the output bound holds. The first time,
    // `marker` goes in front of the first payload. False: publish on its own.
    bool join_last(std::string_view subject, std::string_view payload, char marker, std::size_t limit);
    // HPUB: `headers` is "NATS/1.0\r\n...\r\n\r\n"; false as publish().
    bool publish_headers(std::string_view subject, std::string_view reply, std::string_view headers,
                         std::string_view payload);
    // Room for `n` more bytes of publishes under the output bound.
    bool has_room(std::size_t n) const { return out_.size() - out_pos_ + n <= options_.max_out_bytes; }
    // The payload in two pieces (a header and bytes), copied once; not
    // refused over the bound (parts of a message let in as a whole).
    bool publish2(std::string_view subject, std::string_view reply, std::string_view a, std::string_view b);
    // This turn's output goes when the turn ends, lingering or not.
    void send_this_turn() { urgent_ = true; }
    // A PING whose PONG is reported (on_wire_pong); false when not up.
    bool ping();
    // Writes what this turn produced (one send); before the reactor sleeps.
    void flush();
    // flush() unless all that waits is live messages younger than the
    // linger and fewer than linger_bytes: then the reactor wakes for them
    // by their deadline (Reactor::wake_by). Before the reactor sleeps.
    void flush_or_linger();
    // At shutdown: what is queued, blocking up to `ms`.
    void flush_blocking(int ms);

    void on_io(std::uint32_t events) override;

private:
    enum class State : std::uint8_t { idle, connecting, handshake, up };
    struct Url {
        std::string host;
        std::string port;
        std::string user;
        std::string pass;
    };
    void attempt();
    void connected_socket();
    void fail(const std::string& why);
    void close_socket();
    void schedule_reconnect();
    bool read_some();
    void handle(const nats::ServerMessage& m);
    void keepalive();
    void want_write(bool on);
    // SUB/UNSUB go out now: up, or CONNECT sent (the handshake sent the
    // subscriptions of that moment).
    bool sending() const { return state_ == State::up || (state_ == State::handshake && connect_sent_); }
    bool room() const { return out_.size() - out_pos_ <= options_.max_out_bytes; }
    // TLS (nats_tls.cpp): starts it after INFO (false: failed, fail() done);
    // sends ciphertext left over; says why a read or write failed; logs.
    bool start_tls(const nats::ServerInfo& info);
    void flush_tls_pending();
    std::string io_error(int err) const;
    void log_tls_up() const;

    net::Reactor& reactor_;
    Events& events_;
    Options options_;
    std::vector<Url> urls_;
    std::size_t url_index_ = 0;
    int attempts_ = 0;
    bool ever_up_ = false;
    State state_ = State::idle;
    bool connect_sent_ = false;
    net::UniqueFd fd_;
    std::unique_ptr<NatsTls> tls_;  // set from INFO to the socket's close
    bool writing_ = false;  // EPOLLOUT registered
    net::Reactor::TimerId retry_timer_{};
    net::Reactor::TimerId ping_timer_{};
    nats::ServerInfo info_;
    std::string unreachable_;
    std::string last_error_;

    std::string out_;
    std::size_t out_pos_ = 0;
    // out_ holds only lingering live messages, the first appended at
    // linger_since_ (a reactor turn's time).
    bool lingering_ = false;
    // The last joinable message in out_: its PUB line at joinable_at_ (npos:
    // none), subject joinable_subject_ bytes long, the size digits at
    // size_at_, the payload from payload_at_ to joinable_end_ - 2 (CRLF);
    // joined_: the size is padded to join_digits and the marker is in.
    std::size_t joinable_at_ = std::string::npos;
    std::size_t joinable_subject_ = 0;
    std::size_t size_at_ = 0;
    std::size_t payload_at_ = 0;
    std::size_t joinable_end_ = 0;
    bool joined_ = false;
    bool urgent_ = false;
    net::Clock::time_point linger_since_{};
    std::vector<char> in_;
    std::size_t in_begin_ = 0;
    std::size_t in_end_ = 0;
    // PINGs in flight: true = ping() (reported), false = keepalive.
    std::deque<bool> pings_;
    int keepalives_out_ = 0;
    struct Sub {
        std::string subject;
        std::string queue;
    };
    std::map<std::uint64_t, Sub> subs_;
};

}  // namespace mqttools::cluster
