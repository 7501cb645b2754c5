"""Retained floods: a `#` subscription over tens of thousands of retained
topics is sent a slice per reactor turn, only while the subscriber's output
(and, for QoS 1, its session queue) has room. So every retained message
arrives even with a small max_client_output_bytes or max_queued_messages,
in SUBSCRIBE order, and a topic replaced meanwhile is never seen older
after newer."""
import time

import pytest

from conftest import MQTTOOLSD, SANITIZED
from mqttwire import (PUBACK, PUBLISH, SUBACK, Client, ack_packet, publish_packet, subscribe_packet)

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

N = 20_000 if SANITIZED else 50_000


def publish_all(port, items, qos=0):
    """Publishes (topic, payload) pairs as retained messages in one write."""
    pub = Client(port, timeout=60)
    assert pub.connect("flood-pub").reason == 0
    data = bytearray()
    for i, (topic, payload) in enumerate(items):
        data += publish_packet(topic, payload, qos=qos, retain=True, packet_id=(i % 65535) + 1)
    pub.send(bytes(data))
    if qos:
        for _ in items:
            pub.expect(PUBACK, timeout=60)
    pub.ping(timeout=60)  # everything before it has been handled
    return pub


def read_publishes(c, count, timeout=120, qos1=False):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        p = c.recv(timeout=max(0.1, deadline - time.monotonic()))
        if p.type != PUBLISH:
            continue
        if p.qos == 1:
            c.send(ack_packet(PUBACK, p.packet_id))
        got.append(p)
    return got


def test_flood_arrives_whole_under_a_small_output_bound(start_broker):
    b = start_broker(config="max_client_output_bytes = 131072\n")
    pub = publish_all(b.port, [(f"flood/{i:06d}/state", b"x" * 40) for i in range(N)])
    sub = Client(b.port, timeout=60)
    assert sub.connect("flood-sub").reason == 0
    sub.send(subscribe_packet([("#", 0)], packet_id=3))
    assert sub.expect(SUBACK, timeout=60).codes == [0]
    got = read_publishes(sub, N)
    assert len(got) == N
    assert all(p.retain for p in got)
    assert len({p.topic for p in got}) == N
    sub.nothing(timeout=0.3)
    # The broker is still answering everybody else.
    pub.ping()
    pub.disconnect()
    sub.disconnect()


def test_qos1_flood_is_paced_by_the_session_queue(start_broker):
    n = 3000
    b = start_broker(config="max_queued_messages = 100\n")
    pub = publish_all(b.port, [(f"q/{i}", b"payload") for i in range(n)], qos=1)
    sub = Client(b.port, timeout=60)
    assert sub.connect("q-sub").reason == 0
    sub.send(subscribe_packet([("q/#", 1)], packet_id=3))
    assert sub.expect(SUBACK, timeout=60).codes == [1]
    got = read_publishes(sub, n)
    assert len(got) == n
    assert all(p.qos == 1 and p.retain for p in got)
    assert len({p.topic for p in got}) == n
    pub.disconnect()
    sub.disconnect()


def test_replaced_topics_are_never_seen_older_after_newer(start_broker):
    n = 20_000
    b = start_broker(config="max_client_output_bytes = 4194304\n")
    # 20 MB of retained messages: more than the socket buffers and the
    # output bound hold while the test does not read, so the backlog waits.
    pub = publish_all(b.port, [(f"r/{i}", b"1" * 1000) for i in range(n)])
    sub = Client(b.port, timeout=60)
    assert sub.connect("r-sub").reason == 0
    sub.send(subscribe_packet([("r/#", 0)], packet_id=3))
    time.sleep(0.3)
    data = bytearray()
    for i in range(n):
        data += publish_packet(f"r/{i}", b"2", retain=True)
    pub.send(bytes(data))
    pub.ping(timeout=60)
    latest = {}
    old = new = 0
    deadline = time.monotonic() + 120
    while new < n and time.monotonic() < deadline:
        p = sub.recv(timeout=10)
        if p.type != PUBLISH:
            continue
        before = latest.get(p.topic)
        assert not (before == b"2" and p.payload != b"2"), p.topic
        if p.payload != b"2":
            old += 1
        elif before != b"2":
            new += 1
        latest[p.topic] = p.payload
    assert len(latest) == n and all(v == b"2" for v in latest.values())
    # The backlog was still pending when the new values came: part of it
    # was skipped as replaced.
    assert old < n
    pub.disconnect()
    sub.disconnect()


def test_later_subscribers_share_the_matches_until_the_store_changes(start_broker):
    """Subscribers to the same filter while a backlog is being sent share
    one snapshot of the matches; a retained message set between two
    SUBSCRIBEs must not be missed by the later subscribers (it is in
    neither the earlier snapshot nor their live traffic)."""
    n = 10_000 if SANITIZED else 20_000
    b = start_broker(config="max_client_output_bytes = 131072\n")
    pub = publish_all(b.port, [(f"s/{i:06d}", b"v" * 40) for i in range(n)])
    subs = []
    for k in range(6):
        if k == 3:
            pub.send(publish_packet("s/new", b"late", retain=True))
            pub.ping()
        c = Client(b.port, timeout=60)
        assert c.connect(f"share-{k}").reason == 0
        c.send(subscribe_packet([("s/#", 0)], packet_id=3))
        assert c.expect(SUBACK, timeout=60).codes == [0]
        subs.append(c)
    for k, c in enumerate(subs):
        got = read_publishes(c, n + 1)
        topics = {p.topic for p in got}
        assert len(got) == n + 1 and len(topics) == n + 1, k
        late = [p for p in got if p.topic == "s/new"]
        # Live (retain cleared) to those subscribed before it was set,
        # retained to the later ones.
        assert late[0].payload == b"late" and late[0].retain == (k >= 3), k
        c.nothing(timeout=0.2)
    pub.disconnect()
    for c in subs:
        c.disconnect()
