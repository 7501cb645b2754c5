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


def client(port, client_id, filters=None, version=5, properties=None):
    """A connected client, subscribed to `filters` when given."""
    c = Client(port, version=version)
    c.connect(client_id)
    if filters:
        c.subscribe(filters, properties=properties)
    return c


def test_new_subscriber_after_repeated_publishes_gets_the_next_ones(broker):
    pub = client(broker.port, "rc-pub")
    first = client(broker.port, "rc-first", [("rc/t", 0)])
    for i in range(3):
        pub.publish("rc/t", b"a%d" % i)
    assert payloads(first) == [b"a0", b"a1", b"a2"]
    late = client(broker.port, "rc-late", [("rc/+", 0)])
    pub.publish("rc/t", b"b")
    assert payloads(late) == [b"b"]
    assert payloads(first) == [b"b"]


def test_unsubscribe_and_session_end_stop_delivery_from_a_cached_route(broker):
    pub = client(broker.port, "rc-pub2")
    a = client(broker.port, "rc-a", [("rc/u", 0)])
    b = client(broker.port, "rc-b", [("rc/#", 0)])
    pub.publish("rc/u", b"1")
    assert payloads(a) == [b"1"] and payloads(b) == [b"1"]
    a.unsubscribe(["rc/u"])
    pub.publish("rc/u", b"2")
    assert payloads(a) == []
    assert payloads(b) == [b"2"]
    b.disconnect()  # clean start, no expiry: the session and its subscription end
    pub.publish("rc/u", b"3")
    pub.ping()  # the broker is alive and handled the publish
    c = client(broker.port, "rc-c", [("rc/u", 0)])
    pub.publish("rc/u", b"4")
    assert payloads(c) == [b"4"]


def test_changed_subscription_options_apply_to_a_cached_route(broker):
    pub = client(broker.port, "rc-pub3")
    sub = client(broker.port, "rc-opts")
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
    me = client(broker.port, "rc-self", [("rc/n", sub_options(0, no_local=True))])
    other = client(broker.port, "rc-other", [("rc/n", 0)])
    for i in range(3):
        me.publish("rc/n", b"%d" % i)
    assert payloads(other) == [b"0", b"1", b"2"]
    assert payloads(me) == []

    g1 = client(broker.port, "rc-g1", [("$share/g/rc/s", 0)])
    g2 = client(broker.port, "rc-g2", [("$share/g/rc/s", 0)])
    for i in range(6):
        me.publish("rc/s", b"%d" % i)
    got1, got2 = payloads(g1), payloads(g2)
    assert len(got1) == 3 and len(got2) == 3
    assert sorted(got1 + got2) == [b"%d" % i for i in range(6)]


def test_qos0_publish_is_forwarded_byte_for_byte_when_nothing_changes(broker):
    props = [(USER_PROPERTY, ("k", "v")), (CONTENT_TYPE, "text/plain"), (MESSAGE_EXPIRY_INTERVAL, 3600),
             (USER_PROPERTY, ("k", "w"))]
    sent = publish_packet("rc/raw", b"\x00\x01payload", qos=0, version=5, properties=props)
    sub = client(broker.port, "rc-raw-sub", [("rc/raw", 0)])
    pub = client(broker.port, "rc-raw-pub")
    pub.send(sent)
    (m,) = sub.messages()
    assert packet(PUBLISH, m.flags, m.body) == sent
    assert m.prop_all(USER_PROPERTY) == [("k", "v"), ("k", "w")]


def test_forwarding_rewrites_what_a_subscriber_needs_changed(broker):
    """Retain cleared without Retain As Published; 3.1.1 framing for a 3.1.1
    subscriber; a Subscription Identifier added. None of these may get the
    publisher's bytes."""
    rap = client(broker.port, "rc-rap", [("rc/w", sub_options(0, retain_as_published=True))])
    plain = client(broker.port, "rc-plain", [("rc/w", 0)])
    old = client(broker.port, "rc-311", [("rc/w", 0)], version=4)
    ids = client(broker.port, "rc-ids", [("rc/w", 0)], properties={SUBSCRIPTION_IDENTIFIER: 42})
    pub = client(broker.port, "rc-wpub")
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
