"""Resuming a session from the cluster's record when JetStream is slow
(issue 25): a CONNECT whose record or replay cannot come in time is
refused with 0x88 Server unavailable (MQTT 3.1.1: 3), never answered with
a new session (Session Present 0, the session's messages lost); the client
connects again and gets its session and every acknowledged message."""
import os
import signal
import time

import pytest

from conftest import SANITIZED, Broker, freeze
from mqttwire import CONNACK, Client, Closed, connect_packet
from test_cluster import NATS_SERVER, nats  # noqa: F401 (fixture)
from test_cluster_ha import SESSION, Receiver, check_delivered, ha_nodes, pair, publish_acked  # noqa: F401
from test_cluster_ha_nats_cluster import nats3  # noqa: F401 (fixture)
from nats_js import NatsRequester
from test_cluster import connect, link
from mqttwire import PUBREC, PUBREL, ack_packet, publish_packet, sub_options
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
    freeze(nats.proc)
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


def test_a_record_written_while_the_session_bucket_has_no_leader_is_not_lost(tmp_path, nats3):
    # Three nats-servers, replicas 3. The server leading the session
    # bucket dies: for a few seconds the bucket has no leader. Meanwhile a
    # QoS 2 subscriber gets and completes 30 more messages and goes away;
    # the records written then (every 500 ms while messages move, and at
    # the disconnect) wait for the new leader instead of being dropped.
    # Its node dies; it resumes on a third node from the latest record:
    # nothing acknowledged lost, and nothing delivered twice (the record
    # from before the loss sent the 30 again: 30 duplicates, 2 of 2 runs).
    # The nodes use the other two servers only: their links stay up, what
    # is tested is the bucket's election.
    urls = ", ".join(f'"{u}"' for u in nats3.urls[:2])
    nodes = [Broker(tmp_path, config=(f"allow_anonymous = true\nmax_queued_messages = 0\n[cluster]\n"
                                      f"nats_url = [{urls}]\nnode_id = \"node{i + 1}\"\nreplicas = 3\n"))
             for i in range(3)]
    a, b, c = nodes
    try:
        run_leaderless_record(nats3, a, b, c)
    finally:
        for n in nodes:
            code = n.stop()
            assert code in (0, -9), f"node exited with {code}:\n{n.output()[-3000:]}"


def run_leaderless_record(nats3, a, b, c):
    sub = Client(b.port)
    sub.connect("rec", clean_start=True, properties=SESSION)
    sub.subscribe([("x/#", sub_options(2))])
    pub = connect(a.port, "p")
    link(pub, sub, "x/probe", timeout=20)
    # The session bucket's leader onto the third server, every other
    # stream's off it: its loss is the bucket's election alone (a
    # step-down elects another replica at random).
    bucket = "KV_MQTT_SESSIONS_mqtt"
    for stream in (bucket, "MQTT_MSGS_mqtt", "KV_MQTT_OWNERS_mqtt", "MQTT_RETAINED_mqtt"):
        assert wait_until(lambda: nats3.stream_leader(stream) is not None, timeout=20), f"{stream}: no leader"
        for _ in range(30):
            if (nats3.stream_leader(stream) == 2) == (stream == bucket):
                break
            js = NatsRequester(nats3.ports[0])
            try:
                js.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", timeout=5)
            except (OSError, TimeoutError, ValueError):
                pass
            finally:
                js.close()
            wait_until(lambda: nats3.stream_leader(stream) is not None, timeout=10, step=0.2)
        assert (nats3.stream_leader(stream) == 2) == (stream == bucket), f"{stream}: leader n{nats3.stream_leader(stream)}"
    dead = 2
    r = Receiver()
    finish = r.pump_in_background(sub)
    try:
        first = publish_acked(pub, "x/a", [b"a%d" % i for i in range(20)], 2)
        assert wait_until(lambda: first <= set(r.got), timeout=20 * SLOW)
        time.sleep(0.7)  # recorded
        nats3.kill(dead)
        # Their live copies cross at once (their PUBRECs wait for the
        # message stream): the subscriber has them, and goes, while the
        # session bucket still elects its leader.
        second = [b"b%d" % i for i in range(30)]
        for i, payload in enumerate(second):
            pub.send(publish_packet("x/b", payload, qos=2, packet_id=100 + i))
        got_all = wait_until(lambda: set(second) <= set(r.got), timeout=20 * SLOW, step=0.05)
    finally:
        finish()
    sub.disconnect()
    assert got_all, f"the subscriber got {len(set(second) & set(r.got))} of the 30 live"
    acked = set(first)
    deadline = time.monotonic() + 30 * SLOW
    while len(acked) < 50 and time.monotonic() < deadline:
        try:
            p = pub.recv(1)
        except TimeoutError:
            continue
        if p.type == PUBREC:
            if p.reason < 0x80:
                acked.add(second[p.packet_id - 100])
            pub.send(ack_packet(PUBREL, p.packet_id))
    assert wait_until(lambda: nats3.settled(dead), timeout=60, step=0.5), \
        "JetStream did not recover from the loss of one of three servers"
    time.sleep(2)  # the writes still waiting land
    b.proc.kill()
    b.proc.wait()
    again, ack = resume_retrying(c.port, "rec")
    assert ack.reason == 0 and ack.session_present, f"CONNACK {ack.reason:#x}, Session Present {ack.session_present}"
    r.drain(again, acked, 10)
    print(f"\nkilled n{dead + 1} (session bucket leader); acknowledged {len(acked)}, delivered {len(r.got)}")
    check_delivered(r, acked, 2)
