"""The wills of a dead node's clients (issue 25): the node that resumes
the session from the cluster's record sends the will of the connection
the dead node took down, once; not when the client came back within its
Will Delay Interval."""
import time

import pytest

from mqttwire import CONNACK, PUBLISH, Client, connect_packet, sub_options
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
