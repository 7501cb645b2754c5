"""A CONNECT whose ownership claim cannot be settled (issue 25): with
`sessions = "replicated"` a node never answers Session Present 0 while a
session may exist elsewhere. nats-server is frozen (every thread stopped)
just before a Clean Start 0 CONNECT for a session another node holds with
queued QoS 1 messages: the claim cannot reach the owners bucket within the
1.5 s hand-over wait, and the node refuses with 0x88 Server unavailable
(MQTT 3.1.1: 3) instead of starting a new session. Once nats-server runs
again the client's retry resumes the session (Session Present 1) with
every acknowledged message.

Before the fix: CONNACK 0x00 with Session Present 0 (a new session), the
100 queued messages never delivered."""
import os
import signal
import time

import pytest

from conftest import SANITIZED, freeze
from mqttwire import CONNACK, DISCONNECT, Client, Closed, connect_packet, sub_options
from test_cluster import NATS_SERVER, connect, link, nats  # noqa: F401 (fixture)
from test_cluster_ha import SESSION, Receiver, check_delivered, ha_nodes, publish_acked  # noqa: F401
from test_cluster_ha_resume import resume_retrying

pytestmark = pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed")
SLOW = 3 if SANITIZED else 1


def connect_once(port, cid, version, clean_start):
    """One CONNECT: (client, CONNACK)."""
    c = Client(port, timeout=30 * SLOW, version=version)
    c.send(connect_packet(cid, version, clean_start, 60, properties=SESSION if version == 5 else None))
    return c, c.expect(CONNACK, timeout=30 * SLOW)


@pytest.mark.parametrize("version", [5, 4])
def test_clean_start_0_whose_claim_cannot_settle_is_refused_not_a_new_session(ha_nodes, nats, version):
    a, b = ha_nodes(2)
    # The session lives on node 1 (offline, 100 queued QoS 1 messages).
    sub = Client(a.port, version=version)
    ack = sub.connect("unsettled", clean_start=version == 5, properties=SESSION if version == 5 else None)
    assert ack.reason == 0
    sub.subscribe([("un/#", sub_options(1))])
    pub = connect(b.port, "unsettled-pub")
    link(pub, sub, "un/probe")
    sub.disconnect()
    time.sleep(0.3)
    acked = publish_acked(pub, "un/x", [b"%d" % i for i in range(100)], 1)
    assert len(acked) == 100
    time.sleep(0.7)  # queued on node 1, its record written
    # nats-server stops before the CONNECT on node 2: its claim on the
    # client id can neither be settled by the bucket nor reach node 1. A
    # CONNECT of another client just before it keeps node 2's claim thread
    # waiting on the frozen bucket (up to 1.5 s), so that this claim is
    # still queued when the CONNECT's hand-over wait ends (without it the
    # claim gives up first, stamped by the wall clock, and the record read
    # that follows is refused: another path).
    freeze(nats.proc)
    try:
        other = Client(b.port, timeout=30 * SLOW)
        other.send(connect_packet("unsettled-other", 5, True, 60))
        time.sleep(0.3)
        first, ack = connect_once(b.port, "unsettled", version, False)
        # Frozen past the claim's own wait for the bucket: stamped by the
        # wall clock, its write to the bucket lands after the thaw (the
        # bucket then names node 2, which does not hold the session).
        time.sleep(2)
        waited = time.monotonic()
    finally:
        nats.proc.send_signal(signal.SIGCONT)
    refused = 0x88 if version == 5 else 3
    assert ack.reason == refused and not ack.session_present, \
        f"CONNACK {ack.reason:#x}, Session Present {ack.session_present}: not refused"
    with pytest.raises((Closed, OSError, TimeoutError)):
        first.recv(5)  # the refused connection is closed
    # The client tries again, now that NATS answers: the session and every
    # acknowledged message, from node 1.
    again, ack = resume_retrying(b.port, "unsettled", version, within=60)
    assert ack.reason == 0 and ack.session_present, \
        f"CONNACK {ack.reason:#x}, Session Present {ack.session_present} after the thaw"
    r = Receiver()
    r.drain(again, acked, 30)
    print(f"\nrefused while frozen, resumed {time.monotonic() - waited:.1f} s after the thaw; "
          f"acknowledged {len(acked)}, delivered {len(set(r.got))}")
    check_delivered(r, acked, 1)


def test_clean_start_1_whose_claim_cannot_settle_goes_on_and_takes_over_once_nats_is_back(ha_nodes, nats):
    # Clean Start 1 asks for a new session: it need not wait for the bucket
    # and gets one (Session Present 0) while nats-server is frozen. Once
    # NATS is back its claim is ordered by the bucket and the node that
    # held the id closes its connection with 0x8E: one owner.
    a, b = ha_nodes(2)
    old = Client(a.port)
    assert old.connect("cs1", clean_start=True, properties=SESSION).reason == 0
    old.subscribe([("cs/#", sub_options(1))])
    pub = connect(b.port, "cs1-pub")
    link(pub, old, "cs/probe")
    freeze(nats.proc)
    try:
        other = Client(b.port, timeout=30 * SLOW)
        other.send(connect_packet("cs1-other", 5, True, 60))
        time.sleep(0.3)
        new, ack = connect_once(b.port, "cs1", 5, True)
        # Frozen past the claim's own 1.5 s wait for the bucket: it is
        # stamped by the wall clock, which loses to node 1's claim.
        time.sleep(3)
    finally:
        nats.proc.send_signal(signal.SIGCONT)
    assert ack.reason == 0 and not ack.session_present, f"CONNACK {ack.reason:#x}, SP {ack.session_present}"
    # The older connection is taken over (MQTT-3.1.4-3), across nodes.
    end = time.monotonic() + 30 * SLOW
    reason = None
    while time.monotonic() < end and reason is None:
        try:
            p = old.recv(0.5)
        except TimeoutError:
            continue
        except (Closed, OSError):
            reason = "closed"
            break
        if p.type == DISCONNECT:
            reason = p.reason
    assert reason == 0x8E, f"node 1 kept its connection for the id (got {reason}): two owners"
    # The new connection is the owner: it subscribes and gets messages.
    new.subscribe([("cs/#", sub_options(1))])
    link(pub, new, "cs/probe")
