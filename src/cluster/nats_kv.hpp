// JetStream key/value buckets as every part of the cluster opens them
// (the ownership, sessions, nodes and admin buckets).
#pragma once

#include <cstdint>
#include <string>

#include <nats/nats.h>

namespace mqttools::cluster {

// A key/value bucket keeping one value per key in `replicas` copies:
// created, or opened when another node created it first. Null when
// JetStream did not answer (the caller tries again later). `ttl_ns`: how
// long a key lives without being written (0: for ever).
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
    if (js_CreateKeyValue(&kv, js, &cfg) == NATS_OK) return kv;
    kv = nullptr;
    if (js_KeyValue(&kv, js, name.c_str()) != NATS_OK) kv = nullptr;
    return kv;
}

}  // namespace mqttools::cluster
