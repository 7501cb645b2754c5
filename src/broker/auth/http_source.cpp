#include "broker/auth/http_source.hpp"

#include <algorithm>
#include <cctype>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <nlohmann/json.hpp>

#include "net/reactor.hpp"

namespace mqttools::auth {

namespace {

// A cache is swept of expired answers when it reaches a size, and the next
// sweep waits until it has doubled: sweeping at every insert beyond a fixed
// size (answers live cache_seconds, so a storm's stay) cost a walk of the
// whole cache per CONNECT.
constexpr std::size_t sweep_every = 1024;

std::size_t next_sweep(std::size_t size) { return std::max(sweep_every, 2 * size); }

std::string credential_key(const ConnectInfo& info) {
    // Only a hash of the password stays in memory.
    const std::string_view user = info.username.value_or("");
    const std::string_view pw = info.password.value_or("");
    const std::uint64_t sizes[3] = {user.size(), pw.size(), info.client_id.size()};
    std::string key(SHA256_DIGEST_LENGTH, '\0');
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    EVP_DigestUpdate(ctx, sizes, sizeof sizes);
    EVP_DigestUpdate(ctx, user.data(), user.size());
    EVP_DigestUpdate(ctx, pw.data(), pw.size());
    EVP_DigestUpdate(ctx, info.client_id.data(), info.client_id.size());
    EVP_DigestFinal_ex(ctx, reinterpret_cast<unsigned char*>(key.data()), nullptr);
    EVP_MD_CTX_free(ctx);
    return key;
}

std::string trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return std::string(s);
}

// One client's ACL answers: per access kind, by topic.
struct AclAnswers {
    struct Answer {
        Verdict verdict = Verdict::pending;
        // Just answered: the first look is the held packet's replay, not a
        // cache hit.
        bool fresh = false;
        HttpSource::Clock::time_point until{};
    };
    struct Hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
    };
    using Map = std::unordered_map<std::string, Answer, Hash, std::equal_to<>>;
    std::array<Map, 3> by_access;  // read, publish, subscribe
    std::array<std::size_t, 3> sweep_at{sweep_every, sweep_every, sweep_every};
    std::uint64_t generation = 0;  // bumped by disconnected(): late answers are dropped
    static std::size_t index(AclAccess a) { return a == AclAccess::read ? 0 : a == AclAccess::publish ? 1 : 2; }
};

class HttpRules final : public ClientRules {
public:
    HttpRules(std::shared_ptr<HttpSource> source, const ClientIdentity& who)
        : source_(std::move(source)),
          client_id_(who.client_id),
          username_(who.username.value_or("")),
          waiter_(who.waiter),
          answers_(std::make_shared<AclAnswers>()) {}

    Verdict check(std::string_view topic, AclAccess access) const override {
        if (access == AclAccess::unsubscribe) return Verdict::unknown;  // go-auth's contract has no unsubscribe
        AclAnswers::Map& map = answers_->by_access[AclAnswers::index(access)];
        if (auto it = map.find(topic); it != map.end()) {
            if (it->second.verdict == Verdict::pending) return Verdict::pending;
            if (source_->now() < it->second.until) {
                if (it->second.fresh) {
                    it->second.fresh = false;
                } else {
                    ++source_->mutable_stats().cache_hits;
                }
                return it->second.verdict;
            }
            map.erase(it);
        }
        std::size_t& sweep_at = answers_->sweep_at[AclAnswers::index(access)];
        if (map.size() >= sweep_at) {
            sweep(map);
            sweep_at = next_sweep(map.size());
        }
        map.emplace(std::string(topic), AclAnswers::Answer{});
        ask(std::string(topic), access);
        return Verdict::pending;
    }

    void disconnected() const override {
        for (auto& m : answers_->by_access) m.clear();
        ++answers_->generation;
        source_->forget_user(client_id_);
    }

private:
    void sweep(AclAnswers::Map& map) const {
        const auto now = source_->now();
        std::erase_if(map, [&](const auto& kv) {
            return kv.second.verdict != Verdict::pending && kv.second.until <= now;
        });
    }

    void ask(std::string topic, AclAccess access) const {
        std::vector<std::pair<std::string_view, std::string>> params = {
            {"username", username_},
            {"clientid", client_id_},
            {"topic", topic},
            {"acc", std::to_string(static_cast<int>(access))},
        };
        HttpSource* source = source_.get();
        source->ask(source->settings().aclcheck_uri, params,
                    [source, answers = answers_, gen = answers_->generation, topic = std::move(topic), access,
                     waiter = waiter_](HttpSource::Outcome outcome, std::string) {
                        if (answers->generation == gen) {
                            auto& map = answers->by_access[AclAnswers::index(access)];
                            auto& a = map[topic];
                            a.verdict = outcome == HttpSource::Outcome::allowed ? Verdict::allow : Verdict::deny;
                            a.fresh = true;
                            // A failure is kept only long enough for the waiting
                            // packet to be refused, never cached.
                            a.until = source->now() + (outcome == HttpSource::Outcome::failed
                                                           ? HttpSource::Clock::duration(std::chrono::seconds(1))
                                                           : source->keep_for());
                        }
                        source->host().acl_answered(waiter);
                    });
    }

    std::shared_ptr<HttpSource> source_;
    std::string client_id_;
    std::string username_;
    std::uint64_t waiter_;
    std::shared_ptr<AclAnswers> answers_;
};

}  // namespace

HttpSource::HttpSource(const config::AuthHttp& settings, AuthHost& host)
    : settings_(settings), host_(host), curl_(host.reactor()) {
    base_url_ = settings_.with_tls ? "https://" : "http://";
    const bool v6 = settings_.host.find(':') != std::string::npos;
    base_url_ += v6 ? "[" + settings_.host + "]" : settings_.host;
    base_url_ += ":" + std::to_string(settings_.port);
}

HttpSource::~HttpSource() = default;

HttpSource::Clock::time_point HttpSource::now() const { return host_.reactor().now(); }

HttpSource::Clock::duration HttpSource::keep_for() const noexcept {
    return std::chrono::seconds(std::max<std::uint32_t>(settings_.cache_seconds, 1));
}

void HttpSource::forget_user(const std::string& client_id) {
    auto it = user_keys_.find(client_id);
    if (it == user_keys_.end()) return;
    users_.erase(it->second);
    user_keys_.erase(it);
}

AuthResult HttpSource::authenticate(const ConnectInfo& info) {
    if (!info.username) return {};  // anonymous clients are not the service's
    std::string key = credential_key(info);
    if (auto it = users_.find(key); it != users_.end()) {
        if (now() < it->second.until) {
            ++stats_.cache_hits;
            if (it->second.verdict != Verdict::allow) {
                return AuthResult::deny(ReasonCode::bad_user_name_or_password, "refused by the auth service (cached)");
            }
            AuthResult r = AuthResult::allow();
            r.superuser = it->second.superuser;
            return r;
        }
        users_.erase(it);
    }
    std::vector<std::pair<std::string_view, std::string>> params = {
        {"username", std::string(*info.username)},
        {"password", std::string(info.password.value_or(""))},
        {"clientid", std::string(info.client_id)},
    };
    const std::uint64_t ticket = info.ticket;
    std::string client_id(info.client_id);
    std::string username(*info.username);
    ask(settings_.getuser_uri, params,
        [this, key = std::move(key), ticket, client_id, username](Outcome outcome, std::string why) mutable {
            if (outcome == Outcome::failed) {
                finish_user(key, ticket, client_id,
                            AuthResult::deny(ReasonCode::server_unavailable, "auth service unavailable: " + why));
                return;
            }
            if (outcome == Outcome::refused) {
                finish_user(key, ticket, client_id,
                            AuthResult::deny(ReasonCode::bad_user_name_or_password,
                                             why.empty() ? "refused by the auth service" : "refused by the auth service: " + why));
                return;
            }
            if (settings_.superuser_uri.empty()) {
                finish_user(key, ticket, client_id, AuthResult::allow());
                return;
            }
            ask(settings_.superuser_uri, {{"username", username}},
                [this, key = std::move(key), ticket, client_id](Outcome o, std::string) {
                    // A superuser check that fails leaves an ordinary user.
                    AuthResult r = AuthResult::allow();
                    r.superuser = o == Outcome::allowed;
                    finish_user(key, ticket, client_id, std::move(r));
                });
        });
    return AuthResult::pending();
}

void HttpSource::finish_user(const std::string& key, std::uint64_t ticket, const std::string& client_id,
                             AuthResult result) {
    const bool failed = result.verdict == Verdict::deny && result.reason == ReasonCode::server_unavailable;
    if (settings_.cache_seconds > 0 && !failed) {
        if (users_.size() >= users_sweep_at_) {
            const auto t = now();
            std::erase_if(users_, [&](const auto& kv) {
                if (kv.second.until > t) return false;
                auto k = user_keys_.find(kv.second.client_id);
                if (k != user_keys_.end() && k->second == kv.first) user_keys_.erase(k);
                return true;
            });
            users_sweep_at_ = next_sweep(users_.size());
        }
        UserAnswer& a = users_[key];
        a.verdict = result.verdict;
        a.superuser = result.superuser;
        a.until = now() + keep_for();
        a.client_id = client_id;
        user_keys_[client_id] = key;
    }
    host_.connect_answered(ticket, std::move(result));
}

std::unique_ptr<ClientRules> HttpSource::bind(const ClientIdentity& who) const {
    if (settings_.aclcheck_uri.empty()) return nullptr;
    auto self = std::const_pointer_cast<HttpSource>(shared_from_this());
    return std::make_unique<HttpRules>(std::move(self), who);
}

namespace {

// RFC 3986 percent-encoding of everything but the unreserved characters,
// as curl_easy_escape does (application/x-www-form-urlencoded values).
void append_escaped(std::string& out, std::string_view v) {
    static constexpr char hex[] = "0123456789ABCDEF";
    for (const char ch : v) {
        const auto c = static_cast<unsigned char>(ch);
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out += ch;
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
}

}  // namespace

void HttpSource::ask(const std::string& uri, const std::vector<std::pair<std::string_view, std::string>>& params,
                     std::function<void(Outcome, std::string)> done) {
    std::string form;
    for (const auto& [k, v] : params) {
        if (!form.empty()) form += '&';
        form.append(k);
        form += '=';
        append_escaped(form, v);
    }
    CurlMulti::Call call;
    call.url = base_url_ + uri;
    call.timeout = std::chrono::milliseconds(settings_.timeout_ms);
    call.verify_peer = settings_.verify_peer;
    if (settings_.method == "GET" && settings_.params_mode == "form") {
        // go-auth refuses form parameters with GET; the query string is
        // what a GET service reads.
        call.url += (uri.find('?') == std::string::npos ? '?' : '&') + form;
    } else {
        if (settings_.params_mode == "json") {
            nlohmann::json j = nlohmann::json::object();
            for (const auto& [k, v] : params) {
                if (k == "acc") {
                    j[std::string(k)] = std::stoi(v);
                } else {
                    j[std::string(k)] = v;
                }
            }
            call.body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
            call.headers = curl_slist_append(call.headers, "Content-Type: application/json");
        } else {
            call.body = form;
            call.headers = curl_slist_append(call.headers, "Content-Type: application/x-www-form-urlencoded");
        }
        call.with_body = true;
        // go-auth sends its JSON body with GET too (a GET with a body).
        if (settings_.method != "POST") call.method = settings_.method;
    }
    // No "Expect: 100-continue" round trip for these small bodies.
    call.headers = curl_slist_append(call.headers, "Expect:");
    for (const auto& [name, value] : settings_.headers) {
        call.headers = curl_slist_append(call.headers, (name + ": " + value).c_str());
    }
    if (!form.empty()) OPENSSL_cleanse(form.data(), form.size());
    ++stats_.requests;
    const auto started = Clock::now();
    curl_.start(std::move(call), [this, started, done = std::move(done)](CurlMulti::Response&& resp) {
        const auto us = static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count());
        stats_.latency_us_total += us;
        stats_.latency_us_max = std::max(stats_.latency_us_max, us);
        if (resp.code != CURLE_OK || resp.status >= 500 || resp.status == 0) {
            ++stats_.failures;
            done(Outcome::failed, resp.code != CURLE_OK ? resp.error : "HTTP status " + std::to_string(resp.status));
            return;
        }
        // As go-auth: any 2xx passes the status check, then the body decides.
        const bool success = resp.status >= 200 && resp.status < 300;
        bool ok = success;
        std::string why;
        if (success && settings_.response_mode == "text") {
            ok = trim(resp.body) == "ok";
        } else if (success && settings_.response_mode == "json") {
            const nlohmann::json j = nlohmann::json::parse(resp.body, nullptr, false);
            if (!j.is_object()) {
                // go-auth: a body that is not JSON is an error, not a refusal.
                ++stats_.failures;
                done(Outcome::failed, "the answer is not a JSON object");
                return;
            }
            ok = j.contains("ok") && j["ok"].is_boolean() && j["ok"].get<bool>();
            if (j.contains("error") && j["error"].is_string()) why = j["error"].get<std::string>();
        }
        if (!ok && why.empty() && !success) why = "HTTP status " + std::to_string(resp.status);
        ++(ok ? stats_.allowed : stats_.denied);
        done(ok ? Outcome::allowed : Outcome::refused, std::move(why));
    });
}

void HttpSource::metrics(std::vector<SourceMetric>& out) const {
    out.push_back({"auth_http_requests_total", "counter", "Requests sent to the HTTP auth service.", stats_.requests});
    out.push_back({"auth_http_cache_hits_total", "counter", "User and ACL checks answered from the cache.",
                   stats_.cache_hits});
    out.push_back({"auth_http_failures_total", "counter",
                   "Requests without a usable answer (unreachable, timeout, 5xx).", stats_.failures});
    out.push_back({"auth_http_allowed_total", "counter", "Requests the service allowed.", stats_.allowed});
    out.push_back({"auth_http_denied_total", "counter", "Requests the service refused.", stats_.denied});
    out.push_back({"auth_http_latency_microseconds_sum", "counter", "Time spent waiting for answers.",
                   stats_.latency_us_total});
    out.push_back({"auth_http_latency_microseconds_max", "gauge", "Longest wait for an answer.",
                   stats_.latency_us_max});
    out.push_back({"auth_http_in_flight", "gauge", "Requests waiting for an answer.", curl_.in_flight()});
}

}  // namespace mqttools::auth
