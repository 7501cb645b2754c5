"""Conformance probe, routing and retained messages (MQTT 5.0 sections 3.3,
3.8-3.11, 4.7, 4.8): wildcards, $-topics, overlapping and shared
subscriptions, subscription options, topic aliases, retained messages."""
import time

import cluster_mode
from conformance_probe import (CONNACK, PUBACK, PUBLISH, P_CONTENT_TYPE, P_CORRELATION_DATA, P_MESSAGE_EXPIRY,
                               P_PAYLOAD_FORMAT, P_RESPONSE_TOPIC, P_SUBSCRIPTION_ID, P_TOPIC_ALIAS,
                               P_TOPIC_ALIAS_MAXIMUM, P_USER_PROPERTY, SLACK, UNSUBACK, Conn,
                               assert_disconnected_with, client, connect, h, opts, probe, probe_factory, prop, props,
                               publish, unsubscribe)

__all__ = ["probe", "probe_factory"]


def topics(c, timeout=0.3):
    return sorted(p.topic for p in c.publishes(timeout))


def test_wildcards_match_per_the_rules(probe):
    """[MQTT-4.7.1-1] [MQTT-4.7.1-2] section 4.7.1: `a/+` matches one level,
    `a/#` matches `a` itself and everything below, `+/+` matches `/b` (an empty
    level), `#` matches every non-$ topic; [MQTT-3.3.2-3] each delivered topic
    matches its filter."""
    filters = ["a/+", "a/#", "+/+", "#", "a/+/c"]
    subs = {}
    for i, f in enumerate(filters):
        subs[f] = client(probe.port, f"wild{i}")
        subs[f].sub(f)
    pub = client(probe.port, "wildpub")
    for t in ["a", "a/b", "a/b/c", "b/c", "/b", "a/x/c/d"]:
        pub.send(publish(t, t.encode()))
    expected = {
        "a/+": ["a/b"],
        "a/#": ["a", "a/b", "a/b/c", "a/x/c/d"],
        "+/+": ["/b", "a/b", "b/c"],
        "#": ["/b", "a", "a/b", "a/b/c", "a/x/c/d", "b/c"],
        "a/+/c": ["a/b/c"],
    }
    for i, f in enumerate(filters):
        assert topics(subs[f], 0.3 if i == 0 else 0.05) == expected[f], f


def test_dollar_topics_are_not_matched_by_leading_wildcards(probe_factory):
    """[MQTT-4.7.2-1] the Server MUST NOT match Topic Filters starting with a
    wildcard (`#`, `+/broker/#`) with Topic Names beginning with `$`; `$SYS/#`
    receives the broker's $SYS messages (sys_interval = 1)."""
    b = probe_factory(sys_interval=1)
    hash_sub = client(b.port, "hash")
    hash_sub.sub("#")
    plus_sub = client(b.port, "plus")
    plus_sub.sub("+/broker/#")
    sys_sub = client(b.port, "sys")
    sys_sub.sub("$SYS/#")
    # Wait for a live $SYS publication (RETAIN 0 with Retain As Published 0),
    # which happened after the `#` and `+/...` subscriptions existed.
    deadline = time.monotonic() + 2.5
    got = []
    while not got or got[-1].retain:
        got.append(sys_sub.expect(PUBLISH, timeout=max(0.01, deadline - time.monotonic())))
    got += sys_sub.publishes(0.1)
    assert all(p.topic.startswith("$SYS/") for p in got), got
    assert hash_sub.publishes(0.05) == [] and plus_sub.publishes(0.05) == []


def test_overlapping_subscriptions_one_copy_at_max_qos_with_all_ids(probe):
    """[MQTT-3.3.4-2] deliver respecting the maximum QoS of all matching
    subscriptions; [MQTT-3.3.4-3] [MQTT-3.3.4-4] a single copy carries every
    matching Subscription Identifier (issue 3: one delivery)."""
    c = client(probe.port, "overlap")
    c.sub([("o/+", opts(qos=0))], pid=1, properties=props(prop(P_SUBSCRIPTION_ID, 1)))
    c.sub([("o/#", opts(qos=1))], pid=2, properties=props(prop(P_SUBSCRIPTION_ID, 2)))
    c.sub([("o/x", opts(qos=0))], pid=3)  # no identifier
    pub = client(probe.port, "overlap-pub")
    pub.send(publish("o/x", b"m", qos=1, pid=1))
    pub.expect(PUBACK)
    got = c.publishes(0.4)
    assert len(got) == 1, got
    assert got[0].qos == 1 and got[0].pid
    assert sorted(got[0].props.get(P_SUBSCRIPTION_ID, [])) == [1, 2]


def test_shared_subscription_delivers_each_message_to_one_member(probe):
    """Section 4.8.2 [MQTT-4.8.2-1] [MQTT-4.8.2-2]: `$share/g/sh/#` members
    receive each message exactly once between them; a plain `sh/#`
    subscriber receives every message."""
    members = [client(probe.port, f"member{i}") for i in range(2)]
    for m in members:
        sa = m.sub([("$share/g/sh/#", opts(qos=1))])
        assert sa.codes == [1]
    plain = client(probe.port, "plain")
    plain.sub([("sh/#", opts(qos=1))])
    pub = client(probe.port, "sharepub")
    for i in range(20):
        pub.send(publish(f"sh/{i}", b"%d" % i, qos=1, pid=i + 1))
        pub.expect(PUBACK)
    shared = []
    for m in members:
        for p in m.publishes(0.3):
            shared.append(p.payload)
            m.send(h("40 02") + p.pid.to_bytes(2, "big"))
    assert sorted(shared, key=int) == [b"%d" % i for i in range(20)]
    all_plain = plain.publishes(0.1)
    assert [p.payload for p in all_plain] == [b"%d" % i for i in range(20)]


def test_no_local(probe):
    """[MQTT-3.8.3-3] No Local: a client's own messages are not forwarded to it;
    other clients' messages are."""
    c = client(probe.port, "nolocal")
    c.sub([("nl/t", opts(nl=True))])
    c.send(publish("nl/t", b"own"))
    other = client(probe.port, "nolocal-other")
    other.send(publish("nl/t", b"other"))
    assert [p.payload for p in c.publishes(0.3)] == [b"other"]


def test_retain_as_published(probe):
    """[MQTT-3.3.1-12] RAP 0: RETAIN cleared on forwarding; [MQTT-3.3.1-13]
    RAP 1: RETAIN as received."""
    rap0 = client(probe.port, "rap0")
    rap0.sub([("rap/t", opts(rap=False))])
    rap1 = client(probe.port, "rap1")
    rap1.sub([("rap/t", opts(rap=True))])
    pub = client(probe.port, "rappub")
    pub.send(publish("rap/t", b"r", retain=True))
    pub.send(publish("rap/t", b"n", retain=False))
    assert [(p.payload, p.retain) for p in rap0.publishes(0.3)] == [(b"r", False), (b"n", False)]
    assert [(p.payload, p.retain) for p in rap1.publishes(0.05)] == [(b"r", True), (b"n", False)]


def test_retain_handling_0_1_2(probe):
    """[MQTT-3.3.1-9] RH 0 sends retained messages on every subscribe (also a
    re-subscribe, [MQTT-3.8.4-4]); [MQTT-3.3.1-10] RH 1 only when the
    subscription is new; [MQTT-3.3.1-11] RH 2 never. Retained messages sent on
    subscribe have RETAIN 1 (section 3.3.1.3)."""
    pub = client(probe.port, "rhpub")
    pub.send(publish("rh/t", b"kept", qos=1, retain=True, pid=1))
    pub.expect(PUBACK)
    c = client(probe.port, "rh")

    def got_after(filt, o, pid):
        c.sub([(filt, o)], pid=pid)
        return [(p.topic, p.payload, p.retain) for p in c.publishes(0.3)]

    assert got_after("rh/t", opts(rh=0), 1) == [("rh/t", b"kept", True)]
    assert got_after("rh/t", opts(rh=0), 2) == [("rh/t", b"kept", True)]
    assert got_after("rh/#", opts(rh=1), 3) == [("rh/t", b"kept", True)]
    assert got_after("rh/#", opts(rh=1), 4) == []
    assert got_after("rh/+", opts(rh=2), 5) == []


def test_granted_qos_caps_delivery_qos(probe):
    """[MQTT-3.8.4-8] delivery QoS is the minimum of the published QoS and the
    granted QoS: QoS 2 to a QoS 0 subscription arrives at QoS 0, QoS 1 to a
    QoS 2 subscription at QoS 1."""
    s0 = client(probe.port, "q0sub")
    assert s0.sub([("q/t", opts(qos=0))]).codes == [0]
    s2 = client(probe.port, "q2sub")
    assert s2.sub([("q/t", opts(qos=2))]).codes == [2]
    pub = client(probe.port, "qpub")
    pub.send(publish("q/t", b"two", qos=2, pid=1))
    pub.expect(5)  # PUBREC
    pub.send(h("62 02 00 01"))
    pub.expect(7)  # PUBCOMP
    pub.send(publish("q/t", b"one", qos=1, pid=2))
    pub.expect(PUBACK)
    got0 = s0.publishes(0.3)
    assert [(p.payload, p.qos, p.pid) for p in got0] == [(b"two", 0, None), (b"one", 0, None)]
    got2 = s2.publishes(0.05)
    assert [(p.payload, p.qos) for p in got2] == [(b"two", 2), (b"one", 1)]


def test_suback_order_and_invalid_filters(probe):
    """[MQTT-3.9.3-1] SUBACK codes in filter order, [MQTT-3.8.4-7] each the
    granted QoS or a failure; invalid filters (`a/#/b`, `x+/y`,
    [MQTT-4.7.1-1] [MQTT-4.7.1-2]) get 0x8F (issue 3) and the connection
    stays usable."""
    c = client(probe.port, "suback")
    sa = c.sub([("s/0", opts(qos=0)), ("a/#/b", 0), ("s/2", opts(qos=2)), ("x+/y", 0), ("s/1", opts(qos=1))], pid=7)
    assert sa.codes == [0x00, 0x8F, 0x02, 0x8F, 0x01]
    assert c.ping() == []


def test_unsubscribe_stops_delivery_and_reports_unknown_filters(probe):
    """[MQTT-3.10.4-1] [MQTT-3.10.4-2] UNSUBSCRIBE deletes the exact filter and
    stops delivery; [MQTT-3.10.4-5] UNSUBACK with the same Packet Identifier;
    [MQTT-3.11.3-1] codes in order: 0x00 Success, 0x11 No subscription
    existed."""
    c = client(probe.port, "unsub")
    c.sub("u/#")
    c.send(unsubscribe(0x1234, ["u/#", "u/+"]))
    ua = c.expect(UNSUBACK)
    assert ua.pid == 0x1234 and ua.codes == [0x00, 0x11]
    pub = client(probe.port, "unsubpub")
    pub.send(publish("u/x", b"gone"))
    assert c.publishes(0.3) == []


def test_properties_forwarded_unaltered_and_in_order(probe):
    """[MQTT-3.3.2-4] Payload Format Indicator, [MQTT-3.3.2-15] Response Topic,
    [MQTT-3.3.2-16] Correlation Data, [MQTT-3.3.2-17] [MQTT-3.3.2-18] User
    Properties unaltered and in order, [MQTT-3.3.2-20] Content Type."""
    c = client(probe.port, "propsub")
    c.sub("pr/t")
    pub = client(probe.port, "proppub")
    user = [("z", "1"), ("a", "2"), ("z", "3"), ("k", "")]
    block = props(prop(P_PAYLOAD_FORMAT, 1), prop(P_USER_PROPERTY, user[0]), prop(P_RESPONSE_TOPIC, "re/ply"),
                  prop(P_USER_PROPERTY, user[1]), prop(P_CORRELATION_DATA, b"\x00\x01\xff"),
                  prop(P_CONTENT_TYPE, "text/plain"), prop(P_USER_PROPERTY, user[2]), prop(P_USER_PROPERTY, user[3]))
    pub.send(publish("pr/t", "héllo".encode(), properties=block))
    (p,) = c.publishes(0.3)
    assert p.payload == "héllo".encode()
    assert p.props.get(P_USER_PROPERTY) == user
    assert p.prop(P_PAYLOAD_FORMAT) == 1
    assert p.prop(P_RESPONSE_TOPIC) == "re/ply"
    assert p.prop(P_CORRELATION_DATA) == b"\x00\x01\xff"
    assert p.prop(P_CONTENT_TYPE) == "text/plain"


def test_messages_from_one_client_keep_their_order(probe):
    """[MQTT-4.6.0-5] [MQTT-4.6.0-6] a non-shared subscriber receives one
    publisher's messages in the order they were sent (100 QoS 1 messages)."""
    c = client(probe.port, "ordersub")
    c.sub([("ord/t", opts(qos=1))])
    pub = client(probe.port, "orderpub")
    pub.send(b"".join(publish("ord/t", b"%d" % i, qos=1, pid=i + 1) for i in range(100)))
    got = []
    deadline = time.monotonic() + 3
    while len(got) < 100 and time.monotonic() < deadline:
        p = c.expect(PUBLISH)
        got.append(p.payload)
        c.send(h("40 02") + p.pid.to_bytes(2, "big"))
    assert got == [b"%d" % i for i in range(100)]


def test_topic_alias_from_client_is_resolved_and_not_carried_over(probe):
    """[MQTT-3.3.2-12] the Server accepts aliases 1..Topic Alias Maximum; the
    subscriber sees the full topic and no Topic Alias it did not ask for
    ([MQTT-3.1.2-27]: it sent no Topic Alias Maximum); [MQTT-3.3.2-7] the
    mapping does not survive the connection (reuse -> DISCONNECT 0x82)."""
    sub = client(probe.port, "aliassub")
    sub.sub("al/#")
    c = Conn(probe.port)
    c.send(connect("aliaspub"))
    ack = c.expect(CONNACK)
    assert ack.prop(P_TOPIC_ALIAS_MAXIMUM, 0) >= 1, "broker advertises no topic aliases"
    c.send(publish("al/one", b"1", properties=props(prop(P_TOPIC_ALIAS, 1))))
    c.send(publish("", b"2", properties=props(prop(P_TOPIC_ALIAS, 1))))
    c.send(publish("al/two", b"3", properties=props(prop(P_TOPIC_ALIAS, 1))))  # remap
    c.send(publish("", b"4", properties=props(prop(P_TOPIC_ALIAS, 1))))
    got = sub.publishes(0.3)
    assert [(p.topic, p.payload) for p in got] == [("al/one", b"1"), ("al/one", b"2"), ("al/two", b"3"),
                                                   ("al/two", b"4")]
    assert all(P_TOPIC_ALIAS not in p.props for p in got)
    c.send(h("e0 00"))
    c.until_closed()
    c = client(probe.port, "aliaspub")
    c.send(publish("", b"5", properties=props(prop(P_TOPIC_ALIAS, 1))))
    assert_disconnected_with(c, 0x82)


def test_topic_alias_to_client_within_its_maximum(probe):
    """[MQTT-3.3.2-11] the Server MUST NOT send a Topic Alias above the
    client's Topic Alias Maximum (2) nor 0 ([MQTT-3.3.2-8]); whatever it does,
    each message resolves to its real topic (section 3.3.2.3.4)."""
    c = Conn(probe.port)
    c.send(connect("aliasrecv", properties=props(prop(P_TOPIC_ALIAS_MAXIMUM, 2))))
    c.expect(CONNACK)
    c.sub("ta/#")
    pub = client(probe.port, "aliassend")
    sent = ["ta/a", "ta/b", "ta/c", "ta/a", "ta/b", "ta/c", "ta/a"] * 2
    for t in sent:
        pub.send(publish(t, t.encode()))
    mapping = {}
    resolved = []
    for p in c.publishes(0.4):
        alias = p.prop(P_TOPIC_ALIAS)
        if alias is not None:
            assert 1 <= alias <= 2, p
            if p.topic:
                mapping[alias] = p.topic
            else:
                assert alias in mapping, p
        topic = p.topic or mapping[alias]
        assert p.payload == topic.encode()
        resolved.append(topic)
    assert resolved == sent


# ------------------------------------------------------------ retained


def test_retained_set_replace_and_delete(probe):
    """[MQTT-3.3.1-5] a retained message replaces the previous one;
    [MQTT-3.3.1-6] an empty retained payload is delivered to current subscribers
    and removes the retained message; [MQTT-3.3.1-7] it is not stored."""
    pub = client(probe.port, "retpub")
    pub.send(publish("ret/t", b"v1", retain=True))
    pub.send(publish("ret/t", b"v2", qos=1, pid=1, retain=True))
    pub.expect(PUBACK)
    c = client(probe.port, "ret1")
    c.sub("ret/#")
    assert [(p.payload, p.retain) for p in c.publishes(0.3)] == [(b"v2", True)]
    pub.send(publish("ret/t", b"", qos=1, pid=2, retain=True))
    pub.expect(PUBACK)
    assert [p.payload for p in c.publishes(0.3)] == [b""]
    c2 = client(probe.port, "ret2")
    c2.sub("ret/#")
    assert c2.publishes(0.3) == []


def test_non_retained_publish_keeps_the_retained_message(probe):
    """[MQTT-3.3.1-8] RETAIN 0 neither stores nor replaces the retained message;
    retained messages of several topics are all sent to a wildcard subscriber."""
    pub = client(probe.port, "keep")
    pub.send(publish("keep/a", b"A", retain=True))
    pub.send(publish("keep/b", b"B", retain=True))
    pub.send(publish("keep/a", b"live", qos=1, pid=1))
    pub.expect(PUBACK)
    c = client(probe.port, "keepsub")
    c.sub("keep/+")
    assert sorted((p.topic, p.payload, p.retain) for p in c.publishes(0.3)) == [
        ("keep/a", b"A", True), ("keep/b", b"B", True)]


def test_retained_message_expiry(probe):
    """[MQTT-3.3.2-5] an expired retained message is not delivered;
    [MQTT-3.3.2-6] a live one carries the remaining Message Expiry Interval."""
    pub = client(probe.port, "exppub")
    pub.send(publish("exp/short", b"s", retain=True, properties=props(prop(P_MESSAGE_EXPIRY, 1))))
    pub.send(publish("exp/long", b"l", qos=1, pid=1, retain=True, properties=props(prop(P_MESSAGE_EXPIRY, 30))))
    pub.expect(PUBACK)
    time.sleep(1.2)
    c = client(probe.port, "expsub")
    c.sub("exp/#")
    got = c.publishes(0.3)
    assert [p.topic for p in got] == ["exp/long"]
    assert 1 <= got[0].prop(P_MESSAGE_EXPIRY) <= 29 + (1 if SLACK else 0)


def test_v311_and_v5_clients_interoperate(probe):
    """MQTT 3.1.1 section 3.3 / MQTT 5.0 section 3.3: messages cross versions
    both ways at QoS 1; the 3.1.1 subscriber gets a PUBLISH without a property
    block (payload exact), the v5 one a PUBLISH with one; retained messages
    too."""
    s4 = client(probe.port, "ix4", v=4)
    s4.send(h("82 0a 00 01 00 05 69 78 2f 2f 23 01"))  # SUBSCRIBE "ix//#" QoS 1 (3.1.1 form)
    assert s4.expect(9).raw == h("90 03 00 01 01")
    s5 = client(probe.port, "ix5")
    s5.sub([("ix//#", opts(qos=1))])
    p5 = client(probe.port, "ix5pub")
    p5.send(publish("ix//from5", b"\x00five", qos=1, pid=1, properties=props(prop(P_CONTENT_TYPE, "c"))))
    p5.expect(PUBACK)
    # Across nodes the first message rides on NATS while the second may be
    # local to a subscriber, and MQTT orders one publisher's messages only
    # [MQTT-4.6.0-5]: there the subscribers get the first before the second
    # is sent, so the test still checks each message's form in each version.
    early4 = s4.publishes(0.3) if cluster_mode.MODE else []
    early5 = s5.publishes(0.3) if cluster_mode.MODE else []
    p4 = client(probe.port, "ix4pub", v=4)
    p4.send(h("33 0d 00 08 69 78 2f 2f 66 72 6f 6d 00 07 34"))  # QoS 1 retained "ix//from" = "4", id 7
    assert p4.expect(PUBACK).raw == h("40 02 00 07")
    got4 = early4 + s4.publishes(0.3)
    assert [(p.topic, p.payload, p.qos) for p in got4] == [("ix//from5", b"\x00five", 1), ("ix//from", b"4", 1)]
    got5 = early5 + s5.publishes(0.05)
    assert [(p.topic, p.payload, p.qos) for p in got5] == [("ix//from5", b"\x00five", 1), ("ix//from", b"4", 1)]
    assert got5[0].prop(P_CONTENT_TYPE) == "c"
    late5 = client(probe.port, "ix5late")
    late5.sub("ix//from")
    assert [(p.payload, p.retain) for p in late5.publishes(0.3)] == [(b"4", True)]


def test_shared_subscription_gets_no_retained_messages(probe):
    """Section 4.8.2 (and 3.3.1.3): retained messages are not sent to a Session
    when it establishes a new Shared Subscription; a plain subscription to the
    same filter gets them."""
    pub = client(probe.port, "shretpub")
    pub.send(publish("shr/t", b"kept", qos=1, pid=1, retain=True))
    pub.expect(PUBACK)
    c = client(probe.port, "shret")
    c.sub("$share/g/shr/#")
    assert c.publishes(0.3) == []
    c.sub("shr/#", pid=2)
    assert [(p.payload, p.retain) for p in c.publishes(0.3)] == [(b"kept", True)]


def test_retained_message_carries_the_subscription_identifier(probe):
    """[MQTT-3.3.4-3] (section 3.8.2.1.2): a retained message sent because of a
    subscription carries that subscription's Subscription Identifier."""
    pub = client(probe.port, "sidpub")
    pub.send(publish("sid/t", b"r", qos=1, pid=1, retain=True))
    pub.expect(PUBACK)
    c = client(probe.port, "sidsub")
    c.sub([("sid/#", 0)], properties=props(prop(P_SUBSCRIPTION_ID, 268435455)))
    (p,) = c.publishes(0.3)
    assert p.retain and p.props.get(P_SUBSCRIPTION_ID) == [268435455]


def test_topics_are_matched_without_normalisation(probe):
    """[MQTT-4.7.3-4] no normalisation: matching is case sensitive, `a/b/` is
    not `a/b`; [MQTT-1.5.4-3] a U+FEFF (EF BB BF) in a topic is kept, not
    stripped."""
    c = client(probe.port, "norm")
    c.sub([("Case/T", 0), ("a/b", 0), ("\ufeffbom", 0)])
    pub = client(probe.port, "normpub")
    for t in ["case/t", "Case/T", "a/b/", "a/b", "bom", "\ufeffbom"]:
        pub.send(publish(t, t.encode()))
    assert sorted(p.topic for p in c.publishes(0.3)) == sorted(["Case/T", "a/b", "\ufeffbom"])


def test_no_reason_string_when_problem_information_is_refused(probe):
    """[MQTT-3.1.2-29] with Request Problem Information 0 the Server MUST NOT send
    a Reason String or User Properties on packets other than PUBLISH, CONNACK
    and DISCONNECT: a SUBACK with a failure and an UNSUBACK 0x11 carry no
    properties."""
    c = Conn(probe.port)
    c.send(connect("rpi0", properties=props(prop(0x17, 0))))
    c.expect(CONNACK)
    sa = c.sub([("bad/#/x", 0)], pid=3)
    assert sa.codes == [0x8F] and sa.props == {}
    c.send(unsubscribe(4, ["never/subscribed"]))
    ua = c.expect(UNSUBACK)
    assert ua.codes == [0x11] and ua.props == {}


def test_connack_properties_are_well_formed(probe):
    """Section 3.2.2.3: each CONNACK property at most once; Maximum QoS, if
    present, is 0 or 1; Retain/Wildcard/Subscription Identifier/Shared
    Subscription Available are 0 or 1; Receive Maximum and Maximum Packet Size,
    if present, are not 0; what it advertises holds (wildcards, shared
    subscriptions and subscription identifiers work when not marked 0)."""
    c = Conn(probe.port)
    c.send(connect("connackprops"))
    ack = c.expect(CONNACK)
    for pid, vals in ack.props.items():
        if pid != 0x26:
            assert len(vals) == 1, (hex(pid), vals)
    assert ack.prop(0x24, 1) in (0, 1) and ack.prop(0x24) != 2
    for pid in (0x25, 0x28, 0x29, 0x2A):
        assert ack.prop(pid, 1) in (0, 1)
    assert ack.prop(0x21, 1) != 0 and ack.prop(0x27, 1) != 0
    assert ack.prop(0x28, 1) == 1 and ack.prop(0x29, 1) == 1 and ack.prop(0x2A, 1) == 1


def test_qos1_publish_without_subscribers_is_acknowledged(probe):
    """[MQTT-4.3.2-4] [MQTT-3.4.2-1] a QoS 1 PUBLISH nobody subscribes to still
    gets a PUBACK with its Packet Identifier and a success reason (0x00 or
    0x10 No matching subscribers); a 23-character ClientID of the basic set is
    accepted ([MQTT-3.1.3-5])."""
    c = client(probe.port, "0123456789abcdefghijKLM")
    c.send(publish("nobody/here", b"x", qos=1, pid=0xFFFF))
    pa = c.expect(PUBACK)
    assert pa.pid == 0xFFFF and pa.reason in (0x00, 0x10)


def test_invalid_shared_subscription_filters_get_0x8f(probe):
    """[MQTT-4.8.2-1] a ShareName at least one character long; [MQTT-4.8.2-2] no
    `/`, `+` or `#` in it and followed by `/` and a Topic Filter: `$share//x`,
    `$share/g`, `$share/g+/x` fail with 0x8F (issue 3), in order beside a valid
    one."""
    c = client(probe.port, "badshare")
    sa = c.sub([("$share//x", 0), ("$share/g", 0), ("$share/ok/x", 0), ("$share/g+/x", 0)], pid=2)
    assert sa.codes == [0x8F, 0x8F, 0x00, 0x8F]
    assert c.ping() == []


def test_retained_qos_is_stored_and_capped_by_granted_qos(probe):
    """[MQTT-3.3.1-5] the Server stores the retained message and its QoS;
    [MQTT-3.8.4-8] it is delivered at min(stored QoS, granted QoS); a live
    Message Expiry Interval is forwarded with the remaining time
    ([MQTT-3.3.2-6])."""
    pub = client(probe.port, "rqpub")
    pub.send(publish("rq/t", b"one", qos=1, pid=1, retain=True, properties=props(prop(P_MESSAGE_EXPIRY, 100))))
    pub.expect(PUBACK)
    s2 = client(probe.port, "rq2")
    s2.sub([("rq/t", opts(qos=2))])
    (p,) = s2.publishes(0.3)
    assert (p.qos, p.retain, p.payload) == (1, True, b"one") and 98 <= p.prop(P_MESSAGE_EXPIRY) <= 100
    s0 = client(probe.port, "rq0")
    s0.sub([("rq/t", opts(qos=0))])
    (p,) = s0.publishes(0.3)
    assert (p.qos, p.retain, p.payload) == (0, True, b"one")


def test_resubscribe_replaces_options_and_identifier(probe):
    """[MQTT-3.8.4-3] a SUBSCRIBE with an identical filter completely replaces
    the subscription: its QoS and Subscription Identifier (id 5 -> id 6 -> none);
    [MQTT-3.8.4-5] two identical filters in one SUBSCRIBE act as two SUBSCRIBEs
    (the second wins); one copy per message."""
    c = client(probe.port, "resub")
    pub = client(probe.port, "resubpub")

    def deliver():
        pub.send(publish("rs/t", b"m", qos=1, pid=1))
        pub.expect(PUBACK)
        got = c.publishes(0.3)
        for p in got:
            if p.qos:
                c.send(h("40 02") + p.pid.to_bytes(2, "big"))
        return [(p.qos, p.props.get(P_SUBSCRIPTION_ID)) for p in got]

    c.sub([("rs/t", opts(qos=1))], pid=1, properties=props(prop(P_SUBSCRIPTION_ID, 5)))
    assert deliver() == [(1, [5])]
    c.sub([("rs/t", opts(qos=0))], pid=2, properties=props(prop(P_SUBSCRIPTION_ID, 6)))
    assert deliver() == [(0, [6])]
    c.sub([("rs/t", opts(qos=1))], pid=3)
    assert deliver() == [(1, None)]
    assert c.sub([("rs/t", opts(qos=0)), ("rs/t", opts(qos=1))], pid=4).codes == [0, 1]
    assert deliver() == [(1, None)]


def test_retained_message_published_through_a_topic_alias(probe):
    """[MQTT-3.3.1-5] with section 3.3.2.3.4: a retained PUBLISH sent with an
    empty Topic Name and an established Topic Alias is stored under the
    topic the alias stands for."""
    pub = Conn(probe.port)
    pub.send(connect("retalias"))
    pub.expect(CONNACK)
    pub.send(publish("ra/t", b"first", properties=props(prop(P_TOPIC_ALIAS, 1))))
    pub.send(publish("", b"via-alias", qos=1, pid=1, retain=True, properties=props(prop(P_TOPIC_ALIAS, 1))))
    pub.expect(PUBACK)
    c = client(probe.port, "retaliassub")
    c.sub("ra/#")
    assert [(p.topic, p.payload, p.retain) for p in c.publishes(0.3)] == [("ra/t", b"via-alias", True)]
