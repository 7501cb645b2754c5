// The only places where clients are authenticated and authorized, and
// where the security state (password file, ACL, TLS contexts, memory
// limit) is loaded and swapped on reload.
#include <spdlog/spdlog.h>

#include "broker/broker.hpp"
#include "net/ws_transport.hpp"

namespace mqttools::broker {

namespace {
// memory_limit is checked against a fresh sample at most this often.
constexpr auto memory_sample_period = std::chrono::milliseconds(20);
}  // namespace

std::vector<std::string> Broker::reload_security(const config::Config& config) {
    std::vector<std::string> errors;
    const bool first = authenticator_ == nullptr;
    if (first) {
        // Until the files are read (and if they cannot be), nobody gets in
        // and nothing is allowed: fail closed.
        authenticator_ = std::make_shared<const auth::Authenticator>(false, auth::PasswordFile{});
        if (!config.acl_file.empty()) acl_ = auth::AclChecker::parse("");
    }
    try {
        authenticator_ = auth::Authenticator::from_config(config);
    } catch (const std::exception& e) {
        errors.emplace_back(e.what());
    }
    try {
        acl_ = config.acl_file.empty() ? auth::AclChecker{} : auth::AclChecker::load(config.acl_file);
        // Sessions, connected or not, read under the new rules from now on.
        sessions_.for_each([this](Session& s) {
            if (s.connection) {
                s.acl = bound_acl(*s.connection);
            }
        });
    } catch (const std::exception& e) {
        errors.emplace_back(e.what());
    }
    memory_.set_limit(config.memory_limit);
    reload_tls(config, errors);
    for (const auto& e : errors) spdlog::error("{}", e);
    return errors;
}

// CONNECT: the credentials, then the will topic (a will the client may
// not publish is refused up front, as Mosquitto does).
bool Broker::credentials_need_hashing(const Connection& c, const ConnectPacket& connect) const {
    return !c.identity_as_username && authenticator_->needs_hashing(connect.username);
}

ReasonCode Broker::authenticate(Connection& c, const ConnectPacket& connect, const ReasonCode* verified) {
    if (memory_exceeded()) return ReasonCode::quota_exceeded;
    std::optional<std::string_view> username = connect.username;
    ReasonCode rc = ReasonCode::success;
    if (c.identity_as_username) {
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
        username = c.username;
    } else {
        // `verified`: the AuthPool's answer for these credentials.
        rc = verified ? *verified : authenticator_->check(connect.username, connect.password);
        if (is_error(rc)) return rc;
    }
    if (connect.will && acl_.enabled() && !acl_.bind(c.client_id, username).can_publish(connect.will->topic)) {
        return ReasonCode::not_authorized;
    }
    return rc;
}

// Null without an acl_file: an unrestricted session carries no rules.
std::unique_ptr<auth::ClientAcl> Broker::bound_acl(const Connection& c) const {
    if (!acl_.enabled()) return nullptr;
    return std::make_unique<auth::ClientAcl>(
        acl_.bind(c.client_id, c.has_username ? std::optional<std::string_view>(c.username) : std::nullopt));
}

void Broker::bind_acl(Connection& c) {
    if (c.session) c.session->acl = bound_acl(c);
}

// PUBLISH from a client. False: PUBACK/PUBREC 0x87, QoS 0 dropped.
bool Broker::authorize_publish(Connection& c, std::string_view topic) {
    return !c.session || !c.session->acl || c.session->acl->can_publish(topic);
}

// One filter of a SUBSCRIBE. False: SUBACK 0x87 for that filter.
bool Broker::authorize_subscribe(Connection& c, std::string_view filter) {
    return !c.session || !c.session->acl || c.session->acl->can_subscribe(filter);
}

// A message about to be delivered to a session (live or retained). False: not delivered.
bool Broker::authorize_delivery(Session& s, std::string_view topic) {
    return !s.acl || s.acl->can_read(topic);
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
