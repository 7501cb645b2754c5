"""A session resumed from its record while JetStream stops answering
(issue 25): the node must not go on with Session Present 1 and without the
messages the replay was to bring, nor with a new session. It refuses the
CONNECT with 0x88 Server unavailable; the client tries again (as clients
with automatic reconnection do) and, once JetStream answers, resumes with
Session Present 1 and every acknowledged message.

Before the fix (CI, 2026-12-07): a replay that could not be completed in
time ended as if complete, and the session resumed with Session Present 1
and 0 of 100 acknowledged messages."""
import os
import signal
import threading
import time

import pytest

from conftest import freeze
from mqttwire import Client, sub_options
from test_cluster import NATS_SERVER, connect, link, nats  # noqa: F401 (fixture)
from test_cluster_ha import SESSION, Receiver, check_delivered, ha_nodes, publish_acked, resume  # noqa: F401

pytestmark = pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed")

IMPORTED = "session resumed from the cluster's record"
REFUSED = "refused with Server unavailable"


def freeze_when_logged(broker, nats_proc, needle, hold):
    """From a thread: SIGSTOP nats-server as soon as `broker` logs `needle`
    (polled every 2 ms; every thread stopped), SIGCONT `hold` seconds later. Returns join()."""
    seen = threading.Event()
    stop = threading.Event()

    def watch():
        end = time.monotonic() + 60
        with open(broker.log_path, "rb") as f:
            buf = b""
            while not stop.is_set() and time.monotonic() < end:
                chunk = f.read()
                if chunk:
                    buf = buf[-200:] + chunk
                    if needle.encode() in buf:
                        try:
                            freeze(nats_proc)
                            seen.set()
                            stop.wait(hold)
                        finally:
                            nats_proc.send_signal(signal.SIGCONT)
                        return
                else:
                    time.sleep(0.002)

    t = threading.Thread(target=watch, daemon=True)
    t.start()

    def join():
        t.join(timeout=hold + 65)
        return seen.is_set()
    return join


def test_a_resume_whose_replay_stalls_is_refused_then_completes(ha_nodes, nats):
    a, b, c = ha_nodes(3)
    sub = Client(b.port)
    sub.connect("s", clean_start=True, properties=SESSION)
    sub.subscribe([("x/#", sub_options(1))])
    pub = connect(a.port, "p")
    link(pub, sub, "x/probe")
    sub.disconnect()
    time.sleep(0.7)  # its record (written at the disconnect) is stored
    # Enough to replay that nats-server is frozen while the replay runs.
    # (900: under the default max_queued_messages of 1,000.)
    payloads = [b"%05d" % i + b"." * 4000 for i in range(900)]
    acked = publish_acked(pub, "x/z", payloads, 1)
    assert len(acked) == len(payloads), f"only {len(acked)} acknowledged"
    b.proc.kill()
    b.proc.wait()
    joined = freeze_when_logged(c, nats.proc, IMPORTED, hold=9)
    again, ack = resume(c.port, "s", timeout=60)
    frozen = joined()
    log = c.log_path.read_text(errors="replace")
    assert frozen, "node 3 never imported the session's record"
    assert ack.reason == 0, ack
    assert ack.session_present, "Session Present 0: the session was lost"
    r = Receiver()
    r.drain(again, acked, 60)
    check_delivered(r, acked, 1)
    # The freeze hit the resume (not after it): it was refused meanwhile.
    assert REFUSED in log, "the resume completed before nats-server froze (the test did not test)"
