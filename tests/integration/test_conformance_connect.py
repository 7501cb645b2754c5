"""Conformance probe, connect phase and keep alive (MQTT 5.0 section 3.1, 3.2;
MQTT 3.1.1 section 3.1, 3.2). Packets are written out byte by byte from the
specification; every case cites the normative statement it checks."""
import time

import pytest

from conformance_probe import (CONNACK, DISCONNECT, PINGRESP, PINGREQ_BYTES, P_ASSIGNED_CLIENT_ID,
                               P_SERVER_KEEP_ALIVE, P_SESSION_EXPIRY, P_TOPIC_ALIAS, SLACK, Conn,
                               assert_disconnected_with, assert_refused_before_connack, connect, h, probe,
                               probe_factory, prop, props)

__all__ = ["probe", "probe_factory"]  # fixtures used by the tests below


def test_first_packet_must_be_connect(probe):
    """[MQTT-3.1.0-1] the first packet from the Client MUST be CONNECT; a
    PINGREQ first gets no PINGRESP and the connection is closed, with no
    DISCONNECT before a CONNACK ([MQTT-3.14.0-1])."""
    c = Conn(probe.port)
    c.send(h("c0 00"))
    assert_refused_before_connack(c)


def test_second_connect_is_a_protocol_error(probe):
    """[MQTT-3.1.0-2] a second CONNECT is a Protocol Error: DISCONNECT 0x82,
    then the connection is closed ([MQTT-4.13.1-1])."""
    c = Conn(probe.port)
    raw = h("10 10 00 04 4d 51 54 54 05 02 00 3c 00 00 03 63 30 32")  # v5, clean start, id "c02"
    c.send(raw)
    ack = c.expect(CONNACK)
    assert (ack.session_present, ack.reason) == (0, 0x00)
    c.send(raw)
    assert_disconnected_with(c, 0x82)


def test_unsupported_protocol_level_gets_connack_0x84(probe):
    """[MQTT-3.1.2-2] Protocol Version 6: CONNACK 0x84 (Unsupported Protocol
    Version), then the Server MUST close the connection ([MQTT-3.2.2-7])."""
    c = Conn(probe.port)
    c.send(h("10 10 00 04 4d 51 54 54 06 02 00 3c 00 00 03 63 30 33"))
    got = c.until_closed()
    assert [(p.type, p.reason) for p in got] == [(CONNACK, 0x84)], got


def test_bad_protocol_name_closes(probe):
    """[MQTT-3.1.2-1] protocol name "MQTX": no session; at most a CONNACK 0x84,
    then the connection is closed."""
    c = Conn(probe.port)
    c.send(h("10 10 00 04 4d 51 54 58 05 02 00 3c 00 00 03 63 30 34"))
    got = c.until_closed()
    assert got == [] or [(p.type, p.reason) for p in got] == [(CONNACK, 0x84)], got


def test_reserved_connect_flag_is_malformed(probe):
    """[MQTT-3.1.2-3] the reserved Connect Flag (bit 0) MUST be 0, otherwise it
    is a Malformed Packet: at most CONNACK 0x81, then close."""
    c = Conn(probe.port)
    c.send(h("10 10 00 04 4d 51 54 54 05 03 00 3c 00 00 03 63 30 35"))
    got = c.until_closed()
    assert got == [] or [(p.type, p.reason) for p in got] == [(CONNACK, 0x81)], got


def test_will_qos_without_will_flag_is_refused(probe):
    """[MQTT-3.1.2-11] Will Flag 0 requires Will QoS 0: flags 0x0a is refused
    (no successful CONNACK) and the connection closed ([MQTT-3.1.4-1])."""
    c = Conn(probe.port)
    c.send(h("10 10 00 04 4d 51 54 54 05 0a 00 3c 00 00 03 63 30 36"))
    assert_refused_before_connack(c)


def test_will_qos_3_is_malformed(probe):
    """[MQTT-3.1.2-12] a Will QoS of 3 is a Malformed Packet (at most CONNACK
    0x81), then close."""
    c = Conn(probe.port)
    c.send(connect("c07", will=("w/t", b"x", 3, False, b"\x00")))
    got = c.until_closed()
    assert got == [] or [(p.type, p.reason) for p in got] == [(CONNACK, 0x81)], got


def test_will_retain_without_will_flag_is_refused(probe):
    """[MQTT-3.1.2-13] Will Flag 0 requires Will Retain 0: flags 0x22 is refused
    and the connection closed."""
    c = Conn(probe.port)
    c.send(h("10 10 00 04 4d 51 54 54 05 22 00 3c 00 00 03 63 30 38"))
    assert_refused_before_connack(c)


def test_five_byte_remaining_length_closes(probe):
    """Section 1.5.5 / 2.1.4: a Variable Byte Integer has at most four bytes; a
    CONNECT whose Remaining Length runs to a fifth byte is malformed: closed
    without a successful CONNACK."""
    c = Conn(probe.port)
    c.send(h("10 80 80 80 80 01"))
    assert_refused_before_connack(c)


def test_connect_string_longer_than_packet_is_malformed(probe):
    """[MQTT-3.1.4-1] the Server MUST validate the CONNECT and close when it does
    not conform: a Client Identifier claiming 16 bytes with 2 left in the
    packet. At most CONNACK 0x81."""
    c = Conn(probe.port)
    c.send(h("10 0f 00 04 4d 51 54 54 05 02 00 3c 00 00 10 61 62"))
    got = c.until_closed()
    assert got == [] or [(p.type, p.reason) for p in got] == [(CONNACK, 0x81)], got


def test_duplicated_connect_property_is_a_protocol_error(probe):
    """Section 3.1.2.11.2: "It is a Protocol Error to include the Session Expiry
    Interval more than once." At most CONNACK 0x82, then close."""
    c = Conn(probe.port)
    c.send(h("10 1a 00 04 4d 51 54 54 05 02 00 3c 0a 11 00 00 00 0a 11 00 00 00 0a 00 03 63 31 30"))
    got = c.until_closed()
    assert got == [] or [(p.type, p.reason) for p in got] == [(CONNACK, 0x82)], got


def test_property_not_allowed_in_connect_is_refused(probe):
    """Section 2.2.2.2 (Table 2-4): Topic Alias (0x23) is a PUBLISH-only property;
    a CONNECT carrying it is refused (no successful CONNACK) and closed."""
    c = Conn(probe.port)
    c.send(connect("c11", properties=props(prop(P_TOPIC_ALIAS, 1))))
    assert_refused_before_connack(c)


def test_connect_timeout_closes_a_silent_socket(probe_factory):
    """Issue 3 / section 3.1 (non-normative: a Server closes a connection that
    sends no CONNECT within a reasonable time): with connect_timeout = 1, a
    socket that sends nothing is closed after ~1 s, not before."""
    b = probe_factory(connect_timeout=1)
    c = Conn(b.port)
    start = time.monotonic()
    assert c.until_closed(timeout=3) == []
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed <= 1.5 + SLACK, elapsed


def test_empty_client_id_gets_a_unique_assigned_identifier(probe):
    """[MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16] a zero-length ClientID is
    given a unique one, returned as Assigned Client Identifier."""
    ids = []
    for _ in range(2):
        c = Conn(probe.port)
        c.send(h("10 0d 00 04 4d 51 54 54 05 02 00 3c 00 00 00"))
        ack = c.expect(CONNACK)
        assert ack.reason == 0
        ids.append(ack.prop(P_ASSIGNED_CLIENT_ID))
        assert ids[-1], ack
    assert ids[0] != ids[1]


def test_connack_reserved_bits_and_session_present_on_clean_start(probe):
    """[MQTT-3.2.2-1] CONNACK flag bits 7-1 are 0; [MQTT-3.2.2-2] Clean Start 1
    means Session Present 0 even when a session existed."""
    c = Conn(probe.port)
    c.send(connect("c14", clean=False, properties=props(prop(P_SESSION_EXPIRY, 60))))
    ack = c.expect(CONNACK)
    assert ack.body[0] == 0 and ack.reason == 0
    c.send(h("e0 00"))
    c.until_closed()
    c = Conn(probe.port)
    c.send(connect("c14", clean=True))
    ack = c.expect(CONNACK)
    assert ack.body[0] == 0x00 and ack.reason == 0


def test_keep_alive_closes_within_one_and_a_half_times(probe):
    """[MQTT-3.1.2-22] Keep Alive 1 s and silence: the Server MUST close the
    connection within 1.5 x Keep Alive (checked at 1.5 s + 0.25 s), and not
    before the 1 s keep alive has passed. A DISCONNECT 0x8D before the close
    is allowed."""
    c = Conn(probe.port)
    c.send(connect("c15", keepalive=1))
    c.expect(CONNACK)
    start = time.monotonic()
    got = c.until_closed(timeout=4)
    elapsed = time.monotonic() - start
    assert [(p.type, p.reason) for p in got] in ([], [(DISCONNECT, 0x8D)]), got
    assert 1.0 <= elapsed <= 1.75 + SLACK, f"closed after {elapsed:.3f} s"


def test_pingreq_keeps_the_connection_alive(probe):
    """[MQTT-3.12.4-1] every PINGREQ gets a PINGRESP; [MQTT-3.1.2-22] a client
    sending a packet every 0.6 s with Keep Alive 1 is never disconnected (1.8 s
    in all, past the 1.5 s limit)."""
    c = Conn(probe.port)
    c.send(connect("c16", keepalive=1))
    c.expect(CONNACK)
    for _ in range(3):
        time.sleep(0.6)
        c.send(PINGREQ_BYTES)
        assert c.expect(PINGRESP).raw == h("d0 00")
    assert c.is_open()


def test_server_keep_alive_caps_the_client_value(probe_factory):
    """[MQTT-3.2.2-21] with max_keepalive = 10 and a client asking for 60, the
    CONNACK carries Server Keep Alive 10."""
    b = probe_factory(max_keepalive=10)
    c = Conn(b.port)
    c.send(connect("c17", keepalive=60))
    ack = c.expect(CONNACK)
    assert ack.reason == 0 and ack.prop(P_SERVER_KEEP_ALIVE) == 10, ack.props


# ------------------------------------------------------------ MQTT 3.1.1


def test_v311_connack_is_exact(probe):
    """MQTT 3.1.1 [MQTT-3.2.2-1] [MQTT-3.2.2-3]: a 3.1.1 CONNECT gets the 3.1.1
    CONNACK, exactly 20 02 00 00 (no properties)."""
    c = Conn(probe.port, v=4)
    c.send(h("10 0f 00 04 4d 51 54 54 04 02 00 3c 00 03 76 33 31"))
    assert c.expect(CONNACK).raw == h("20 02 00 00")


def test_v311_empty_id_without_clean_session_gets_0x02(probe):
    """MQTT 3.1.1 [MQTT-3.1.3-8]: zero-byte ClientId with CleanSession 0 ->
    CONNACK return code 0x02 (Identifier rejected), then close."""
    c = Conn(probe.port, v=4)
    c.send(h("10 0c 00 04 4d 51 54 54 04 00 00 3c 00 00"))
    got = c.until_closed()
    assert [p.raw for p in got] == [h("20 02 00 02")], got


def test_v311_password_without_user_name_is_refused(probe):
    """MQTT 3.1.1 [MQTT-3.1.2-22]: Password Flag 1 with User Name Flag 0 is a
    protocol violation: no successful CONNACK, connection closed."""
    c = Conn(probe.port, v=4)
    c.send(h("10 14 00 04 4d 51 54 54 04 42 00 3c 00 03 76 33 31 00 03 70 77 64"))
    got = c.until_closed()
    assert got == [] or (got[0].type == CONNACK and got[0].reason != 0 and len(got) == 1), got


def test_v311_second_connect_closes_without_disconnect(probe):
    """MQTT 3.1.1 [MQTT-3.1.0-2]: a second CONNECT is a protocol violation and
    the Server disconnects; 3.1.1 has no server DISCONNECT, so nothing is sent."""
    c = Conn(probe.port, v=4)
    raw = h("10 0f 00 04 4d 51 54 54 04 02 00 3c 00 03 76 33 32")
    c.send(raw)
    c.expect(CONNACK)
    c.send(raw)
    assert c.until_closed() == []


def test_v311_keep_alive_is_enforced(probe):
    """MQTT 3.1.1 [MQTT-3.1.2-24]: Keep Alive 1 and silence: closed within
    1.5 s (+0.25 s), without any packet."""
    c = Conn(probe.port, v=4)
    c.send(h("10 0f 00 04 4d 51 54 54 04 02 00 01 00 03 76 33 33"))
    c.expect(CONNACK)
    start = time.monotonic()
    assert c.until_closed(timeout=4) == []
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed <= 1.75 + SLACK, f"closed after {elapsed:.3f} s"


# CONNECT packets the Server must refuse: (bytes, CONNACK reason codes it may
# send before closing; sending nothing before closing is also correct).
REFUSED = {
    # Section 3.1.2.11.3: "It is a Protocol Error to include the Receive Maximum value of 0."
    "receive_maximum_0": (connect("r1", properties=props(prop(0x21, 0))), (0x82,)),
    # Section 3.1.2.11.4: Maximum Packet Size of zero is a Protocol Error.
    "maximum_packet_size_0": (connect("r2", properties=props(prop(0x27, 0))), (0x82,)),
    # Section 3.1.2.11.6: Request Response Information other than 0 or 1 is a Protocol Error.
    "request_response_information_2": (connect("r3", properties=props(prop(0x19, 2))), (0x82,)),
    # Section 3.1.2.11.7: Request Problem Information other than 0 or 1 is a Protocol Error.
    "request_problem_information_2": (connect("r4", properties=props(prop(0x17, 2))), (0x82,)),
    # Section 3.1.2.11.5: Topic Alias Maximum more than once is a Protocol Error.
    "topic_alias_maximum_twice": (connect("r5", properties=props(prop(0x22, 5), prop(0x22, 5))), (0x82,)),
    # [MQTT-1.5.4-1] [MQTT-3.1.3-4] a ClientID that is not well-formed UTF-8
    # (0xc3 0x28): Malformed, or Client Identifier not valid.
    "client_id_invalid_utf8": (h("10 0f 00 04 4d 51 54 54 05 02 00 3c 00 00 02 c3 28"), (0x81, 0x85)),
    # [MQTT-3.1.2-19] User Name Flag 1 but no User Name in the payload: Malformed.
    "user_name_flag_without_user_name": (h("10 10 00 04 4d 51 54 54 05 82 00 3c 00 00 03 72 30 36"), (0x81,)),
    # [MQTT-4.7.0-1] [MQTT-3.3.2-2] a Will Topic with a wildcard can never be
    # published: refused (0x81/0x82, or 0x90 Topic Name invalid).
    "will_topic_with_wildcard": (connect("r7", will=("w/+", b"x", 0, False, b"\x00")), (0x81, 0x82, 0x90)),
    # [MQTT-4.12.0-1] an Authentication Method the Server does not support:
    # CONNACK 0x8C or 0x87, then close.
    "unsupported_authentication_method": (connect("r8", properties=props(prop(0x15, "SCRAM-SHA-1"))), (0x8C, 0x87)),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_connect_is_refused(probe, case):
    """See REFUSED for the rule each case checks; [MQTT-3.1.4-1] [MQTT-3.2.2-7]
    the Server closes the connection, sending at most one CONNACK with one of
    the listed reason codes."""
    data, allowed = REFUSED[case]
    c = Conn(probe.port)
    c.send(data)
    got = c.until_closed()
    assert got == [] or (len(got) == 1 and got[0].type == CONNACK and got[0].reason in allowed), got


def test_server_keep_alive_is_enforced(probe_factory):
    """[MQTT-3.2.2-21] [MQTT-3.1.2-22]: with max_keepalive = 1 a client asking for
    60 s gets Server Keep Alive 1 and is closed after 1.5 s of silence
    (+0.25 s)."""
    b = probe_factory(max_keepalive=1)
    c = Conn(b.port)
    c.send(connect("c18", keepalive=60))
    ack = c.expect(CONNACK)
    assert ack.prop(P_SERVER_KEEP_ALIVE) == 1
    start = time.monotonic()
    got = c.until_closed(timeout=4)
    elapsed = time.monotonic() - start
    assert [(p.type, p.reason) for p in got] in ([], [(DISCONNECT, 0x8D)]), got
    assert 1.0 <= elapsed <= 1.75 + SLACK, f"closed after {elapsed:.3f} s"
