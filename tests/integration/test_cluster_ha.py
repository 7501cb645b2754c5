"""Cluster high availability (issue 25): with `[cluster] sessions =
"replicated"` (the default) QoS 1/2 messages and persistent sessions live
in JetStream, so a PUBACK means JetStream has the message and a session
whose node died resumes on any other node. These tests crash things
(kill -9 a node or nats-server, SIGSTOP) and count what was acknowledged
against what arrived."""
import os
import signal
import time

import pytest

from conftest import SANITIZED, Broker, wait_until
from mqttwire import PUBACK, PUBLISH, PUBREC, Client, Closed, publish_packet, sub_options
from test_cluster import NATS_SERVER, connect, link, nats  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed")
SLOW = 3 if SANITIZED else 1


@pytest.fixture
def ha_nodes(tmp_path, nats):
    """Factory: ha_nodes(n, cluster="...") -> [Broker]; `cluster` adds
    [cluster] keys. Killed nodes are fine at the end."""
    started = []

    def start(n=2, cluster="", urls=None):
        out = []
        for _ in range(n):
            node_id = f"node{len(started) + 1}"
            url = ", ".join(f'"{u}"' for u in (urls or [nats.url]))
            b = Broker(tmp_path, config=(f"allow_anonymous = true\nsys_interval = 1\n[cluster]\n"
                                         f"nats_url = [{url}]\nnode_id = \"{node_id}\"\n{cluster}\n"))
            started.append(b)
            out.append(b)
        return out

    yield start
    for b in started:
        code = b.stop()
        if code not in (0, -9):
            pytest.fail(f"node exited with {code}:\n{b.log_path.read_text(errors='replace')[-3000:]}")


def test_puback_waits_for_jetstream_and_is_refused_past_the_bound(ha_nodes, nats):
    # nats-server frozen: a QoS 1/2 PUBLISH is neither acknowledged at once
    # nor ever acknowledged into the void: past hold_timeout it gets 0x80
    # (MQTT 5) or the connection is closed (3.1.1, no negative PUBACK).
    # QoS 0 goes on. Thawed, the same message is acknowledged with 0x00.
    n1, n2 = ha_nodes(2, cluster="hold_timeout = 1000")
    sub = connect(n2.port, "sub")
    sub.subscribe([("h/#", sub_options(1))])
    pub = connect(n1.port, "pub")
    link(pub, sub, "h/probe")
    assert pub.publish("h/a", b"1", qos=1, packet_id=1).reason == 0
    nats.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        pub.send(publish_packet("h/a", b"2", qos=1, packet_id=2))
        ack = pub.expect(PUBACK, timeout=20 * SLOW)
        held = time.monotonic() - t0
        assert ack.reason == 0x80, ack
        assert held >= 1.0, f"refused after {held:.2f} s, before the bound"
        pub.send(publish_packet("h/a", b"3", qos=2, packet_id=3))
        assert pub.expect(PUBREC, timeout=20 * SLOW).reason == 0x80
        old = Client(n1.port, version=4)
        assert old.connect("old311").reason == 0
        old.send(publish_packet("h/a", b"4", qos=1, packet_id=4, version=4))
        got = old.expect_closed(timeout=20 * SLOW)
        assert not [p for p in got if p.type == PUBACK], got
    finally:
        nats.proc.send_signal(signal.SIGCONT)
    # Thawed: acknowledged again (the refused QoS 2 id is free for a resend).
    assert wait_until(lambda: pub.publish("h/a", b"5", qos=1, packet_id=5).reason == 0, timeout=20 * SLOW)
    assert pub.publish("h/a", b"3", qos=2, packet_id=3).reason == 0
