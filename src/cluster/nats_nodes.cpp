// Sessions of a node that died (issue 25, sessions = "replicated"): their
// wills and their expiry, enforced by the nodes still up.
//
// Liveness: every node puts its key in the JetStream key/value bucket
// PREFIX_NODES every net_ticktime/4 (value: its instance) and watches the
// bucket; a node whose key did not change for `[cluster] net_ticktime` is
// down (as Erlang's net_ticktime, which EMQX's node.dist_net_ticktime sets).
// Each node judges with its own clock, and only while it sees its own
// heartbeats come back (a node cut off from NATS judges nobody).
//
// When a node goes down (and once a net_ticktime after this node started:
// nodes that died while it was not watching, and its own previous
// instance under the same node id) the node reads the ownership bucket
// (PREFIX_OWNERS) and, for each entry whose owner is down, tries a
// compare-and-set on the revision it read (nats_owners.cpp, adopt_entry):
// of all the nodes that try, exactly one wins, then claims the id as any
// CONNECT does (other nodes, a frozen one among them, let it go), reads the
// session's record and takes the session over as a disconnected one
// (broker/session_replica.cpp, Broker::adopt_orphan): the will is sent
// after its delay, counted from when the client lost its node; the
// session expires when its Session Expiry Interval, counted from then,
// runs out (its record and ownership entry are then deleted). A client
// that returns before that resumes it as from any live node (Session
// Present 1, its messages), and its will, sent or cancelled, is not sent
// again. An entry with no record (Session Expiry 0) is released.
#include <pthread.h>

#include <cstdlib>

#include <spdlog/spdlog.h>

#include "cluster/nats_durable.hpp"
#include "cluster/nats_groups.hpp"
#include "cluster/nats_shared.hpp"

namespace mqttools::cluster {

namespace {

// kv_key's inverse (nats_owners.cpp); false for a hashed key (an id over
// 256 bytes: such sessions are not taken over).
bool client_id_of(std::string_view key, std::string& id) {
    auto hex = [](char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    };
    id.clear();
    for (std::size_t i = 0; i < key.size(); ++i) {
        if (key[i] != '=') {
            id.push_back(key[i]);
            continue;
        }
        if (i + 2 >= key.size()) return false;
        const int hi = hex(key[i + 1]), lo = hex(key[i + 2]);
        if (hi < 0 || lo < 0) return false;  // "=H...": a hash
        id.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return true;
}

}  // namespace

// KV thread (kv_main): the compare-and-set that takes a dead node's entry.
void NatsCluster::Shared::adopt_entry(kvStore* kv, natsConnection* d, const std::string& claim_subject,
                                      std::unordered_map<std::string, std::uint64_t>& mine, const KvJob& job) {
    const std::string key = kv_key(job.client_id);
    std::uint64_t rev = 0;
    const bool won = kv && kvStore_Update(&rev, kv, key.c_str(), node_id.data(), static_cast<int>(node_id.size()),
                                          job.adopt_revision) == NATS_OK;
    if (!won) {
        push_in(tag_loaded, loaded_adopt_failed, job.client_id.data(), job.client_id.size());
        return;
    }
    mine[key] = rev;
    const std::uint64_t stamp = rev | kv_stamp_bit;
    // A claim as a CONNECT's (wanting no state): a node that still holds
    // the session (frozen, partitioned) lets it go.
    std::string payload = std::to_string(stamp);
    payload.append(1, ' ').append(node_id).append(" - ").append(job.dead_owner).append(1, ' ').append(job.client_id);
    if (d && natsConnection_Status(d) == NATS_CONN_STATUS_CONNECTED) {
        natsConnection_Publish(d, claim_subject.c_str(), payload.data(), static_cast<int>(payload.size()));
    }
    push_in(tag_loaded, loaded_adopted, job.client_id.data(), job.client_id.size(), 0, stamp);
}

void NatsCluster::Shared::nodes_main() {
    pthread_setname_np(pthread_self(), "mq-nodes");
    using namespace std::chrono;
    const auto tick = milliseconds(config.net_ticktime);
    const auto beat = std::max<milliseconds>(milliseconds(250), tick / 4);
    const std::string bucket = stream_name(prefix, "MQTT_NODES_");
    const std::string owners_bucket = stream_name(prefix, "MQTT_OWNERS_");
    const std::string me = kv_key(node_id);
    char instance[24];
    std::snprintf(instance, sizeof instance, "%llx", static_cast<unsigned long long>(origin));
    jsCtx* js = nullptr;
    kvStore* kv = nullptr;
    kvWatcher* watcher = nullptr;
    struct Peer {
        steady_clock::time_point seen;
        bool down = false;
        std::string instance;  // its value: the node's instance (hex)
    };
    std::unordered_map<std::string, Peer> peers;  // by key (kv_key of the node id)
    auto next_setup = steady_clock::now();
    auto next_beat = next_setup;
    // The first scan: once every live node had a net_ticktime to show up.
    auto next_scan = next_setup + tick;
    bool first_scan = true;
    steady_clock::time_point self_seen{};
    bool healthy = false;
    int failed_puts = 0;
    auto drop = [&] {
        if (watcher) kvWatcher_Destroy(watcher);
        if (kv) kvStore_Destroy(kv);
        watcher = nullptr;
        kv = nullptr;
    };
    while (!stopping()) {
        auto now = steady_clock::now();
        natsConnection* c = control.load();
        const bool up = c && natsConnection_Status(c) == NATS_CONN_STATUS_CONNECTED;
        if (up && !kv && now >= next_setup) {
            next_setup = now + seconds(1);
            jsOptions jo;
            jsOptions_Init(&jo);
            jo.Wait = static_cast<std::int64_t>(beat.count());
            if (!js && natsConnection_JetStream(&js, c, &jo) != NATS_OK) js = nullptr;
            // Liveness need not outlive nats-server; a dead node's key
            // goes after a while (judged by the watchers' clocks, not this).
            if (js) kv = open_bucket(js, bucket, config.replicas, js_MemoryStorage, std::int64_t{4} * tick.count() * 1'000'000);
            if (kv) {
                kvWatchOptions wo;
                kvWatchOptions_Init(&wo);
                wo.IgnoreDeletes = true;
                if (kvStore_WatchAll(&watcher, kv, &wo) != NATS_OK) {
                    watcher = nullptr;
                    drop();
                }
            }
        }
        // This node's heartbeat when one is due; also called from the
        // middle of the work below, which blocks on JetStream requests: a
        // take-over's scan of the ownership bucket took this thread past
        // net_ticktime on a loaded host, and the other nodes took this live
        // node for dead and its clients away.
        auto beat_if_due = [&] {
            if (!kv || steady_clock::now() < next_beat) return;
            next_beat = steady_clock::now() + beat;
            std::uint64_t rev = 0;
            if (kvStore_PutString(&rev, kv, me.c_str(), instance) == NATS_OK) {
                failed_puts = 0;
            } else if (++failed_puts >= 4) {
                failed_puts = 0;
                drop();  // the bucket may be gone with a restarted nats-server
            }
        };
        beat_if_due();
        // What the others (and this node) put since.
        for (int i = 0; watcher && i < 1000; ++i) {
            kvEntry* e = nullptr;
            const natsStatus st = kvWatcher_Next(&e, watcher, 50);
            if (st != NATS_OK) break;
            if (!e) continue;  // the end of the initial values
            const std::string key = kvEntry_Key(e);
            now = steady_clock::now();
            if (key.compare(0, 5, "gone.") == 0) {
                // Not a node: a dead node's groups being handed back (below).
            } else if (key == me) {
                self_seen = now;
            } else {
                Peer& p = peers[key];
                if (p.down) log("Cluster: node " + key + " is up again.");
                p.seen = now;
                p.down = false;
                p.instance.assign(static_cast<const char*>(kvEntry_Value(e)), static_cast<std::size_t>(kvEntry_ValueLen(e)));
            }
            kvEntry_Destroy(e);
        }
        if (!watcher) std::this_thread::sleep_for(milliseconds(50));
        now = steady_clock::now();
        // Judged only while this node's own heartbeats come back: cut off
        // from NATS, it would take every other node for dead.
        const bool was_healthy = healthy;
        healthy = self_seen != steady_clock::time_point{} && now - self_seen < std::max<milliseconds>(tick / 2, beat * 2);
        if (!healthy) continue;
        if (!was_healthy) {
            for (auto& [key, p] : peers) p.seen = std::max(p.seen, now);  // a whole net_ticktime each, again
            next_scan = std::max(next_scan, now + tick);
            continue;
        }
        for (auto& [key, p] : peers) {
            if (p.down || now - p.seen <= tick) continue;
            p.down = true;
            log("Cluster: node " + key + " is down (no heartbeat for " + std::to_string(config.net_ticktime) +
                " ms); taking over its sessions.");
            next_scan = now;
            // Its shared subscriptions' messages go back to their groups:
            // from one survivor, the first to create the key (nats_groups.cpp).
            std::uint64_t rev = 0;
            beat_if_due();
            const std::string gone = "gone." + p.instance;
            if (durable && !p.instance.empty() && kvStore_Create(&rev, kv, gone.c_str(), "1", 1) == NATS_OK) {
                const std::uint64_t dead = std::strtoull(p.instance.c_str(), nullptr, 16);
                const auto since = duration_cast<nanoseconds>(now - p.seen - beat).count();
                const auto alive_until = static_cast<std::int64_t>(wall_ns()) - std::max<std::int64_t>(0, since);
                Durable* d = durable;
                d->post([d, dead, alive_until](jsCtx* j) { redispatch_dead_node(d, j, dead, alive_until); });
            }
        }
        if (now < next_scan || !js) continue;
        next_scan = steady_clock::time_point::max();
        // The scan: every ownership entry whose owner is down (or this
        // node's previous instance's, on the first) goes to the reactor,
        // which tries to take it.
        kvStore* owners = nullptr;
        kvWatcher* all = nullptr;
        kvWatchOptions wo;
        kvWatchOptions_Init(&wo);
        wo.IgnoreDeletes = true;
        beat_if_due();
        bool ok = js_KeyValue(&owners, js, owners_bucket.c_str()) == NATS_OK &&
                  kvStore_WatchAll(&all, owners, &wo) == NATS_OK;
        const std::uint64_t wall = wall_ns();
        std::string id;
        std::string out;
        while (ok) {
            beat_if_due();
            kvEntry* e = nullptr;
            if (kvWatcher_Next(&e, all, 5000) != NATS_OK) {
                ok = false;
                break;
            }
            if (!e) break;  // every entry seen
            const std::string_view owner(static_cast<const char*>(kvEntry_Value(e)),
                                         static_cast<std::size_t>(kvEntry_ValueLen(e)));
            std::uint64_t last_seen_ns = 0;
            bool orphan = false;
            if (owner == node_id) {
                orphan = first_scan;
            } else if (!owner.empty() && owner.find(' ') == owner.npos) {
                auto p = peers.find(kv_key(owner));
                orphan = p == peers.end() || p->second.down || now - p->second.seen > tick;
                if (p != peers.end()) {
                    // It may have lived until its next heartbeat was due:
                    // its clients' wills never go early.
                    const auto since = now - p->second.seen - beat;
                    last_seen_ns = since <= nanoseconds(0)
                                       ? wall
                                       : wall - static_cast<std::uint64_t>(duration_cast<nanoseconds>(since).count());
                }
            }
            if (orphan && client_id_of(kvEntry_Key(e), id)) {
                out.assign(id).push_back('\0');
                out.append(owner);
                push_in(tag_loaded, loaded_orphan, out.data(), out.size(), last_seen_ns, kvEntry_Revision(e));
            }
            kvEntry_Destroy(e);
        }
        if (all) kvWatcher_Destroy(all);
        if (owners) kvStore_Destroy(owners);
        if (ok) {
            first_scan = false;
        } else {
            next_scan = steady_clock::now() + tick;  // JetStream busy: again later
        }
    }
    drop();
    if (js) jsCtx_Destroy(js);
}

// Reactor: the scan's candidates and the compare-and-set's outcome.
void NatsCluster::on_orphan(std::uint32_t kind, std::string_view data, std::uint64_t origin, std::uint64_t seq) {
    const std::string_view client_id = data.substr(0, data.find('\0'));
    std::string id(client_id);
    if (kind == loaded_adopt_failed) {
        adopting_.erase(id);  // another node took it (or the client came back)
        return;
    }
    if (kind == loaded_adopted) {
        if (!adopting_.contains(id)) return;  // claimed by a returning client meanwhile
        claims_[id] = Claim{seq, reactor_.now()};
        claims_by_age_.emplace_back(id, reactor_.now());
        post_load(id, true);
        return;
    }
    if (data.size() <= client_id.size()) return;
    const std::string_view owner = data.substr(client_id.size() + 1);
    if (adopting_.contains(id) || pending_claims_.contains(id) || !broker_.session_adoptable(client_id)) return;
    if (owner == node_id_) {
        // This node's own entry: only its previous instance's (nothing of
        // the id is here, and it did not just end here).
        for (const auto& [ended, at] : ended_) {
            if (ended == id) return;
        }
        if (claims_.contains(id)) return;
    }
    adopting_[id] = static_cast<std::int64_t>(origin);
    shared_->push_adopt(client_id, owner, seq);
}

void NatsCluster::orphan_loaded(std::string_view client_id, const broker::ReplicaRecord& record) {
    auto it = adopting_.find(std::string(client_id));
    if (it == adopting_.end()) return;  // a returning client claimed it meanwhile
    const std::int64_t last_seen_ns = it->second;
    adopting_.erase(it);
    broker_.adopt_orphan(client_id, record, last_seen_ns);
}

}  // namespace mqttools::cluster
