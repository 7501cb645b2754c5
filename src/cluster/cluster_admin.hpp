// The cluster side of the management API and dynamic security (issue 27):
// broker::AdminLink over its own NATS connection, apart from the message
// path (nats_cluster.hpp), so neither slows the other. As there, the
// reactor never calls libnats: a worker thread publishes and writes the
// bucket, a watcher thread reads it, libnats' threads receive, and all
// that arrives crosses to the reactor through a queue and an eventfd.
//
// Subjects (PREFIX = [cluster] subject_prefix, NODE = the node id in hex):
//   PREFIX.admin.hb            "NODE-ID": a node's heartbeat, every 2 s (and
//                              at once to a node not heard before)
//   PREFIX.admin.req.NODE      "METHOD TARGET\n" + body: a request for the
//                              API of NODE; the reply subject comes with it
//   PREFIX.admin.rep.NODE.ID   "STATUS PART COUNT NODE-ID\n" + a part of
//                              the answer (answers over 512 KiB come in parts)
// KV bucket MQTT_ADMIN_PREFIX (JetStream, one entry per key, the latest):
//   dynsec                     {"origin", "kick", "kick_anonymous", "doc"}
//   ban.KIND.WHO-in-hex        {"as", "who", "by", "reason", "at", "until"}
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "broker/admin_link.hpp"
#include "broker/broker.hpp"
#include "config/config.hpp"
#include "net/reactor.hpp"
#include "net/unique_fd.hpp"

namespace mqttools::cluster {

class ClusterAdmin final : public broker::AdminLink, public net::IoHandler {
public:
    // Connecting happens in the background (retried). Null with `error`
    // set when the link cannot be set up at all.
    static std::unique_ptr<ClusterAdmin> start(net::Reactor& reactor, broker::Broker& broker,
                                               const config::Cluster& config, std::string node_id, std::string& error);
    ~ClusterAdmin() override;
    ClusterAdmin(const ClusterAdmin&) = delete;
    ClusterAdmin& operator=(const ClusterAdmin&) = delete;

    // broker::AdminLink
    const std::string& node_id() const override { return node_id_; }
    std::vector<std::string> peers() const override;
    void ask(std::string_view node, broker::PeerRequest request, std::chrono::milliseconds timeout,
             Replies done) override;
    void serve(Serve handler) override { serve_ = std::move(handler); }
    void ban_changed(const broker::Ban& ban, bool removed) override;
    void dynsec_changed(std::string_view document, const std::vector<std::string>& kick_usernames,
                        bool kick_anonymous) override;

    void on_io(std::uint32_t events) override;

    struct Shared;  // with the worker, watcher and libnats threads
    struct Event;

private:
    ClusterAdmin(net::Reactor& reactor, broker::Broker& broker, std::string node_id);
    void handle(Event& e);
    void on_reply_part(std::string_view subject, std::string_view payload);
    void on_request(std::string reply_to, std::string_view payload);
    void on_entry(const std::string& key, bool deleted, std::string_view value);
    void on_initial_done();
    void finish_ask(std::uint64_t id);

    net::Reactor& reactor_;
    broker::Broker& broker_;
    std::string node_id_;
    std::unique_ptr<Shared> shared_;
    net::UniqueFd eventfd_;
    Serve serve_;

    std::map<std::string, net::Clock::time_point> peers_;  // node -> last heartbeat
    struct Ask {
        std::vector<broker::PeerReply> replies;  // one per node asked, in order
        std::map<std::string, std::vector<std::string>> parts;  // node -> parts so far
        std::size_t answered = 0;
        Replies done;
        net::Reactor::TimerId timer{};
    };
    std::unordered_map<std::uint64_t, Ask> asks_;
    std::uint64_t next_ask_ = 1;
    // Own dynamic security documents put but not yet seen back from the
    // bucket: while some are outstanding, echoes of older ones are skipped
    // (they would undo a later change for a moment).
    int own_dynsec_puts_ = 0;
    bool dynsec_in_bucket_ = false;
    bool initial_done_ = false;
    std::set<std::string> initial_bans_;  // ban keys the bucket held at start
    std::uint64_t last_revision_ = 0;     // entries are applied once (a watcher made again replays)
};

}  // namespace mqttools::cluster
