// The only places where clients are authenticated and authorized. The
// security work (src/broker/auth/) plugs the password file and the ACL in
// here; until then everyone is allowed.
#include "broker/broker.hpp"

namespace mqttools::broker {

// CONNECT: username/password. Returns success, or the reason code for the
// CONNACK (bad_user_name_or_password, not_authorized).
ReasonCode Broker::authenticate(Connection& /*c*/, const ConnectPacket& /*connect*/) {
    return ReasonCode::success;
}

// PUBLISH from a client (and its will). False: PUBACK/PUBREC 0x87, QoS 0 dropped.
bool Broker::authorize_publish(Connection& /*c*/, std::string_view /*topic*/) {
    return true;
}

// One filter of a SUBSCRIBE. False: SUBACK 0x87 for that filter.
bool Broker::authorize_subscribe(Connection& /*c*/, std::string_view /*filter*/) {
    return true;
}

// A message about to be delivered to a session (live or retained). False: not delivered.
bool Broker::authorize_delivery(Session& /*s*/, std::string_view /*topic*/) {
    return true;
}

}  // namespace mqttools::broker
