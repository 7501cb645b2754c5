"""Routing in mqttoolsd: wildcards, $ topics, overlapping subscriptions,
subscription identifiers, shared subscriptions, No Local, Retain As
Published, Retain Handling, retained messages, property forwarding and
topic aliases in both directions."""
import time

import pytest

from conftest import MQTTOOLSD
from mqttwire import (Client, DISCONNECT, PUBLISH, CONTENT_TYPE, CORRELATION_DATA, MESSAGE_EXPIRY_INTERVAL,
                      PAYLOAD_FORMAT_INDICATOR, RESPONSE_TOPIC, SUBSCRIPTION_IDENTIFIER, TOPIC_ALIAS,
                      TOPIC_ALIAS_MAXIMUM, USER_PROPERTY, publish_packet, sub_options)

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def pair(port, version=5):
    sub = Client(port, version=version)
    sub.connect("sub")
    pub = Client(port)
    pub.connect("pub")
    return sub, pub


def test_wildcards_and_dollar_topics(broker):
    sub, pub = pair(broker.port)
    sub.subscribe([("#", 0), ("+/x", 0)], packet_id=1)
    dollar = Client(broker.port)
    dollar.connect("dollar")
    dollar.subscribe(["$foo/#"])
    pub.publish("$foo/x", b"d")
    pub.publish("a/x", b"a")
    assert [(m.topic, m.payload) for m in sub.messages()] == [("a/x", b"a")]
    assert [(m.topic, m.payload) for m in dollar.messages()] == [("$foo/x", b"d")]


def test_overlapping_subscriptions_delivered_once_with_max_qos_and_all_ids(broker):
    sub, pub = pair(broker.port)
    sub.subscribe([("o/#", 0)], packet_id=1, properties={SUBSCRIPTION_IDENTIFIER: 1})
    sub.subscribe([("o/+", 1)], packet_id=2, properties={SUBSCRIPTION_IDENTIFIER: 2})
    sub.subscribe([("o/x", 0)], packet_id=3)
    pub.publish("o/x", b"m", qos=2)
    got = sub.messages()
    assert len(got) == 1
    m = got[0]
    assert m.qos == 1
    assert sorted(m.prop_all(SUBSCRIPTION_IDENTIFIER)) == [1, 2]


def test_invalid_filters_and_unknown_unsubscribe(broker):
    c = Client(broker.port)
    c.connect("filters")
    ack = c.subscribe([("a/#/b", 0), ("a+", 0), ("ok/+", 1), ("$share/g/#", 0), ("$share//x", 0)])
    assert ack.codes == [0x8F, 0x8F, 1, 0, 0x8F]
    un = c.unsubscribe(["ok/+", "never", "$share/g/#"])
    assert un.codes == [0, 0x11, 0]
    c.disconnect()


def test_shared_subscription_delivers_each_message_to_one_member(broker):
    members = []
    for i in range(3):
        m = Client(broker.port)
        m.connect(f"member{i}")
        m.subscribe(["$share/grp/job/#"])
        members.append(m)
    plain = Client(broker.port)
    plain.connect("plain")
    plain.subscribe(["job/#"])
    pub = Client(broker.port)
    pub.connect("pub")
    for i in range(30):
        pub.publish(f"job/{i}", str(i).encode())
    counts = []
    seen = []
    for m in members:
        got = m.messages()
        counts.append(len(got))
        seen += [x.payload for x in got]
    assert sorted(seen, key=int) == [str(i).encode() for i in range(30)]
    assert all(c > 0 for c in counts), counts
    assert len(plain.messages()) == 30


def test_no_local(broker):
    c = Client(broker.port)
    c.connect("echo")
    c.subscribe([("nl/a", sub_options(no_local=True)), ("nl/b", 0)])
    c.publish("nl/a", b"mine")
    c.publish("nl/b", b"back")
    assert [m.payload for m in c.messages()] == [b"back"]
    other = Client(broker.port)
    other.connect("other")
    other.publish("nl/a", b"theirs")
    assert [m.payload for m in c.messages()] == [b"theirs"]


def test_no_local_on_shared_subscription_is_a_protocol_error(broker):
    c = Client(broker.port)
    c.connect("shared-nl")
    c.send(b"\x82" + bytes([2 + 1 + 2 + 12 + 1]) + b"\x00\x01\x00" + b"\x00\x0c$share/g/a/b" + b"\x04")
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x82)]


def test_retain_as_published_and_retain_handling(broker):
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("r/x", b"kept", retain=True, qos=1)
    c = Client(broker.port)
    c.connect("rap")
    # Retain Handling 0: retained on every subscribe, with RETAIN set.
    c.subscribe([("r/#", sub_options(retain_handling=0))])
    got = c.messages()
    assert [(m.payload, m.retain) for m in got] == [(b"kept", True)]
    c.subscribe([("r/#", sub_options(retain_handling=0))], packet_id=2)
    assert [(m.payload, m.retain) for m in c.messages()] == [(b"kept", True)]
    # Retain Handling 1: only for a new subscription.
    c.subscribe([("r/+", sub_options(retain_handling=1))], packet_id=3)
    assert [(m.payload, m.retain) for m in c.messages()] == [(b"kept", True)]
    c.subscribe([("r/+", sub_options(retain_handling=1))], packet_id=4)
    assert c.messages() == []
    # Retain Handling 2: never.
    c.subscribe([("r/x", sub_options(retain_handling=2))], packet_id=5)
    assert c.messages() == []
    c.unsubscribe(["r/+", "r/x", "r/#"])
    # Live messages: RETAIN cleared unless Retain As Published.
    c.subscribe([("live/a", sub_options(retain_handling=2)),
                 ("live/b", sub_options(retain_as_published=True, retain_handling=2))], packet_id=6)
    pub.publish("live/a", b"1", retain=True)
    pub.publish("live/b", b"2", retain=True)
    assert [(m.payload, m.retain) for m in c.messages()] == [(b"1", False), (b"2", True)]


def test_retained_store_replace_delete_and_311(broker):
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("k/a", b"old", retain=True)
    pub.publish("k/a", b"new", retain=True)
    pub.publish("k/b", b"gone", retain=True)
    pub.publish("k/b", b"", retain=True)  # empty payload deletes
    pub.ping()
    c = Client(broker.port, version=4)
    c.connect("old-client")
    c.subscribe([("k/#", 1)])
    got = c.messages()
    assert [(m.topic, m.payload, m.retain) for m in got] == [("k/a", b"new", True)]


def test_retained_message_expiry(broker):
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("e/short", b"s", retain=True, properties={MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("e/long", b"l", retain=True, properties={MESSAGE_EXPIRY_INTERVAL: 100})
    pub.ping()
    time.sleep(1.2)
    c = Client(broker.port)
    c.connect("late")
    c.subscribe(["e/#"])
    got = c.messages()
    assert [m.topic for m in got] == ["e/long"]
    assert 98 <= got[0].prop(MESSAGE_EXPIRY_INTERVAL) <= 99


def test_properties_forwarded_unchanged_in_order(broker):
    sub, pub = pair(broker.port)
    sub.subscribe(["p/#"])
    props = [(USER_PROPERTY, ("b", "2")), (CONTENT_TYPE, "text/plain"), (USER_PROPERTY, ("a", "1")),
             (RESPONSE_TOPIC, "reply/here"), (CORRELATION_DATA, b"\x00\x01corr"), (PAYLOAD_FORMAT_INDICATOR, 1),
             (USER_PROPERTY, ("b", "3"))]
    pub.publish("p/x", b"payload", properties=props)
    m = sub.messages()[0]
    assert [p for p in m.props if p[0] != MESSAGE_EXPIRY_INTERVAL] == props
    # QoS 1 path (stored copy) forwards them the same way.
    sub.subscribe([("q/#", 1)], packet_id=2)
    pub.publish("q/x", b"payload", qos=1, properties=props)
    m = sub.messages()[0]
    assert m.qos == 1 and m.props == props


def test_topic_alias_client_to_broker(broker):
    sub, pub = pair(broker.port)
    sub.subscribe(["al/#"])
    pub.publish("al/long/topic/name", b"1", properties={TOPIC_ALIAS: 3})
    pub.publish("", b"2", properties={TOPIC_ALIAS: 3})
    pub.publish("al/other", b"3", properties={TOPIC_ALIAS: 3})  # re-mapped
    pub.publish("", b"4", properties={TOPIC_ALIAS: 3})
    got = sub.messages()
    assert [(m.topic, m.payload) for m in got] == [("al/long/topic/name", b"1"), ("al/long/topic/name", b"2"),
                                                    ("al/other", b"3"), ("al/other", b"4")]
    # The alias is never forwarded as received.
    assert all(m.prop(TOPIC_ALIAS) is None for m in got)


@pytest.mark.parametrize("alias,reason", [(0, 0x94), (11, 0x94)])
def test_topic_alias_out_of_range(broker, alias, reason):
    c = Client(broker.port)
    c.connect("bad-alias")
    c.send(publish_packet("t", b"x", properties={TOPIC_ALIAS: alias}))
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, reason)]


def test_unknown_topic_alias_is_a_protocol_error(broker):
    c = Client(broker.port)
    c.connect("unknown-alias")
    c.send(publish_packet("", b"x", properties={TOPIC_ALIAS: 2}))
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x82)]


def test_topic_alias_broker_to_client(broker):
    sub = Client(broker.port)
    sub.connect("alias-sub", properties={TOPIC_ALIAS_MAXIMUM: 2})
    sub.subscribe([("ta/#", 1)])
    pub = Client(broker.port)
    pub.connect("pub")
    for topic in ("ta/one", "ta/one", "ta/two", "ta/three", "ta/two"):
        pub.publish(topic, topic.encode())
    pub.publish("ta/one", b"q1", qos=1)
    got = sub.messages()
    wire = [(m.topic, m.prop(TOPIC_ALIAS), m.payload) for m in got]
    # Both aliases in use: ta/three takes the least recently used one (ta/one's)
    # and names its topic; then ta/one takes ta/three's, the least recent again.
    assert wire == [("ta/one", 1, b"ta/one"), ("", 1, b"ta/one"), ("ta/two", 2, b"ta/two"),
                    ("ta/three", 1, b"ta/three"), ("", 2, b"ta/two"), ("ta/one", 1, b"q1")]
    # Without a Topic Alias Maximum the client never gets aliases.
    plain = Client(broker.port)
    plain.connect("no-alias")
    plain.subscribe(["ta/#"])
    pub.publish("ta/one", b"x")
    pub.publish("ta/one", b"y")
    assert [(m.topic, m.prop(TOPIC_ALIAS)) for m in plain.messages()] == [("ta/one", None)] * 2


def test_message_expiry_is_forwarded_as_remaining(broker):
    sub, pub = pair(broker.port)
    sub.subscribe(["me/#"])
    pub.publish("me/x", b"x", properties={MESSAGE_EXPIRY_INTERVAL: 30})
    pub.publish("me/y", b"y")
    got = sub.messages()
    assert [m.prop(MESSAGE_EXPIRY_INTERVAL) for m in got] == [30, None]
