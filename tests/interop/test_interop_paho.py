"""Debian's python3-paho-mqtt 1.6.1 as an MQTT 5 client of the broker:
PUBLISH properties forwarded unchanged, request/response, message expiry,
session resume with queued messages, shared subscriptions, subscription
options, overlapping subscriptions and wills with properties."""
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes

from .conftest import WAIT
from .paho_client import (Paho, disconnect_with_will, props, publish_props, sub_opts)

ALL_BYTES = bytes(range(256))


@pytest.fixture
def clients(broker):
    """Factory: clients(client_id="", version=MQTTv5) -> Paho on the broker."""
    made = []

    def make(client_id="", **kw):
        p = Paho(broker, client_id=client_id, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
        sock = p.c.socket()
        if sock is not None:
            sock.close()


def connected(clients, client_id="", **kw):
    c = clients(client_id)
    present, rc, _ = c.connect(**kw)
    assert (present, rc) == (0, 0)
    return c


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_properties_forwarded(clients, qos):
    sub = connected(clients, "props-sub")
    assert sub.subscribe([("p/t", sub_opts(qos=2))]) == [2]
    pub = connected(clients, "props-pub")
    user = [("k", "v"), ("k", "v2"), ("empty", ""), ("\u00e9", "\u4e2d\u6587")]
    pub.publish("p/t", ALL_BYTES, qos=qos, properties=publish_props(
        PayloadFormatIndicator=0, MessageExpiryInterval=3600,
        ContentType="application/octet-stream; x=\u00e9", ResponseTopic="p/reply/\u00e9",
        CorrelationData=b"\x00corr\xff\n", UserProperty=user))
    pub.publish("p/t", "\u00e9t\u00e9 text".encode(), qos=qos,
                properties=publish_props(PayloadFormatIndicator=1))
    pub.publish("p/t", b"", qos=qos)
    t_end = time.monotonic()
    m1, m2, m3 = sub.recv(3)
    assert m1.key() == ("p/t", ALL_BYTES, qos, 0)
    expiry = m1.props.pop("MessageExpiryInterval")
    # The remaining lifetime [MQTT-3.3.2-6]: at most what was sent.
    assert 3600 - (time.monotonic() - t_end) - 2 <= expiry <= 3600
    # Forwarded unchanged, user properties in order with duplicates
    # [MQTT-3.3.2-17/18], [MQTT-3.3.2-4], [MQTT-3.3.2-15], [MQTT-3.3.2-20].
    assert m1.props == {"PayloadFormatIndicator": 0,
                        "ContentType": "application/octet-stream; x=\u00e9",
                        "ResponseTopic": "p/reply/\u00e9", "CorrelationData": b"\x00corr\xff\n",
                        "UserProperty": user}
    assert m2.key() == ("p/t", "\u00e9t\u00e9 text".encode(), qos, 0)
    assert m2.props == {"PayloadFormatIndicator": 1}
    assert m3.key() == ("p/t", b"", qos, 0)
    assert m3.props == {}


def test_properties_dropped_for_311_subscriber(clients):
    sub = clients("v311-sub", version=mqtt.MQTTv311)
    assert sub.connect() == (0, 0, None)
    assert sub.subscribe([("p311/t", 1)]) == [1]
    pub = connected(clients, "v5-pub")
    pub.publish("p311/t", b"\x00\x01", qos=1, properties=publish_props(
        ContentType="a/b", UserProperty=[("k", "v")], CorrelationData=b"c"))
    [m] = sub.recv(1)
    assert m.key() == ("p311/t", b"\x00\x01", 1, 0)
    assert m.props == {}


def test_request_response(clients):
    responder = connected(clients, "responder")
    assert responder.subscribe([("svc/req", 1)]) == [1]
    requester = connected(clients, "requester")
    assert requester.subscribe([("svc/resp/requester", 1)]) == [1]
    for i in range(3):
        corr = bytes([i, 0, 255]) + b"id"
        requester.publish("svc/req", f"question {i}".encode(), qos=1, properties=publish_props(
            ResponseTopic="svc/resp/requester", CorrelationData=corr))
        [req] = responder.recv(1)
        assert req.payload == f"question {i}".encode()
        assert req.props["ResponseTopic"] == "svc/resp/requester"
        assert req.props["CorrelationData"] == corr
        responder.publish(req.props["ResponseTopic"], req.payload.upper(), qos=1,
                          properties=publish_props(CorrelationData=req.props["CorrelationData"]))
        [resp] = requester.recv(1)
        assert resp.key() == ("svc/resp/requester", f"QUESTION {i}".encode(), 1, 0)
        assert resp.props == {"CorrelationData": corr}


def session_props(seconds, **more):
    return props(PacketTypes.CONNECT, SessionExpiryInterval=seconds, **more)


def test_message_expiry(clients):
    """Retained and queued messages both expire; one sleep serves both."""
    offline = clients("exp-offline")
    assert offline.connect(properties=session_props(60))[:2] == (0, 0)
    offline.subscribe([("expq/t", 1)])
    offline.disconnect()
    pub = connected(clients, "exp-pub")
    pub.publish("exp/short", b"short-lived", qos=1, retain=True,
                properties=publish_props(MessageExpiryInterval=1))
    pub.publish("exp/long", b"long-lived", qos=1, retain=True,
                properties=publish_props(MessageExpiryInterval=600))
    pub.publish("expq/t", b"q-short", qos=1, properties=publish_props(MessageExpiryInterval=1))
    pub.publish("expq/t", b"q-long", qos=1, properties=publish_props(MessageExpiryInterval=600))
    pub.publish("expq/t", b"q-forever", qos=1)
    t_pub = time.monotonic()
    sub = connected(clients, "exp-sub1")
    sub.subscribe([("exp/+", 1)])
    got = sorted(sub.recv(2), key=lambda m: m.topic)
    assert [m.key() for m in got] == [("exp/long", b"long-lived", 1, 1),
                                      ("exp/short", b"short-lived", 1, 1)]
    assert 598 <= got[0].props["MessageExpiryInterval"] <= 600
    assert 0 <= got[1].props["MessageExpiryInterval"] <= 1
    sub.disconnect()
    # After its interval a message is no longer sent [MQTT-3.3.2-5].
    time.sleep(max(0.0, 2.1 - (time.monotonic() - t_pub)))
    sub2 = connected(clients, "exp-sub2")
    sub2.subscribe([("exp/+", 1)])
    pub.publish("exp/sync", b"sync", qos=1)
    got = sub2.recv(2)
    assert [m.key() for m in got] == [("exp/long", b"long-lived", 1, 1),
                                      ("exp/sync", b"sync", 1, 0)]
    assert 590 <= got[0].props["MessageExpiryInterval"] <= 598
    back = clients("exp-offline")
    assert back.connect(clean_start=False, properties=session_props(60))[:2] == (1, 0)
    got = back.recv(2)
    assert [m.key() for m in got] == [("expq/t", b"q-long", 1, 0), ("expq/t", b"q-forever", 1, 0)]
    # The queued one carries what is left of its lifetime [MQTT-3.3.2-6].
    assert 590 <= got[0].props.pop("MessageExpiryInterval") <= 598
    assert got[0].props == {} and got[1].props == {}
    pub.publish("expq/t", b"sync", qos=1)
    assert [m.key() for m in back.recv(1)] == [("expq/t", b"sync", 1, 0)]


def test_session_resume_delivers_queued_messages(clients):
    c = clients("resumer")
    assert c.connect(clean_start=True, properties=session_props(60))[:2] == (0, 0)
    assert c.subscribe([("sr/q1", sub_opts(qos=1)), ("sr/q2", sub_opts(qos=2))]) == [1, 2]
    c.disconnect()

    pub = connected(clients, "sr-pub")
    for i in range(3):
        pub.publish("sr/q1", f"q1-{i}".encode(), qos=1,
                    properties=publish_props(UserProperty=[("i", str(i))]))
    pub.publish("sr/q2", b"\x00q2\xff", qos=2, properties=publish_props(ContentType="bin"))
    pub.publish("sr/other", b"not subscribed", qos=1)

    c2 = clients("resumer")
    present, rc, _ = c2.connect(clean_start=False, properties=session_props(60))
    # [MQTT-3.2.2-2]: Session Present 1 when the session was resumed.
    assert (present, rc) == (1, 0)
    got = c2.recv(4)
    q1 = [m for m in got if m.topic == "sr/q1"]
    q2 = [m for m in got if m.topic == "sr/q2"]
    # Queued in the order they were published [MQTT-4.6.0-6], properties kept.
    assert [(m.key(), m.props) for m in q1] == [
        (("sr/q1", f"q1-{i}".encode(), 1, 0), {"UserProperty": [("i", str(i))]}) for i in range(3)]
    assert [(m.key(), m.props) for m in q2] == [(("sr/q2", b"\x00q2\xff", 2, 0),
                                                 {"ContentType": "bin"})]
    # The subscriptions were restored without a new SUBSCRIBE.
    pub.publish("sr/q1", b"live", qos=1)
    [m] = c2.recv(1)
    assert m.key() == ("sr/q1", b"live", 1, 0)
    assert c2.pending() == []
    c2.disconnect()

    # Clean Start discards the session [MQTT-3.1.2-4]: no Session Present,
    # no subscription left.
    c3 = clients("resumer")
    assert c3.connect(clean_start=True, properties=session_props(60))[:2] == (0, 0)
    c3.subscribe([("sr/sync", 1)])
    pub.publish("sr/q1", b"after clean start", qos=1)
    pub.publish("sr/sync", b"sync", qos=1)
    assert [m.key() for m in c3.recv(1)] == [("sr/sync", b"sync", 1, 0)]
    assert c3.pending() == []
    c3.disconnect()


def test_session_expiry_zero_is_not_kept(clients):
    c = clients("ephemeral")
    assert c.connect(clean_start=True)[:2] == (0, 0)  # no Session Expiry: 0
    c.subscribe([("se/t", 1)])
    c.disconnect()
    c2 = clients("ephemeral")
    assert c2.connect(clean_start=False, properties=session_props(60))[:2] == (0, 0)
    c2.subscribe([("se/sync", 1)])
    pub = connected(clients, "se-pub")
    pub.publish("se/t", b"nobody", qos=1)
    pub.publish("se/sync", b"sync", qos=1)
    assert [m.key() for m in c2.recv(1)] == [("se/sync", b"sync", 1, 0)]


def test_session_resume_after_connection_loss(clients):
    c = clients("lossy")
    assert c.connect(clean_start=True, properties=session_props(30))[:2] == (0, 0)
    c.subscribe([("sl/t", 1)])
    c.drop()
    pub = connected(clients, "sl-pub")
    # The broker may notice the closed socket a little later; until then it
    # queues anyway since the subscriber is unreachable.
    for i in range(5):
        pub.publish("sl/t", f"m{i}".encode(), qos=1)
    c2 = clients("lossy")
    assert c2.connect(clean_start=False, properties=session_props(30))[:2] == (1, 0)
    assert [m.key()[:3] for m in c2.recv(5)] == [("sl/t", f"m{i}".encode(), 1) for i in range(5)]


def test_session_taken_over_by_same_client_id(clients):
    first = clients("taken")
    assert first.connect(clean_start=True, properties=session_props(60))[:2] == (0, 0)
    first.subscribe([("to/t", 1)])
    second = clients("taken")
    # [MQTT-3.1.4-3]: the existing connection is closed; the session goes on.
    assert second.connect(clean_start=False, properties=session_props(60))[:2] == (1, 0)
    # (paho 1.6.1 drops the reason code of a 2-byte DISCONNECT, so whether
    # it was 0x8E Session taken over is not visible here.)
    first._wait(lambda: first.disconnects, "disconnect of the first client")
    first.stop()
    pub = connected(clients, "to-pub")
    pub.publish("to/t", b"to the new one", qos=1)
    assert [m.key() for m in second.recv(1)] == [("to/t", b"to the new one", 1, 0)]


def test_shared_subscription_each_message_to_one_member(clients):
    members = [connected(clients, f"member{i}") for i in range(3)]
    for m in members:
        assert m.subscribe([("$share/g/sh/+", sub_opts(qos=1))]) == [1]
    other_group = connected(clients, "other-group")
    assert other_group.subscribe([("$share/h/sh/t", sub_opts(qos=1))]) == [1]
    plain = connected(clients, "plain")
    assert plain.subscribe([("sh/t", sub_opts(qos=1))]) == [1]
    pub = connected(clients, "sh-pub")
    n = 30
    sent = [b"shared-%02d\x00\xff" % i for i in range(n)]
    for p in sent:
        pub.publish("sh/t", p, qos=1)
    # A plain subscription and a second group each get every message once.
    assert [m.key() for m in plain.recv(n)] == [("sh/t", p, 1, 0) for p in sent]
    assert [m.key() for m in other_group.recv(n)] == [("sh/t", p, 1, 0) for p in sent]
    # Group g: each message to exactly one member [MQTT-4.8.2-?]. Collect
    # until n have arrived in all, then check nothing more comes.
    got = []
    deadline = time.monotonic() + WAIT
    while len(got) < n and time.monotonic() < deadline:
        for m in members:
            got += [(msg.key(), m) for msg in m.pending()]
        time.sleep(0.01)
    pub.publish("sh/t", b"sync", qos=1)
    plain.recv(1)
    other_group.recv(1)
    deadline = time.monotonic() + WAIT
    synced = []
    while not synced and time.monotonic() < deadline:
        for m in members:
            for msg in m.pending():
                (synced if msg.payload == b"sync" else got).append((msg.key(), m))
        time.sleep(0.01)
    assert synced, "no member got the sync message"
    keys = [k for k, _ in got]
    assert sorted(keys) == [("sh/t", p, 1, 0) for p in sent]
    # Each member's share keeps the publication order.
    for m in members:
        mine = [k[1] for k, who in got if who is m]
        assert mine == sorted(mine)


def test_shared_subscription_member_leaves(clients):
    a = connected(clients, "share-a")
    b = connected(clients, "share-b")
    for c in (a, b):
        assert c.subscribe([("$share/grp/sl/t", sub_opts(qos=1))]) == [1]
    a.unsubscribe("$share/grp/sl/t")
    pub = connected(clients, "share-pub")
    for i in range(6):
        pub.publish("sl/t", b"%d" % i, qos=1)
    # With one member left, it gets them all, in order.
    assert [m.key() for m in b.recv(6)] == [("sl/t", b"%d" % i, 1, 0) for i in range(6)]
    assert a.pending() == []


def test_no_local(clients):
    c = connected(clients, "nolocal")
    assert c.subscribe([("nl/t", sub_opts(qos=1, no_local=True)),
                        ("nl/all", sub_opts(qos=1))]) == [1, 1]
    other = connected(clients, "nl-other")
    c.publish("nl/t", b"own", qos=1)          # not sent back [MQTT-3.8.3-3]
    other.publish("nl/t", b"other's", qos=1)
    c.publish("nl/all", b"own, no No Local", qos=1)
    got = c.recv(2)
    assert sorted(m.key() for m in got) == sorted([("nl/t", b"other's", 1, 0),
                                                   ("nl/all", b"own, no No Local", 1, 0)])
    assert c.pending() == []


def test_retain_as_published_and_retain_handling(clients):
    pub = connected(clients, "rh-pub")
    pub.publish("rh/t", b"stored", qos=1, retain=True)
    rap = connected(clients, "rap")
    # Retain As Published keeps the flag on live delivery [MQTT-3.3.1-13].
    assert rap.subscribe([("rh/t", sub_opts(qos=1, retain_as_published=True))]) == [1]
    [m] = rap.recv(1)
    assert m.key() == ("rh/t", b"stored", 1, 1)
    pub.publish("rh/t", b"live retained", qos=1, retain=True)
    pub.publish("rh/t", b"live plain", qos=1)
    assert [m.key() for m in rap.recv(2)] == [("rh/t", b"live retained", 1, 1),
                                              ("rh/t", b"live plain", 1, 0)]
    c = connected(clients, "rh")
    # Retain Handling 2: no retained messages at subscribe [MQTT-3.3.1-11].
    assert c.subscribe([("rh/t", sub_opts(qos=1, retain_handling=2))]) == [1]
    # Retain Handling 1: only for a new subscription [MQTT-3.3.1-10].
    assert c.subscribe([("rh/+", sub_opts(qos=1, retain_handling=1))]) == [1]
    assert c.subscribe([("rh/+", sub_opts(qos=1, retain_handling=1))]) == [1]
    # Retain Handling 0: at every subscribe [MQTT-3.3.1-9].
    assert c.subscribe([("rh/#", sub_opts(qos=1, retain_handling=0))]) == [1]
    assert c.subscribe([("rh/#", sub_opts(qos=1, retain_handling=0))]) == [1]
    pub.publish("rh/sync", b"sync", qos=1)
    got = [m.key() for m in c.recv(4)]
    # "rh/+" once, "rh/#" twice, then sync (rh/sync matches rh/+ and rh/#;
    # the broker may send one copy per subscription or one in all).
    assert got[:3] == [("rh/t", b"live retained", 1, 1)] * 3
    assert got[3] == ("rh/sync", b"sync", 1, 0)
    rest = c.pending()
    assert all(m.key() == ("rh/sync", b"sync", 1, 0) for m in rest) and len(rest) <= 1


@pytest.mark.mqttoolsd_only  # Mosquitto sends a copy per matching subscription
def test_overlapping_subscriptions_delivered_once(clients):
    c = connected(clients, "overlap")
    assert c.subscribe([("ov/+", sub_opts(qos=0))],
                       properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=5)) == [0]
    assert c.subscribe([("ov/#", sub_opts(qos=2))],
                       properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=300)) == [2]
    assert c.subscribe([("ov/t", sub_opts(qos=1))]) == [1]
    pub = connected(clients, "ov-pub")
    pub.publish("ov/t", b"once", qos=2)
    pub.publish("ov/sync/x", b"sync", qos=1)
    # Sorted by topic: paho hands a QoS 2 message over only on PUBREL.
    got = sorted(c.recv(2), key=lambda m: m.topic, reverse=True)
    # One copy at the highest granted QoS carrying every matching
    # Subscription Identifier [MQTT-3.3.4-2], [MQTT-3.3.4-3].
    assert got[0].key() == ("ov/t", b"once", 2, 0)
    assert sorted(got[0].props.pop("SubscriptionIdentifier")) == [5, 300]
    assert got[0].props == {}
    assert got[1].key() == ("ov/sync/x", b"sync", 1, 0)
    assert got[1].props == {"SubscriptionIdentifier": [300]}
    assert c.pending() == []


def test_subscription_identifiers(clients):
    c = connected(clients, "subid")
    assert c.subscribe([("si/a", sub_opts(qos=1))],
                       properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=1)) == [1]
    assert c.subscribe([("si/b/+", sub_opts(qos=1))],
                       properties=props(PacketTypes.SUBSCRIBE,
                                        SubscriptionIdentifier=268435455)) == [1]
    assert c.subscribe([("si/c", sub_opts(qos=1))]) == [1]
    pub = connected(clients, "si-pub")
    pub.publish("si/a", b"a", qos=1)
    pub.publish("si/b/x", b"b", qos=1)
    pub.publish("si/c", b"c", qos=1)
    got = c.recv(3)
    assert [(m.key(), m.props) for m in got] == [
        (("si/a", b"a", 1, 0), {"SubscriptionIdentifier": [1]}),
        (("si/b/x", b"b", 1, 0), {"SubscriptionIdentifier": [268435455]}),
        (("si/c", b"c", 1, 0), {}),
    ]


@pytest.mark.parametrize("how", ["drop", "disconnect-0x04"])
def test_will_with_properties(clients, how):
    watcher = connected(clients, "will-watch")
    assert watcher.subscribe([("wl/#", sub_opts(qos=2))]) == [2]
    c = clients("will-holder")
    will_props = props(PacketTypes.WILLMESSAGE, ContentType="text/plain",
                       ResponseTopic="wl/resp", CorrelationData=b"\x01\x02",
                       PayloadFormatIndicator=1, UserProperty=[("who", "holder"), ("who", "2")])
    c.c.will_set("wl/holder", "bye \u00e9".encode(), qos=2, retain=False, properties=will_props)
    assert c.connect()[:2] == (0, 0)
    if how == "drop":
        c.drop()
    else:
        c.disconnect(reasoncode=disconnect_with_will())
    [m] = watcher.recv(1)
    assert m.key() == ("wl/holder", "bye \u00e9".encode(), 2, 0)
    assert m.props == {"ContentType": "text/plain", "ResponseTopic": "wl/resp",
                       "CorrelationData": b"\x01\x02", "PayloadFormatIndicator": 1,
                       "UserProperty": [("who", "holder"), ("who", "2")]}


def test_no_will_on_normal_disconnect(clients):
    watcher = connected(clients, "nw-watch")
    watcher.subscribe([("nwl/#", 1)])
    c = clients("nw-holder")
    c.c.will_set("nwl/will", b"must not appear", qos=1)
    assert c.connect()[:2] == (0, 0)
    c.disconnect()
    pub = connected(clients, "nw-pub")
    pub.publish("nwl/after", b"after", qos=1)
    assert [m.key() for m in watcher.recv(1)] == [("nwl/after", b"after", 1, 0)]


def test_will_delay(clients):
    watcher = connected(clients, "wd-watch")
    watcher.subscribe([("wd/#", 1)])
    c = clients("wd-holder")
    c.c.will_set("wd/will", b"late", qos=1,
                 properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=1))
    assert c.connect(properties=session_props(10))[:2] == (0, 0)
    t0 = time.monotonic()
    c.drop()
    [m] = watcher.recv(1, timeout=WAIT + 1)
    waited = time.monotonic() - t0
    assert m.key() == ("wd/will", b"late", 1, 0)
    # Not before the Will Delay Interval [MQTT-3.1.3-9] (1 s, with the
    # broker's one-second timer granularity allowing a little less).
    assert waited >= 0.9


def test_connack_and_assigned_client_identifier(clients):
    c = clients("")
    present, rc, p = c.connect()
    assert (present, rc) == (0, 0)
    # An empty client id gets an Assigned Client Identifier [MQTT-3.2.2-16].
    assigned = p.AssignedClientIdentifier
    assert isinstance(assigned, str) and 1 <= len(assigned) <= 65535
    c2 = clients("")
    assert c2.connect()[2].AssignedClientIdentifier != assigned


def test_receive_maximum_flow_control(clients):
    # The subscriber allows one unacknowledged QoS 1/2 message at a time
    # [MQTT-3.3.4-9]; the broker must queue the rest, losing nothing.
    sub = clients("rm-sub")
    assert sub.connect(properties=session_props(0, ReceiveMaximum=1))[:2] == (0, 0)
    assert sub.subscribe([("rm/t", sub_opts(qos=2))]) == [2]
    pub = connected(clients, "rm-pub")
    n = 200
    infos = [pub.c.publish("rm/t", b"%03d" % i, qos=1 + i % 2) for i in range(n)]
    for info in infos:
        info.wait_for_publish(WAIT)
        assert info.is_published()
    got = sub.recv(n)
    # paho hands QoS 2 over on PUBREL: compare per QoS level.
    for q in (1, 2):
        assert [m.payload for m in got if m.qos == q] == [b"%03d" % i for i in range(n)
                                                          if 1 + i % 2 == q]
    assert all(m.topic == "rm/t" and m.retain == 0 for m in got)


def test_maximum_packet_size_of_client(clients):
    # A message larger than the client's Maximum Packet Size is not sent to
    # it [MQTT-3.1.2-25]; the connection and later messages go on.
    small = clients("mps-small")
    assert small.connect(properties=session_props(0, MaximumPacketSize=128))[:2] == (0, 0)
    assert small.subscribe([("mps/t", 1)]) == [1]
    large = connected(clients, "mps-large")
    assert large.subscribe([("mps/t", 1)]) == [1]
    pub = connected(clients, "mps-pub")
    pub.publish("mps/t", b"a" * 50, qos=1)
    pub.publish("mps/t", b"b" * 300, qos=1)
    pub.publish("mps/t", b"c" * 50, qos=1)
    assert [m.payload for m in large.recv(3)] == [b"a" * 50, b"b" * 300, b"c" * 50]
    assert [m.payload for m in small.recv(2)] == [b"a" * 50, b"c" * 50]
    assert small.pending() == [] and small.disconnects == []


def test_mqtt311_persistent_session(clients):
    c = clients("v311-persist", version=mqtt.MQTTv311, clean_session=False)
    assert c.connect()[:2] == (0, 0)
    assert c.subscribe([("p311s/t", 2)]) == [2]
    c.disconnect()
    pub = connected(clients, "p311s-pub")
    for i in range(3):
        pub.publish("p311s/t", b"m%d" % i, qos=1)
    c2 = clients("v311-persist", version=mqtt.MQTTv311, clean_session=False)
    assert c2.connect()[:2] == (1, 0)
    assert [m.key() for m in c2.recv(3)] == [("p311s/t", b"m%d" % i, 1, 0) for i in range(3)]
    c2.disconnect()
    # Clean session discards it.
    c3 = clients("v311-persist", version=mqtt.MQTTv311, clean_session=True)
    assert c3.connect()[:2] == (0, 0)


def test_unsubscribe_reason_codes(clients):
    c = connected(clients, "unsub")
    assert c.subscribe([("us/a", 1), ("us/b", 1)]) == [1, 1]
    # 0x00 for a removed subscription, 0x11 No subscription existed.
    assert [getattr(x, "value", x) for x in c.unsubscribe(["us/a", "us/none"])] == [0x00, 0x11]
    pub = connected(clients, "us-pub")
    pub.publish("us/a", b"gone", qos=1)
    pub.publish("us/b", b"kept", qos=1)
    assert [m.key() for m in c.recv(1)] == [("us/b", b"kept", 1, 0)]
    assert c.pending() == []


def test_will_cancelled_by_reconnect_within_delay(clients):
    watcher = connected(clients, "wc-watch")
    watcher.subscribe([("wc/#", 1)])
    c = clients("wc-holder")
    c.c.will_set("wc/will", b"cancelled", qos=1,
                 properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=1))
    assert c.connect(properties=session_props(30))[:2] == (0, 0)
    c.drop()
    # Back before the delay ends: no will [MQTT-3.1.3-9].
    c2 = clients("wc-holder")
    assert c2.connect(clean_start=False, properties=session_props(30))[:2] == (1, 0)
    time.sleep(2.1)  # past the delay even for a broker counting whole seconds
    pub = connected(clients, "wc-pub")
    pub.publish("wc/sync", b"sync", qos=1)
    assert [m.key() for m in watcher.recv(1)] == [("wc/sync", b"sync", 1, 0)]


def test_will_sent_when_session_ends_before_delay(clients):
    watcher = connected(clients, "we-watch")
    watcher.subscribe([("we/#", 1)])
    c = clients("we-holder")
    c.c.will_set("we/will", b"session ended", qos=1,
                 properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=300))
    assert c.connect(properties=session_props(1))[:2] == (0, 0)
    t0 = time.monotonic()
    c.drop()
    # The will goes at the end of the session, the shorter of the two
    # intervals [MQTT-3.1.3-9].
    [m] = watcher.recv(1, timeout=WAIT)
    assert m.key() == ("we/will", b"session ended", 1, 0)
    assert 0.9 <= time.monotonic() - t0 <= 5


def test_keep_alive(clients):
    # Keep Alive 1 s: paho pings when idle; the broker answers and keeps the
    # connection past 1.5 times the interval [MQTT-3.1.2-22].
    c = clients("keepalive")
    assert c.connect(keepalive=1)[:2] == (0, 0)
    c.subscribe([("ka/t", 1)])
    time.sleep(2.5)
    assert c.disconnects == []
    pub = connected(clients, "ka-pub")
    pub.publish("ka/t", b"still here", qos=1)
    assert [m.key() for m in c.recv(1)] == [("ka/t", b"still here", 1, 0)]


def test_retained_message_keeps_its_properties(clients):
    pub = connected(clients, "rp-pub")
    user = [("a", "1"), ("a", "2")]
    pub.publish("rp/t", b"\x00stored\xff", qos=2, retain=True, properties=publish_props(
        ContentType="application/x", ResponseTopic="rp/resp", CorrelationData=b"\x00\x01",
        PayloadFormatIndicator=0, UserProperty=user))
    sub = connected(clients, "rp-sub")
    sub.subscribe([("rp/#", 2)])
    [m] = sub.recv(1)
    assert m.key() == ("rp/t", b"\x00stored\xff", 2, 1)
    assert m.props == {"ContentType": "application/x", "ResponseTopic": "rp/resp",
                       "CorrelationData": b"\x00\x01", "PayloadFormatIndicator": 0,
                       "UserProperty": user}


@pytest.mark.mqttoolsd_only  # Mosquitto 2.0.11 sends them
def test_no_retained_messages_for_shared_subscriptions(clients):
    pub = connected(clients, "rs-pub")
    pub.publish("rs/t", b"retained", qos=1, retain=True)
    c = connected(clients, "rs-member")
    # MQTT 5 §3.3.1.3: retained messages are sent "when a new Non-shared
    # Subscription is made"; a shared subscription gets none.
    assert c.subscribe([("$share/g/rs/t", 1)]) == [1]
    pub.publish("rs/t", b"live", qos=1)
    [m] = c.recv(1)
    assert m.key() == ("rs/t", b"live", 1, 0)


def test_session_keeps_subscription_identifiers_and_options(clients):
    c = clients("sk")
    assert c.connect(properties=session_props(60))[:2] == (0, 0)
    assert c.subscribe([("sk/t", sub_opts(qos=1, no_local=True, retain_as_published=True))],
                       properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=77)) == [1]
    c.disconnect()
    pub = connected(clients, "sk-pub")
    pub.publish("sk/t", b"queued", qos=1, retain=True)
    c2 = clients("sk")
    assert c2.connect(clean_start=False, properties=session_props(60))[:2] == (1, 0)
    [m] = c2.recv(1)
    assert (m.key(), m.props) == (("sk/t", b"queued", 1, 1), {"SubscriptionIdentifier": [77]})
    # No Local still holds after the resume.
    c2.publish("sk/t", b"own", qos=1)
    pub.publish("sk/t", b"other", qos=1)
    [m] = c2.recv(1)
    assert (m.key(), m.props) == (("sk/t", b"other", 1, 0), {"SubscriptionIdentifier": [77]})


def test_session_expiry_changed_on_disconnect(clients):
    c = clients("sx")
    assert c.connect(properties=session_props(60))[:2] == (0, 0)
    c.subscribe([("sx/t", 1)])
    # DISCONNECT with Session Expiry Interval 0 ends the session now.
    c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    c2 = clients("sx")
    assert c2.connect(clean_start=False, properties=session_props(60))[:2] == (0, 0)


def test_fan_out_to_many_clients(clients):
    subs = [connected(clients, f"fan-{i}") for i in range(25)]
    for s in subs:
        assert s.subscribe([("fan/+", 2)]) == [2]
    pub = connected(clients, "fan-pub")
    sent = [(b"fan-%02d" % i, i % 3) for i in range(30)]
    for p, q in sent:
        pub.publish("fan/x", p, qos=q)
    for s in subs:
        got = s.recv(len(sent))
        for q in (0, 1, 2):
            assert [m.key() for m in got if m.qos == q] == [("fan/x", p, q, 0) for p, qq in sent
                                                            if qq == q]


def test_mosquitto_rr_request_response(broker, clients):
    # mosquitto_rr (MQTT 5) publishes a request with Response Topic and
    # Correlation Data, then prints the response; paho answers it.
    import subprocess
    responder = connected(clients, "rr-responder")
    assert responder.subscribe([("rr/req", 1)]) == [1]

    def answer(c, userdata, m):
        p = m.properties
        resp = publish_props(CorrelationData=p.CorrelationData) \
            if hasattr(p, "CorrelationData") else None
        c.publish(p.ResponseTopic, b"answer to " + m.payload, qos=1, properties=resp)

    responder.c.on_message = answer
    r = subprocess.run(["mosquitto_rr", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "rr/req",
                        "-e", "rr/resp", "-q", "1", "-m", "question", "-W", str(int(WAIT))],
                       capture_output=True, timeout=WAIT + 5)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"answer to question\n"


@pytest.mark.mqttoolsd_only  # Mosquitto 2.0.11 takes ~5 s to notice
def test_keep_alive_timeout_publishes_will(clients):
    # A client that goes silent (no PINGREQ, socket left open) is cut off
    # once 1.5 times its Keep Alive passes [MQTT-3.1.2-22], and that
    # publishes its will.
    watcher = connected(clients, "kt-watch")
    watcher.subscribe([("kt/#", 1)])
    c = clients("kt-silent")
    c.c.will_set("kt/will", b"timed out", qos=1)
    assert c.connect(keepalive=1)[:2] == (0, 0)
    c.stop()  # the socket stays open; nothing is sent any more
    t0 = time.monotonic()
    [m] = watcher.recv(1, timeout=WAIT)
    assert m.key() == ("kt/will", b"timed out", 1, 0)
    assert 1.0 <= time.monotonic() - t0 <= 4.0


# Mosquitto 2.0.11 sends no will on a takeover at all.
@pytest.mark.parametrize("delay,clean_start,will_sent", [
    # no delay: sent when the old connection closes
    pytest.param(0, False, True, marks=pytest.mark.mqttoolsd_only),
    # Clean Start 1 ends the old session: sent
    pytest.param(30, True, True, marks=pytest.mark.mqttoolsd_only),
    (30, False, False),  # resumed within the delay: not sent
])
def test_will_on_session_takeover(clients, delay, clean_start, will_sent):
    # MQTT 5 §3.1.2.5 (non-normative, from [MQTT-3.1.3-9] and
    # [MQTT-3.1.4-3]): on a takeover "the Will Message for the existing
    # connection is sent unless the new connection specifies Clean Start of 0
    # and the Will Delay is greater than zero".
    watcher = connected(clients, "tw-watch")
    watcher.subscribe([("tw/#", 1)])
    old = clients("tw-holder")
    old.c.will_set("tw/will", b"old connection", qos=1,
                   properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=delay))
    assert old.connect(properties=session_props(60))[:2] == (0, 0)
    new = clients("tw-holder")
    present, rc, _ = new.connect(clean_start=clean_start, properties=session_props(60))
    assert (present, rc) == (0 if clean_start else 1, 0)
    old._wait(lambda: old.disconnects, "takeover of the old connection")
    pub = connected(clients, "tw-pub")
    pub.publish("tw/sync", b"sync", qos=1)
    got = [m.key() for m in watcher.recv(2 if will_sent else 1)]
    if will_sent:
        assert sorted(got) == [("tw/sync", b"sync", 1, 0), ("tw/will", b"old connection", 1, 0)]
    else:
        assert got == [("tw/sync", b"sync", 1, 0)]


def test_session_expires(clients):
    c = clients("short-session")
    assert c.connect(properties=session_props(1))[:2] == (0, 0)
    c.subscribe([("ss/t", 1)])
    c.disconnect()
    # Within its interval the session is still there...
    c2 = clients("short-session")
    assert c2.connect(clean_start=False, properties=session_props(1))[:2] == (1, 0)
    c2.disconnect()
    t0 = time.monotonic()
    # ...and gone once it has passed [MQTT-3.1.2-23] (2.1 s leaves room for a
    # broker that keeps time in whole seconds).
    time.sleep(2.1)
    c3 = clients("short-session")
    assert c3.connect(clean_start=False, properties=session_props(1))[:2] == (0, 0)
    assert time.monotonic() - t0 >= 1.0


def test_subscription_identifier_on_retained_messages(clients):
    pub = connected(clients, "sir-pub")
    pub.publish("sir/t", b"kept", qos=1, retain=True)
    c = connected(clients, "sir")
    assert c.subscribe([("sir/#", 1)],
                       properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=9)) == [1]
    [m] = c.recv(1)
    # Retained messages sent on subscribe carry the identifier too.
    assert (m.key(), m.props) == (("sir/t", b"kept", 1, 1), {"SubscriptionIdentifier": [9]})
