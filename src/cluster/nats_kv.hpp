// JetStream key/value buckets as every part of the cluster opens them
// (the ownership, sessions, nodes and admin buckets).
#pragma once

#include <cstdint>
#include <string>

#include <nats/nats.h>

namespace mqttools::cluster {

// Every get from the bucket's stream leader. js_CreateKeyValue turns the
// stream's AllowDirect on, and then any replica answers a get ("direct
// get"): after a NATS server died, a replica still catching up answered
// "no such key" for a session record written two seconds before, and the
// session was lost (Session Present 0 for a Clean Start 0 client). So the
// stream is changed back and the handle opened again: a get then goes to
// $JS.API.STREAM.MSG.GET, which the leader answers. False when JetStream
// did not answer (`kv` unchanged; the caller tries again later).
inline bool leader_reads(jsCtx* js, kvStore*& kv, const std::string& name) {
    const std::string stream = "KV_" + name;
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &jerr) != NATS_OK || !si) return false;
    bool ok = true;
    if (si->Config->AllowDirect) {
        si->Config->AllowDirect = false;
        jsStreamInfo* updated = nullptr;
        ok = js_UpdateStream(&updated, js, si->Config, nullptr, &jerr) == NATS_OK;
        if (updated) jsStreamInfo_Destroy(updated);
    }
    jsStreamInfo_Destroy(si);
    kvStore* fresh = nullptr;
    if (!ok || js_KeyValue(&fresh, js, name.c_str()) != NATS_OK) return false;
    kvStore_Destroy(kv);
    kv = fresh;
    return true;
}

// A key/value bucket keeping one value per key in `replicas` copies:
// created, or opened when another node created it first, read from its
// leader (leader_reads). Null when JetStream did not answer (the caller
// tries again later). `ttl_ns`: how long a key lives without being
// written (0: for ever).
inline kvStore* open_bucket(jsCtx* js, const std::string& name, std::uint32_t replicas,
                            jsStorageType storage = js_FileStorage, std::int64_t ttl_ns = 0) {
    kvConfig cfg;
    kvConfig_Init(&cfg);
    cfg.Bucket = name.c_str();
    cfg.History = 1;
    cfg.StorageType = storage;
    cfg.TTL = ttl_ns;
    cfg.Replicas = static_cast<int>(replicas);
    kvStore* kv = nullptr;
    if (js_CreateKeyValue(&kv, js, &cfg) != NATS_OK) {
        kv = nullptr;
        if (js_KeyValue(&kv, js, name.c_str()) != NATS_OK) return nullptr;
    }
    if (!leader_reads(js, kv, name)) {
        kvStore_Destroy(kv);
        return nullptr;
    }
    return kv;
}

}  // namespace mqttools::cluster
