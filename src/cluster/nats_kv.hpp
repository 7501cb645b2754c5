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
// `deletes`: set to whether the stream lets a message be deleted by its
// sequence (see open_bucket).
inline bool leader_reads(jsCtx* js, kvStore*& kv, const std::string& name, bool* deletes = nullptr) {
    const std::string stream = "KV_" + name;
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&si, js, stream.c_str(), nullptr, &jerr) != NATS_OK || !si) return false;
    if (deletes) *deletes = !si->Config->DenyDelete;
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
//
// `deletes` (the ownership bucket): the bucket is created letting a
// message be deleted by its sequence, and *deletes says whether the one
// opened does. A key/value bucket as js_CreateKeyValue makes it denies
// that, so removing a key without leaving a marker takes a stream purge
// filtered on the key, which nats-server 2.9 pays for with a walk of the
// stream: ~100 us of its CPU per purge with 10,000 keys in the bucket,
// ~280 us with 18,000 (issue 26: 5 s of nats-server CPU after a storm of
// 18,000 new ids left), against ~15-20 us for a delete by sequence. A
// bucket an earlier version created keeps denying deletes (nats-server
// refuses to lift deny_delete): its keys are then purged as before.
inline kvStore* open_bucket(jsCtx* js, const std::string& name, std::uint32_t replicas,
                            jsStorageType storage = js_FileStorage, std::int64_t ttl_ns = 0,
                            bool* deletes = nullptr) {
    if (deletes) {
        // The stream js_CreateKeyValue would add, but for DenyDelete and
        // AllowDirect (see leader_reads). It fails when the stream exists:
        // then it is opened as it is.
        const std::string stream = "KV_" + name;
        const std::string subjects = "$KV." + name + ".>";
        const char* subject_list[] = {subjects.c_str()};
        jsStreamConfig sc;
        jsStreamConfig_Init(&sc);
        sc.Name = stream.c_str();
        sc.Subjects = subject_list;
        sc.SubjectsLen = 1;
        sc.MaxMsgsPerSubject = 1;
        sc.MaxAge = ttl_ns;
        sc.Duplicates = ttl_ns > 0 && ttl_ns < std::int64_t{120'000'000'000} ? ttl_ns : std::int64_t{120'000'000'000};
        sc.Discard = js_DiscardNew;
        sc.Storage = storage;
        sc.Replicas = static_cast<int64_t>(replicas);
        sc.AllowRollup = true;
        sc.DenyDelete = false;
        sc.AllowDirect = false;
        jsStreamInfo* si = nullptr;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        if (js_AddStream(&si, js, &sc, nullptr, &jerr) == NATS_OK && si) jsStreamInfo_Destroy(si);
    }
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
    if (!leader_reads(js, kv, name, deletes)) {
        kvStore_Destroy(kv);
        return nullptr;
    }
    return kv;
}

}  // namespace mqttools::cluster
