// TLS contexts and the reactor-style session wrapper, end to end over a
// non-blocking socketpair with certificates made by `openssl` at test time.
#include <fcntl.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <vector>

#include "config/config.hpp"
#include "net/tls.hpp"
#include "net/unique_fd.hpp"
#include "test_support.hpp"

using namespace mqttools;
using namespace mqttools::net;

namespace {

// A CA, a server certificate for localhost/127.0.0.1, a client certificate
// (CN alice) from the CA, and a client certificate from an unrelated CA.
class Certs {
public:
    Certs() {
        REQUIRE(auth_test::have("openssl"));
        const std::string d = dir_.file("");
        auth_test::write_file(dir_.file("server.ext"),
                              "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                              "basicConstraints=CA:FALSE\n");
        auth_test::write_file(dir_.file("client.ext"), "basicConstraints=CA:FALSE\n");
        const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
        const auto sh = [&](const std::string& cmd) {
            INFO(cmd);
            REQUIRE(auth_test::run("cd " + d + " && " + cmd) == 0);
        };
        sh("openssl req -x509" + ec + "-keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca");
        sh("openssl req -x509" + ec + "-keyout rogue.key -out rogue.crt -days 2 -subj /CN=rogue");
        sh("openssl req" + ec + "-keyout server.key -out server.csr -subj /CN=localhost");
        sh("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
           "-out server.crt -days 2 -extfile server.ext");
        sh("openssl req" + ec + "-keyout client.key -out client.csr -subj /CN=alice");
        sh("openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
           "-out client.crt -days 2 -extfile client.ext");
        sh("openssl req" + ec + "-keyout evil.key -out evil.csr -subj /CN=alice");
        sh("openssl x509 -req -in evil.csr -CA rogue.crt -CAkey rogue.key -CAcreateserial "
           "-out evil.crt -days 2 -extfile client.ext");
    }
    std::string operator()(const std::string& name) const { return dir_.file(name); }

private:
    auth_test::TempDir dir_;
};

const Certs& certs() {
    static const Certs c;  // generating keys is the slow part: once per run
    return c;
}

// One end of the socketpair: its fd, its session, what it received.
struct End {
    int fd;
    TlsSession tls;
    std::string received;
    std::string unsent;  // ciphertext the socket did not take yet
    TlsStatus last = TlsStatus::ok;

    End(int f, std::shared_ptr<const TlsContext> ctx, std::string_view sni = {})
        : fd(f), tls(std::move(ctx), sni) {}

    // What the reactor does on every wakeup: flush, read, decrypt.
    void pump() {
        char buf[16384];
        while (tls.pending_output() > 0) {
            const auto n = tls.take_output(MutableBytes(reinterpret_cast<std::byte*>(buf), sizeof buf));
            unsent.append(buf, n);
        }
        while (!unsent.empty()) {
            const ssize_t n = ::write(fd, unsent.data(), unsent.size());
            if (n <= 0) break;  // EAGAIN: keep it for the next round
            unsent.erase(0, static_cast<std::size_t>(n));
        }
        while (true) {
            const ssize_t n = ::read(fd, buf, sizeof buf);
            if (n <= 0) break;
            tls.feed(Bytes(reinterpret_cast<const std::byte*>(buf), static_cast<std::size_t>(n)));
        }
        while (true) {
            const auto io = tls.read_plain(MutableBytes(reinterpret_cast<std::byte*>(buf), sizeof buf));
            received.append(buf, io.bytes);
            if (io.status != TlsStatus::ok || io.bytes == 0) {
                last = io.status;
                break;
            }
        }
        if (last == TlsStatus::want_read && !tls.handshake_done()) last = tls.handshake();
    }
};

struct Pair {
    int fds[2];
    std::unique_ptr<End> client, server;
    Pair(std::shared_ptr<const TlsContext> client_ctx, std::shared_ptr<const TlsContext> server_ctx,
         std::string_view sni = "localhost") {
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
        for (int fd : fds) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        client = std::make_unique<End>(fds[0], std::move(client_ctx), sni);
        server = std::make_unique<End>(fds[1], std::move(server_ctx));
    }
    ~Pair() {
        ::close(fds[0]);
        ::close(fds[1]);
    }
    // Pumps both ends until `done` or an error or 5 s.
    template <class Done>
    bool run(Done done) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (std::chrono::steady_clock::now() < deadline) {
            client->pump();
            server->pump();
            if (done()) return true;
            if (client->last == TlsStatus::error || server->last == TlsStatus::error) return false;
            pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
            ::poll(p, 2, 10);
        }
        return false;
    }
    bool handshake() {
        // The client starts: its first handshake() call writes ClientHello.
        (void)client->tls.handshake();
        return run([&] { return client->tls.handshake_done() && server->tls.handshake_done(); });
    }
};

std::shared_ptr<const TlsContext> server_ctx(bool require_cert = false) {
    return TlsContext::make_server(
        TlsServerSettings{certs()("server.crt"), certs()("server.key"), certs()("ca.crt"), require_cert});
}

}  // namespace

TEST_CASE("TLS handshake and data both ways over a non-blocking socketpair", "[tls]") {
    Pair p(TlsContext::make_client({certs()("ca.crt"), "", "", true}), server_ctx());
    REQUIRE(p.handshake());
    CHECK(p.client->tls.version() == "TLSv1.3");
    CHECK_FALSE(p.server->tls.peer_common_name());  // no client certificate asked for

    // Before the handshake nothing could be written; now all of it is taken.
    std::string big(1 << 20, '\0');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 251);
    const auto w = p.client->tls.write_plain(as_bytes(big));
    CHECK(w.status == TlsStatus::ok);
    CHECK(w.bytes == big.size());
    CHECK(p.server->tls.write_plain(as_bytes("pong")).bytes == 4);
    REQUIRE(p.run([&] { return p.server->received.size() == big.size() && p.client->received == "pong"; }));
    CHECK(p.server->received == big);

    // close_notify reaches the other side as `closed`.
    p.client->tls.shutdown();
    REQUIRE(p.run([&] { return p.server->last == TlsStatus::closed; }));
}

TEST_CASE("write before the handshake waits and reports want_read", "[tls]") {
    Pair p(TlsContext::make_client({certs()("ca.crt"), "", "", true}), server_ctx());
    const auto w = p.client->tls.write_plain(as_bytes("early"));
    CHECK(w.status == TlsStatus::want_read);
    CHECK(w.bytes == 0);
    CHECK(p.client->tls.pending_output() > 0);  // the ClientHello
    REQUIRE(p.handshake());
    CHECK(p.client->tls.write_plain(as_bytes("early")).bytes == 5);
    REQUIRE(p.run([&] { return p.server->received == "early"; }));
}

TEST_CASE("the client refuses a server its CA did not sign or a wrong name", "[tls]") {
    SECTION("unknown CA") {
        Pair p(TlsContext::make_client({certs()("rogue.crt"), "", "", true}), server_ctx());
        CHECK_FALSE(p.handshake());
        CHECK(p.client->last == TlsStatus::error);
        CHECK_THAT(p.client->tls.last_error(), Catch::Contains("certificate verify failed"));
    }
    SECTION("host name mismatch") {
        Pair p(TlsContext::make_client({certs()("ca.crt"), "", "", true}), server_ctx(), "example.com");
        CHECK_FALSE(p.handshake());
        CHECK(p.client->last == TlsStatus::error);
    }
    SECTION("--insecure skips the check") {
        Pair p(TlsContext::make_client({"", "", "", false}), server_ctx(), "example.com");
        CHECK(p.handshake());
    }
}

TEST_CASE("require_certificate: only clients with a certificate from cafile", "[tls]") {
    SECTION("valid client certificate: its CN is the identity") {
        Pair p(TlsContext::make_client({certs()("ca.crt"), certs()("client.crt"), certs()("client.key"), true}),
               server_ctx(true));
        REQUIRE(p.handshake());
        // TLS 1.3 sends the client's Finished after the server believes the
        // handshake is done; one round of data settles verification.
        CHECK(p.client->tls.write_plain(as_bytes("x")).bytes == 1);
        REQUIRE(p.run([&] { return p.server->received == "x"; }));
        CHECK(p.server->tls.peer_common_name() == std::optional<std::string>("alice"));
    }
    SECTION("no client certificate") {
        Pair p(TlsContext::make_client({certs()("ca.crt"), "", "", true}), server_ctx(true));
        (void)p.client->tls.handshake();
        (void)p.client->tls.write_plain(as_bytes("x"));
        CHECK_FALSE(p.run([&] { return p.server->received == "x"; }));
        CHECK(p.server->last == TlsStatus::error);
        CHECK(p.server->received.empty());
    }
    SECTION("certificate from another CA") {
        Pair p(TlsContext::make_client({certs()("ca.crt"), certs()("evil.crt"), certs()("evil.key"), true}),
               server_ctx(true));
        (void)p.client->tls.handshake();
        (void)p.client->tls.write_plain(as_bytes("x"));
        CHECK_FALSE(p.run([&] { return p.server->received == "x"; }));
        CHECK(p.server->last == TlsStatus::error);
        CHECK_FALSE(p.server->tls.peer_common_name());
    }
}

TEST_CASE("TLS 1.1 and older are refused", "[tls]") {
    auto client = TlsContext::make_client({certs()("ca.crt"), "", "", true});
    SSL_CTX_set_min_proto_version(client->native(), TLS1_VERSION);
    SSL_CTX_set_max_proto_version(client->native(), TLS1_1_VERSION);
    Pair p(client, server_ctx());
    CHECK_FALSE(p.handshake());
    CHECK((p.client->last == TlsStatus::error || p.server->last == TlsStatus::error));
}

TEST_CASE("a fresh context serves new sessions while old ones keep theirs", "[tls]") {
    auto first = server_ctx();
    Pair old_conn(TlsContext::make_client({certs()("ca.crt"), "", "", true}), first);
    REQUIRE(old_conn.handshake());
    auto second = server_ctx();  // what SIGHUP does
    first.reset();               // the listener drops its reference
    Pair new_conn(TlsContext::make_client({certs()("ca.crt"), "", "", true}), second);
    REQUIRE(new_conn.handshake());
    CHECK(old_conn.client->tls.write_plain(as_bytes("still here")).bytes == 10);
    REQUIRE(old_conn.run([&] { return old_conn.server->received == "still here"; }));
}

TEST_CASE("bad TLS settings are reported, not crashed on", "[tls]") {
    CHECK_THROWS_WITH(TlsContext::make_server(TlsServerSettings{"/nonexistent.crt", certs()("server.key"), "", false}),
                      Catch::Contains("/nonexistent.crt"));
    CHECK_THROWS_WITH(TlsContext::make_server(TlsServerSettings{certs()("server.crt"), certs()("client.key"), "", false}),
                      Catch::Contains("client.key"));
    CHECK_THROWS(TlsContext::make_server(TlsServerSettings{certs()("server.crt"), certs()("server.key"), "", true}));
    CHECK_THROWS(TlsContext::make_server(TlsServerSettings{certs()("server.crt"), certs()("server.key"), "/nonexistent-ca", false}));
    config::Listener l;
    l.certfile = certs()("server.crt");
    l.keyfile = certs()("server.key");
    CHECK(TlsContext::make_server(l)->is_server());
}

TEST_CASE("garbage instead of a ClientHello is an error", "[tls]") {
    TlsSession s(server_ctx());
    const std::string junk = "MQTT\x10\x20 this is not TLS at all..................";
    s.feed(as_bytes(junk));
    std::byte buf[64];
    const auto io = s.read_plain(buf);
    CHECK(io.status == TlsStatus::error);
    CHECK_FALSE(s.last_error().empty());
    CHECK(s.write_plain(as_bytes("x")).status == TlsStatus::error);
}

namespace {

// What the broker's Connection does: on each readiness event, up to four
// reads of 64 KiB, stopping early when a read comes back short.
std::size_t connection_style_read(Transport& t, std::string& into, bool& closed) {
    std::vector<std::byte> buf(64 * 1024);
    std::size_t got = 0;
    for (int i = 0; i < 4; ++i) {
        const auto r = t.read(buf);
        if (r.status == IoStatus::closed || r.status == IoStatus::error) {
            closed = true;
            return got;
        }
        if (r.status == IoStatus::would_block) return got;
        into.append(reinterpret_cast<const char*>(buf.data()), r.bytes);
        got += r.bytes;
        if (r.bytes < buf.size()) return got;
    }
    return got;
}

// Writes all of `data` through the transport, polling when it is full,
// while the other side is pumped by `pump`.
template <class Pump>
bool write_all(Transport& t, std::string_view data, Pump pump) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::size_t done = 0;
    while ((done < data.size() || t.has_pending()) && std::chrono::steady_clock::now() < deadline) {
        if (t.has_pending() && t.flush().status == IoStatus::error) return false;
        if (done < data.size()) {
            iovec iov{const_cast<char*>(data.data() + done), data.size() - done};
            const auto r = t.write(&iov, 1);
            if (r.status == IoStatus::error) return false;
            done += r.bytes;
        }
        pump();
    }
    return done == data.size();
}

}  // namespace

TEST_CASE("TlsTransport: a burst is read completely by a level-triggered reader", "[tls]") {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    for (int fd : fds) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    TlsTransport server{UniqueFd{fds[1]}, server_ctx()};
    TlsTransport client{UniqueFd{fds[0]}, TlsContext::make_client({certs()("ca.crt"), "", "", true})};

    std::string at_server, at_client;
    bool server_closed = false, client_closed = false;
    // Level-triggered: read whenever poll says readable, like epoll does.
    const auto pump = [&] {
        pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        ::poll(p, 2, 5);
        if (p[1].revents & POLLIN) connection_style_read(server, at_server, server_closed);
        if (p[0].revents & POLLIN) connection_style_read(client, at_client, client_closed);
        if (server.has_pending()) (void)server.flush();
        if (client.has_pending()) (void)client.flush();
    };
    // The client's first read sends the ClientHello.
    (void)connection_style_read(client, at_client, client_closed);

    std::string burst(700 * 1024, '\0');
    for (std::size_t i = 0; i < burst.size(); ++i) burst[i] = static_cast<char>(i % 251);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!client.session().handshake_done() && std::chrono::steady_clock::now() < deadline) pump();
    REQUIRE(client.session().handshake_done());
    REQUIRE(write_all(client, burst, pump));
    // The client is silent now: everything must still arrive.
    while (at_server.size() < burst.size() && std::chrono::steady_clock::now() < deadline) pump();
    CHECK(at_server.size() == burst.size());
    CHECK(at_server == burst);
    CHECK_FALSE(server_closed);

    // And back, larger than the ciphertext the transport will hold.
    const std::string reply(300 * 1024, 'r');
    REQUIRE(write_all(server, reply, pump));
    while (at_client.size() < reply.size() && std::chrono::steady_clock::now() < deadline) pump();
    CHECK(at_client == reply);

    // close_notify: the server sees `closed`.
    client.session().shutdown();
    (void)client.flush();
    while (!server_closed && std::chrono::steady_clock::now() < deadline) pump();
    CHECK(server_closed);
}
