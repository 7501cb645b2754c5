"""The per-publisher route cache and byte-identical forwarding.

A connection that publishes to the same topic again reuses the last match
result while the subscriptions are unchanged; a QoS 0 PUBLISH that a
subscriber may receive unchanged is copied, not re-encoded. Every test here
publishes the *same topic from the same connection* across a change that must
invalidate the cache, or compares the forwarded bytes with what was sent."""
import pytest

from conftest import MQTTOOLSD
from mqttwire import (Client, PUBLISH, SUBSCRIPTION_IDENTIFIER, USER_PROPERTY, CONTENT_TYPE,
                      MESSAGE_EXPIRY_INTERVAL, packet, publish_packet, sub_options)

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def payloads(client):
    return [m.payload for m in client.messages()]


def test_new_subscriber_after_repeated_publishes_gets_the_next_ones(broker):
    pub = Client(broker.port)
    pub.connect("rc-pub")
    first = Client(broker.port)
    first.connect("rc-first")
    first.subscribe([("rc/t", 0)])
    for i in range(3):
        pub.publish("rc/t", b"a%d" % i)
    assert payloads(first) == [b"a0", b"a1", b"a2"]
    late = Client(broker.port)
    late.connect("rc-late")
    late.subscribe([("rc/+", 0)])
    pub.publish("rc/t", b"b")
    assert payloads(late) == [b"b"]
    assert payloads(first) == [b"b"]


def test_unsubscribe_and_session_end_stop_delivery_from_a_cached_route(broker):
    pub = Client(broker.port)
    pub.connect("rc-pub2")
    a = Client(broker.port)
    a.connect("rc-a")
    a.subscribe([("rc/u", 0)])
    b = Client(broker.port)
    b.connect("rc-b")
    b.subscribe([("rc/#", 0)])
    pub.publish("rc/u", b"1")
    assert payloads(a) == [b"1"] and payloads(b) == [b"1"]
    a.unsubscribe(["rc/u"])
    pub.publish("rc/u", b"2")
    assert payloads(a) == []
    assert payloads(b) == [b"2"]
    b.disconnect()  # clean start, no expiry: the session and its subscription end
    pub.publish("rc/u", b"3")
    pub.ping()  # the broker is alive and handled the publish
    c = Client(broker.port)
    c.connect("rc-c")
    c.subscribe([("rc/u", 0)])
    pub.publish("rc/u", b"4")
    assert payloads(c) == [b"4"]


def test_changed_subscription_options_apply_to_a_cached_route(broker):
    pub = Client(broker.port)
    pub.connect("rc-pub3")
    sub = Client(broker.port)
    sub.connect("rc-opts")
    sub.subscribe([("rc/o", 0)], packet_id=1)
    pub.publish("rc/o", b"x", qos=1)
    (m,) = sub.messages()
    assert m.qos == 0 and m.prop_all(SUBSCRIPTION_IDENTIFIER) == []
    # Same filter again: QoS 1 and a Subscription Identifier replace the options.
    sub.subscribe([("rc/o", 1)], packet_id=2, properties={SUBSCRIPTION_IDENTIFIER: 7})
    pub.publish("rc/o", b"y", qos=1, packet_id=2)
    (m,) = sub.messages()
    assert m.qos == 1 and m.prop_all(SUBSCRIPTION_IDENTIFIER) == [7]


def test_no_local_with_a_cached_route_and_shared_groups_still_rotate(broker):
    me = Client(broker.port)
    me.connect("rc-self")
    me.subscribe([("rc/n", sub_options(0, no_local=True))])
    other = Client(broker.port)
    other.connect("rc-other")
    other.subscribe([("rc/n", 0)])
    for i in range(3):
        me.publish("rc/n", b"%d" % i)
    assert payloads(other) == [b"0", b"1", b"2"]
    assert payloads(me) == []

    g1 = Client(broker.port)
    g1.connect("rc-g1")
    g1.subscribe([("$share/g/rc/s", 0)])
    g2 = Client(broker.port)
    g2.connect("rc-g2")
    g2.subscribe([("$share/g/rc/s", 0)])
    for i in range(6):
        me.publish("rc/s", b"%d" % i)
    got1, got2 = payloads(g1), payloads(g2)
    assert len(got1) == 3 and len(got2) == 3
    assert sorted(got1 + got2) == [b"%d" % i for i in range(6)]


def test_qos0_publish_is_forwarded_byte_for_byte_when_nothing_changes(broker):
    props = [(USER_PROPERTY, ("k", "v")), (CONTENT_TYPE, "text/plain"), (MESSAGE_EXPIRY_INTERVAL, 3600),
             (USER_PROPERTY, ("k", "w"))]
    sent = publish_packet("rc/raw", b"\x00\x01payload", qos=0, version=5, properties=props)
    sub = Client(broker.port)
    sub.connect("rc-raw-sub")
    sub.subscribe([("rc/raw", 0)])
    pub = Client(broker.port)
    pub.connect("rc-raw-pub")
    pub.send(sent)
    (m,) = sub.messages()
    assert packet(PUBLISH, m.flags, m.body) == sent
    assert m.prop_all(USER_PROPERTY) == [("k", "v"), ("k", "w")]


def test_forwarding_rewrites_what_a_subscriber_needs_changed(broker):
    """Retain cleared without Retain As Published; 3.1.1 framing for a 3.1.1
    subscriber; a Subscription Identifier added. None of these may get the
    publisher's bytes."""
    rap = Client(broker.port)
    rap.connect("rc-rap")
    rap.subscribe([("rc/w", sub_options(0, retain_as_published=True))])
    plain = Client(broker.port)
    plain.connect("rc-plain")
    plain.subscribe([("rc/w", 0)])
    old = Client(broker.port, version=4)
    old.connect("rc-311")
    old.subscribe([("rc/w", 0)])
    ids = Client(broker.port)
    ids.connect("rc-ids")
    ids.subscribe([("rc/w", 0)], properties={SUBSCRIPTION_IDENTIFIER: 42})
    pub = Client(broker.port)
    pub.connect("rc-wpub")
    pub.send(publish_packet("rc/w", b"r", qos=0, retain=True, version=5, properties=[(USER_PROPERTY, ("a", "b"))]))
    (m,) = rap.messages()
    assert m.retain and m.prop_all(USER_PROPERTY) == [("a", "b")]
    (m,) = plain.messages()
    assert not m.retain and m.prop_all(USER_PROPERTY) == [("a", "b")]
    (m,) = old.messages()
    assert not m.retain and m.payload == b"r" and m.body == b"\x00\x04rc/wr"
    (m,) = ids.messages()
    assert m.prop_all(SUBSCRIPTION_IDENTIFIER) == [42] and m.prop_all(USER_PROPERTY) == [("a", "b")]
    pub.publish("rc/w", b"", retain=True)  # clear the retained message
