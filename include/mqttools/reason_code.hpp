// MQTT 5.0 reason codes (spec 2.4) and the small Result type every layer
// returns. Errors carry the reason code they become on the wire.
#pragma once

#include <cstdint>
#include <new>
#include <optional>
#include <type_traits>
#include <string_view>
#include <utility>

namespace mqttools {

enum class ReasonCode : std::uint8_t {
    success = 0x00,  // also Normal disconnection, Granted QoS 0
    granted_qos_1 = 0x01,
    granted_qos_2 = 0x02,
    disconnect_with_will_message = 0x04,
    no_matching_subscribers = 0x10,
    no_subscription_existed = 0x11,
    continue_authentication = 0x18,
    re_authenticate = 0x19,
    unspecified_error = 0x80,
    malformed_packet = 0x81,
    protocol_error = 0x82,
    implementation_specific_error = 0x83,
    unsupported_protocol_version = 0x84,
    client_identifier_not_valid = 0x85,
    bad_user_name_or_password = 0x86,
    not_authorized = 0x87,
    server_unavailable = 0x88,
    server_busy = 0x89,
    banned = 0x8A,
    server_shutting_down = 0x8B,
    bad_authentication_method = 0x8C,
    keep_alive_timeout = 0x8D,
    session_taken_over = 0x8E,
    topic_filter_invalid = 0x8F,
    topic_name_invalid = 0x90,
    packet_identifier_in_use = 0x91,
    packet_identifier_not_found = 0x92,
    receive_maximum_exceeded = 0x93,
    topic_alias_invalid = 0x94,
    packet_too_large = 0x95,
    message_rate_too_high = 0x96,
    quota_exceeded = 0x97,
    administrative_action = 0x98,
    payload_format_invalid = 0x99,
    retain_not_supported = 0x9A,
    qos_not_supported = 0x9B,
    use_another_server = 0x9C,
    server_moved = 0x9D,
    shared_subscriptions_not_supported = 0x9E,
    connection_rate_exceeded = 0x9F,
    maximum_connect_time = 0xA0,
    subscription_identifiers_not_supported = 0xA1,
    wildcard_subscriptions_not_supported = 0xA2,
};

// The spec's name of a reason code, e.g. "Malformed Packet". Codes that
// mean different things per packet (0x00) get their most common name.
std::string_view reason_code_name(ReasonCode code) noexcept;

constexpr bool is_error(ReasonCode code) noexcept {
    return static_cast<std::uint8_t>(code) >= 0x80;
}

// A value or the reason code that explains why there is none. gcc 12 has no
// std::expected in C++20, so this is the project's small stand-in.
template <class T>
class Result {
public:
    Result(T value) : has_value_(true) { ::new (static_cast<void*>(&value_)) T(std::move(value)); }  // NOLINT: implicit on purpose
    Result(ReasonCode error) : error_(error) {}  // NOLINT: implicit on purpose
    // Builds the value in place (no copy of a large packet struct). With no
    // arguments T is default-initialised, not value-initialised: a packet
    // struct gets its member initialisers without being zeroed first (the
    // decoders fill it, and turn it into an error by assigning a ReasonCode).
    template <class... Args>
    explicit Result(std::in_place_t, Args&&... args) : has_value_(true) {
        if constexpr (sizeof...(Args) == 0)
            ::new (static_cast<void*>(&value_)) T;
        else
            ::new (static_cast<void*>(&value_)) T(std::forward<Args>(args)...);
    }

    Result(const Result& o) : error_(o.error_), has_value_(o.has_value_) {
        if (has_value_) ::new (static_cast<void*>(&value_)) T(o.value_);
    }
    Result(Result&& o) noexcept(std::is_nothrow_move_constructible_v<T>)
        : error_(o.error_), has_value_(o.has_value_) {
        if (has_value_) ::new (static_cast<void*>(&value_)) T(std::move(o.value_));
    }
    Result& operator=(const Result& o) {
        if (this != &o) {
            reset();
            error_ = o.error_;
            if (o.has_value_) {
                ::new (static_cast<void*>(&value_)) T(o.value_);
                has_value_ = true;
            }
        }
        return *this;
    }
    Result& operator=(Result&& o) noexcept(std::is_nothrow_move_constructible_v<T>) {
        if (this != &o) {
            reset();
            error_ = o.error_;
            if (o.has_value_) {
                ::new (static_cast<void*>(&value_)) T(std::move(o.value_));
                has_value_ = true;
            }
        }
        return *this;
    }
    ~Result() { reset(); }

    bool ok() const noexcept { return has_value_; }
    explicit operator bool() const noexcept { return ok(); }
    ReasonCode error() const noexcept { return error_; }

    T& value() & { return value_; }
    const T& value() const& { return value_; }
    T&& value() && { return std::move(value_); }
    T* operator->() { return &value_; }
    const T* operator->() const { return &value_; }
    T& operator*() & { return value_; }
    const T& operator*() const& { return value_; }

private:
    void reset() noexcept {
        if (has_value_) {
            value_.~T();
            has_value_ = false;
        }
    }

    // Storage without std::optional, whose in-place construction would
    // value-initialise (zero) a large packet before filling it.
    union {
        T value_;
    };
    ReasonCode error_ = ReasonCode::success;
    bool has_value_ = false;
};

}  // namespace mqttools
