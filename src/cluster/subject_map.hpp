// MQTT topic names and filters as NATS subjects. The mapping is injective
// for every valid topic, and a filter's subjects match a topic's subject
// exactly when the MQTT filter matches the topic (tests/cluster property
// tests), so NATS carries a message only to nodes with a matching filter.
//
// Each MQTT level becomes one NATS token: the bytes [A-Za-z0-9_-] stay,
// every other byte (".", " ", "*", ">", "$", "/", "%", non-ASCII...) becomes
// %XX; an empty level is the token "%" (never produced otherwise, since '%'
// is always followed by two hex digits). No token is ever "*" or ">".
// Topics starting with '$' live under their own root token ("s") so that a
// filter starting with a wildcard ("t") never reaches them ([MQTT-4.7.2-1]).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mqttools::cluster {

// Appends one level's token to `out`.
void append_level_token(std::string& out, std::string_view level);

// `prefix` + ".t." or ".s." + the level tokens joined by '.'; `out` is
// overwritten (reused by the caller to avoid allocating per message).
void topic_subject(std::string& out, std::string_view prefix, std::string_view topic);

// The subjects a valid, non-shared filter needs: one, or two for "x/#"
// (the parent "x" also matches, [MQTT-4.7.1-2]).
std::vector<std::string> filter_subjects(std::string_view prefix, std::string_view filter);

// The inverse of topic_subject (for tests and logs); nullopt when `subject`
// is not one topic_subject makes with `prefix`.
std::optional<std::string> subject_topic(std::string_view prefix, std::string_view subject);

// A NATS queue group name for the shared subscription $share/NAME/FILTER:
// distinct groups (same name, other filter) get distinct queue names.
std::string queue_name(std::string_view share_name, std::string_view filter);

// NATS subject matching (tokens, '*' one token, '>' one or more at the end),
// as nats-server applies it; used by the property tests.
bool subject_matches(std::string_view pattern, std::string_view subject);

}  // namespace mqttools::cluster
