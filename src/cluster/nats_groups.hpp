// Shared subscriptions across a node's death (issue 25; nats_groups.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <set>
#include <cstring>
#include <string>
#include <string_view>

#include <nats/nats.h>

#include "cluster/nats_durable.hpp"

namespace mqttools::cluster {

// Takes a value off the front of `in` (unaligned bytes); false when short.
template <class T>
bool take(std::string_view& in, T& v) {
    if (in.size() < sizeof v) return false;
    std::memcpy(&v, in.data(), sizeof v);
    in.remove_prefix(sizeof v);
    return true;
}

// "ORIGINHEX.SEQ" (Nats-Msg-Id of a durable message).
bool parse_msg_id(const char* id, std::uint64_t& origin, std::uint64_t& seq);

// Durable thread: reads the message stream on `subject` from `since_ns`
// until it caught up (JetStream tried until `deadline`); false when it
// could not be read whole.
bool read_stream(Durable* d, jsCtx* js, const std::string& subject, std::int64_t since_ns,
                 std::chrono::steady_clock::time_point deadline,
                 const std::function<void(natsMsg*, const jsMsgMetaData&)>& each);

// Durable thread: the shared-subscription messages a group gave `member`
// since `since_ns` and that the member did not complete, by the nodes'
// marks. False: the marks could not be read.
bool member_marks(Durable* d, jsCtx* js, const std::string& member, std::int64_t since_ns,
                  std::chrono::steady_clock::time_point deadline, std::set<ClusterMessageIdPair>& mine);

// Durable thread: the node whose instance was `dead` is down (alive at
// most until `alive_until_ns`, wall clock): the messages of its groups that
// it took for members without a record and that no member completed, and
// those nobody marked (it died before its marks left, or NATS had handed
// them to it unread), go back to their groups, once.
void redispatch_dead_node(Durable* d, jsCtx* js, std::uint64_t dead, std::int64_t alive_until_ns);

}  // namespace mqttools::cluster
