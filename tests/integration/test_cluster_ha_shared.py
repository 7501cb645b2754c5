"""Shared subscriptions when a node dies (issue 25): the QoS 1/2 messages
NATS' queue group gave to a member on a node that is then killed with
SIGKILL reach the group: the member resumes its session on another node
with them (Session Present 1), or, when it does not come back (Session
Expiry 0), another member of the group gets them once. Counted:
acknowledged to the publisher vs delivered to the group's applications."""
import time

import pytest

from mqttwire import CONNACK, Client, connect_packet, sub_options
from test_cluster import connect, nats  # noqa: F401 (fixture)
from test_cluster_ha import SLOW, Receiver, ha_nodes, publish_acked, pytestmark, resume  # noqa: F401 (fixture)

__all__ = ["pytestmark"]

TICK_MS = 2000 * SLOW  # net_ticktime: a node silent this long is down
GROUP = "$share/g/sh/#"


class Stalled(Receiver):
    """A member whose application takes every PUBLISH but never
    acknowledges one (a stuck consumer): its node keeps a queue for it."""

    def take(self, c, p):
        self.got.append(p.payload)


def member(port, cid, qos, expiry, receive_maximum):
    c = Client(port, timeout=20)
    props = {0x21: receive_maximum}
    if expiry:
        props[0x11] = expiry
    c.send(connect_packet(cid, 5, True, 60, properties=props))
    assert c.expect(CONNACK).reason == 0
    c.subscribe([(GROUP, sub_options(qos))])
    return c


def run(ha_nodes, qos, m2_receiver, m2_expiry, m2_receive_maximum):
    """Members m1 on node 1 and m2 on node 2, a publisher on node 3; node 2
    killed halfway through 400 messages at 200/s. Returns the nodes, the
    acknowledged payloads and the receivers (m2's connection is gone)."""
    nodes = ha_nodes(3, cluster=f"net_ticktime = {TICK_MS}")
    a, b, c = nodes
    r1 = Receiver()
    stop1 = r1.pump_in_background(member(a.port, "m1", qos, 0, 100))
    stop2 = m2_receiver.pump_in_background(member(b.port, "m2", qos, m2_expiry, m2_receive_maximum))
    pub = connect(c.port, "pub")

    def kill():
        b.proc.kill()
        b.proc.wait()
    payloads = [b"%d" % i for i in range(400)]
    acked = publish_acked(pub, "sh/x", payloads, qos, rate=200, on_half=kill)
    stop2()
    assert len(acked) >= 300, f"only {len(acked)} of 400 acknowledged"
    return nodes, acked, r1, stop1


def wait_for_group(acked, receivers, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if acked <= set().union(*(set(r.got) for r in receivers)):
            return
        time.sleep(0.2)


def delivered(receivers):
    return [p for r in receivers for p in r.got]


@pytest.mark.parametrize("stalled", [False, True], ids=["acking", "stalled"])
def test_messages_of_a_dead_nodes_member_without_a_session_go_to_another_member(ha_nodes, stalled):
    # Session Expiry 0: nothing to resume. What node 2 had taken for m2 and
    # m2 had not acknowledged (stalled: its whole queue), and what NATS had
    # handed node 2 unread, goes to m1 once the survivors see node 2 down.
    r2 = Stalled() if stalled else Receiver()
    _, acked, r1, stop1 = run(ha_nodes, 1, r2, 0, 10)
    wait_for_group(acked, [r1, r2], TICK_MS / 1000 * 3 + 20 * SLOW)
    stop1()
    lost = acked - set(delivered([r1, r2]))
    got = delivered([r1, r2])
    print(f"\nacknowledged {len(acked)}, m1 {len(r1.got)}, m2 {len(r2.got)}, lost {len(lost)}, "
          f"twice {len(got) - len(set(got))}")
    assert not lost, f"{len(lost)} acknowledged messages never reached the group: {sorted(lost)[:20]}"


@pytest.mark.parametrize("qos", [1, 2])
def test_a_dead_nodes_member_resumes_elsewhere_with_its_messages(ha_nodes, qos):
    # Session Expiry 3600: m2 comes back with Clean Start 0 on node 1 and
    # gets Session Present 1 and every message the group gave it that it
    # had not completed (QoS 1: a stuck consumer, all of them again; QoS 2:
    # one in flight at a time, completed as they come). Nothing
    # acknowledged is lost to the group; QoS 2: nothing delivered twice.
    r2 = Stalled() if qos == 1 else Receiver()
    nodes, acked, r1, stop1 = run(ha_nodes, qos, r2, 3600, 10 if qos == 1 else 1)
    before = set(r2.got)
    again, ack = resume(nodes[0].port, "m2")
    assert ack.session_present, "Session Present 0 after its node died"
    r3 = Receiver() if qos == 1 else r2  # QoS 2: the same application (its unreleased ids)
    stop3 = r3.pump_in_background(again)
    receivers = [r1, r2] if qos == 2 else [r1, r2, r3]
    wait_for_group(acked, receivers, TICK_MS / 1000 * 3 + 20 * SLOW)
    if qos == 1:
        # Its unacknowledged messages, again.
        end = time.monotonic() + 10 * SLOW
        while time.monotonic() < end and not before <= set(r3.got):
            time.sleep(0.2)
    stop3()
    stop1()
    got = delivered(receivers)
    lost = acked - set(got)
    print(f"\nacknowledged {len(acked)}, m1 {len(r1.got)}, m2 {len(r2.got)}+{len(r3.got) if qos == 1 else 0}, "
          f"lost {len(lost)}, twice {len(got) - len(set(got))}")
    assert not lost, f"{len(lost)} acknowledged messages never reached the group: {sorted(lost)[:20]}"
    if qos == 1:
        missing = before - set(r3.got)
        assert not missing, f"{len(missing)} of m2's unacknowledged messages did not come again"
    else:
        twice = sorted({p for p in got if got.count(p) > 1}, key=int)
        assert not twice, (f"{len(twice)} QoS 2 messages delivered twice: "
                           f"{[(p, r1.got.count(p), r2.got.count(p)) for p in twice[:10]]}")
