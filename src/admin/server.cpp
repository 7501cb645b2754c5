#include "admin/server.hpp"

#include <sys/epoll.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>

#include <spdlog/spdlog.h>

#include "admin/assets.hpp"
#include "broker/auth/password_file.hpp"
#include "net/socket.hpp"
#include "net/tls.hpp"
#include "net/transport.hpp"

namespace mqttools::admin {

using Clock = net::Clock;

namespace {
constexpr std::size_t kWritePerTurn = 256 * 1024;
}  // namespace

struct AdminServer::Listener final : net::IoHandler {
    Listener(AdminServer& s, net::UniqueFd f) : server(s), fd(std::move(f)) {}
    void on_io(std::uint32_t) override { server.accept_from(*this); }
    AdminServer& server;
    net::UniqueFd fd;
    std::string name;
    config::Listener settings;
    std::shared_ptr<const net::TlsContext> tls;
    std::shared_ptr<const auth::PasswordFile> keys;
    // Authorization header values already verified (a dashboard polls
    // every second: one PBKDF2 per key, not per request). Cleared on reload.
    std::unordered_map<std::string, bool> verified;
};

struct AdminServer::Client final : net::IoHandler {
    Client(AdminServer& s, Listener& l, std::unique_ptr<net::Transport> t)
        : server(s), listener(&l), transport(std::move(t)) {}
    void on_io(std::uint32_t events) override { server.on_client(*this, events); }
    AdminServer& server;
    Listener* listener;
    std::unique_ptr<net::Transport> transport;
    std::string in;
    std::string out;
    // A big answer's body, after the head in `out` (never copied into it);
    // non-empty only while `out` is.
    std::string body;
    std::size_t sent = 0;  // of out, then body
    std::unique_ptr<Job> job;
    net::Reactor::TimerId job_timer{};
    bool head_only = false;    // the request being answered was HEAD
    bool keep_alive = true;    // of the request being answered
    bool closing = false;      // close once `out` is written
    bool closed = false;
    bool peer_closed = false;  // end of its stream (it may have sent a whole request first)
    std::uint32_t events = 0;  // as registered
    Clock::time_point deadline;
};

AdminServer::AdminServer(net::Reactor& reactor, ApiContext context, ServerLimits limits)
    : reactor_(reactor), ctx_(std::move(context)), limits_(limits) {
    sweep_timer_ = reactor_.add_timer_after(std::chrono::seconds(1), [this] { sweep(); });
}

AdminServer::~AdminServer() {
    reactor_.cancel_timer(sweep_timer_);
    for (auto& [p, c] : clients_) {
        reactor_.cancel_timer(c->job_timer);
        reactor_.remove(c->transport->fd());
    }
    for (auto& l : listeners_) reactor_.remove(l->fd.get());
}

bool AdminServer::add_listener(net::UniqueFd fd, std::string name, const config::Listener& settings,
                               std::string& error) {
    auto l = std::make_unique<Listener>(*this, std::move(fd));
    l->name = std::move(name);
    l->settings = settings;
    try {
        l->keys = std::make_shared<const auth::PasswordFile>(auth::PasswordFile::load(settings.api_key_file));
        if (settings.tls()) l->tls = net::TlsContext::make_server(settings);
    } catch (const std::exception& e) {
        error = std::string("http_api listener ") + l->name + ": " + e.what();
        return false;
    }
    if (!reactor_.add(l->fd.get(), EPOLLIN, l.get())) {
        error = "epoll_ctl: cannot watch the http_api listener " + l->name;
        return false;
    }
    spdlog::info("Serving the HTTP API and dashboard on {}://{}/ ({} API key{}).", l->tls ? "https" : "http",
                 l->name, l->keys->size(), l->keys->size() == 1 ? "" : "s");
    listeners_.push_back(std::move(l));
    return true;
}

std::vector<std::string> AdminServer::reload(const config::Config& config) {
    std::vector<std::string> errors;
    for (auto& l : listeners_) {
        for (const auto& wanted : config.listeners) {
            if (!wanted.http_api() || wanted.port != l->settings.port || wanted.bind != l->settings.bind) continue;
            try {
                auto keys = std::make_shared<const auth::PasswordFile>(auth::PasswordFile::load(wanted.api_key_file));
                std::shared_ptr<const net::TlsContext> tls;
                if (wanted.tls()) tls = net::TlsContext::make_server(wanted);
                l->keys = std::move(keys);
                if (tls) l->tls = std::move(tls);
                l->settings.api_key_file = wanted.api_key_file;
                l->verified.clear();
            } catch (const std::exception& e) {
                errors.push_back(std::string("http_api listener ") + l->name + ": " + e.what() +
                                 " (the previous keys stay)");
                spdlog::error("{}", errors.back());
            }
        }
    }
    return errors;
}

void AdminServer::accept_from(Listener& l) {
    for (int i = 0; i < 32; ++i) {
        net::UniqueFd fd = net::accept_tcp(l.fd.get());
        if (!fd) return;
        if (clients_.size() >= limits_.max_clients) {
            spdlog::warn("http_api {}: {} connections open, refusing one more.", l.name, clients_.size());
            continue;  // closed by UniqueFd
        }
        std::unique_ptr<net::Transport> t;
        if (l.tls) {
            t = std::make_unique<net::TlsTransport>(std::move(fd), l.tls);
        } else {
            t = std::make_unique<net::PlainTransport>(std::move(fd));
        }
        auto c = std::make_unique<Client>(*this, l, std::move(t));
        c->deadline = reactor_.now() + limits_.request_timeout;
        c->events = EPOLLIN | EPOLLRDHUP;
        if (!reactor_.add(c->transport->fd(), c->events, c.get())) continue;
        Client* raw = c.get();
        clients_.emplace(raw, std::move(c));
    }
}

void AdminServer::on_client(Client& c, std::uint32_t events) {
    if (c.closed) return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        // Read only what a request may hold: a peer that floods is cut
        // off by the parser's limits, not by our memory.
        char buf[16384];
        for (int i = 0; i < 16 && !c.closing; ++i) {
            const auto r = c.transport->read(MutableBytes(reinterpret_cast<std::byte*>(buf), sizeof buf));
            if (r.status == net::IoStatus::ok) {
                if (c.in.empty() && !c.job && c.out.empty()) c.deadline = reactor_.now() + limits_.request_timeout;
                c.in.append(buf, r.bytes);
                if (c.in.size() > limits_.max_head + limits_.max_body) break;
                continue;
            }
            if (r.status == net::IoStatus::would_block) break;
            if (r.status == net::IoStatus::error) {
                close(c);
                return;
            }
            c.peer_closed = true;  // it may still read what it asked for
            break;
        }
        process(c);
        if (c.closed) return;
        if (c.peer_closed && !c.job) {
            if (c.out.empty()) {
                close(c);
                return;
            }
            c.closing = true;
        }
    }
    if (events & EPOLLOUT || c.transport->has_pending()) {
        write(c);
        if (!c.closed && c.out.empty()) process(c);  // pipelined requests left waiting
    }
    if (!c.closed) update_events(c);
}

void AdminServer::process(Client& c) {
    // One request at a time: the next waits until this one is answered.
    // At most 64 per call: the rest of a pipelined flood on a later turn.
    for (int n = 0; !c.closing && !c.job && c.out.empty() && !c.in.empty(); ++n) {
        if (n == 64) {
            reactor_.cancel_timer(c.job_timer);
            c.job_timer = reactor_.add_timer_after(std::chrono::microseconds(1), [this, &c] {
                c.job_timer = {};
                process(c);
                if (!c.closed) update_events(c);
            });
            return;
        }
        http::Limits limits{limits_.max_head, limits_.max_body};
        auto parsed = http::parse_request(c.in, limits);
        if (parsed.status == http::Status::need_more) return;
        if (parsed.status == http::Status::error) {
            const char* code = parsed.error_status == 413   ? "PAYLOAD_TOO_LARGE"
                               : parsed.error_status == 431 ? "HEADERS_TOO_LARGE"
                                                            : "BAD_REQUEST";
            c.in.clear();
            respond(c, error_response(parsed.error_status, code, parsed.error), true);
            return;
        }
        c.in.erase(0, parsed.consumed);
        const http::Request& req = parsed.request;
        c.keep_alive = req.keep_alive;
        c.head_only = req.method == "HEAD";
        if (const Asset* asset = find_asset(req.target.substr(0, req.target.find('?')))) {
            if (req.method != "GET" && req.method != "HEAD") {
                http::Response r = error_response(405, "METHOD_NOT_ALLOWED", "use GET");
                r.headers.emplace_back("Allow", "GET, HEAD");
                respond(c, std::move(r));
                continue;
            }
            http::Response r;
            r.content_type = std::string(asset->content_type);
            r.body = std::string(asset->body);
            r.headers.emplace_back("Cache-Control", "no-cache");
            respond(c, std::move(r));
            continue;
        }
        if (!authorized(*c.listener, req)) {
            http::Response r = error_response(401, "BAD_API_KEY_OR_SECRET", "a valid API key is required (HTTP Basic)");
            // The dashboard asks for the key itself; a browser's own prompt
            // would get in its way.
            if (!req.header("x-mqttools-dashboard")) r.headers.emplace_back("WWW-Authenticate", "Basic realm=\"mqttools\"");
            respond(c, std::move(r));
            continue;
        }
        Outcome outcome = handle_api(ctx_, req);
        if (outcome.job) {
            c.job = std::move(outcome.job);
            run_job(c);
            return;
        }
        respond(c, std::move(outcome.response));
    }
}

void AdminServer::run_job(Client& c) {
    c.job_timer = {};
    http::Response r;
    if (!c.job->step(r)) {
        // Woken by its event: stepped on the turn after (not from inside
        // the store's report). close() drops the job, and the wake with it.
        if (c.job->park([this, &c] {
                c.job_timer = reactor_.add_timer_after(std::chrono::microseconds(1), [this, &c] { run_job(c); });
            })) {
            return;
        }
        // The rest on the next turn, after the sockets that are ready.
        const auto delay = c.job->waiting() ? std::chrono::microseconds(kPeerPoll) : std::chrono::microseconds(1);
        c.job_timer = reactor_.add_timer_after(delay, [this, &c] { run_job(c); });
        return;
    }
    c.job.reset();
    if (c.peer_closed) c.keep_alive = false;
    respond(c, std::move(r));
    if (!c.closed && c.out.empty()) process(c);  // a pipelined request may be waiting
    if (!c.closed) update_events(c);
}

bool AdminServer::authorized(Listener& l, const http::Request& req) {
    const auto header = req.header("authorization");
    if (!header) return false;
    const std::string key(*header);
    if (l.verified.count(key)) return true;
    const auto creds = http::basic_credentials(key);
    if (!creds) return false;
    const auth::PasswordHash* hash = l.keys->find(creds->first);
    if (!hash || !auth::verify_password(*hash, creds->second)) {
        spdlog::warn("http_api {}: refused API key '{}'.", l.name, creds->first);
        return false;
    }
    if (l.verified.size() >= 64) l.verified.clear();
    l.verified.emplace(key, true);
    return true;
}

void AdminServer::respond(Client& c, http::Response response, bool close_after) {
    if (close_after || !c.keep_alive) c.closing = true;
    if (c.out.empty() && !c.head_only && response.status != 204 && response.body.size() >= 64 * 1024) {
        // A listing's MBs go out from where they were built: the head alone
        // (HEAD's form: the length, no body), then the body itself.
        c.out = http::serialize(response, !c.closing, true);
        c.body = std::move(response.body);
    } else {
        (c.body.empty() ? c.out : c.body) += http::serialize(response, !c.closing, c.head_only);
    }
    c.deadline = reactor_.now() + limits_.write_timeout;
    write(c);
}

void AdminServer::write(Client& c) {
    if (c.closed) return;
    // At most kWritePerTurn per turn: a 3 MB listing is copied into the
    // socket over several turns (EPOLLOUT stays on), not in one.
    const std::size_t total = c.out.size() + c.body.size();
    const std::size_t stop = std::min(total, c.sent + kWritePerTurn);
    while (c.sent < stop) {
        iovec iov[2];
        int n = 0;
        if (c.sent < c.out.size()) iov[n++] = {c.out.data() + c.sent, std::min(stop, c.out.size()) - c.sent};
        if (stop > c.out.size()) {
            const std::size_t from = std::max(c.sent, c.out.size()) - c.out.size();
            iov[n++] = {c.body.data() + from, stop - c.out.size() - from};
        }
        const auto r = c.transport->write(iov, n);
        if (r.status == net::IoStatus::ok) {
            c.sent += r.bytes;
            continue;
        }
        if (r.status == net::IoStatus::would_block) break;
        close(c);
        return;
    }
    if (c.transport->has_pending()) {
        const auto r = c.transport->flush();
        if (r.status == net::IoStatus::error || r.status == net::IoStatus::closed) {
            close(c);
            return;
        }
    }
    if (c.sent == total && !c.transport->has_pending()) {
        c.out.clear();
        c.body = std::string();  // MBs: given back, not kept as capacity
        c.sent = 0;
        if (c.closing) {
            close(c);
            return;
        }
        c.deadline = reactor_.now() + (c.in.empty() ? limits_.idle_timeout : limits_.request_timeout);
    }
}

void AdminServer::update_events(Client& c) {
    if (c.closed) return;
    // A peer that closed its side is not watched for input again (its
    // hang-up stays readable and would wake every turn).
    std::uint32_t want = c.peer_closed ? 0u : std::uint32_t{EPOLLRDHUP};
    // Not read while an answer is pending (one request at a time), or
    // while the buffer holds as much as a request may.
    if (!c.peer_closed && !c.job && c.out.empty() && c.in.size() <= limits_.max_head + limits_.max_body) {
        want |= EPOLLIN;
    }
    if (!c.out.empty() || c.transport->has_pending() || c.transport->wants_write()) want |= EPOLLOUT;
    if (want != c.events) {
        c.events = want;
        reactor_.modify(c.transport->fd(), want, &c);
    }
}

void AdminServer::close(Client& c) {
    if (c.closed) return;
    c.closed = true;
    reactor_.cancel_timer(c.job_timer);
    c.job.reset();
    reactor_.remove(c.transport->fd());
    auto it = clients_.find(&c);
    if (it == clients_.end()) return;
    closed_.push_back(std::move(it->second));
    clients_.erase(it);
    if (closed_.size() == 1) {
        // Destroyed after this turn's callbacks, which may still hold it.
        reactor_.add_timer_after(std::chrono::microseconds(1), [this] { closed_.clear(); });
    }
}

void AdminServer::sweep() {
    sweep_timer_ = reactor_.add_timer_after(std::chrono::seconds(1), [this] { sweep(); });
    const auto now = reactor_.now();
    std::vector<Client*> late;
    for (auto& [p, c] : clients_) {
        if (!c->job && now >= c->deadline) late.push_back(p);
    }
    for (Client* c : late) {
        if (c->out.empty() && !c->in.empty()) {
            // A request begun and never finished: 408, then close.
            c->in.clear();
            c->keep_alive = false;
            respond(*c, error_response(408, "REQUEST_TIMEOUT", "the request did not arrive in time"), true);
            if (c->closed) continue;
            // Whatever it does not read at once is not waited for.
        }
        close(*c);
    }
}

}  // namespace mqttools::admin
