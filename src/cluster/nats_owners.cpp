// The KV thread (issue 13): session ownership by compare-and-set on a
// JetStream key-value bucket.

#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <unordered_set>
#include <vector>

#include "cluster/nats_shared.hpp"

namespace mqttools::cluster {

// A client id as a KV key ([-/_=.A-Za-z0-9]+): the bytes [A-Za-z0-9_-]
// stay, every other one becomes =XX (injective). An id whose key would be
// long (a subject must fit NATS' control line) becomes a 64-bit FNV-1a
// hash: two ids sharing a key only share the order of their claims.
std::string kv_key(std::string_view client_id) {
    static const char* hex = "0123456789ABCDEF";
    std::string key;
    if (client_id.size() <= 256) {
        for (const char ch : client_id) {
            const auto b = static_cast<unsigned char>(ch);
            if ((b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || b == '_' || b == '-') {
                key.push_back(ch);
            } else {
                key.push_back('=');
                key.push_back(hex[b >> 4]);
                key.push_back(hex[b & 15]);
            }
        }
        if (key.size() <= 512) return key;
    }
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char ch : client_id) {
        h ^= static_cast<unsigned char>(ch);
        h *= 0x100000001b3ULL;
    }
    key = "=H";
    for (int i = 60; i >= 0; i -= 4) key.push_back(hex[(h >> i) & 15]);
    return key;
}

namespace {

void on_dropped_answer(natsConnection*, natsSubscription*, natsMsg* msg, void*) { natsMsg_Destroy(msg); }

// One claim of a segment sent as a conditional write (kv_main).
struct FastClaim {
    enum State { unsent, sent, stored, conflict, failed };
    std::string key;
    State state = unsent;
    bool created = false;        // written as new (expected last revision 0)
    std::uint64_t revision = 0;  // stored: the revision it got
};

// JetStream's answer to a publish into the bucket's stream:
// {"stream":"KV_...","seq":N} when stored; {"error":{...,"err_code":10071,
// "description":"wrong last sequence: N"}} when the key's last revision was
// not the one expected (another node wrote it); anything else failed.
FastClaim::State parse_pub_ack(std::string_view body, std::uint64_t& revision) {
    if (body.find("\"error\"") != body.npos) {
        return body.find("wrong last sequence") != body.npos || body.find("10071") != body.npos ? FastClaim::conflict
                                                                                               : FastClaim::failed;
    }
    const std::size_t at = body.find("\"seq\":");
    if (at == body.npos) return FastClaim::failed;
    std::uint64_t seq = 0;
    for (std::size_t i = at + 6; i < body.size() && body[i] >= '0' && body[i] <= '9'; ++i) {
        seq = seq * 10 + static_cast<std::uint64_t>(body[i] - '0');
    }
    if (seq == 0) return FastClaim::failed;
    revision = seq;
    return FastClaim::stored;
}

constexpr std::size_t max_segment = 1024;

}  // namespace


// Session ownership by compare-and-set on a JetStream KV bucket (one key
// per client id, value = owning node): a claim reads the key's revision and
// writes this node with kvStore_Update(last = that revision), or
// kvStore_Create when the key does not exist; when another node wrote in
// between, the write fails and the claim reads again. Each successful
// write gets a new, higher revision, so every claim has a place in one
// total order that no clock can disturb; the revision is the claim's stamp
// on PREFIX.claim, and a node whose claim has the lower revision gives way
// (on_claim). The requests block: they run here, never on the reactor.
// Without the bucket (no JetStream, NATS down) a claim falls back to a
// wall-clock stamp and the old owner is unknown.
void NatsCluster::Shared::kv_main() {
    pthread_setname_np(pthread_self(), "mq-kv");
    const std::string bucket = stream_name(prefix, "MQTT_OWNERS_");
    const std::string claim_subject = prefix + ".claim";
    jsCtx* kjs = nullptr;
    kvStore* kv = nullptr;
    auto next_setup = std::chrono::steady_clock::now();
    bool warned = false;
    std::uint64_t kv_failures = 0;
    // Keys this node wrote last, with that revision: a client reconnecting
    // to the same node settles with one request.
    std::unordered_map<std::string, std::uint64_t> mine;
    std::deque<KvJob> jobs;
    // Releases are fire-and-forget purge requests; their answers come here
    // and are dropped.
    char origin_hex[24];
    std::snprintf(origin_hex, sizeof origin_hex, "%llx", static_cast<unsigned long long>(origin));
    const std::string release_reply = std::string("_r.") + origin_hex;
    const std::string purge_subject = "$JS.API.STREAM.PURGE.KV_" + bucket;
    const std::string delete_subject = "$JS.API.STREAM.MSG.DELETE.KV_" + bucket;
    bool deletes = false;  // the bucket lets an entry be deleted by its revision (open_bucket)
    natsSubscription* release_answers = nullptr;
    // Answers to the pipelined claims: CLAIM_REPLY.N for the Nth request.
    natsSubscription* claim_answers = nullptr;
    std::string claim_reply;
    if (natsInbox* inbox = nullptr; natsInbox_Create(&inbox) == NATS_OK) {
        claim_reply = std::string(inbox) + ".";
        natsInbox_Destroy(inbox);
    } else {
        claim_reply = std::string("_c.") + origin_hex + ".";
    }
    const std::string key_prefix = "$KV." + bucket + ".";
    std::uint64_t next_request = 0;
    std::unordered_set<std::string> segment_keys;
    std::vector<FastClaim> fast;
    // A claim whose key exists and is not known to be this node's: read
    // the owner, then write this node conditioned on the revision read.
    // NATS_ERR: the server refused the write (another node wrote first:
    // wrong last sequence): read again. Anything else (a timeout, the
    // connection gone): give up at once.
    auto settle_slowly = [&](kvStore* kv, const std::string& key, std::uint64_t& stamp, bool& other_owner,
                             std::string& previous) {
        const void* value = node_id.data();
        const int value_len = static_cast<int>(node_id.size());
        bool try_create = false;
        for (int attempt = 0; attempt < 8 && stamp == 0; ++attempt) {
            std::uint64_t rev = 0;
            natsStatus st = NATS_OK;
            if (try_create) {
                try_create = false;
                st = kvStore_Create(&rev, kv, key.c_str(), value, value_len);
                if (st == NATS_OK) {
                    mine[key] = rev;
                    stamp = rev;
                    other_owner = false;
                    previous = "-";
                    break;
                }
                if (st != NATS_ERR) break;  // NATS_ERR: it exists: read it
            }
            kvEntry* e = nullptr;
            st = kvStore_Get(&e, kv, key.c_str());
            if (st == NATS_NOT_FOUND) {
                try_create = true;  // next attempt; created by another node meanwhile: read again
                continue;
            }
            if (st != NATS_OK) break;
            const std::string_view owner(static_cast<const char*>(kvEntry_Value(e)),
                                         static_cast<std::size_t>(kvEntry_ValueLen(e)));
            const bool other = owner != node_id;
            const std::string owner_copy(owner.substr(0, 128).find(' ') == owner.npos ? owner.substr(0, 128) : "?");
            const std::uint64_t last = kvEntry_Revision(e);
            kvEntry_Destroy(e);
            st = kvStore_Update(&rev, kv, key.c_str(), value, value_len, last);
            if (st == NATS_OK) {
                mine[key] = rev;
                stamp = rev;
                other_owner = other;
                previous.assign(owner_copy);
            } else if (st != NATS_ERR) {
                break;
            }
        }
    };
    for (;;) {
        {
            std::unique_lock lock(kv_mutex);
            // Without the bucket (JetStream not ready when the node
            // started: a NATS cluster still electing its leader) it is
            // tried again every second, not only when a claim comes: the
            // claims settled meanwhile by the wall clock are made again
            // (nats_fence.cpp), and a take-over needs the bucket to exist.
            if (kv) {
                kv_cv.wait(lock, [&] { return stopping() || !kv_jobs.empty(); });
            } else {
                kv_cv.wait_for(lock, std::chrono::seconds(1), [&] { return stopping() || !kv_jobs.empty(); });
            }
            if (stopping() && kv_jobs.empty()) break;
            jobs.swap(kv_jobs);
        }
        natsConnection* c = control.load();
        natsConnection* d = data.load();
        if (!d) d = c;  // the data connection is the reactor's (NatsWire): claims go on the control one
        const bool up = c && natsConnection_Status(c) == NATS_CONN_STATUS_CONNECTED;
        if (up && !kv && std::chrono::steady_clock::now() >= next_setup) {
            next_setup = std::chrono::steady_clock::now() + std::chrono::seconds(1);
            // A CONNECT waits at most handover_wait (1.5 s) for its claim:
            // a request that takes longer is not worth waiting for.
            jsOptions jo;
            jsOptions_Init(&jo);
            jo.Wait = 1500;
            if (!kjs && natsConnection_JetStream(&kjs, c, &jo) != NATS_OK) kjs = nullptr;
            // As many copies as the sessions and messages: on a NATS
            // cluster, losing the server that held a single copy left
            // every claim unsettled, so no session resumed.
            if (kjs) kv = open_bucket(kjs, bucket, config.replicas, js_FileStorage, 0, &deletes);
            if (!kv && !warned) {
                warned = true;
                log("Cluster: no JetStream key/value bucket " + bucket +
                    ": session claims are ordered by wall-clock time (start nats-server with -js).");
            }
            if (kv) warned = false;
        }
        if (mine.size() > 200000) mine.clear();
        if (up && kv && !claim_answers) {
            if (natsConnection_SubscribeSync(&claim_answers, c, (claim_reply + "*").c_str()) == NATS_OK) {
                natsSubscription_SetPendingLimits(claim_answers, -1, -1);
            } else {
                claim_answers = nullptr;
            }
        }
        if (up && kv && !release_answers) {
            if (natsConnection_Subscribe(&release_answers, c, release_reply.c_str(), on_dropped_answer, nullptr) ==
                NATS_OK) {
                track(release_answers);
            } else {
                release_answers = nullptr;
            }
        }
        // Take-overs of a dead node's entries (nats_nodes.cpp) first: each
        // is a write conditioned on a revision read earlier, so one that a
        // claim of the same id overtakes only fails.
        std::erase_if(jobs, [&](const KvJob& job) {
            if (job.adopt_revision == 0) return false;
            adopt_entry(up ? kv : nullptr, d, claim_subject, mine, job);
            return true;
        });
        // The jobs go in segments of consecutive jobs whose keys differ: a
        // segment's compare-and-sets are sent at once and their answers
        // awaited together, so a burst of new client ids pays the bucket's
        // round trip once per segment instead of once per CONNECT (issue 26:
        // ~2,400 new ids/s before, one request at a time). A key that comes
        // again starts the next segment: one id's claims and releases stay
        // in the order the reactor made them, and each settles knowing the
        // revision the one before it wrote.
        for (std::size_t first = 0; first < jobs.size();) {
            std::size_t end = first;
            segment_keys.clear();
            fast.clear();
            while (end < jobs.size() && end - first < max_segment) {
                std::string key = kv_key(jobs[end].client_id);
                if (!segment_keys.insert(key).second) break;
                fast.push_back({std::move(key)});
                ++end;
            }
            // Send: releases at once (fire and forget), claims as
            // conditional writes to the bucket's subject with a reply each.
            const std::uint64_t base = next_request;
            std::size_t awaited = 0;
            for (std::size_t j = first; j < end; ++j) {
                FastClaim& f = fast[j - first];
                if (jobs[j].release) {
                    // The session ended here: remove the entry this node
                    // wrote (one value per key: a claim another node made
                    // since replaced it, has a higher revision and stays);
                    // the key then holds nothing at all (no delete marker),
                    // so a bucket under client-id churn does not grow
                    // (issue 26). By its revision where the bucket allows
                    // it, else every entry of the key up to that revision.
                    auto it = mine.find(f.key);
                    if (it == mine.end()) continue;  // never ours, or already given away
                    if (up && kv && release_answers) {
                        char body[1200];
                        const auto rev = static_cast<unsigned long long>(it->second);
                        const int n = deletes ? std::snprintf(body, sizeof body, "{\"seq\":%llu,\"no_erase\":true}", rev)
                                              : std::snprintf(body, sizeof body, "{\"filter\":\"$KV.%s.%s\",\"seq\":%llu}",
                                                              bucket.c_str(), f.key.c_str(), rev + 1);
                        if (n > 0 && n < static_cast<int>(sizeof body)) {
                            natsConnection_PublishRequest(c, (deletes ? delete_subject : purge_subject).c_str(),
                                                          release_reply.c_str(), body, n);
                        }
                    }
                    mine.erase(it);
                    continue;
                }
                if (!(up && kv && claim_answers)) continue;
                // A key this node wrote last: update it from that revision;
                // any other: create it (a client id the cluster does not
                // know: the common case under churn).
                auto it = mine.find(f.key);
                f.created = it == mine.end();
                char expected[24];
                std::snprintf(expected, sizeof expected, "%llu",
                              static_cast<unsigned long long>(f.created ? 0 : it->second));
                const std::string subject = key_prefix + f.key;
                const std::string reply = claim_reply + std::to_string(base + (j - first));
                natsMsg* m = nullptr;
                if (natsMsg_Create(&m, subject.c_str(), reply.c_str(), node_id.data(),
                                   static_cast<int>(node_id.size())) == NATS_OK &&
                    natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", expected) == NATS_OK &&
                    natsConnection_PublishMsg(c, m) == NATS_OK) {
                    f.state = FastClaim::sent;
                    ++awaited;
                }
                natsMsg_Destroy(m);
            }
            next_request = base + (end - first);
            // Collect the answers (the bucket's 1.5 s, as a single request
            // had); one that does not come counts as a failed claim.
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
            while (awaited > 0) {
                const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                                      deadline - std::chrono::steady_clock::now())
                                      .count();
                natsMsg* m = nullptr;
                if (left <= 0 || natsSubscription_NextMsg(&m, claim_answers, left) != NATS_OK) break;
                const std::string_view subject(natsMsg_GetSubject(m));
                std::uint64_t no = 0;
                bool numbered = subject.size() > claim_reply.size() && subject.starts_with(claim_reply);
                for (const char ch : numbered ? subject.substr(claim_reply.size()) : std::string_view()) {
                    if (ch < '0' || ch > '9') numbered = false;
                    no = no * 10 + static_cast<std::uint64_t>(ch - '0');
                }
                // An answer of an earlier segment (it came too late) is not ours.
                if (numbered && no >= base && no - base < fast.size() && fast[no - base].state == FastClaim::sent) {
                    FastClaim& f = fast[no - base];
                    const std::string_view body(natsMsg_GetData(m) ? natsMsg_GetData(m) : "",
                                                static_cast<std::size_t>(natsMsg_GetDataLength(m)));
                    f.state = natsMsg_IsNoResponders(m) ? FastClaim::failed : parse_pub_ack(body, f.revision);
                    --awaited;
                }
                natsMsg_Destroy(m);
            }
            // Settle the segment's claims in order.
            for (std::size_t j = first; j < end; ++j) {
                if (jobs[j].release) continue;
                const std::string& client_id = jobs[j].client_id;
                const bool want_state = jobs[j].want_state;
                FastClaim& f = fast[j - first];
                std::uint64_t stamp = 0;
                bool other_owner = true;  // unknown counts as another
                std::string previous = "?";
                if (f.state == FastClaim::stored) {
                    mine[f.key] = f.revision;
                    stamp = f.revision;
                    other_owner = false;
                    previous = f.created ? std::string("-") : node_id;
                } else if (f.state == FastClaim::conflict) {
                    // The key exists (another node's, or written since):
                    // read it, then update from what was read.
                    mine.erase(f.key);
                    settle_slowly(kv, f.key, stamp, other_owner, previous);
                }
                if (up && kv) {
                    if (stamp != 0) {
                        stamp |= kv_stamp_bit;
                    } else {
                        ++kv_failures;
                        if ((kv_failures & (kv_failures - 1)) == 0) {
                            const char* why = nats_GetLastError(nullptr);
                            log("Cluster: session claims not settled by the KV bucket so far: " +
                                std::to_string(kv_failures) + " (last: " + (why ? why : "?") +
                                "); ordered by wall-clock time");
                        }
                    }
                }
                if (stamp == 0) {
                    stamp = wall_ns() & ~kv_stamp_bit;
                    other_owner = true;
                    previous = "?";
                }
                // Tell the other nodes, then the reactor.
                std::string payload = std::to_string(stamp);
                payload.append(1, ' ').append(node_id).append(want_state ? " s " : " - ");
                payload.append(previous.empty() ? "?" : previous).append(1, ' ').append(client_id);
                if (!d || natsConnection_Status(d) != NATS_CONN_STATUS_CONNECTED ||
                    natsConnection_Publish(d, claim_subject.c_str(), payload.data(),
                                           static_cast<int>(payload.size())) != NATS_OK) {
                    const std::uint64_t n = unsent_claims.fetch_add(1, std::memory_order_relaxed) + 1;
                    if ((n & (n - 1)) == 0) {
                        log("Cluster: NATS is down: session claims not sent so far: " + std::to_string(n));
                    }
                }
                const std::uint32_t flags = (want_state ? claim_wants_state : 0) |
                                            (other_owner ? claim_other_owner : 0) |
                                            (previous == node_id ? claim_own_before : 0);
                push_in(tag_claimed, flags, client_id.data(), client_id.size(), 0, stamp);
            }
            first = end;
        }
        jobs.clear();
    }
    if (release_answers) natsSubscription_Destroy(release_answers);
    if (claim_answers) natsSubscription_Destroy(claim_answers);
    if (kv) kvStore_Destroy(kv);
    if (kjs) jsCtx_Destroy(kjs);
}

}  // namespace mqttools::cluster
