// Dynamic security on the broker (auth/dynsec.hpp): loading
// dynamic_security_file, the $CONTROL/dynamic-security/v1 command topic,
// and making every change take effect at once: clients whose credentials
// or roles changed are disconnected (MQTT 5: DISCONNECT 0x98
// Administrative action), every connected client's ACL snapshot is rebound
// so changed ACLs apply to its next packet. Authentication and ACL checks
// are the chain's DynsecSource (auth/dynsec_source.hpp).
#include <spdlog/spdlog.h>

#include "broker/auth/dynsec_source.hpp"
#include "broker/broker.hpp"
#include "broker/connect_pending.hpp"

namespace mqttools::broker {

namespace {
constexpr std::string_view control_topic = "$CONTROL/dynamic-security/v1";
constexpr std::string_view response_topic = "$CONTROL/dynamic-security/v1/response";
}  // namespace

void Broker::reload_dynsec(const config::Config& config, std::vector<std::string>& errors) {
    std::erase_if(own_auth_sources_, [](const auto& s) { return s->name() == "dynsec"; });
    if (config.dynamic_security_file.empty()) {
        dynsec_.reset();
        dynsec_file_.clear();
        return;
    }
    // Until the file is read (and if it cannot be), nobody is known and
    // nothing allowed: fail closed. Rules bound to the old state see the
    // new generation and rebind at their next check.
    if (!dynsec_ || dynsec_file_ != config.dynamic_security_file) dynsec_ = std::make_shared<auth::dynsec::Dynsec>();
    dynsec_file_ = config.dynamic_security_file;
    const std::uint64_t generation = dynsec_->generation();
    try {
        *dynsec_ = auth::dynsec::Dynsec::load(dynsec_file_);
        spdlog::info("dynamic security: {} clients, {} groups, {} roles from {}", dynsec_->clients().size(),
                     dynsec_->groups().size(), dynsec_->roles().size(), dynsec_file_);
    } catch (const std::exception& e) {
        errors.emplace_back(e.what());
    }
    while (dynsec_->generation() <= generation) dynsec_->touch();
    // First in the chain (auth_chain.hpp, "Order").
    own_auth_sources_.insert(own_auth_sources_.begin(),
                             std::make_shared<auth::DynsecSource>(dynsec_, *pending_connects_));
}

bool Broker::is_dynsec_control(std::string_view topic) const noexcept {
    return dynsec_ && topic == control_topic;
}

// A PUBLISH the ACL let through to the command topic: the commands are
// handled here, never routed; the answer goes to the response topic (QoS 0,
// as Mosquitto), to whoever may read it.
void Broker::handle_dynsec_control(Connection& c, Bytes payload) {
    const std::string_view text(reinterpret_cast<const char*>(payload.data()), payload.size());
    auth::dynsec::Effects effects;
    const std::string response = dynsec_->handle_commands(text, effects, &dynsec_file_);
    spdlog::info("dynamic security: commands from {} ({}){}", c.client_id, c.has_username ? c.username : "",
                 effects.changed ? ", saved" : "");
    publish_internal(response_topic, response, false);
    if (effects.changed) {
        apply_dynsec_effects(effects);
        if (admin_link_) admin_link_->dynsec_changed(dynsec_->to_json(), effects.kick_usernames, effects.kick_anonymous);
    }
}

std::string Broker::dynsec_document() const { return dynsec_ ? dynsec_->to_json() : std::string(); }

// Another node's change (or, at start, the cluster's document): the same
// state here, saved to this node's file, and the clients that change
// disconnected there are disconnected here too.
void Broker::dynsec_from_cluster(std::string_view document, const std::vector<std::string>& kick_usernames,
                                 bool kick_anonymous) {
    if (!dynsec_ || document == dynsec_->to_json()) return;
    auth::dynsec::Dynsec next;
    try {
        next = auth::dynsec::Dynsec::parse(document, "the cluster's dynamic security document");
    } catch (const std::exception& e) {
        spdlog::error("dynamic security: {}; kept the current state.", e.what());
        return;
    }
    const std::uint64_t generation = dynsec_->generation();
    *dynsec_ = std::move(next);
    while (dynsec_->generation() <= generation) dynsec_->touch();
    std::string error;
    if (!dynsec_->save(dynsec_file_, &error)) spdlog::error("dynamic security: {}", error);
    spdlog::info("dynamic security: applied a change from the cluster ({} clients, {} groups, {} roles)",
                 dynsec_->clients().size(), dynsec_->groups().size(), dynsec_->roles().size());
    auth::dynsec::Effects effects;
    effects.kick_usernames = kick_usernames;
    effects.kick_anonymous = kick_anonymous;
    effects.changed = true;
    apply_dynsec_effects(effects);
}

// Rules bound to the old state rebind at their next check (the state's
// generation changed): here only the clients the change concerns go.
void Broker::apply_dynsec_effects(const auth::dynsec::Effects& effects) {
    std::vector<Connection*> kick;
    sessions_.for_each([&](Session& s) {
        Connection* c = s.connection;
        if (!c) return;
        const bool hit = c->has_username ? std::find(effects.kick_usernames.begin(), effects.kick_usernames.end(),
                                                     c->username) != effects.kick_usernames.end()
                                         : effects.kick_anonymous;
        if (hit) kick.push_back(c);
    });
    for (Connection* c : kick) {
        spdlog::info("dynamic security: disconnecting {} ({})", c->client_id, c->has_username ? c->username : "");
        close_connection(*c, ReasonCode::administrative_action, true);
    }
}

}  // namespace mqttools::broker
