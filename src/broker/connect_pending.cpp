// CONNECTs whose credentials are checked on the AuthPool. The connection
// waits in State::connect_pending with reading paused; the pool's answer
// comes back through an eventfd and the CONNECT continues in
// accept_connect exactly as if it had been checked in place. Answers are
// applied in the order the CONNECTs arrived per client id, so when two
// clients with the same id connect, the later one takes the session over
// ([MQTT-3.1.4-3]) whichever hash finished first.
#include "broker/connect_pending.hpp"

#include <sys/epoll.h>

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

namespace mqttools::broker {

Broker::PendingConnects::Entry::~Entry() {
    if (!body.empty()) OPENSSL_cleanse(body.data(), body.size());
}

Broker::PendingConnects::PendingConnects(Broker& b, unsigned threads) : broker(b), pool(threads) {
    if (!broker.reactor_.add(pool.event_fd(), EPOLLIN, this)) {
        throw std::system_error(errno, std::generic_category(), "epoll_ctl(auth eventfd)");
    }
}

Broker::PendingConnects::~PendingConnects() { broker.reactor_.remove(pool.event_fd()); }

void Broker::start_pending_connect(Connection& c, const FixedHeader& header, Bytes body) {
    if (!pending_connects_) {
        try {
            pending_connects_ = std::make_unique<PendingConnects>(*this, auth::AuthPool::default_threads());
            spdlog::info("Password checks run on {} worker thread(s).", pending_connects_->pool.threads());
        } catch (const std::exception& e) {
            // No threads to be had: refuse rather than hash on the reactor.
            spdlog::error("Cannot start the password check threads: {}", e.what());
            refuse_connect(c, c.version, ReasonCode::server_unavailable);
            return;
        }
    }
    PendingConnects& pc = *pending_connects_;
    const std::uint64_t ticket = pc.next_ticket++;

    PendingConnects::Entry entry;
    entry.connection = &c;
    entry.client_id = c.client_id;
    entry.header = header;
    entry.body.assign(body.begin(), body.end());
    // decode_connect succeeded on these bytes; the client id it gave is the
    // one the client sent, empty when the broker assigned one.
    entry.assigned = false;
    auto decoded = decode_connect(header, Bytes(entry.body.data(), entry.body.size()));
    if (decoded) entry.assigned = decoded->client_id.empty();

    auth::AuthPool::Job job;
    job.ticket = ticket;
    job.authenticator = authenticator_;
    if (decoded) {
        if (decoded->username) job.username.emplace(*decoded->username);
        if (decoded->password) job.password.emplace(as_string(*decoded->password));
    }
    pc.entries.emplace(ticket, std::move(entry));
    pc.order[c.client_id].push_back(ticket);
    c.more().connect_ticket = ticket;
    c.state = Connection::State::connect_pending;
    c.pause_reading();
    pc.pool.submit(std::move(job));
}

void Broker::on_auth_results() {
    if (!pending_connects_) return;
    PendingConnects& pc = *pending_connects_;
    pc.results.clear();
    pc.pool.take_results(pc.results);
    for (const auto& r : pc.results) {
        auto it = pc.entries.find(r.ticket);
        if (it == pc.entries.end()) continue;  // already dropped
        it->second.done = true;
        it->second.reason = r.reason;
        // Copy: finishing erases the entry.
        const std::string client_id = it->second.client_id;
        finish_pending_connects(client_id);
    }
}

void Broker::finish_pending_connects(const std::string& client_id) {
    PendingConnects& pc = *pending_connects_;
    for (;;) {
        auto q = pc.order.find(client_id);
        if (q == pc.order.end()) return;
        if (q->second.empty()) {
            pc.order.erase(q);
            return;
        }
        auto it = pc.entries.find(q->second.front());
        if (it != pc.entries.end() && !it->second.done) return;  // an earlier CONNECT still hashes
        q->second.pop_front();
        if (it == pc.entries.end()) continue;
        PendingConnects::Entry entry = std::move(it->second);
        pc.entries.erase(it);
        Connection* c = entry.connection;
        if (c == nullptr || c->state != Connection::State::connect_pending) continue;
        c->more().connect_ticket = 0;
        c->state = Connection::State::awaiting_connect;
        auto decoded = decode_connect(entry.header, Bytes(entry.body.data(), entry.body.size()));
        if (!decoded) {  // cannot happen: these bytes decoded before
            close_connection(*c, decoded.error(), false);
            continue;
        }
        accept_connect(*c, *decoded, entry.assigned, &entry.reason, entry.header,
                       Bytes(entry.body.data(), entry.body.size()));
        // Accepted: what the client sent behind its CONNECT is processed now
        // (a CONNECT parked for a session from another node stays paused).
        if (c->state == Connection::State::connected) c->resume_reading();
    }
}

void Broker::abandon_pending_connect(Connection& c) {
    if (!pending_connects_ || !c.extras) return;
    auto it = pending_connects_->entries.find(c.extras->connect_ticket);
    c.extras->connect_ticket = 0;
    if (it == pending_connects_->entries.end()) return;
    // The entry stays in its client id's order until its hash is done, so a
    // later CONNECT with that id still waits behind it; it is skipped then.
    it->second.connection = nullptr;
}

}  // namespace mqttools::broker
