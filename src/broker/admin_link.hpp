// What the management API and dynamic security share between the nodes
// of a cluster (issue 27), behind one narrow interface: src/cluster's
// ClusterAdmin implements it over NATS (request/reply subjects and a
// JetStream key/value bucket). A broker without a [cluster] table has
// none and everything stays local. Every call on the reactor thread;
// nothing blocks.
//
// Replicated state: every node applies every ban and every dynamic
// security change, including those made while it was away (the bucket
// keeps the latest of each); what arrives from the cluster comes back
// through Broker::ban_from_cluster and Broker::dynsec_from_cluster.
// Requests: the API of one node asks the others' APIs (a listing, a kick)
// and merges their answers (src/admin/api_cluster.cpp).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "broker/admin_view.hpp"

namespace mqttools::broker {

// One node's answer to a request: an HTTP status and body, or status 0
// when it did not answer in time.
struct PeerReply {
    std::string node;
    int status = 0;
    std::string body;
};

// A request from another node for this node's API: method and target as
// an HTTP request would carry them ("GET", "/api/v5/clients?page=1").
struct PeerRequest {
    std::string method;
    std::string target;
    std::string body;
};

class AdminLink {
public:
    using Replies = std::function<void(std::vector<PeerReply>)>;
    using Respond = std::function<void(int status, std::string body)>;
    using Serve = std::function<void(PeerRequest, Respond)>;

    virtual ~AdminLink() = default;
    virtual const std::string& node_id() const = 0;
    // The other nodes heard from lately (heartbeats), sorted by name.
    virtual std::vector<std::string> peers() const = 0;
    // Sends a request to `node`, or to every peer when empty; `done` gets
    // one reply per node asked (status 0: none within `timeout`), once.
    virtual void ask(std::string_view node, PeerRequest request, std::chrono::milliseconds timeout,
                     Replies done) = 0;
    // Who answers the other nodes' requests (the admin layer).
    virtual void serve(Serve handler) = 0;

    // This node changed the banned list / the dynamic security document
    // (with the usernames its change disconnected): every node applies it.
    virtual void ban_changed(const Ban& ban, bool removed) = 0;
    virtual void dynsec_changed(std::string_view document, const std::vector<std::string>& kick_usernames,
                                bool kick_anonymous) = 0;
};

}  // namespace mqttools::broker
