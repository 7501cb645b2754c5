// [auth_http]: an HTTP auth service with mosquitto-go-auth's contract, so
// services written for go-auth work unchanged (docs/authentication.md).
//   getuser_uri    username, password, clientid  -> the CONNECT
//   superuser_uri  username                      -> asked after getuser allows
//   aclcheck_uri   username, clientid, topic, acc (1 read, 2 publish,
//                  4 subscribe)                  -> every ACL check
// params_mode json (a JSON object) or form (x-www-form-urlencoded; the query
// string with GET); response_mode status (200 allows), json ({"ok": true})
// or text (body "ok").
//
// Requests run on libcurl's multi-socket interface in the reactor
// (curl_multi.hpp): a CONNECT or a packet waits for its answer, nobody else
// does. A service that does not answer within `timeout`, cannot be reached
// or answers 5xx: the CONNECT is refused with 0x88 (Server unavailable), an
// ACL check is denied (0x87). Answers are cached for cache_seconds: users
// per (username, password, client id) hash, ACLs per client, topic and acc;
// both forgotten when the client disconnects. Errors are never cached.
#pragma once

#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>

#include "broker/auth/auth_source.hpp"
#include "broker/auth/curl_multi.hpp"
#include "config/config.hpp"

namespace mqttools::auth {

class HttpSource final : public AuthSource, public std::enable_shared_from_this<HttpSource> {
public:
    HttpSource(const config::AuthHttp& settings, AuthHost& host);
    ~HttpSource() override;

    std::string_view name() const noexcept override { return "http"; }
    bool authenticates() const noexcept override { return true; }
    AuthResult authenticate(const ConnectInfo& info) override;
    bool authorizes() const noexcept override { return !settings_.aclcheck_uri.empty(); }
    std::unique_ptr<ClientRules> bind(const ClientIdentity& who) const override;
    void metrics(std::vector<SourceMetric>& out) const override;

    struct Stats {
        std::uint64_t requests = 0;
        std::uint64_t cache_hits = 0;
        std::uint64_t failures = 0;  // no answer, timeout, 5xx
        std::uint64_t allowed = 0;
        std::uint64_t denied = 0;
        std::uint64_t latency_us_total = 0;
        std::uint64_t latency_us_max = 0;
    };
    const Stats& stats() const noexcept { return stats_; }

    // One answered question: allowed, refused, or the service failed.
    enum class Outcome : std::uint8_t { allowed, refused, failed };
    using Clock = std::chrono::steady_clock;
    // A request of the go-auth contract; `done` on the reactor.
    void ask(const std::string& uri, const std::vector<std::pair<std::string_view, std::string>>& params,
             std::function<void(Outcome, std::string why)> done);
    // How long an answer is kept: cache_seconds, at least 1 s so that a
    // held packet handed in again finds the answer it waited for.
    Clock::duration keep_for() const noexcept;
    Clock::time_point now() const;
    void forget_user(const std::string& client_id);
    const config::AuthHttp& settings() const noexcept { return settings_; }
    AuthHost& host() noexcept { return host_; }
    Stats& mutable_stats() noexcept { return stats_; }

private:
    struct UserAnswer {
        Verdict verdict = Verdict::deny;
        bool superuser = false;
        Clock::time_point until{};
        std::string client_id;
    };
    void finish_user(const std::string& key, std::uint64_t ticket, const std::string& client_id, AuthResult result);

    config::AuthHttp settings_;
    AuthHost& host_;
    std::string base_url_;
    CurlMulti curl_;
    Stats stats_;
    std::unordered_map<std::string, UserAnswer> users_;        // by credential hash
    std::unordered_map<std::string, std::string> user_keys_;   // client id -> credential hash
    std::size_t users_sweep_at_ = 1024;                         // users_' size at its next sweep
};

}  // namespace mqttools::auth
