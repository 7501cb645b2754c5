// JSON access with the leniency of Mosquitto's plugin (cJSON): object keys
// are found case-insensitively ("textName" written by mosquitto_ctrl init
// is read as "textname"), numbers are truncated to int.
#pragma once

#include <algorithm>
#include <climits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <strings.h>

#include <nlohmann/json.hpp>

namespace mqttools::auth::dynsec {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

inline const Json* json_find(const Json& object, std::string_view key) {
    if (!object.is_object()) return nullptr;
    if (auto it = object.find(key); it != object.end()) return &*it;
    for (auto it = object.begin(); it != object.end(); ++it) {
        if (it.key().size() == key.size() && ::strncasecmp(it.key().data(), key.data(), key.size()) == 0) {
            return &*it;
        }
    }
    return nullptr;
}

// Mosquitto's json_get_string: absent -> `absent` (ok when optional),
// present but not a string -> error.
enum class Field : std::uint8_t { ok, absent, invalid };
inline Field json_string(const Json& object, std::string_view key, std::string& out) {
    const Json* j = json_find(object, key);
    if (!j) return Field::absent;
    if (!j->is_string()) return Field::invalid;
    out = j->get<std::string>();
    return Field::ok;
}

inline int json_number_to_int(const Json& j) {
    const double d = j.get<double>();
    if (!(d == d)) return 0;
    return static_cast<int>(std::clamp(d, static_cast<double>(INT_MIN), static_cast<double>(INT_MAX)));
}

// Mosquitto's json_get_int with optional = true: absent or not a number ->
// the default.
inline int json_int(const Json& object, std::string_view key, int fallback) {
    const Json* j = json_find(object, key);
    if (!j || !j->is_number()) return fallback;
    return json_number_to_int(*j);
}

inline bool json_bool(const Json& object, std::string_view key, bool fallback) {
    const Json* j = json_find(object, key);
    if (!j || !j->is_boolean()) return fallback;
    return j->get<bool>();
}

// Mosquitto's mosquitto_validate_utf8 beyond what the JSON parser already
// checked (valid UTF-8): at most 65,535 bytes, no control characters.
inline bool valid_name(std::string_view s) {
    if (s.size() > 65535) return false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f) return false;
        // U+0080..U+009F are C2 80..C2 9F in UTF-8.
        if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) <= 0x9f) return false;
    }
    return true;
}

struct Ref;
struct Role;
struct Acl;

// Shared by the file and the command answers (dynsec_file.cpp).
// [{KEY: name, "priority": p}] (priority only when not -1).
OrderedJson refs_to_json(const std::vector<Ref>& refs, const char* key);
// A role's ACLs in Mosquitto's order: [{acltype, topic, priority, allow}].
OrderedJson acls_to_json(const Role& role);
// "acls": [...] -> per type, sorted; entries without a known acltype or a
// topic are skipped, as Mosquitto does.
void acls_from_json(const Json& j_acls, Role& role);

}  // namespace mqttools::auth::dynsec
