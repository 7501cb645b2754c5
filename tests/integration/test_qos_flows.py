"""QoS 1 and 2 in mqttoolsd (broker side): acknowledgements and reason
codes, exactly-once inbound QoS 2, Receive Maximum in both directions,
queueing behind the in-flight window, redelivery with DUP on resume,
bounded queues and message expiry on queued messages."""
import time

import pytest

from cluster_mode import single_node_only
from conftest import MQTTOOLSD
from mqttwire import (Client, DISCONNECT, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, MESSAGE_EXPIRY_INTERVAL,
                      RECEIVE_MAXIMUM, SESSION_EXPIRY_INTERVAL, ack_packet, publish_packet)

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

KEEP = {SESSION_EXPIRY_INTERVAL: 300}


# In cluster mode too: NATS answers "no responders" for a message no other
# node wants (docs/cluster.md), so 0x10 holds across nodes.
def test_qos1_flow_and_no_matching_subscribers(broker):
    pub = Client(broker.port)
    pub.connect("pub")
    assert pub.publish("q1/nobody", b"x", qos=1, packet_id=7).reason == 0x10
    sub = Client(broker.port)
    sub.connect("sub")
    sub.subscribe([("q1/#", 1)])
    ack = pub.publish("q1/x", b"hello", qos=1, packet_id=8)
    assert (ack.packet_id, ack.reason) == (8, 0)
    assert pub.raw_last == b"\x40\x02\x00\x08"  # Success is sent in its short form
    m = sub.expect(PUBLISH)
    assert (m.topic, m.payload, m.qos, m.dup) == ("q1/x", b"hello", 1, False)
    assert m.packet_id != 0
    sub.ack(m)
    sub.ping()


def test_qos2_inbound_exactly_once(broker):
    sub = Client(broker.port)
    sub.connect("sub")
    sub.subscribe([("q2/#", 2)])
    pub = Client(broker.port)
    pub.connect("pub")
    rec = pub.publish("q2/x", b"once", qos=2, packet_id=5, complete=False)
    assert (rec.type, rec.reason) == (PUBREC, 0)
    # The same packet again (DUP) before PUBREL: acknowledged, not routed again.
    pub.send(publish_packet("q2/x", b"once", qos=2, packet_id=5, dup=True))
    assert pub.expect(PUBREC).packet_id == 5
    pub.send(ack_packet(PUBREL, 5))
    comp = pub.expect(PUBCOMP)
    assert (comp.packet_id, comp.reason) == (5, 0)
    # A PUBREL for an id not in use: PUBCOMP 0x92.
    pub.send(ack_packet(PUBREL, 6))
    comp = pub.expect(PUBCOMP)
    assert (comp.packet_id, comp.reason) == (6, 0x92)
    got = []
    while True:
        try:
            p = sub.recv(0.4)
        except TimeoutError:
            break
        got.append(p)
        sub.ack(p)
    assert [(p.payload, p.qos) for p in got] == [(b"once", 2)]


def test_qos2_outbound_flow_and_unknown_pubrec(broker):
    sub = Client(broker.port)
    sub.connect("sub")
    sub.subscribe([("o2/#", 2)])
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("o2/x", b"two", qos=2)
    m = sub.expect(PUBLISH)
    assert m.qos == 2
    sub.send(ack_packet(PUBREC, m.packet_id))
    rel = sub.expect(PUBREL)
    assert (rel.packet_id, rel.reason) == (m.packet_id, 0)
    sub.send(ack_packet(PUBCOMP, m.packet_id))
    sub.send(ack_packet(PUBREC, 999))
    rel = sub.expect(PUBREL)
    assert (rel.packet_id, rel.reason) == (999, 0x92)


def test_receive_maximum_exceeded(start_broker):
    b = start_broker(config="receive_maximum = 2\n")
    c = Client(b.port)
    assert c.connect("greedy").prop(RECEIVE_MAXIMUM) == 2
    for pid in (1, 2):
        assert c.publish("rm", b"x", qos=2, packet_id=pid, complete=False).reason == 0x10
    c.send(publish_packet("rm", b"x", qos=2, packet_id=3))
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x93)]


def received_ids(c, quiet=0.3):
    out = []
    while True:
        try:
            p = c.recv(quiet)
        except TimeoutError:
            return out
        if p.type == PUBLISH:
            out.append(p)


@pytest.mark.parametrize("client_max,config,window", [(2, "", 2), (10, "max_inflight_messages = 3\n", 3)])
def test_outbound_window(start_broker, client_max, config, window):
    b = start_broker(config=config)
    sub = Client(b.port)
    sub.connect("slow", properties={RECEIVE_MAXIMUM: client_max})
    sub.subscribe([("w/#", 1)])
    pub = Client(b.port)
    pub.connect("pub")
    for i in range(8):
        pub.publish("w/x", str(i).encode(), qos=1, packet_id=i + 1)
    first = received_ids(sub)
    assert [p.payload for p in first] == [str(i).encode() for i in range(window)]
    # Each acknowledgement lets exactly one more through, in order.
    sub.ack(first[0])
    nxt = received_ids(sub)
    assert [p.payload for p in nxt] == [str(window).encode()]
    for p in first[1:] + nxt:
        sub.ack(p)
    rest = received_ids(sub)
    while len(rest) < 8 - window - 1:
        for p in rest:
            sub.ack(p)
        more = received_ids(sub)
        if not more:
            break
        rest += more
    payloads = [p.payload for p in first + nxt] + [p.payload for p in rest]
    assert sorted(set(payloads), key=int) == [str(i).encode() for i in range(8)]


def test_redelivery_with_dup_before_new_messages(broker):
    sub = Client(broker.port)
    sub.connect("resumer", clean_start=False, properties={**KEEP, RECEIVE_MAXIMUM: 2})
    sub.subscribe([("r/#", 1)])
    pub = Client(broker.port)
    pub.connect("pub")
    for i in range(3):
        pub.publish("r/x", f"m{i}".encode(), qos=1, packet_id=i + 1)
    first = received_ids(sub)
    assert [p.payload for p in first] == [b"m0", b"m1"]
    sub.close()  # no acknowledgements
    pub.publish("r/x", b"m3", qos=1, packet_id=10)
    sub = Client(broker.port)
    assert sub.connect("resumer", clean_start=False, properties={**KEEP, RECEIVE_MAXIMUM: 2}).session_present
    again = received_ids(sub)
    assert [(p.payload, p.dup, p.packet_id) for p in again] == [(b"m0", True, first[0].packet_id),
                                                                (b"m1", True, first[1].packet_id)]
    for p in again:
        sub.ack(p)
    later = received_ids(sub)
    assert [(p.payload, p.dup) for p in later] == [(b"m2", False), (b"m3", False)]
    for p in later:
        sub.ack(p)
    sub.disconnect()


def test_pubrel_resent_on_resume(broker):
    sub = Client(broker.port)
    sub.connect("q2resume", clean_start=False, properties=KEEP)
    sub.subscribe([("p2/#", 2)])
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("p2/x", b"z", qos=2)
    m = sub.expect(PUBLISH)
    sub.send(ack_packet(PUBREC, m.packet_id))
    assert sub.expect(PUBREL).packet_id == m.packet_id
    sub.close()  # before PUBCOMP
    sub = Client(broker.port)
    assert sub.connect("q2resume", clean_start=False, properties=KEEP).session_present
    rel = sub.expect(PUBREL)
    assert rel.packet_id == m.packet_id
    sub.send(ack_packet(PUBCOMP, m.packet_id))
    sub.nothing(0.3)
    sub.disconnect()


def test_offline_queue_is_bounded(start_broker):
    b = start_broker(config="max_queued_messages = 5\n")
    sub = Client(b.port)
    sub.connect("away", clean_start=False, properties=KEEP)
    sub.subscribe([("b/#", 1)])
    sub.disconnect()
    pub = Client(b.port)
    pub.connect("pub")
    for i in range(10):
        pub.publish("b/x", str(i).encode(), qos=1, packet_id=i + 1)
    sub = Client(b.port)
    assert sub.connect("away", clean_start=False, properties=KEEP).session_present
    got = received_ids(sub)
    assert [p.payload for p in got] == [str(i).encode() for i in range(5)]
    for p in got:
        sub.ack(p)
    sub.disconnect()


def test_queued_messages_expire(broker):
    sub = Client(broker.port)
    sub.connect("expiring", clean_start=False, properties=KEEP)
    sub.subscribe([("x/#", 1)])
    sub.disconnect()
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("x/short", b"s", qos=1, properties={MESSAGE_EXPIRY_INTERVAL: 1})
    pub.publish("x/long", b"l", qos=1, properties={MESSAGE_EXPIRY_INTERVAL: 60})
    time.sleep(1.3)
    sub = Client(broker.port)
    assert sub.connect("expiring", clean_start=False, properties=KEEP).session_present
    got = received_ids(sub)
    assert [p.topic for p in got] == ["x/long"]
    assert got[0].prop(MESSAGE_EXPIRY_INTERVAL) in (58, 59)
    sub.ack(got[0])
    sub.disconnect()


def test_qos0_not_queued_for_absent_clients_but_qos_downgraded(broker):
    sub = Client(broker.port)
    sub.connect("mixed", clean_start=False, properties=KEEP)
    sub.subscribe([("d/#", 0)])
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("d/x", b"live", qos=2)
    got = received_ids(sub)
    assert [(p.payload, p.qos) for p in got] == [(b"live", 0)]
    sub.close()
    pub.publish("d/x", b"missed", qos=1)
    sub = Client(broker.port)
    sub.connect("mixed", clean_start=False, properties=KEEP)
    assert received_ids(sub) == []
    sub.disconnect()
