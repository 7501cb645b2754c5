"""Conformance probe, wills, sessions and QoS 1/2 flows (MQTT 5.0 sections
3.1.2-3.1.4, 3.3.4, 3.4-3.7, 4.1, 4.3, 4.4, 4.9; MQTT 3.1.1 where marked)."""
import time

from conformance_probe import (CONNACK, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,
                               P_CONTENT_TYPE, P_RECEIVE_MAXIMUM, P_SESSION_EXPIRY, P_USER_PROPERTY,
                               P_WILL_DELAY, SLACK, Conn, PINGREQ_BYTES, ack, assert_disconnected_with, client,
                               connect, disconnect, h, opts, probe, probe_factory, prop, props, publish)

__all__ = ["probe", "probe_factory"]

NO_PROPS = b"\x00"


def will(topic, payload, qos=0, retain=False, wprops=NO_PROPS):
    return (topic, payload, qos, retain, wprops)


def watcher(port, cid="will-watcher", filt="will/#", qos=0):
    w = client(port, cid)
    w.sub([(filt, opts(qos=qos))])
    return w


def expiry(seconds):
    return props(prop(P_SESSION_EXPIRY, seconds))


# ------------------------------------------------------------ wills


def test_will_published_on_abnormal_close(probe):
    """[MQTT-3.1.2-8] the Will Message is published after the connection is
    closed without DISCONNECT 0x00; [MQTT-3.1.2-14] Will Retain 0 -> published
    non-retained."""
    w = watcher(probe.port)
    c = client(probe.port, "will1", will=will("will/1", b"gone"))
    c.close()
    assert [(p.topic, p.payload, p.retain) for p in w.publishes(0.5)] == [("will/1", b"gone", False)]


def test_will_published_on_disconnect_0x04(probe):
    """Section 3.14.2.1: DISCONNECT 0x04 (Disconnect with Will Message) -> the
    Server publishes the Will Message."""
    w = watcher(probe.port)
    c = client(probe.port, "will2", will=will("will/2", b"asked"))
    c.send(disconnect(0x04))
    c.until_closed()
    assert [p.payload for p in w.publishes(0.5)] == [b"asked"]


def test_no_will_on_normal_disconnect(probe):
    """[MQTT-3.1.2-10] [MQTT-3.14.4-3] DISCONNECT 0x00 discards the Will
    Message; a 3.1.1 DISCONNECT too (3.1.1 [MQTT-3.1.2-10])."""
    w = watcher(probe.port)
    c = client(probe.port, "will3", will=will("will/3", b"never"))
    c.send(h("e0 00"))
    c.until_closed()
    c4 = client(probe.port, "will3b", v=4, will=will("will/3b", b"never"))
    c4.send(h("e0 00"))
    c4.until_closed()
    assert w.publishes(0.5) == []


def test_will_published_after_protocol_error(probe):
    """[MQTT-3.1.2-8]: a connection the Server closes for a Protocol Error ended
    without DISCONNECT 0x00, so its Will Message is published."""
    w = watcher(probe.port)
    c = client(probe.port, "will4", will=will("will/4", b"kicked"))
    c.send(h("82 03 00 01 00"))  # SUBSCRIBE without filters: Protocol Error
    assert_disconnected_with(c, 0x82)
    assert [p.payload for p in w.publishes(0.5)] == [b"kicked"]


def test_will_retain_qos_and_properties(probe):
    """[MQTT-3.1.2-15] Will Retain 1 -> published retained; Will QoS 1 honoured;
    will properties (Content Type, User Property) sent with it
    (section 3.1.3.2)."""
    w = watcher(probe.port, qos=1)
    wp = props(prop(P_CONTENT_TYPE, "text/x"), prop(P_USER_PROPERTY, ("k", "v")))
    c = client(probe.port, "will5", will=will("will/5", b"ret", qos=1, retain=True, wprops=wp))
    c.close()
    (p,) = w.publishes(0.5)
    assert (p.payload, p.qos, p.prop(P_CONTENT_TYPE), p.props.get(P_USER_PROPERTY)) == \
        (b"ret", 1, "text/x", [("k", "v")])
    late = client(probe.port, "will5-late")
    late.sub("will/5")
    assert [(p.payload, p.retain) for p in late.publishes(0.3)] == [(b"ret", True)]


def test_will_delay_interval(probe):
    """Section 3.1.3.2.2 [MQTT-3.1.2-8]: Will Delay Interval 1 s (session expiry
    10 s): not published at once, published after ~1 s (within 0.75 s)."""
    w = watcher(probe.port)
    c = client(probe.port, "will6", clean=False, properties=expiry(10),
               will=will("will/6", b"late", wprops=props(prop(P_WILL_DELAY, 1))))
    c.close()
    start = time.monotonic()
    w.silent(0.6)
    p = w.expect(PUBLISH, timeout=1.75 + SLACK)
    elapsed = time.monotonic() - start
    assert p.payload == b"late" and 0.9 <= elapsed <= 1.75 + SLACK, elapsed
    w.silent(0.1)


def test_will_delay_cancelled_by_reconnect(probe):
    """[MQTT-3.1.3-9] (5.0 [MQTT-3.1.2-26] in some numberings): a new connection
    to the session before the Will Delay Interval has passed -> the Will
    Message is not sent."""
    w = watcher(probe.port)
    c = client(probe.port, "will7", clean=False, properties=expiry(10),
               will=will("will/7", b"no", wprops=props(prop(P_WILL_DELAY, 1))))
    c.close()
    time.sleep(0.3)
    c = client(probe.port, "will7", clean=False, properties=expiry(10))
    assert w.publishes(1.2) == []


def test_will_sent_when_session_ends_before_the_delay(probe):
    """Section 3.1.3.2.2: the Will is published when the Will Delay Interval
    passes or the Session ends, whichever is first: delay 30 s, session expiry
    1 s -> published after ~1 s."""
    w = watcher(probe.port)
    c = client(probe.port, "will8", clean=False, properties=expiry(1),
               will=will("will/8", b"session-end", wprops=props(prop(P_WILL_DELAY, 30))))
    c.close()
    start = time.monotonic()
    assert w.expect(PUBLISH, timeout=1.8 + SLACK).payload == b"session-end"
    assert time.monotonic() - start >= 0.9
    w.silent(0.1)


def test_takeover_disconnects_the_old_connection_with_0x8e(probe):
    """[MQTT-3.1.4-3] a second connection with the same ClientID: the existing
    one gets DISCONNECT 0x8E (Session taken over) and is closed; the new one
    works. Its Will is published because Clean Start 1 ends the old Session
    ([MQTT-3.1.2-8])."""
    w = watcher(probe.port)
    old = client(probe.port, "taken", will=will("will/taken", b"old"))
    new = client(probe.port, "taken")
    assert_disconnected_with(old, 0x8E)
    assert [p.payload for p in w.publishes(0.5)] == [b"old"]
    assert new.ping() == []


# ------------------------------------------------------------ sessions


def test_clean_start_discards_the_session(probe):
    """[MQTT-3.1.2-4] Clean Start 1 discards the existing Session: Session
    Present 0 ([MQTT-3.2.2-2]) and the old subscription is gone."""
    c = client(probe.port, "sess1", clean=False, properties=expiry(60))
    c.sub("s1/t")
    c.send(h("e0 00"))
    c.until_closed()
    c = Conn(probe.port)
    c.send(connect("sess1", clean=True))
    assert c.expect(CONNACK).session_present == 0
    pub = client(probe.port, "sess1pub")
    pub.send(publish("s1/t", b"x"))
    assert c.publishes(0.3) == []


def test_session_resumed_with_subscriptions_and_queued_messages(probe):
    """[MQTT-3.1.2-5] [MQTT-3.2.2-3] Clean Start 0 with a stored Session: Session
    Present 1, subscriptions kept, and QoS 1 messages published while it was
    offline are delivered ([MQTT-4.5.0-1], section 4.1)."""
    c = client(probe.port, "sess2", clean=False, properties=expiry(60))
    c.sub([("s2/#", opts(qos=1))])
    c.send(h("e0 00"))
    c.until_closed()
    pub = client(probe.port, "sess2pub")
    for i in range(3):
        pub.send(publish("s2/t", b"q%d" % i, qos=1, pid=i + 1))
        pub.expect(PUBACK)
    c = Conn(probe.port)
    c.send(connect("sess2", clean=False, properties=expiry(60)))
    assert c.expect(CONNACK).session_present == 1
    got = c.publishes(0.5)
    assert [(p.payload, p.qos) for p in got] == [(b"q0", 1), (b"q1", 1), (b"q2", 1)]
    pub.send(publish("s2/t", b"live", qos=1, pid=9))
    pub.expect(PUBACK)
    assert [p.payload for p in c.publishes(0.3)] == [b"live"]


def test_unacknowledged_qos1_resent_with_dup_on_resume(probe):
    """[MQTT-4.4.0-1] on resume the Server re-sends unacknowledged PUBLISH packets
    with their original Packet Identifiers, [MQTT-3.3.1-1] with DUP 1."""
    c = client(probe.port, "sess3", clean=False, properties=expiry(60))
    c.sub([("s3/t", opts(qos=1))])
    pub = client(probe.port, "sess3pub")
    pub.send(publish("s3/t", b"unacked", qos=1, pid=1))
    first = c.expect(PUBLISH)
    assert (first.qos, first.dup) == (1, False)
    c.close()  # no PUBACK
    time.sleep(0.1)
    c = Conn(probe.port)
    c.send(connect("sess3", clean=False, properties=expiry(60)))
    assert c.expect(CONNACK).session_present == 1
    again = c.expect(PUBLISH)
    assert (again.payload, again.pid, again.dup, again.qos) == (b"unacked", first.pid, True, 1)
    c.send(ack(PUBACK, again.pid))
    assert c.ping() == []


def test_session_expires_after_its_interval(probe):
    """[MQTT-4.1.0-2] the Server discards the Session State when the connection
    is closed and the Session Expiry Interval (1 s) has passed."""
    c = client(probe.port, "sess4", clean=False, properties=expiry(1))
    c.sub("s4/t")
    c.send(h("e0 00"))
    c.until_closed()
    time.sleep(1.5 + SLACK)
    c = Conn(probe.port)
    c.send(connect("sess4", clean=False, properties=expiry(1)))
    assert c.expect(CONNACK).session_present == 0


def test_session_without_expiry_ends_with_the_connection(probe):
    """Section 3.1.2.11.2: an absent Session Expiry Interval means 0, the Session
    ends when the connection closes ([MQTT-3.1.2-23] only stores it for > 0):
    Clean Start 0 afterwards gets Session Present 0 ([MQTT-3.2.2-3])."""
    c = client(probe.port, "sess5", clean=False)
    c.sub("s5/t")
    c.close()
    time.sleep(0.1)
    c = Conn(probe.port)
    c.send(connect("sess5", clean=False))
    assert c.expect(CONNACK).session_present == 0


def test_disconnect_can_shorten_the_session_expiry(probe):
    """Section 3.14.2.2.2: a DISCONNECT with Session Expiry Interval 0 ends a
    session that was opened with 60 s."""
    c = client(probe.port, "sess6", clean=False, properties=expiry(60))
    c.sub("s6/t")
    c.send(disconnect(0x00, expiry(0)))
    c.until_closed()
    c = Conn(probe.port)
    c.send(connect("sess6", clean=False, properties=expiry(60)))
    assert c.expect(CONNACK).session_present == 0


def test_v311_persistent_session(probe):
    """MQTT 3.1.1 [MQTT-3.1.2-4] [MQTT-3.2.2-2]: CleanSession 0 keeps the session:
    Session Present 1 on reconnect and a QoS 1 message queued while offline is
    delivered (3.1.1 [MQTT-3.1.2-5])."""
    c = client(probe.port, "v311sess", v=4, clean=False)
    c.sub([("v311s/t", 1)])
    c.send(h("e0 00"))
    c.until_closed()
    pub = client(probe.port, "v311pub", v=4)
    pub.send(publish("v311s/t", b"kept", qos=1, pid=4, v=4))
    assert pub.expect(PUBACK).raw == h("40 02 00 04")
    c = Conn(probe.port, v=4)
    c.send(connect("v311sess", v=4, clean=False))
    assert c.expect(CONNACK).raw == h("20 02 01 00")
    (p,) = c.publishes(0.4)
    assert (p.payload, p.qos) == (b"kept", 1)


# ------------------------------------------------------------ QoS


def test_qos1_flow(probe):
    """[MQTT-4.3.2-4] PUBACK with the PUBLISH's Packet Identifier;
    [MQTT-2.2.1-4] [MQTT-4.3.2-2] the subscriber gets QoS 1 with a non-zero
    Packet Identifier and DUP 0; [MQTT-4.3.2-5] after PUBACK the same Packet
    Identifier is a new publication."""
    sub = client(probe.port, "q1sub")
    sub.sub([("q1/t", opts(qos=1))])
    pub = client(probe.port, "q1pub")
    for payload in (b"first", b"second"):
        pub.send(publish("q1/t", payload, qos=1, pid=0x0102))
        pa = pub.expect(PUBACK)
        assert pa.raw[:4] == h("40 02 01 02") or (pa.pid == 0x0102 and pa.reason == 0)
    got = sub.publishes(0.3)
    assert [(p.payload, p.qos, p.dup) for p in got] == [(b"first", 1, False), (b"second", 1, False)]
    assert all(p.pid for p in got)


def test_qos2_exactly_once_with_dup_resend(probe):
    """[MQTT-4.3.3-8] PUBREC with the Packet Identifier; [MQTT-4.3.3-10] a
    re-sent PUBLISH (DUP 1, same id) before PUBREL gets PUBREC again and is not
    delivered twice; [MQTT-4.3.3-11] PUBREL -> PUBCOMP with the same id."""
    sub = client(probe.port, "q2sub")
    sub.sub([("q2/t", opts(qos=2))])
    pub = client(probe.port, "q2pub")
    pub.send(publish("q2/t", b"once", qos=2, pid=77))
    assert (pub.expect(PUBREC).pid, 0) == (77, 0)
    pub.send(publish("q2/t", b"once", qos=2, pid=77, dup=True))
    assert pub.expect(PUBREC).pid == 77
    pub.send(h("62 02 00 4d"))  # PUBREL 77
    pc = pub.expect(PUBCOMP)
    assert (pc.pid, pc.reason) == (77, 0)
    delivered = []
    for p in sub.publishes(0.4):
        delivered.append(p.payload)
        assert p.qos == 2
        sub.send(ack(PUBREC, p.pid))
        rel = sub.expect(PUBREL)
        assert rel.raw[0] == 0x62 and rel.pid == p.pid
        sub.send(ack(PUBCOMP, p.pid))
    assert delivered == [b"once"]


def test_qos2_to_subscriber_full_flow(probe):
    """[MQTT-4.3.3-1] [MQTT-4.3.3-2] the Server sends QoS 2 with DUP 0;
    [MQTT-4.3.3-4] after PUBREC it sends PUBREL (flags 0010, [MQTT-3.6.1-1]) with
    the same id; after PUBCOMP the id is free and nothing is re-sent
    ([MQTT-4.4.0-1])."""
    sub = client(probe.port, "q2rsub")
    sub.sub([("q2r/t", opts(qos=2))])
    pub = client(probe.port, "q2rpub")
    pub.send(publish("q2r/t", b"m", qos=2, pid=5))
    pub.expect(PUBREC)
    pub.send(ack(PUBREL, 5))
    pub.expect(PUBCOMP)
    p = sub.expect(PUBLISH)
    assert (p.qos, p.dup, p.payload) == (2, False, b"m") and p.pid
    sub.send(ack(PUBREC, p.pid))
    rel = sub.expect(PUBREL)
    assert rel.raw[:4] == h("62 02") + p.pid.to_bytes(2, "big") or (rel.raw[0] == 0x62 and rel.pid == p.pid)
    sub.send(ack(PUBCOMP, p.pid))
    assert sub.ping() == []


def test_qos2_packet_id_reusable_after_pubcomp(probe):
    """[MQTT-4.3.3-12] after PUBCOMP the same Packet Identifier is a new
    publication: two complete flows with id 9 deliver two messages."""
    sub = client(probe.port, "q2idsub")
    sub.sub("q2id/t")
    pub = client(probe.port, "q2idpub")
    for payload in (b"a", b"b"):
        pub.send(publish("q2id/t", payload, qos=2, pid=9))
        pub.expect(PUBREC)
        pub.send(ack(PUBREL, 9))
        pub.expect(PUBCOMP)
    assert [p.payload for p in sub.publishes(0.3)] == [b"a", b"b"]


def test_pubrel_for_unknown_packet_id_gets_pubcomp(probe):
    """[MQTT-4.3.3-11] a PUBREL is answered by a PUBCOMP with the same Packet
    Identifier; for an unknown one the reason is 0x00 or 0x92 (Packet Identifier
    not found, section 3.7.2.1)."""
    c = client(probe.port, "pubrel-unknown")
    c.send(h("62 02 12 34"))
    pc = c.expect(PUBCOMP)
    assert pc.pid == 0x1234 and pc.reason in (0x00, 0x92)
    assert c.ping() == []


def test_server_respects_client_receive_maximum(probe):
    """[MQTT-3.3.4-9] the Server MUST NOT send more than the client's Receive
    Maximum (2) unacknowledged QoS 1 PUBLISHes; [MQTT-3.3.4-10] other packets
    (PINGRESP) are not delayed; the rest follow as PUBACKs free the quota."""
    sub = Conn(probe.port)
    sub.send(connect("rmsub", properties=props(prop(P_RECEIVE_MAXIMUM, 2))))
    sub.expect(CONNACK)
    sub.sub([("rmx/t", opts(qos=1))])
    pub = client(probe.port, "rmpub")
    for i in range(5):
        pub.send(publish("rmx/t", b"%d" % i, qos=1, pid=i + 1))
        pub.expect(PUBACK)
    first = sub.publishes(0.4)
    assert [p.payload for p in first] == [b"0", b"1"]
    sub.send(PINGREQ_BYTES)
    assert sub.expect(PINGRESP)
    got = [p.payload for p in first]
    pending = list(first)
    deadline = time.monotonic() + 3
    while pending and time.monotonic() < deadline:
        sub.send(ack(PUBACK, pending.pop(0).pid))
        more = sub.publishes(0.2)
        assert len(pending) + len(more) <= 2
        pending += more
        got += [p.payload for p in more]
    assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_qos2_packet_id_in_use_until_pubrel(probe):
    """[MQTT-4.3.3-10] until the PUBREL arrives, any PUBLISH with the same Packet
    Identifier (here DUP 0 and another payload) is answered with PUBREC and
    MUST NOT cause a duplicate delivery; [MQTT-4.3.3-12] after PUBCOMP the id
    starts a new publication."""
    sub = client(probe.port, "inusesub")
    sub.sub("inuse/t")
    pub = client(probe.port, "inusepub")
    pub.send(publish("inuse/t", b"first", qos=2, pid=5))
    assert pub.expect(PUBREC).pid == 5
    pub.send(publish("inuse/t", b"not-again", qos=2, pid=5))
    assert pub.expect(PUBREC).pid == 5
    pub.send(ack(PUBREL, 5))
    assert pub.expect(PUBCOMP).pid == 5
    pub.send(publish("inuse/t", b"new", qos=2, pid=5))
    assert pub.expect(PUBREC).pid == 5
    pub.send(ack(PUBREL, 5))
    assert pub.expect(PUBCOMP).pid == 5
    assert [p.payload for p in sub.publishes(0.3)] == [b"first", b"new"]


def test_queued_message_expires_while_session_is_offline(probe):
    """[MQTT-3.3.2-5] a queued QoS 1 message whose Message Expiry Interval (1 s)
    passes before onward delivery starts is deleted; a non-expiring one queued
    beside it is delivered on resume."""
    c = client(probe.port, "expsess", clean=False, properties=expiry(60))
    c.sub([("xq/t", opts(qos=1))])
    c.send(h("e0 00"))
    c.until_closed()
    pub = client(probe.port, "expsesspub")
    pub.send(publish("xq/t", b"short", qos=1, pid=1, properties=props(prop(0x02, 1))))
    pub.send(publish("xq/t", b"keep", qos=1, pid=2))
    pub.expect(PUBACK)
    pub.expect(PUBACK)
    time.sleep(1.3)
    c = Conn(probe.port)
    c.send(connect("expsess", clean=False, properties=expiry(60)))
    assert c.expect(CONNACK).session_present == 1
    assert [p.payload for p in c.publishes(0.4)] == [b"keep"]


def test_v311_takeover_closes_the_old_connection_silently(probe):
    """MQTT 3.1.1 [MQTT-3.1.4-2]: a second client with the same ClientId makes
    the Server disconnect the existing one (no DISCONNECT packet in 3.1.1);
    the new one works."""
    old = client(probe.port, "v311taken", v=4)
    new = client(probe.port, "v311taken", v=4)
    assert old.until_closed() == []
    assert new.ping() == []


def test_session_expiry_never(probe):
    """Section 3.1.2.11.2: Session Expiry Interval 0xFFFFFFFF means the Session
    does not expire: it is still there on reconnect (no timer overflow)."""
    c = client(probe.port, "forever", clean=False, properties=expiry(0xFFFFFFFF))
    c.sub("fe/t")
    c.send(h("e0 00"))
    c.until_closed()
    time.sleep(0.2)
    c = Conn(probe.port)
    c.send(connect("forever", clean=False, properties=expiry(0xFFFFFFFF)))
    assert c.expect(CONNACK).session_present == 1
    pub = client(probe.port, "foreverpub")
    pub.send(publish("fe/t", b"still"))
    assert [p.payload for p in c.publishes(0.3)] == [b"still"]


def test_negative_acks_are_final(probe):
    """[MQTT-4.4.0-2] a PUBACK or PUBREC with a Reason Code >= 0x80 from the
    client acknowledges the PUBLISH: it is not re-sent on resume, and no PUBREL
    follows a failed PUBREC."""
    c = client(probe.port, "negack", clean=False, properties=expiry(60))
    c.sub([("na/1", opts(qos=1)), ("na/2", opts(qos=2))])
    pub = client(probe.port, "negackpub")
    pub.send(publish("na/1", b"one", qos=1, pid=1) + publish("na/2", b"two", qos=2, pid=2))
    pub.expect(PUBACK)
    pub.expect(PUBREC)
    pub.send(ack(PUBREL, 2))
    pub.expect(PUBCOMP)
    got = {p.topic: p for p in c.publishes(0.3)}
    assert sorted(got) == ["na/1", "na/2"]
    c.send(h("40 03") + got["na/1"].pid.to_bytes(2, "big") + b"\x80")
    c.send(h("50 03") + got["na/2"].pid.to_bytes(2, "big") + b"\x80")
    c.silent(0.3)
    c.close()
    c = Conn(probe.port)
    c.send(connect("negack", clean=False, properties=expiry(60)))
    assert c.expect(CONNACK).session_present == 1
    c.silent(0.3)


def test_pubrel_resent_on_resume_instead_of_publish(probe):
    """[MQTT-4.4.0-1] on resume the Server re-sends an unacknowledged PUBREL with
    its original Packet Identifier; [MQTT-4.3.3-6] it MUST NOT re-send the
    PUBLISH once it has sent the PUBREL."""
    c = client(probe.port, "relresume", clean=False, properties=expiry(60))
    c.sub([("rr/t", opts(qos=2))])
    pub = client(probe.port, "relresumepub")
    pub.send(publish("rr/t", b"x", qos=2, pid=1))
    pub.expect(PUBREC)
    pub.send(ack(PUBREL, 1))
    pub.expect(PUBCOMP)
    p = c.expect(PUBLISH)
    c.send(ack(PUBREC, p.pid))
    assert c.expect(PUBREL).pid == p.pid
    c.close()  # no PUBCOMP
    time.sleep(0.1)
    c = Conn(probe.port)
    c.send(connect("relresume", clean=False, properties=expiry(60)))
    assert c.expect(CONNACK).session_present == 1
    rel = c.expect(PUBREL)
    assert rel.pid == p.pid and rel.raw[0] == 0x62
    c.send(ack(PUBCOMP, p.pid))
    assert c.ping() == []


def test_inbound_qos2_survives_reconnect_exactly_once(probe):
    """[MQTT-4.4.0-1] [MQTT-4.3.3-10] a publisher that got PUBREC, lost the
    connection and resumed its session re-sends the PUBLISH (DUP 1, same id):
    PUBREC again, and after PUBREL/PUBCOMP the message was delivered once."""
    sub = client(probe.port, "q2rsub2")
    sub.sub("q2x/t")
    pub = client(probe.port, "q2rpub2", clean=False, properties=expiry(60))
    pub.send(publish("q2x/t", b"once", qos=2, pid=11))
    pub.expect(PUBREC)
    pub.close()
    time.sleep(0.1)
    pub = Conn(probe.port)
    pub.send(connect("q2rpub2", clean=False, properties=expiry(60)))
    assert pub.expect(CONNACK).session_present == 1
    pub.send(publish("q2x/t", b"once", qos=2, pid=11, dup=True))
    assert pub.expect(PUBREC).pid == 11
    pub.send(ack(PUBREL, 11))
    assert pub.expect(PUBCOMP).pid == 11
    assert [p.payload for p in sub.publishes(0.3)] == [b"once"]


def test_unacknowledged_messages_resent_in_order(probe):
    """[MQTT-4.4.0-1] [MQTT-4.6.0-6] three unacknowledged QoS 1 messages are
    re-sent on resume in their original order, with their original Packet
    Identifiers and DUP 1."""
    c = client(probe.port, "order-resume", clean=False, properties=expiry(60))
    c.sub([("or/t", opts(qos=1))])
    pub = client(probe.port, "order-resume-pub")
    for i in range(3):
        pub.send(publish("or/t", b"%d" % i, qos=1, pid=i + 1))
        pub.expect(PUBACK)
    first = c.publishes(0.3)
    assert [p.payload for p in first] == [b"0", b"1", b"2"]
    c.close()
    time.sleep(0.1)
    c = Conn(probe.port)
    c.send(connect("order-resume", clean=False, properties=expiry(60)))
    assert c.expect(CONNACK).session_present == 1
    again = c.publishes(0.3)
    assert [(p.payload, p.pid, p.dup) for p in again] == [(p.payload, p.pid, True) for p in first]


def test_shared_qos1_message_goes_to_another_member_when_session_ends(probe):
    """Spec 4.8.2: a QoS 1 message a member did not acknowledge before its
    Session terminated SHOULD be sent to another member of the group (as
    EMQX does; in a cluster the member on another node gets it);
    [MQTT-4.8.2-6] a PUBACK >= 0x80 from a member discards the message (not
    sent to another member)."""
    a = client(probe.port, "shA")
    a.sub([("$share/g/sx/t", opts(qos=1))])
    pub = client(probe.port, "shpub")
    pub.send(publish("sx/t", b"m1", qos=1, pid=1))
    pub.expect(PUBACK)
    (p,) = a.publishes(0.3)
    b = client(probe.port, "shB")
    b.sub([("$share/g/sx/t", opts(qos=1))])
    a.close()  # Session Expiry 0: the session ends with the connection
    p = b.expect(PUBLISH, timeout=5)
    assert (p.topic, p.payload, p.qos) == ("sx/t", b"m1", 1)
    b.send(ack(PUBACK, p.pid))
    assert b.publishes(0.3) == []  # once
    # B is now the only member: a refused message is dropped, not re-sent.
    pub.send(publish("sx/t", b"m2", qos=1, pid=2))
    pub.expect(PUBACK)
    (p,) = b.publishes(0.3)
    b.send(h("40 03") + p.pid.to_bytes(2, "big") + b"\x80")
    b.silent(0.3)


def test_shared_qos2_message_not_given_to_another_member_when_session_ends(probe):
    """[MQTT-4.8.2-5] a QoS 2 message sent to a member whose Session
    terminates before it completes the delivery MUST NOT be sent to any
    other subscribed Client; one not yet sent to it may be."""
    a = client(probe.port, "sh2A")
    a.sub([("$share/g2/sy/t", opts(qos=2))])
    pub = client(probe.port, "sh2pub")
    pub.send(publish("sy/t", b"q2", qos=2, pid=5))
    assert pub.expect(PUBREC).pid == 5
    pub.send(h("62 02 00 05"))  # PUBREL 5
    assert pub.expect(PUBCOMP).pid == 5
    (p,) = a.publishes(0.3)
    assert p.qos == 2  # sent, not acknowledged with PUBREC
    b = client(probe.port, "sh2B")
    b.sub([("$share/g2/sy/t", opts(qos=2))])
    a.close()
    assert b.publishes(1.0) == []
    # B takes the group's next message.
    pub.send(publish("sy/t", b"next", qos=1, pid=6))
    pub.expect(PUBACK)
    assert [m.payload for m in b.publishes(0.5)] == [b"next"]


def test_outbound_topic_aliases_reset_on_a_new_connection(probe):
    """[MQTT-3.3.2-7] Topic Alias mappings are not carried from one connection
    to the next: after a resumed session, every alias the Server uses is set
    up again (a topic sent with it) before an empty topic refers to it."""
    cprops = props(prop(P_SESSION_EXPIRY, 60), prop(0x22, 3))
    pub = client(probe.port, "alias-reset-pub")
    for round_ in range(2):
        c = Conn(probe.port)
        c.send(connect("alias-reset", clean=round_ == 0, properties=cprops))
        assert c.expect(CONNACK).session_present == round_
        if round_ == 0:
            c.sub("ar/#")
        mapping = {}
        for _ in range(3):
            pub.send(publish("ar/t", b"x"))
        for p in c.publishes(0.3):
            alias = p.prop(0x23)
            if alias is not None and p.topic:
                mapping[alias] = p.topic
            assert p.topic or mapping.get(alias) == "ar/t", (round_, p)
        c.close()
        time.sleep(0.1)


def test_v311_acknowledgements_have_the_311_form(probe):
    """MQTT 3.1.1 sections 3.4-3.11: a 3.1.1 client gets 3.1.1 packets only:
    PUBACK `40 02 id` even with no subscriber (no v5 reason code 0x10),
    PUBREC/PUBCOMP `50 02 id`/`70 02 id`, SUBACK `90 03 id 02`, UNSUBACK
    `b0 02 id` (no payload in 3.1.1), PUBREL to it `62 02 id`."""
    c = client(probe.port, "v311acks", v=4)
    c.send(publish("nobody/t", b"x", qos=1, pid=1, v=4))
    assert c.recv().raw == h("40 02 00 01")
    c.send(h("82 08 00 02 00 03 76 2f 74 02"))  # SUBSCRIBE "v/t" QoS 2
    assert c.recv().raw == h("90 03 00 02 02")
    c.send(publish("v/t", b"two", qos=2, pid=3, v=4))
    # The copy to itself may come before or after PUBREL (section 4.3.3 method A or B).
    got = {}
    while PUBREC not in got:
        p = c.recv()
        got[p.type] = p
    assert got[PUBREC].raw == h("50 02 00 03")
    c.send(ack(PUBREL, 3))
    while PUBCOMP not in got or PUBLISH not in got:
        p = c.recv()
        got[p.type] = p
    assert got[PUBCOMP].raw == h("70 02 00 03")
    p = got[PUBLISH]
    assert (p.qos, p.payload) == (2, b"two")
    c.send(ack(PUBREC, p.pid))
    assert c.recv().raw == h("62 02") + p.pid.to_bytes(2, "big")
    c.send(ack(PUBCOMP, p.pid))
    c.send(h("a2 07 00 04 00 03 76 2f 74"))  # UNSUBSCRIBE "v/t"
    assert c.recv().raw == h("b0 02 00 04")
    c.send(h("a2 07 00 05 00 03 6e 2f 6f"))  # UNSUBSCRIBE of an unknown filter
    assert c.recv().raw == h("b0 02 00 05")
    assert c.ping() == []


def test_queued_messages_flushed_within_receive_maximum(probe):
    """[MQTT-3.3.4-9] [MQTT-4.9.0-2] messages queued for an offline session are
    sent on resume without exceeding the new connection's Receive Maximum (2):
    two at first, the rest as PUBACKs free the quota, in order."""
    cprops = props(prop(P_SESSION_EXPIRY, 60), prop(P_RECEIVE_MAXIMUM, 2))
    c = client(probe.port, "flushrm", clean=False, properties=cprops)
    c.sub([("fr/t", opts(qos=1))])
    c.send(h("e0 00"))
    c.until_closed()
    pub = client(probe.port, "flushrmpub")
    for i in range(6):
        pub.send(publish("fr/t", b"%d" % i, qos=1, pid=i + 1))
        pub.expect(PUBACK)
    c = Conn(probe.port)
    c.send(connect("flushrm", clean=False, properties=cprops))
    assert c.expect(CONNACK).session_present == 1
    pending = c.publishes(0.3)
    assert len(pending) == 2
    got = [p.payload for p in pending]
    deadline = time.monotonic() + 3
    while pending and time.monotonic() < deadline:
        c.send(ack(PUBACK, pending.pop(0).pid))
        more = c.publishes(0.15)
        assert len(pending) + len(more) <= 2
        pending += more
        got += [p.payload for p in more]
    assert got == [b"%d" % i for i in range(6)]


def test_takeover_with_clean_start_0_keeps_the_session_and_holds_the_will(probe):
    """[MQTT-3.1.4-3] the old connection gets DISCONNECT 0x8E; [MQTT-3.2.2-3]
    Clean Start 0 resumes the Session (Session Present 1, subscription kept);
    [MQTT-3.1.2-8] the old Will (delay 5 s) is not published since a new
    connection for the ClientID opened before the delay passed."""
    w = watcher(probe.port)
    old = client(probe.port, "tk0", clean=False, properties=expiry(60),
                 will=will("will/tk0", b"no", wprops=props(prop(P_WILL_DELAY, 5))))
    old.sub("tk0/t")
    new = Conn(probe.port)
    new.send(connect("tk0", clean=False, properties=expiry(60)))
    assert new.expect(CONNACK).session_present == 1
    assert_disconnected_with(old, 0x8E)
    pub = client(probe.port, "tk0pub")
    pub.send(publish("tk0/t", b"to-new"))
    assert [p.payload for p in new.publishes(0.3)] == [b"to-new"]
    w.silent(0.2)


def test_takeover_across_protocol_versions(probe):
    """[MQTT-3.1.4-3]: a 3.1.1 connection taking over a v5 client's ClientID
    sends the v5 connection DISCONNECT 0x8E; the 3.1.1 one works."""
    old = client(probe.port, "xver")
    new = client(probe.port, "xver", v=4)
    assert_disconnected_with(old, 0x8E)
    assert new.ping() == []


def test_message_expiring_while_waiting_for_quota_is_dropped(probe):
    """[MQTT-3.3.2-5] a message waiting in the Server because the client's
    Receive Maximum (1) is used up, whose Message Expiry Interval (1 s) passes
    before onward delivery starts, is deleted; the next one is delivered with
    its remaining interval ([MQTT-3.3.2-6])."""
    c = Conn(probe.port)
    c.send(connect("quota-exp", properties=props(prop(P_RECEIVE_MAXIMUM, 1))))
    c.expect(CONNACK)
    c.sub([("qe/t", opts(qos=1))])
    pub = client(probe.port, "quota-exp-pub")
    pub.send(publish("qe/t", b"first", qos=1, pid=1))
    pub.send(publish("qe/t", b"expires", qos=1, pid=2, properties=props(prop(0x02, 1))))
    pub.send(publish("qe/t", b"lasts", qos=1, pid=3, properties=props(prop(0x02, 60))))
    for _ in range(3):
        pub.expect(PUBACK)
    first = c.expect(PUBLISH)
    assert first.payload == b"first"
    c.silent(1.2)
    c.send(ack(PUBACK, first.pid))
    nxt = c.expect(PUBLISH)
    assert nxt.payload == b"lasts" and 57 <= nxt.prop(0x02) <= 59
    c.send(ack(PUBACK, nxt.pid))
    c.silent(0.2)
