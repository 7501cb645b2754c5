"""Conformance probe, malformed input and protocol errors after CONNECT
(MQTT 5.0 sections 1.5, 2.1-2.2, 3.3-3.15, 4.13): each case gets exactly one
DISCONNECT with the reason code the specification names, then a closed
socket; afterwards the broker still serves a fresh client."""
import struct

import pytest

from conformance_probe import (CONNACK, DISCONNECT, PUBACK, PUBLISH, PUBREC, P_MAXIMUM_PACKET_SIZE,
                               P_MESSAGE_EXPIRY, P_RECEIVE_MAXIMUM, P_SESSION_EXPIRY, P_SUBSCRIPTION_ID, P_TOPIC_ALIAS,
                               P_TOPIC_ALIAS_MAXIMUM, Conn, assert_disconnected_with, client, connect, disconnect,
                               fixed, h, opts, probe, probe_factory, prop, props, publish, s, subscribe)

__all__ = ["probe", "probe_factory"]


def assert_still_serves(port):
    """A fresh client can subscribe, publish QoS 1 and receive its message."""
    c = client(port, "fresh-after-abuse")
    c.sub([("health/#", 1)], pid=9)
    c.send(publish("health/x", b"ok", qos=1, pid=3))
    got = sorted((p.type, getattr(p, "payload", None)) for p in (c.recv(), c.recv()))
    assert got == [(PUBLISH, b"ok"), (PUBACK, None)], got
    c.close()


# Each case: bytes sent after a successful CONNECT, the reason code expected.
CASES = {
    # [MQTT-3.3.1-4] both QoS bits set: Malformed Packet.
    "publish_qos_3": (h("36 08 00 03 61 2f 62 00 01 00"), 0x81),
    # [MQTT-3.8.1-1] SUBSCRIBE fixed header flags MUST be 0010.
    "subscribe_flags_0000": (h("80 09 00 01 00 00 03 61 2f 62 00"), 0x81),
    # [MQTT-3.10.1-1] UNSUBSCRIBE fixed header flags MUST be 0010.
    "unsubscribe_flags_0000": (h("a0 08 00 01 00 00 03 61 2f 62"), 0x81),
    # [MQTT-3.6.1-1] PUBREL fixed header flags MUST be 0010.
    "pubrel_flags_0000": (h("60 02 00 01"), 0x81),
    # [MQTT-2.1.3-1] PINGREQ flags are reserved 0000.
    "pingreq_flags_0001": (h("c1 00"), 0x81),
    # [MQTT-3.14.1-1] DISCONNECT reserved flags not 0: Malformed (0x81).
    "disconnect_flags_0001": (h("e1 00"), 0x81),
    # [MQTT-1.5.4-1] ill-formed UTF-8 (0xff) in a Topic Name: Malformed.
    "topic_invalid_utf8": (h("30 06 00 03 61 2f ff 00"), 0x81),
    # [MQTT-1.5.4-1] an encoded surrogate U+D800 in a Topic Filter: Malformed.
    "filter_utf8_surrogate": (h("82 0a 00 01 00 00 04 61 ed a0 80 00"), 0x81),
    # [MQTT-1.5.4-2] [MQTT-4.7.3-2] U+0000 in a Topic Name: Malformed.
    "topic_contains_nul": (h("30 06 00 03 61 00 62 00"), 0x81),
    # [MQTT-3.8.3-2] a SUBSCRIBE with no Topic Filter: Protocol Error.
    "subscribe_without_filters": (h("82 03 00 01 00"), 0x82),
    # [MQTT-3.8.3-5] reserved bits 6-7 of the Subscription Options: Malformed.
    "subscribe_reserved_option_bits": (h("82 09 00 01 00 00 03 61 2f 62 c0"), 0x81),
    # Section 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3."
    "subscribe_retain_handling_3": (h("82 09 00 01 00 00 03 61 2f 62 30"), 0x82),
    # Section 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3."
    "subscribe_qos_3": (h("82 09 00 01 00 00 03 61 2f 62 03"), 0x82),
    # [MQTT-3.8.3-4] No Local on a Shared Subscription: Protocol Error.
    "shared_subscription_no_local": (subscribe(1, [("$share/g/a", opts(nl=True))]), 0x82),
    # Section 3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a value of 0."
    "subscription_identifier_0": (h("82 0b 00 01 02 0b 00 00 03 61 2f 62 00"), 0x82),
    # [MQTT-3.10.3-2] an UNSUBSCRIBE with no Topic Filter: Protocol Error.
    "unsubscribe_without_filters": (h("a2 03 00 01 00"), 0x82),
    # Section 3.3.2.3.3: "It is a Protocol Error to include the Publication
    # Expiry Interval more than once."
    "publish_duplicated_expiry": (publish("a/b", b"x", properties=props(prop(P_MESSAGE_EXPIRY, 5),
                                                                          prop(P_MESSAGE_EXPIRY, 6))), 0x82),
    # Section 3.3.2.1: "It is a Protocol Error if the Topic Name is zero length
    # and there is no Topic Alias."
    "publish_empty_topic_without_alias": (h("30 04 00 00 00 78"), 0x82),
    # Section 3.3.2.3.4: a Topic Alias of 0 ([MQTT-3.3.2-8]) -> 0x94 Topic Alias invalid.
    "topic_alias_0": (publish("a/b", b"x", properties=props(prop(P_TOPIC_ALIAS, 0))), 0x94),
    # Section 3.3.2.3.4: a zero-length topic with an alias the receiver has no
    # mapping for is a Protocol Error.
    "unknown_topic_alias": (publish("", b"x", properties=props(prop(P_TOPIC_ALIAS, 1))), 0x82),
    # Section 1.5.5 / 2.1.4: Remaining Length with a fifth byte: Malformed.
    "remaining_length_five_bytes": (h("30 ff ff ff ff 7f"), 0x81),
    # Section 2.2.2.1: a Property Length beyond the end of the packet: Malformed.
    "property_length_overruns_packet": (h("30 07 00 03 61 2f 62 09 01"), 0x81),
    # Section 2.2.2.2: an unknown Property Identifier (0x7f): Malformed.
    "unknown_property_identifier": (h("30 08 00 03 61 2f 62 02 7f 00"), 0x81),
    # [MQTT-4.12.0-7] / section 4.12: an AUTH from a Client whose CONNECT had
    # no Authentication Method is a Protocol Error.
    "auth_without_authentication_method": (h("f0 02 19 00"), 0x82),
    # Section 3.14.2.2.2: Session Expiry 0 in CONNECT and non-zero in
    # DISCONNECT is a Protocol Error (the Server answers with DISCONNECT 0x82).
    "disconnect_sets_expiry_after_zero": (disconnect(0x00, props(prop(P_SESSION_EXPIRY, 30))), 0x82),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_packet_after_connect_gets_its_reason_code(probe, case):
    """See the comment on each case in CASES for the rule it checks; all of
    them also check [MQTT-4.13.1-1] (close after a Malformed Packet or Protocol
    Error) and that other clients are unaffected."""
    data, reason = CASES[case]
    watcher = client(probe.port, "watcher")
    watcher.sub([("w/#", 0)])
    c = client(probe.port, "bad-" + case.replace("_", "-")[:16])
    c.send(data)
    assert_disconnected_with(c, reason)
    watcher.send(publish("w/1", b"still here"))
    assert [p.payload for p in watcher.publishes(0.3)] == [b"still here"]
    assert_still_serves(probe.port)


# Cases where the specification forbids the packet but names no single
# reason code: any of the listed codes is correct (Malformed Packet 0x81 when
# read as unparseable, Protocol Error 0x82 when read as parsed-but-forbidden,
# and for a wildcard in a Topic Name also 0x90 Topic Name invalid), and the
# connection MUST be closed.
AMBIGUOUS = {
    # [MQTT-3.3.2-2] [MQTT-4.7.0-1] wildcards in a Topic Name.
    "publish_topic_with_wildcard": (h("30 06 00 03 61 2f 2b 00"), (0x81, 0x82, 0x90)),
    # [MQTT-2.2.1-3] a QoS 1 PUBLISH with Packet Identifier 0.
    "publish_qos1_packet_id_0": (h("32 08 00 03 61 2f 62 00 00 00"), (0x81, 0x82)),
    # [MQTT-3.3.1-2] [MQTT-4.3.1-1] DUP 1 on a QoS 0 PUBLISH.
    "publish_qos0_with_dup": (h("38 06 00 03 61 2f 62 00"), (0x81, 0x82)),
    # [MQTT-3.3.4-6] a PUBLISH from a Client MUST NOT carry a Subscription Identifier.
    "publish_with_subscription_identifier": (
        publish("a/b", b"x", properties=props(prop(P_SUBSCRIPTION_ID, 3))), (0x81, 0x82)),
    # Section 2.1.2: packet type 0 is Reserved (forbidden).
    "packet_type_0": (h("00 00"), (0x81, 0x82)),
    # [MQTT-2.2.1-3] a SUBSCRIBE with Packet Identifier 0.
    "subscribe_packet_id_0": (h("82 09 00 00 00 00 03 61 2f 62 00"), (0x81, 0x82)),
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_forbidden_packet_closes_with_a_listed_reason(probe, case):
    """See AMBIGUOUS: one DISCONNECT with one of the listed reason codes, then
    close ([MQTT-4.13.1-1])."""
    data, reasons = AMBIGUOUS[case]
    c = client(probe.port, "amb-" + case.replace("_", "-")[:16])
    c.send(data)
    got = c.until_closed()
    assert len(got) == 1 and got[0].type == DISCONNECT and got[0].reason in reasons, got
    assert_still_serves(probe.port)


def test_topic_alias_above_maximum_gets_0x94(probe):
    """[MQTT-3.3.2-9] [MQTT-3.2.2-17] a Topic Alias greater than the Topic Alias
    Maximum of the CONNACK: DISCONNECT 0x94 (Topic Alias invalid), close."""
    c = Conn(probe.port)
    c.send(connect("alias-max"))
    ack = c.expect(CONNACK)
    maximum = ack.prop(P_TOPIC_ALIAS_MAXIMUM, 0)
    c.send(publish("a/b", b"x", properties=props(prop(P_TOPIC_ALIAS, maximum + 1))))
    assert_disconnected_with(c, 0x94)


def test_receive_maximum_exceeded_gets_0x93(probe_factory):
    """Section 3.3.4 [MQTT-3.3.4-7]: more unacknowledged QoS 2 PUBLISHes (no
    PUBREL, so no PUBCOMP) than the Server's Receive Maximum (2):
    DISCONNECT 0x93 (Receive Maximum exceeded), close."""
    b = probe_factory(receive_maximum=2)
    c = Conn(b.port)
    c.send(connect("recv-max"))
    ack = c.expect(CONNACK)
    assert ack.prop(P_RECEIVE_MAXIMUM) == 2, ack.props
    for pid in (1, 2):
        c.send(publish("rm/t", b"x", qos=2, pid=pid))
        assert (c.expect(PUBREC).pid, 0) == (pid, 0)
    c.send(publish("rm/t", b"x", qos=2, pid=3))
    assert_disconnected_with(c, 0x93)


def test_packet_larger_than_maximum_gets_0x95(probe_factory):
    """Section 3.2.2.3.6 [MQTT-3.2.2-15]: with max_packet_size = 1024 the CONNACK
    advertises Maximum Packet Size 1024, and a 2,000-byte PUBLISH gets
    DISCONNECT 0x95 (Packet too large), then close."""
    b = probe_factory(max_packet_size=1024)
    c = Conn(b.port)
    c.send(connect("too-large"))
    ack = c.expect(CONNACK)
    assert ack.prop(P_MAXIMUM_PACKET_SIZE) == 1024, ack.props
    c.send(publish("big/t", b"\xa5" * 2000))
    assert_disconnected_with(c, 0x95)
    assert_still_serves(b.port)


def test_v311_malformed_packet_closes_without_disconnect(probe):
    """MQTT 3.1.1 [MQTT-3.3.1-4] [MQTT-4.8.0-1]: a QoS 3 PUBLISH from a 3.1.1
    client closes the connection; 3.1.1 has no server DISCONNECT."""
    c = client(probe.port, "v311-bad", v=4)
    c.send(h("36 07 00 03 61 2f 62 00 01"))
    assert c.until_closed() == []
    assert_still_serves(probe.port)


def test_v311_subscribe_invalid_filter_gets_0x80(probe):
    """MQTT 3.1.1 section 3.9.3 / [MQTT-4.7.1-2] (issue 3: "SUBACK 0x80"): an
    invalid filter (`a/#/b`) fails with return code 0x80 while the valid one
    beside it is granted, in order ([MQTT-3.9.3-1])."""
    c = client(probe.port, "v311-suback", v=4)
    c.send(fixed(8, 2, struct.pack("!H", 5) + s("ok/t") + b"\x01" + s("a/#/b") + b"\x00"))
    sa = c.expect(9)
    assert sa.raw == h("90 04 00 05 01 80"), sa


def test_invalid_utf8_in_properties_is_malformed(probe):
    """[MQTT-1.5.4-1] [MQTT-1.5.7-1] [MQTT-3.3.2-19]: ill-formed UTF-8 in a User
    Property name or in a Content Type is a Malformed Packet: DISCONNECT 0x81."""
    for i, block in enumerate([h("08 26 00 02 c3 28 00 01 76"), h("05 03 00 02 c3 28")]):
        c = client(probe.port, f"badprop{i}")
        c.send(publish("a/b", b"x", properties=block))
        assert_disconnected_with(c, 0x81)


def test_response_topic_with_wildcard_is_refused(probe):
    """[MQTT-3.3.2-14] the Response Topic MUST NOT contain wildcards: the PUBLISH
    is not forwarded and the connection is closed with 0x81, 0x82 or 0x90."""
    sub = client(probe.port, "rtsub")
    sub.sub("rt/#")
    c = client(probe.port, "rtpub")
    c.send(publish("rt/t", b"x", properties=props(prop(0x08, "reply/#"))))
    got = c.until_closed()
    assert len(got) == 1 and got[0].type == DISCONNECT and got[0].reason in (0x81, 0x82, 0x90), got
    assert sub.publishes(0.2) == []


def test_maximum_packet_size_boundary_inbound(probe_factory):
    """Section 3.2.2.3.6: Maximum Packet Size is the total packet size (fixed
    header included): with max_packet_size = 1024 a PUBLISH of exactly 1024
    bytes is accepted, one of 1025 gets DISCONNECT 0x95; a CONNECT larger than
    the limit is refused (at most CONNACK 0x95) before any CONNACK 0x00."""
    b = probe_factory(max_packet_size=1024)
    sub = client(b.port, "mpsub")
    sub.sub("mp/#")
    c = client(b.port, "mpb")
    exact = publish("mp/t", b"e" * (1024 - 3 - 7))  # 3-byte fixed header, 7-byte variable header
    assert len(exact) == 1024
    c.send(exact)
    assert [len(p.raw) for p in sub.publishes(0.3)] == [1024]
    over = publish("mp/t", b"e" * (1025 - 3 - 7))
    assert len(over) == 1025
    c.send(over)
    assert_disconnected_with(c, 0x95)
    big = Conn(b.port)
    big.send(connect("mpbig", will=("mp/w", b"w" * 1100, 0, False, b"\x00")))
    got = big.until_closed()
    assert got == [] or [(p.type, p.reason) for p in got] == [(CONNACK, 0x95)], got
    assert sub.publishes(0.1) == []
