"""Resuming a session from the cluster's record when JetStream is slow
(issue 25): a CONNECT whose record or replay cannot come in time is
refused with 0x88 Server unavailable (MQTT 3.1.1: 3), never answered with
a new session (Session Present 0, the session's messages lost); the client
connects again and gets its session and every acknowledged message."""
import os
import signal
import time

import pytest

from conftest import SANITIZED
from mqttwire import CONNACK, Client, Closed, connect_packet
from test_cluster import NATS_SERVER, nats  # noqa: F401 (fixture)
from test_cluster_ha import SESSION, Receiver, check_delivered, ha_nodes, pair, publish_acked  # noqa: F401
from test_cluster_ha_nats_cluster import nats3, r3_nodes  # noqa: F401 (fixtures)
from test_cluster import connect, link
from mqttwire import sub_options
from conftest import wait_until

pytestmark = pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed")
SLOW = 3 if SANITIZED else 1


def try_resume(port, cid, version):
    """One CONNECT with Clean Start 0: (client, CONNACK), the client closed
    when refused."""
    c = Client(port, timeout=30 * SLOW, version=version)
    c.send(connect_packet(cid, version, False, 60, properties=SESSION if version == 5 else None))
    ack = c.expect(CONNACK, timeout=30 * SLOW)
    return c, ack


def resume_retrying(port, cid, version=5, within=40):
    """Clean Start 0 until the node serves it (a node refuses with 0x88
    while it cannot read the session's record): (client, CONNACK)."""
    deadline = time.monotonic() + within * SLOW
    while True:
        c, ack = try_resume(port, cid, version)
        if ack.reason == 0 or time.monotonic() > deadline:
            return c, ack
        assert ack.reason == (0x88 if version == 5 else 3), f"CONNACK {ack.reason:#x}"
        try:
            c.close()
        except (Closed, OSError):
            pass
        time.sleep(1)


@pytest.mark.parametrize("version,qos", [(5, 1), (5, 2), (4, 1)])
def test_a_resume_jetstream_cannot_serve_is_refused_not_a_new_session(ha_nodes, nats, version, qos):
    a, b, c = ha_nodes(3)
    sub, pub = pair(a.port, b.port, "slow1", "sl", qos)
    sub.disconnect()
    time.sleep(0.3)
    payloads = [b"%d" % i for i in range(100)]
    acked = publish_acked(pub, "sl/x", payloads, qos)
    assert len(acked) == 100
    time.sleep(0.7)  # the record written at the disconnect, the queue's by now
    a.proc.kill()
    a.proc.wait()
    # The CONNECT's claim settles at once; its hand-over wait (1.5 s) runs
    # out while nats-server is frozen: the record cannot be read, nor the
    # stream replayed, for longer than the CONNECT's bound (5 s).
    first = Client(c.port, timeout=30 * SLOW, version=version)
    first.send(connect_packet("slow1", version, False, 60, properties=SESSION if version == 5 else None))
    time.sleep(0.8)
    nats.proc.send_signal(signal.SIGSTOP)
    try:
        ack = first.expect(CONNACK, timeout=30 * SLOW)
        t_refused = time.monotonic()
    finally:
        time.sleep(1.0)
        nats.proc.send_signal(signal.SIGCONT)
    refused = 0x88 if version == 5 else 3
    assert ack.reason == refused, f"CONNACK {ack.reason:#x} (Session Present {ack.session_present}), not refused"
    assert not ack.session_present
    # The client connects again (as client libraries do after 0x88), now
    # that JetStream answers: its session, every acknowledged message.
    again, ack = resume_retrying(c.port, "slow1", version)
    assert ack.reason == 0 and ack.session_present, f"CONNACK {ack.reason:#x}, Session Present {ack.session_present}"
    r = Receiver()
    r.drain(again, acked, 20)
    check_delivered(r, acked, qos)


def test_a_record_written_while_the_session_bucket_has_no_leader_is_not_lost(nats3, r3_nodes):
    # Three nats-servers, replicas 3. The server leading the session
    # bucket dies: for a few seconds the bucket has no leader. Meanwhile a
    # QoS 2 subscriber gets and completes 30 more messages and goes away;
    # the records written then (every 500 ms while messages move, and at
    # the disconnect) wait for the new leader instead of being dropped.
    # Its node dies; it resumes on a third node from the latest record:
    # nothing acknowledged lost, and nothing delivered twice (an older
    # record would send the 30 again: its watermarks predate them).
    a, b, c = r3_nodes(3)
    sub = Client(b.port)
    sub.connect("rec", clean_start=True, properties=SESSION)
    sub.subscribe([("x/#", sub_options(2))])
    pub = connect(a.port, "p")
    link(pub, sub, "x/probe", timeout=20)
    assert wait_until(lambda: nats3.stream_leader("KV_MQTT_SESSIONS_mqtt") is not None, timeout=20)
    dead = nats3.stream_leader("KV_MQTT_SESSIONS_mqtt")
    r = Receiver()
    finish = r.pump_in_background(sub)
    try:
        first = publish_acked(pub, "x/a", [b"a%d" % i for i in range(20)], 2)
        assert wait_until(lambda: first <= set(r.got), timeout=20 * SLOW)
        time.sleep(0.7)  # recorded
        nats3.kill(dead)
        second = publish_acked(pub, "x/b", [b"b%d" % i for i in range(30)], 2)
        wait_until(lambda: second <= set(r.got), timeout=30 * SLOW)
        time.sleep(0.3)
    finally:
        finish()
    sub.disconnect()
    assert wait_until(lambda: nats3.settled(dead), timeout=60, step=0.5), \
        "JetStream did not recover from the loss of one of three servers"
    time.sleep(2)  # the writes still waiting land
    b.proc.kill()
    b.proc.wait()
    again, ack = resume_retrying(c.port, "rec")
    assert ack.reason == 0 and ack.session_present, f"CONNACK {ack.reason:#x}, Session Present {ack.session_present}"
    acked = first | second
    r.drain(again, acked, 10)
    print(f"\nkilled n{dead + 1} (session bucket leader); acknowledged {len(acked)}, delivered {len(r.got)}")
    check_delivered(r, acked, 2)
