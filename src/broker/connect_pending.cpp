// CONNECTs whose credentials wait for an answer off the reactor: a
// password hash on the AuthPool, an HTTP auth service, or the ACL answer
// about the will. The connection waits in State::connect_pending with
// reading paused; the answer comes back on the reactor and the CONNECT
// continues in accept_connect exactly as if it had been checked in place.
// Answers are applied in the order the CONNECTs arrived per client id, so
// when two clients with the same id connect, the later one takes the
// session over ([MQTT-3.1.4-3]) whichever answer came first.
#include "broker/connect_pending.hpp"

#include <sys/epoll.h>

#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

namespace mqttools::broker {

Broker::PendingConnects::Entry::~Entry() {
    if (!body.empty()) OPENSSL_cleanse(body.data(), body.size());
}

Broker::PendingConnects::PendingConnects(Broker& b) : broker(b) {}

Broker::PendingConnects::~PendingConnects() {
    if (pool) broker.reactor_.remove(pool->event_fd());
}

void Broker::PendingConnects::run_blocking(std::uint64_t ticket, std::function<ReasonCode()> work,
                                           std::function<auth::AuthResult(ReasonCode)> finish) {
    if (!pool) {
        try {
            auto made = std::make_unique<auth::AuthPool>(auth::AuthPool::default_threads());
            if (!broker.reactor_.add(made->event_fd(), EPOLLIN, this)) {
                throw std::system_error(errno, std::generic_category(), "epoll_ctl(auth eventfd)");
            }
            pool = std::move(made);
            spdlog::info("Password checks run on {} worker thread(s).", pool->threads());
        } catch (const std::exception& e) {
            // No threads to be had: refuse rather than hash on the reactor
            // (answered on the next turn: a source's call never answers itself).
            spdlog::error("Cannot start the password check threads: {}", e.what());
            broker.reactor_.add_timer_after(Clock::duration::zero(), [this, ticket] {
                connect_answered(ticket, auth::AuthResult::deny(ReasonCode::server_unavailable, "no worker threads"));
            });
            return;
        }
    }
    finishers.emplace(ticket, std::move(finish));
    auth::AuthPool::Job job;
    job.ticket = ticket;
    job.work = std::move(work);
    pool->submit(std::move(job));
}

namespace {

auth::ConnectInfo connect_info(const Connection& c, const ConnectPacket& p, std::string_view client_id,
                               std::uint64_t ticket) {
    auth::ConnectInfo info;
    info.client_id = client_id;
    info.username = p.username;
    if (p.password) info.password = as_string(*p.password);
    info.ticket = ticket;
    (void)c;
    return info;
}

}  // namespace

void Broker::start_authentication(Connection& c, const ConnectPacket& p, const FixedHeader& header, Bytes body,
                                  bool assigned) {
    PendingConnects& pc = *pending_connects_;
    const std::uint64_t ticket = pc.next_ticket++;
    std::shared_ptr<const auth::AuthChain> chain = auth_chain_;
    std::size_t at = 0;
    auth::AuthResult result = chain->authenticate(connect_info(c, p, c.client_id, ticket), 0, at);
    // An earlier CONNECT with this client id still waits: this one waits
    // behind it even when answered at once.
    const bool behind = pc.order.contains(c.client_id);
    if (result.verdict != auth::Verdict::pending && !behind) {
        accept_connect(c, p, assigned, &result, header, body);
        return;
    }
    PendingConnects::Entry entry;
    entry.connection = &c;
    entry.client_id = c.client_id;
    entry.header = header;
    entry.body.assign(body.begin(), body.end());
    entry.assigned = assigned;
    entry.done = result.verdict != auth::Verdict::pending;
    entry.result = std::move(result);
    entry.chain = std::move(chain);
    entry.at = at;
    pc.entries.emplace(ticket, std::move(entry));
    pc.order[c.client_id].push_back(ticket);
    c.more().connect_ticket = ticket;
    c.state = Connection::State::connect_pending;
    c.pause_reading();
}

void Broker::wait_for_will_check(Connection& c, const auth::AuthResult& verified, const FixedHeader& header,
                                 Bytes body, bool assigned, std::uint64_t waiter) {
    PendingConnects& pc = *pending_connects_;
    const std::uint64_t ticket = pc.next_ticket++;
    PendingConnects::Entry entry;
    entry.connection = &c;
    entry.client_id = c.client_id;
    entry.header = header;
    entry.body.assign(body.begin(), body.end());
    entry.assigned = assigned;
    entry.result = verified;
    entry.chain = auth_chain_;
    pc.entries.emplace(ticket, std::move(entry));
    // First in its client id's order: it arrived before any still waiting.
    pc.order[c.client_id].push_front(ticket);
    acl_waiters_[waiter] = AclWaiter{nullptr, ticket};
    c.more().connect_ticket = ticket;
    c.state = Connection::State::connect_pending;
    c.pause_reading();
}

void Broker::on_auth_results() {
    PendingConnects& pc = *pending_connects_;
    if (!pc.pool) return;
    pc.results.clear();
    pc.pool->take_results(pc.results);
    for (const auto& r : pc.results) {
        auto f = pc.finishers.find(r.ticket);
        if (f == pc.finishers.end()) continue;
        auto finish = std::move(f->second);
        pc.finishers.erase(f);
        on_connect_answered(r.ticket, finish(r.reason));
    }
}

void Broker::on_connect_answered(std::uint64_t ticket, auth::AuthResult result) {
    PendingConnects& pc = *pending_connects_;
    auto it = pc.entries.find(ticket);
    if (it == pc.entries.end()) return;  // already dropped
    PendingConnects::Entry& e = it->second;
    // The log line of a refusal names the source that answered (late).
    if (result.verdict != auth::Verdict::unknown && result.source.empty() && e.chain &&
        e.at < e.chain->sources().size()) {
        result.source = e.chain->sources()[e.at]->name();
    }
    if (result.verdict == auth::Verdict::unknown && e.connection) {
        // Not that source's user: ask the next ones.
        auto decoded = decode_connect(e.header, Bytes(e.body.data(), e.body.size()));
        if (decoded) {
            std::size_t at = e.at;
            result = e.chain->authenticate(connect_info(*e.connection, *decoded, e.client_id, ticket), e.at + 1, at);
            if (result.verdict == auth::Verdict::pending) {
                e.at = at;
                return;
            }
        }
    }
    e.done = true;
    e.result = std::move(result);
    const std::string client_id = e.client_id;  // finishing erases the entry
    finish_pending_connects(client_id);
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
        if (it != pc.entries.end() && !it->second.done) return;  // an earlier CONNECT still waits
        q->second.pop_front();
        if (q->second.empty()) pc.order.erase(q);
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
        accept_connect(*c, *decoded, entry.assigned, &entry.result, entry.header,
                       Bytes(entry.body.data(), entry.body.size()));
        // Accepted: what the client sent behind its CONNECT is processed now
        // (a CONNECT parked for a session from another node, or waiting for
        // its will's ACL answer, stays paused).
        if (c->state == Connection::State::connected) c->resume_reading();
    }
}

void Broker::abandon_pending_connect(Connection& c) {
    if (!pending_connects_ || !c.extras) return;
    auto it = pending_connects_->entries.find(c.extras->connect_ticket);
    c.extras->connect_ticket = 0;
    if (it == pending_connects_->entries.end()) return;
    // The entry stays in its client id's order until its answer is in, so a
    // later CONNECT with that id still waits behind it; it is skipped then.
    // (A CONNECT waiting for its will's ACL answer is finished by that
    // answer: sources always answer, if only with a timeout.)
    it->second.connection = nullptr;
}

}  // namespace mqttools::broker
