// The only places where clients are authenticated and authorized, and
// where the security state (the AuthChain of password file, ACL file and
// external sources, TLS contexts, memory limit) is loaded and swapped on
// reload.
#include <spdlog/spdlog.h>

#include "broker/connect_pending.hpp"
#include "net/ws_transport.hpp"

namespace mqttools::broker {

namespace {
// memory_limit is checked against a fresh sample at most this often.
constexpr auto memory_sample_period = std::chrono::milliseconds(20);
}  // namespace

std::vector<std::string> Broker::reload_security(const config::Config& config) {
    std::vector<std::string> errors;
    if (!pending_connects_) pending_connects_ = std::make_unique<PendingConnects>(*this);
    reload_dynsec(config, errors);
    if (!auth_chain_) {
        // Until the configuration is read (and if it cannot be), nobody
        // gets in and nothing is allowed: fail closed.
        auth_chain_ = std::make_shared<const auth::AuthChain>();
    }
    try {
        // All or nothing: with any source in error the chain in force stays.
        auth_chain_ = auth::AuthChain::from_config(config, *pending_connects_, own_auth_sources_);
        // Sessions, connected or not, are judged by the new rules from now on.
        sessions_.for_each([this](Session& s) {
            if (!s.connection) return;
            Connection& c = *s.connection;
            forget_acl_waiter(s);
            s.acl = bound_acl(c.client_id, c.has_username ? std::optional<std::string_view>(c.username) : std::nullopt,
                              c.extras ? c.extras->credentials : nullptr, c.extras && c.extras->superuser);
        });
    } catch (const std::exception& e) {
        errors.emplace_back(e.what());
    }
    memory_.set_limit(config.memory_limit);
    reload_tls(config, errors);
    for (const auto& e : errors) spdlog::error("{}", e);
    return errors;
}

std::unique_ptr<auth::ClientAuthz> Broker::bound_acl(std::string_view client_id,
                                                     std::optional<std::string_view> username,
                                                     std::shared_ptr<const auth::ClientRules> credentials,
                                                     bool superuser) {
    auth::ClientIdentity who;
    who.client_id = client_id;
    who.username = username;
    who.waiter = next_waiter_++;
    return auth_chain_->bind(who, std::move(credentials), superuser);
}

// CONNECT: the credentials, then the will topic (a will the client may
// not publish is refused up front, as Mosquitto does).
std::optional<ReasonCode> Broker::authenticate(Connection& c, const ConnectPacket& connect,
                                               const auth::AuthResult* verified) {
    if (memory_exceeded()) return ReasonCode::quota_exceeded;
    Connection::Extras& x = c.more();
    if (c.identity_as_username && !x.verified) {
        // The verified certificate is the credential: its CN is the name,
        // whatever the client put in CONNECT (Mosquitto's
        // use_identity_as_username).
        net::Transport* t = &c.transport();
        if (auto* ws = dynamic_cast<net::WsTransport*>(t)) t = &ws->inner();  // wss
        auto* tls = dynamic_cast<net::TlsTransport*>(t);
        std::optional<std::string> cn = tls ? tls->session().peer_common_name() : std::nullopt;
        if (!cn) return ReasonCode::not_authorized;
        c.username = std::move(*cn);
        c.has_username = true;
        x.verified = true;
    } else if (!x.verified) {
        if (!verified) return ReasonCode::not_authorized;  // never asked: fail closed
        if (verified->verdict != auth::Verdict::allow) {
            const ReasonCode rc = is_error(verified->reason) ? verified->reason : ReasonCode::not_authorized;
            spdlog::info("Client {} ({}) refused by {}: {}.", c.client_id, c.peer(),
                         verified->source.empty() ? std::string_view("the anonymous rule") : verified->source,
                         verified->why.empty() ? std::string(reason_code_name(rc)) : verified->why);
            return rc;
        }
        x.credentials = verified->rules;
        x.superuser = verified->superuser;
        x.verified = true;
        if (verified->expires) expire_credentials_at(c, *verified->expires);
    }
    if (!x.authz && !x.superuser) {
        x.authz = bound_acl(c.client_id, c.has_username ? std::optional<std::string_view>(c.username) : std::nullopt,
                            x.credentials, false);
    }
    if (connect.will && x.authz) {
        switch (x.authz->check(connect.will->topic, auth::AclAccess::publish)) {
            case auth::Verdict::allow: break;
            case auth::Verdict::pending: return std::nullopt;
            default:
                spdlog::info("Client {} ({}) refused: its will topic '{}' is not allowed.", c.client_id, c.peer(),
                             connect.will->topic);
                return ReasonCode::not_authorized;
        }
    }
    return ReasonCode::success;
}

// Credentials with an end (a JWT's exp): the client is disconnected then,
// as EMQX does; MQTT 5 clients are told why (0xA0 Maximum connect time:
// the server limits how long this connection may last).
void Broker::expire_credentials_at(Connection& c, std::chrono::system_clock::time_point when) {
    const auto left = when - std::chrono::system_clock::now();
    const auto delay = std::max(std::chrono::duration_cast<Clock::duration>(left), Clock::duration::zero());
    Connection* conn = &c;
    c.more().expiry_timer = reactor_.add_timer_after(delay, [this, conn] {
        conn->extras->expiry_timer = {};
        if (conn->state == Connection::State::closing) return;
        spdlog::info("Client {} ({}): its credentials expired, disconnecting.", conn->client_id, conn->peer());
        close_connection(*conn, ReasonCode::maximum_connect_time, conn->state == Connection::State::connected);
    });
}

void Broker::bind_acl(Connection& c) {
    if (!c.session) return;
    forget_acl_waiter(*c.session);
    c.session->acl = c.extras ? std::move(c.extras->authz) : nullptr;
}

void Broker::forget_acl_waiter(Session& s) {
    if (s.acl && !acl_waiters_.empty()) acl_waiters_.erase(s.acl->waiter());
}

void Broker::hold_for_acl(Connection& c) {
    c.hold_packet();
    c.acl_held = true;
    if (c.session && c.session->acl) acl_waiters_[c.session->acl->waiter()] = AclWaiter{c.session, 0};
}

// An ACL answer is in: what waited for it goes on.
void Broker::on_acl_answered(std::uint64_t waiter) {
    auto it = acl_waiters_.find(waiter);
    if (it == acl_waiters_.end()) return;
    const AclWaiter w = it->second;
    acl_waiters_.erase(it);
    if (w.connect_ticket != 0) {
        auto e = pending_connects_->entries.find(w.connect_ticket);
        if (e == pending_connects_->entries.end()) return;
        e->second.done = true;
        const std::string client_id = e->second.client_id;
        finish_pending_connects(client_id);
        return;
    }
    if (w.session && w.session->read_held) release_held_deliveries(*w.session);
    Connection* c = w.session ? w.session->connection : nullptr;
    if (c && c->acl_held) {
        c->acl_held = false;
        c->resume_reading();  // the held packet is handled again first
    }
}

// PUBLISH from a client. deny: PUBACK/PUBREC 0x87, QoS 0 dropped.
auth::Verdict Broker::authorize_publish(Connection& c, std::string_view topic) {
    if (!c.session || !c.session->acl) return auth::Verdict::allow;
    const auth::Verdict v = c.session->acl->check(topic, auth::AclAccess::publish);
    // Mosquitto logs these at debug level too ("Denied PUBLISH from ...").
    if (v == auth::Verdict::deny) [[unlikely]] {
        spdlog::debug("Denied PUBLISH from {} to '{}': refused by the ACL check.", c.client_id, topic);
    }
    return v;
}

// One filter of a SUBSCRIBE. deny: SUBACK 0x87 for that filter.
auth::Verdict Broker::authorize_subscribe(Connection& c, std::string_view filter) {
    if (!c.session || !c.session->acl) return auth::Verdict::allow;
    const auth::Verdict v = c.session->acl->check(filter, auth::AclAccess::subscribe);
    if (v == auth::Verdict::deny) [[unlikely]] {
        spdlog::debug("Denied SUBSCRIBE from {} to '{}': refused by the ACL check.", c.client_id, filter);
    }
    return v;
}

// One filter of an UNSUBSCRIBE (dynamic security's unsubscribeLiteral and
// unsubscribePattern). deny: UNSUBACK 0x87 for that filter, the
// subscription stays (Mosquitto's handle__unsubscribe).
auth::Verdict Broker::authorize_unsubscribe(Connection& c, std::string_view filter) {
    if (!c.session || !c.session->acl) return auth::Verdict::allow;
    return c.session->acl->check(filter, auth::AclAccess::unsubscribe);
}

// A message about to be delivered to a session (live or retained). deny:
// not delivered; pending: held (behind any delivery already held: in order).
auth::Verdict Broker::authorize_delivery(Session& s, std::string_view topic) {
    if (!s.acl) return auth::Verdict::allow;
    if (s.read_held) [[unlikely]] return auth::Verdict::pending;
    return s.acl->check(topic, auth::AclAccess::read);
}

void Broker::hold_delivery(Session& s, MessagePtr message, QoS qos, bool retain, std::span<const std::uint32_t> ids) {
    if (!s.read_held) {
        s.read_held = std::make_unique<std::deque<OutboundMessage>>();
        acl_waiters_[s.acl->waiter()] = AclWaiter{&s, 0};
    }
    OutboundMessage out;
    out.message = std::move(message);
    out.qos = qos;
    out.retain = retain;
    out.subscription_ids.assign(ids.begin(), ids.end());
    s.read_held->push_back(std::move(out));
}

void Broker::release_held_deliveries(Session& s) {
    std::deque<OutboundMessage>& held = *s.read_held;
    while (!held.empty()) {
        const auth::Verdict v =
            s.acl ? s.acl->check(held.front().message->topic, auth::AclAccess::read) : auth::Verdict::allow;
        if (v == auth::Verdict::pending) {
            acl_waiters_[s.acl->waiter()] = AclWaiter{&s, 0};
            return;
        }
        OutboundMessage out = std::move(held.front());
        held.pop_front();
        if (v != auth::Verdict::allow) continue;
        if (out.qos != QoS::at_most_once) {
            enqueue(s, std::move(out));
            continue;
        }
        Connection* c = s.connection;
        if (!c || c->state != Connection::State::connected) continue;  // QoS 0 is not queued for absent clients
        MessageView view = view_of(out.message, reactor_.now());
        forms_.clear();
        ids_.assign(out.subscription_ids.begin(), out.subscription_ids.end());
        deliver_qos0(*c, view, out.retain, std::span<const std::uint32_t>(ids_.data(), ids_.size()));
    }
    s.read_held.reset();
}

bool Broker::memory_exceeded() {
    if (memory_.limit() == 0) return false;
    const auto now = reactor_.now();
    if (now - memory_sampled_ >= memory_sample_period) {
        memory_.sample();
        memory_sampled_ = now;
    }
    return memory_.exceeded();
}

}  // namespace mqttools::broker
