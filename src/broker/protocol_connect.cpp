// The connection's life: CONNECT/CONNACK (spec 3.1, 3.2), sessions and
// their expiry (4.1), takeover (3.1.4), keep alive (3.1.2.10), wills
// (3.1.2.5, 3.1.3.2) and DISCONNECT (3.14).
#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

#include "broker/broker.hpp"

namespace mqttools::broker {

namespace {

constexpr std::uint32_t never_expires = 0xFFFFFFFF;

// What a CONNECT that failed to decode claims to be, to pick the answer.
struct ConnectPeek {
    std::string_view name;
    int level = -1;
};

ConnectPeek peek_connect(Bytes body) {
    ConnectPeek p;
    if (body.size() < 2) return p;
    std::size_t len = (static_cast<std::size_t>(body[0]) << 8) | static_cast<std::size_t>(body[1]);
    if (body.size() < 2 + len) return p;
    p.name = as_string(body.subspan(2, len));
    if (body.size() > 2 + len) p.level = static_cast<int>(body[2 + len]);
    return p;
}

const char* version_name(ProtocolVersion v) { return v == ProtocolVersion::v5 ? "p5" : "p4"; }

}  // namespace

std::string Broker::assign_client_id() {
    static std::mt19937_64 rng{std::random_device{}()};
    static const char* hex = "0123456789abcdef";
    for (;;) {
        std::string id = "auto-";
        auto bits = rng();
        for (int i = 0; i < 16; ++i, bits >>= 4) id.push_back(hex[bits & 0xF]);
        if (!sessions_.find(id)) return id;
    }
}

void Broker::refuse_connect(Connection& c, ProtocolVersion version, ReasonCode reason) {
    c.version = version;
    ConnackPacket ack;
    ack.reason = reason;
    c.send(ack);
    spdlog::info("Client {} refused: {}.", c.client_id.empty() ? c.peer() : c.client_id, reason_code_name(reason));
    close_connection(c, reason, false);
}

void Broker::handle_connect(Connection& c, const FixedHeader& header, Bytes body) {
    DeadlineWheel::cancel(c);
    auto decoded = decode_connect(header, body);
    if (!decoded) {
        const ReasonCode error = decoded.error();
        const ConnectPeek peek = peek_connect(body);
        if (error == ReasonCode::unsupported_protocol_version) {
            if (peek.name == "MQTT") {
                // [MQTT-3.1.2-2]: CONNACK 0x84, then close.
                refuse_connect(c, ProtocolVersion::v5, error);
            } else if (peek.name == "MQIsdp") {
                // An MQTT 3.1 client: its CONNACK form, return code 1.
                refuse_connect(c, ProtocolVersion::v311, error);
            } else {
                // Not MQTT at all [MQTT-3.1.2-1]: just close.
                close_connection(c, error, false);
            }
            return;
        }
        // A malformed v5 CONNECT may get CONNACK with the reason before the
        // close (spec 4.13.1); 3.1.1 has no code for it.
        if (peek.level == 5) {
            refuse_connect(c, ProtocolVersion::v5, error);
        } else {
            close_connection(c, error, false);
        }
        return;
    }
    const ConnectPacket& p = *decoded;
    c.version = p.version;
    const bool v5 = p.version == ProtocolVersion::v5;
    c.client_id.assign(p.client_id);
    if (p.username) {
        c.username.assign(*p.username);
        c.has_username = true;
    }

    if (v5 && p.properties.authentication_method) {
        // No enhanced authentication method is supported (spec 4.12).
        refuse_connect(c, c.version, ReasonCode::bad_authentication_method);
        return;
    }
    c.mqtt31 = p.mqtt31;
    if (p.mqtt31 && (c.client_id.empty() || c.client_id.size() > 23)) {
        // MQTT 3.1 section 3.1: a client id of 1 to 23 bytes, else return
        // code 2 (identifier rejected); 3.1 has no server-assigned id.
        refuse_connect(c, c.version, ReasonCode::client_identifier_not_valid);
        return;
    }
    bool assigned = false;
    if (c.client_id.empty()) {
        // 3.1.1 allows an empty id only with Clean Session [MQTT-3.1.3-8].
        if (!v5 && !p.clean_start) {
            refuse_connect(c, c.version, ReasonCode::client_identifier_not_valid);
            return;
        }
        c.client_id = assign_client_id();
        assigned = true;
    }
    if (config_.max_connections != 0 && clients_connected_ >= config_.max_connections) {
        Session* existing = sessions_.find(c.client_id);
        if (!existing || !existing->connection) {
            refuse_connect(c, c.version, v5 ? ReasonCode::quota_exceeded : ReasonCode::server_unavailable);
            return;
        }
    }
    if (!c.identity_as_username) {
        // The AuthChain decides, at once or later (a password hash on the
        // AuthPool, an HTTP auth service): then the CONNECT continues in
        // accept_connect (connect_pending.cpp).
        if (memory_exceeded()) {
            refuse_connect(c, c.version, ReasonCode::quota_exceeded);
            return;
        }
        start_authentication(c, p, header, body, assigned);
        return;
    }
    accept_connect(c, p, assigned, nullptr, header, body);
}

void Broker::accept_connect(Connection& c, const ConnectPacket& p, bool assigned, const auth::AuthResult* verified,
                            const FixedHeader& header, Bytes body) {
    const bool v5 = p.version == ProtocolVersion::v5;
    const std::optional<ReasonCode> auth_rc = authenticate(c, p, verified);
    if (!auth_rc) {
        // The will's ACL answer is to come: the CONNECT waits for it.
        wait_for_will_check(c, *verified, header, body, assigned, c.extras->authz->waiter());
        return;
    }
    if (is_error(*auth_rc)) {
        refuse_connect(c, c.version, *auth_rc);
        return;
    }
    if (connect_banned(c)) {
        // 3.1.1 has no "banned": 5 (not authorized), as EMQX answers.
        refuse_connect(c, c.version, v5 ? ReasonCode::banned : ReasonCode::not_authorized);
        return;
    }

    if (cluster_cut_) {
        // Cut off from the cluster (cluster_fence.cpp): another node serves it.
        refuse_connect(c, c.version, ReasonCode::server_unavailable);
        return;
    }

    ConnackPacket ack;
    if (v5) {
        const Properties& props = p.properties;
        c.receive_maximum_out = props.receive_maximum.value_or(65535);
        c.max_packet_size_out = props.maximum_packet_size.value_or(max_packet_size_limit);
        c.topic_alias_maximum_out = props.topic_alias_maximum.value_or(0);
        c.request_problem_information = props.request_problem_information.value_or(1) != 0;
    }
    c.keep_alive = p.keep_alive;
    // Keep alive 0 means "never": more than any configured maximum.
    const bool over_max = config_.max_keepalive != 0 && config_.max_keepalive != 65535 &&
                          (p.keep_alive == 0 || p.keep_alive > config_.max_keepalive);
    if (v5 && over_max) {
        // The server decides the keep alive ([MQTT-3.2.2-21]).
        c.keep_alive = config_.max_keepalive;
        ack.properties.server_keep_alive = c.keep_alive;
    }
    std::uint32_t expiry = v5 ? p.properties.session_expiry_interval.value_or(0)
                              : (p.clean_start ? 0 : never_expires);
    if (config_.persistent_client_expiration && expiry > *config_.persistent_client_expiration) {
        expiry = *config_.persistent_client_expiration;
        if (v5) ack.properties.session_expiry_interval = expiry;
    }
    c.clean_start = p.clean_start;

    if (p.will && p.will->retain && !config_.retain_available) {
        refuse_connect(c, c.version, ReasonCode::retain_not_supported);  // [MQTT-3.2.2-13]
        return;
    }
    // Other nodes let go of this client id (cluster_link.hpp); an assigned
    // id is new everywhere. The CONNECT waits until this node's claim is
    // settled and, with Clean Start 0 and no session here, for the session
    // from the node that held it (session_transfer.cpp); a parked CONNECT
    // going on has claimed already.
    if (cluster_ && !handovers_.empty() && resuming_ != &c) {
        // Back here while this node hands its session to another: that
        // node has it now (and the claim below asks it back).
        Session* old = sessions_.find(c.client_id);
        if (auto it = old ? handovers_.find(old) : handovers_.end(); it != handovers_.end() && it->second.sending) {
            end_session(*old);
        }
    }
    if (cluster_ && !assigned && resuming_ != &c && park_connect(c, header, body, assigned)) {
        cluster_->claim_session(c.client_id, !p.clean_start && !sessions_.find(c.client_id));
        return;
    }
    const bool resumed = attach_session(c, p, expiry);
    // MQTT 3.1's CONNACK has no Session Present flag (its byte is reserved).
    ack.session_present = resumed && !c.mqtt31;
    Session& s = *c.session;
    bind_acl(c);
    if (p.will) {
        const auto& w = *p.will;
        MessageView view;
        view.topic = w.topic;
        view.payload = w.payload;
        view.properties = w.properties.raw;
        view.qos = w.qos;
        view.retain = w.retain;
        Will will;
        will.message = make_message(view, reactor_.now());
        will.expiry_interval = w.properties.message_expiry_interval;
        will.delay = w.properties.will_delay_interval.value_or(0);
        s.will = std::make_unique<Will>(std::move(will));
    }

    if (v5) {
        Properties& a = ack.properties;
        a.receive_maximum = config_.receive_maximum;
        a.topic_alias_maximum = config_.topic_alias_maximum;
        a.retain_available = config_.retain_available ? 1 : 0;
        a.wildcard_subscription_available = 1;
        a.subscription_identifier_available = 1;
        a.shared_subscription_available = 1;
        if (config_.max_packet_size != 0) a.maximum_packet_size = config_.max_packet_size;
        if (assigned) a.assigned_client_identifier = c.client_id;
    }
    accept_bridge(c, p, ack);
    if (store_) persist_session(s);  // CONNACK waits for it (Session Present)
    if (cluster_) replicate_session(s);
    c.state = Connection::State::connected;
    ++clients_connected_;
    const std::string_view over = c.transport().label();
    if (!over.empty()) ++websocket_clients_;
    stats_.clients_maximum = std::max(stats_.clients_maximum, clients_connected_);
    c.send(ack);
    spdlog::info("New client connected from {} as {} ({}, c{}, k{}{}{}{}{}).", c.peer(), c.client_id,
                 c.mqtt31 ? "p3" : version_name(c.version), p.clean_start ? 1 : 0, c.keep_alive,
                 c.username.empty() ? "" : ", u'", c.username.empty() ? "" : c.username + "'",
                 over.empty() ? "" : ", ", over);
    s.connected_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    if (observer_) observer_->client_connected(c);
    arm_keepalive(c);
    if (resumed) resume_session(c, s);
}

bool Broker::attach_session(Connection& c, const ConnectPacket& connect, std::uint32_t session_expiry) {
    Session* s = sessions_.find(c.client_id);
    if (s && s->connection) {
        // Takeover: the existing connection is closed ([MQTT-3.1.4-3]).
        // Its will follows the rules of detach_session.
        spdlog::info("Client {} already connected, closing old connection.", c.client_id);
        close_connection(*s->connection, ReasonCode::session_taken_over, true);
        s = sessions_.find(c.client_id);  // it ended if its expiry was 0
    }
    bool present = false;
    if (s && connect.clean_start) {
        // Clean Start discards the session ([MQTT-3.1.2-4]); that ends it,
        // so a pending will is published now (as Mosquitto does).
        end_session(*s);
        s = nullptr;
    }
    if (s) {
        present = true;
        reactor_.cancel_timer(s->expiry_timer);
        s->expiry_timer = {};
        // Reconnected in time: the delayed will is not sent ([MQTT-3.1.3-9]).
        reactor_.cancel_timer(s->will_timer);
        s->will_timer = {};
        s->will.reset();
    } else {
        s = sessions_.create(c.client_id);
    }
    s->expiry_interval = session_expiry;
    s->connection = &c;
    c.session = s;
    return present;
}

void Broker::detach_session(Connection& c, bool publish_will_now) {
    Session& s = *c.session;
    c.session = nullptr;
    s.connection = nullptr;
    if (s.acl) s.acl->disconnected();  // cached answers are for one connection
    if (!publish_will_now) s.will.reset();
    if (s.expiry_interval == 0) {
        end_session_handing_back(s);
        return;
    }
    if (s.will) {
        // The will waits for the shorter of its delay and the session's life.
        const std::uint32_t delay = std::min(s.will->delay, s.expiry_interval);
        // Stopping ends every session, so the wills are due now, unless the
        // session is stored: then it lives on and its delay keeps counting.
        if (delay == 0 && cluster_fenced_) {
            s.will_after_fence = true;  // unless another node owns the session now
        } else if (delay == 0 || (shutting_down_ && !s.stored)) {
            publish_will(s);
        } else {
            Session* sp = &s;
            s.will_timer = reactor_.add_timer_after(std::chrono::seconds(delay), [this, sp] {
                sp->will_timer = {};
                publish_will(*sp);
            });
        }
    }
    if (s.expiry_interval != never_expires && !shutting_down_) {
        Session* sp = &s;
        s.expiry_timer = reactor_.add_timer_after(std::chrono::seconds(s.expiry_interval), [this, sp] {
            sp->expiry_timer = {};
            expire_session(*sp);
        });
    }
    if (s.stored) persist_session(s);
    if (s.replicated) replicate_session(s);
}

void Broker::expire_session(Session& session) {
    ++stats_.clients_expired;
    spdlog::debug("Session {} expired.", session.client_id);
    end_session_handing_back(session);
}

void Broker::end_session(Session& s) {
    if (s.handing_over) end_handover(s);
    forget_acl_waiter(s);
    reactor_.cancel_timer(s.expiry_timer);
    reactor_.cancel_timer(s.will_timer);
    MessagePtr will_message;
    std::optional<std::uint32_t> will_expiry;
    if (s.will) {
        will_message = s.will->message;
        will_expiry = s.will->expiry_interval;
    }
    for (const auto& [filter, options] : s.subscriptions) remove_subscription(filter, &s);
    if (s.stored || s.will_stored) persist_session_end(s);
    // Ended here for good (not taken over by another node, which writes
    // its own record; not this node stopping: the record outlives it).
    if (s.replicated && cluster_ && !shutting_down_) cluster_->drop_session(s.client_id);
    if (s.connection) {
        s.connection->session = nullptr;
        s.connection = nullptr;
    }
    if (cluster_) cluster_->session_ended(s.client_id);
    sessions_.erase(&s);  // destroys s
    ++sessions_ended_since_trim_;
    // The session has ended, so its will is due now ([MQTT-3.1.3-9]).
    if (will_message) send_will(will_message, will_expiry, nullptr);
}

void Broker::publish_will(Session& s) {
    if (!s.will) return;
    reactor_.cancel_timer(s.will_timer);
    s.will_timer = {};
    MessagePtr message = s.will->message;
    std::optional<std::uint32_t> expiry = s.will->expiry_interval;
    s.will.reset();
    if (s.stored && !s.connection) persist_session(s);  // the will is gone
    send_will(message, expiry, &s);
}

void Broker::send_will(const MessagePtr& message, std::optional<std::uint32_t> expiry, Session* from) {
    MessageView view = view_of(message, reactor_.now());
    view.stored = nullptr;  // its Message Expiry starts now
    view.expiry_interval = expiry;
    if (cluster_) publish_to_cluster(view);
    if (view.retain && config_.retain_available) {
        if (view.payload.empty()) {
            retained_.erase(view.topic);
        } else {
            view.stored = make_message(view, reactor_.now());
            retained_.set(view.stored);
        }
        if (store_) persist_retained(view.topic, view.stored);
    }
    route(from, view);
}

void Broker::arm_keepalive(Connection& c) {
    if (c.keep_alive == 0) return;
    // One and a half times the keep alive ([MQTT-3.1.2-22]); checked in
    // on_deadline (broker.cpp).
    schedule_deadline(c, c.last_received + std::chrono::milliseconds(std::uint64_t{c.keep_alive} * 1500));
}

void Broker::handle_disconnect(Connection& c, const FixedHeader& header, Bytes body) {
    auto d = decode_disconnect(header, body, c.version, Sender::client);
    if (!d) {
        close_connection(c, d.error(), true);
        return;
    }
    if (c.session && d->properties.session_expiry_interval) {
        // 0 at CONNECT cannot become non-zero at DISCONNECT [MQTT-3.14.2-2].
        if (c.session->expiry_interval == 0 && *d->properties.session_expiry_interval != 0) {
            close_connection(c, ReasonCode::protocol_error, true);
            return;
        }
        std::uint32_t expiry = *d->properties.session_expiry_interval;
        if (config_.persistent_client_expiration) expiry = std::min(expiry, *config_.persistent_client_expiration);
        c.session->expiry_interval = expiry;
    }
    // The will is published only for "Disconnect with Will Message"
    // ([MQTT-3.14.4-3]).
    c.will_suppressed = d->reason != ReasonCode::disconnect_with_will_message;
    c.closed_by_peer = true;
    close_connection(c, d->reason, false);
}

}  // namespace mqttools::broker
