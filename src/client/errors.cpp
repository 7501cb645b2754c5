// Client error types and client ids.
#include <random>

#include "mqttools/client.hpp"

namespace mqttools {

ConnectError::ConnectError(ReasonCode reason)
    : ClientError(std::string(reason_code_name(reason))), reason_(reason) {}

SessionResumeError::SessionResumeError()
    : ClientError("the broker has no session to resume; a new session was created") {}

SubscribeError::SubscribeError(ReasonCode reason)
    : ClientError(std::string(reason_code_name(reason))), reason_(reason) {}

UnsubscribeError::UnsubscribeError(ReasonCode reason)
    : ClientError(std::string(reason_code_name(reason))), reason_(reason) {}

PublishError::PublishError(ReasonCode reason, const std::string& what) : ClientError(what), reason_(reason) {}

TimeoutError::TimeoutError() : ClientError("timed out waiting for the broker") {}

std::string make_client_id() {
    static constexpr char hex[] = "0123456789abcdef";
    std::random_device rd;
    std::uniform_int_distribution<int> digit(0, 15);
    std::string id = "mqttools-";
    for (int i = 0; i < 14; ++i) id += hex[digit(rd)];
    return id;
}

}  // namespace mqttools
