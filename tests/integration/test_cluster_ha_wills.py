"""The wills of a dead node's clients (issue 25): the node that resumes
the session from the cluster's record sends the will of the connection
the dead node took down, once; not when the client came back within its
Will Delay Interval."""
import time

import pytest

from mqttwire import CONNACK, PUBACK, PUBLISH, Client, ack_packet, connect_packet, sub_options
from test_cluster import connect, link, nats  # noqa: F401 (fixture)
from test_cluster_ha import SESSION, SLOW, ha_nodes, pytestmark, resume  # noqa: F401 (fixture)

__all__ = ["pytestmark"]


def wills_seen(watcher, seconds):
    got = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            p = watcher.recv(0.2)
        except TimeoutError:
            continue
        if p.type == PUBLISH and p.topic.startswith("will/"):
            got.append(p.payload)
    return got


@pytest.mark.parametrize("delay", [0, 600])
def test_a_dead_nodes_client_will_fires_once_from_the_resuming_node(ha_nodes, delay):
    a, b, c = ha_nodes(3)
    watcher = connect(c.port, "watcher")
    watcher.subscribe([("will/#", sub_options(1))])
    x = Client(a.port)
    x.send(connect_packet("wx", 5, True, 60, will_topic="will/wx", will_payload=b"gone", will_qos=1,
                          will_properties={0x18: delay}, properties=SESSION))
    assert x.expect(CONNACK).reason == 0
    x.subscribe([("wx/#", sub_options(1))])
    link(connect(b.port, "pwx"), x, "wx/probe")
    time.sleep(0.7)  # the record with the will is written
    a.proc.kill()
    a.proc.wait()
    again, ack = resume(b.port, "wx")
    assert ack.session_present, "Session Present 0 after the node died"
    got = wills_seen(watcher, 3 * SLOW)
    if delay == 0:
        assert got == [b"gone"], f"the will arrived {len(got)} times"
    else:
        assert got == [], "the client came back within its Will Delay Interval: no will"
    again.disconnect()


# Node liveness for the tests below: a node silent this long is down.
TICK_MS = 2000 * SLOW


def orphan(port, cid, expiry, delay):
    """A client with a will (QoS 1, Will Delay `delay`) and Session Expiry
    `expiry`, subscribed to cid/#, on the node at `port`."""
    x = Client(port)
    x.send(connect_packet(cid, 5, True, 60, will_topic=f"will/{cid}", will_payload=b"gone", will_qos=1,
                          will_properties={0x18: delay}, properties={0x11: expiry}))
    assert x.expect(CONNACK).reason == 0
    x.subscribe([(f"{cid}/#", sub_options(1))])
    return x


@pytest.mark.parametrize("nodes,delay", [(2, 0), (3, 2)])
def test_a_dead_nodes_client_that_never_returns_gets_its_will_and_its_expiry(ha_nodes, nodes, delay):
    # kill -9 the node of a client that never comes back: a surviving node
    # takes its session over once the node is seen down (net_ticktime),
    # sends its will once (after its delay, counted from the death), and
    # ends the session when its expiry runs out. With two survivors, still
    # once.
    up = ha_nodes(nodes, cluster=f"net_ticktime = {TICK_MS}")
    a = up[0]
    watcher = connect(up[1].port, "watcher")
    watcher.subscribe([("will/#", sub_options(1))])
    x = orphan(a.port, "ox", 5, delay)
    link(connect(up[-1].port, "pox"), x, "ox/probe")
    time.sleep(0.7)  # the record with the will is written
    a.proc.kill()
    a.proc.wait()
    died = time.monotonic()
    got = []
    deadline = died + (TICK_MS / 1000 + delay) * 3 + 20 * SLOW
    while not got and time.monotonic() < deadline:
        got += wills_seen(watcher, 0.5)
    assert got == [b"gone"], "no will from the dead node's client"
    took = time.monotonic() - died
    assert took >= delay, f"the will came {took:.1f} s after the death, before its delay of {delay} s"
    got += wills_seen(watcher, 3)
    assert got == [b"gone"], f"the will arrived {len(got)} times"
    # Session Expiry 5 s from the death: the session is gone everywhere.
    time.sleep(max(0.0, died + 5 + 2 * SLOW - time.monotonic()))
    again, ack = resume(up[1].port, "ox")
    assert not ack.session_present, "the session outlived its expiry"
    again.disconnect()
    assert wills_seen(watcher, 0.5) == [], "a will again when the session ended"


def test_a_dead_nodes_client_back_before_expiry_resumes_and_its_will_is_not_sent_again(ha_nodes):
    # Taken over by a survivor (its will sent), then the client returns to
    # the other survivor: Session Present 1, what was published for it
    # meanwhile, and no second will.
    a, b, c = ha_nodes(3, cluster=f"net_ticktime = {TICK_MS}")
    watcher = connect(b.port, "watcher")
    watcher.subscribe([("will/#", sub_options(1))])
    x = orphan(a.port, "ry", 600, 0)
    pub = connect(c.port, "pry")
    link(pub, x, "ry/probe")
    time.sleep(0.7)
    a.proc.kill()
    a.proc.wait()
    for i in range(5):
        assert pub.publish("ry/m", b"before-%d" % i, qos=1, packet_id=i + 1).reason in (0, 0x10)
    got = []
    deadline = time.monotonic() + TICK_MS / 1000 * 3 + 20 * SLOW
    while not got and time.monotonic() < deadline:
        got += wills_seen(watcher, 0.5)
    assert got == [b"gone"], "no will from the dead node's client"
    for i in range(5):
        assert pub.publish("ry/m", b"after-%d" % i, qos=1, packet_id=i + 10).reason == 0
    again, ack = resume(b.port, "ry")
    assert ack.session_present, "Session Present 0: the session taken over was lost"
    payloads = []
    end = time.monotonic() + 10 * SLOW
    while time.monotonic() < end and len(set(payloads)) < 10:
        try:
            p = again.recv(0.5)
        except TimeoutError:
            continue
        if p.type == PUBLISH and p.topic == "ry/m":
            payloads.append(p.payload)
            again.send(ack_packet(PUBACK, p.packet_id))
    want = {b"before-%d" % i for i in range(5)} | {b"after-%d" % i for i in range(5)}
    assert want <= set(payloads), f"missing: {sorted(want - set(payloads))}"
    assert wills_seen(watcher, 3) == [], "the will was sent again"
    again.disconnect()
