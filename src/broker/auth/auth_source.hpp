// The one interface the broker asks about clients: an AuthSource knows
// some users (password_file, dynamic security, a JWT issuer, an HTTP auth
// service) and/or some access rules (acl_file, dynamic security roles, a
// JWT's ACL claim, the HTTP service's aclcheck_uri). The broker never asks
// a source directly: it asks the AuthChain (auth_chain.hpp), which asks the
// configured sources in a fixed order (docs/authentication.md, "Order").
//
// Every answer is allow, deny or unknown ("not mine: ask the next source"),
// or pending: the source answers later, always on the reactor thread,
// through the AuthHost it was made with. A source must never block the
// reactor: slow work (a password hash) goes to AuthHost::run_blocking, I/O
// (HTTP) is driven by the reactor's epoll.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mqttools/reason_code.hpp"

namespace mqttools::net {
class Reactor;
}

namespace mqttools::auth {

enum class Verdict : std::uint8_t { unknown, allow, deny, pending };

// What an ACL check is about; the values are mosquitto-go-auth's `acc`.
enum class AclAccess : std::uint8_t {
    read = 1,       // a message is delivered to the client (also retained)
    publish = 2,    // the client publishes (also its will)
    subscribe = 4,  // one filter of a SUBSCRIBE
    // One filter of an UNSUBSCRIBE (not in go-auth: only dynamic security's
    // unsubscribeLiteral/unsubscribePattern answer it; when every source
    // says unknown it is allowed, as in Mosquitto).
    unsubscribe = 16,
};

// What a source sees of a CONNECT. Views into the CONNECT packet: valid
// during the call only (a source keeps copies of what it needs).
struct ConnectInfo {
    std::string_view client_id;
    std::optional<std::string_view> username;
    std::optional<std::string_view> password;
    std::string_view peer;  // "address:port", for log lines
    // Names this CONNECT in a pending answer (AuthHost::connect_answered).
    std::uint64_t ticket = 0;
};

class ClientRules;

// One number a source reports (requests, cache hits, clients...): the daemon
// formats it for /metrics as `mqttools_<name>` with its HELP and TYPE lines.
// The strings are literals (they outlive every source).
struct SourceMetric {
    std::string_view name;  // e.g. "auth_http_requests_total"
    std::string_view type;  // "counter" or "gauge"
    std::string_view help;
    std::uint64_t value = 0;
};

// A source's answer to a CONNECT.
struct AuthResult {
    Verdict verdict = Verdict::unknown;
    // deny: the CONNACK reason (0x86 bad credentials, 0x87 not authorized,
    // 0x88 server unavailable, 0x97 quota exceeded).
    ReasonCode reason = ReasonCode::success;
    // allow: skip every ACL check for this client.
    bool superuser = false;
    // allow: rules that come with the credentials (a JWT's ACL claim);
    // asked before every source's bound rules. May be null.
    std::shared_ptr<const ClientRules> rules;
    // allow: the credentials stop being valid then (a JWT's exp): the
    // client is disconnected at that moment.
    std::optional<std::chrono::system_clock::time_point> expires;
    // The source that decided and why, for the log line of a refusal.
    std::string source;
    std::string why;

    static AuthResult allow() { return with(Verdict::allow); }
    static AuthResult deny(ReasonCode rc, std::string why_) {
        AuthResult r;
        r.verdict = Verdict::deny;
        r.reason = rc;
        r.why = std::move(why_);
        return r;
    }
    static AuthResult pending() { return with(Verdict::pending); }
    static AuthResult with(Verdict v) {
        AuthResult r;
        r.verdict = v;
        return r;
    }
};

// Who a client is once connected: what rules are bound to.
struct ClientIdentity {
    std::string_view client_id;
    std::optional<std::string_view> username;
    // Passed back in AuthHost::acl_answered when a pending check finishes.
    std::uint64_t waiter = 0;
};

// One source's rules for one client, made by AuthSource::bind when the
// session is attached (and again after a reload). Checked on the hot path:
// no allocation, no blocking. `topic` is a topic name for read/publish and
// a topic filter for subscribe.
class ClientRules {
public:
    virtual ~ClientRules() = default;
    // pending: the answer comes later; the source then calls
    // AuthHost::acl_answered(waiter) and the same check, asked again,
    // answers allow or deny (a source keeps the answer for at least a
    // second, even with caching off, so the replay finds it).
    virtual Verdict check(std::string_view topic, AclAccess access) const = 0;
    // The client disconnected (its session may live on): forget cached answers.
    virtual void disconnected() const {}
};

// The broker side of the interface; every call on the reactor thread.
class AuthHost {
public:
    virtual net::Reactor& reactor() = 0;
    // Runs `work` on the auth worker threads (for CPU-bound checks such as
    // a password hash); `finish` turns its result into the answer of the
    // CONNECT `ticket`, back on the reactor.
    virtual void run_blocking(std::uint64_t ticket, std::function<ReasonCode()> work,
                              std::function<AuthResult(ReasonCode)> finish) = 0;
    // The answer to a CONNECT for which authenticate() said pending.
    virtual void connect_answered(std::uint64_t ticket, AuthResult result) = 0;
    // A pending ClientRules::check of the client with this waiter id has
    // its answer: the broker asks again.
    virtual void acl_answered(std::uint64_t waiter) = 0;

protected:
    ~AuthHost() = default;
};

class AuthSource {
public:
    virtual ~AuthSource() = default;
    // For logs and metrics: "password_file", "acl_file", "dynsec", "jwt", "http".
    virtual std::string_view name() const noexcept = 0;

    // This source can decide CONNECTs (it knows users).
    virtual bool authenticates() const noexcept { return false; }
    // unknown: not a user of this source, the next source is asked.
    // pending: host.connect_answered(info.ticket, ...) follows (allow, deny
    // or unknown), however long the source takes, unless the source is
    // destroyed first (the chain that holds it lives until then).
    virtual AuthResult authenticate(const ConnectInfo& info) {
        (void)info;
        return {};
    }

    // This source has access rules.
    virtual bool authorizes() const noexcept { return false; }
    // The client's rules from this source; null when it has none for this
    // client (the client is then not this source's business).
    virtual std::unique_ptr<ClientRules> bind(const ClientIdentity& who) const {
        (void)who;
        return nullptr;
    }

    // Its numbers for /metrics (optional), appended to `out`.
    virtual void metrics(std::vector<SourceMetric>& out) const { (void)out; }
};

}  // namespace mqttools::auth
