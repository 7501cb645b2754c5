"""The kill -9 crash loop (issue 12): QoS 1 and QoS 2 publishers send
numbered messages to persistent subscribers while the broker is killed at
a random moment, 20+ times, and restarted on the same file. Every message
whose PUBACK (QoS 1) or PUBCOMP (QoS 2) a publisher received must reach
its subscriber: at least once for QoS 1, exactly once for QoS 2."""
import collections
import random
import threading
import time

from mqttwire import (PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SESSION_EXPIRY_INTERVAL, Client, Closed,
                      ack_packet, publish_packet, sub_options)
from persist_helpers import SLOW, DurableBroker

KEEP = {SESSION_EXPIRY_INTERVAL: 3600}
ITERATIONS = 20
GONE = (Closed, ConnectionError, OSError, TimeoutError, EOFError)


class Publisher:
    """Sends 1, 2, 3, ... one at a time; a message is done when its PUBACK
    (QoS 1) or PUBCOMP (QoS 2) arrives. After a lost connection the
    unfinished one is resent as the spec says (PUBLISH with DUP, or the
    PUBREL once PUBREC came) on the resumed session."""

    def __init__(self, client_id, qos, topic):
        self.client_id, self.qos, self.topic = client_id, qos, topic
        self.next = 1
        self.pending = None  # (number, packet id, "publish" | "release")
        self.done = []
        self.errors = []
        self.resent = False

    def _send_pending(self, c, dup):
        n, pid, stage = self.pending
        if stage == "publish":
            c.send(publish_packet(self.topic, str(n).encode(), qos=self.qos, dup=dup, packet_id=pid))
        else:
            c.send(ack_packet(PUBREL, pid))

    def _finish(self, c):
        while True:
            n, pid, stage = self.pending
            p = c.recv(5.0)
            if p.type not in (PUBACK, PUBREC, PUBCOMP) or p.packet_id != pid:
                self.errors.append(f"{self.client_id}: unexpected {p!r} while waiting for {n}")
                return
            # A PUBREL resent after a crash may find the id already released
            # (the release was durable, its PUBCOMP lost): 0x92 then still
            # completes the flow (spec 4.3.3); the message was PUBREC'd.
            released = p.type == PUBCOMP and p.reason == 0x92 and self.resent
            if (p.reason >= 0x80 or p.reason == 0x10) and not released:
                self.errors.append(f"{self.client_id}: message {n} answered {p.reason:#x}")
                return
            if p.type == PUBREC:
                self.pending = (n, pid, "release")
                self._send_pending(c, False)
                continue
            self.done.append(n)
            self.pending = None
            return

    def run(self, port, stop):
        try:
            c = Client(port, timeout=5)
            c.connect(self.client_id, clean_start=False, properties=KEEP)
            if self.pending:
                self.resent = True
                self._send_pending(c, True)
                self._finish(c)
                self.resent = False
            while not stop.is_set() and not self.errors:
                n = self.next
                self.next += 1
                self.pending = (n, n % 65535 + 1, "publish")
                self._send_pending(c, False)
                self._finish(c)
            c.disconnect()
        except GONE:
            pass
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{self.client_id}: {e!r}")


class Subscriber:
    """Takes every message, acknowledging it; for QoS 2 it keeps the packet
    ids received and not yet released, as a receiver must, so a resent
    PUBLISH with one of them is not counted again."""

    def __init__(self, client_id, qos, topic):
        self.client_id, self.qos, self.topic = client_id, qos, topic
        self.received = []
        self.unreleased = set()
        self.errors = []
        self.last_message = time.monotonic()

    def setup(self, port):
        c = Client(port)
        c.connect(self.client_id, properties=KEEP)
        assert c.subscribe([(self.topic, sub_options(qos=self.qos))]).codes == [self.qos]
        c.disconnect()

    def run(self, port, stop, quiet=None):
        try:
            c = Client(port, timeout=5)
            ack = c.connect(self.client_id, clean_start=False, properties=KEEP)
            if not ack.session_present:
                self.errors.append(f"{self.client_id}: session lost")
                return
            while True:
                try:
                    p = c.recv(0.3)
                except TimeoutError:
                    if stop.is_set() and (quiet is None or time.monotonic() - self.last_message > quiet):
                        break
                    continue
                self.last_message = time.monotonic()
                if p.type == PUBLISH:
                    n = int(p.payload)
                    if p.qos == 1:
                        self.received.append(n)
                        c.send(ack_packet(PUBACK, p.packet_id))
                    elif p.qos == 2:
                        if p.packet_id not in self.unreleased:
                            self.unreleased.add(p.packet_id)
                            self.received.append(n)
                        c.send(ack_packet(PUBREC, p.packet_id))
                    else:
                        self.errors.append(f"{self.client_id}: QoS 0 delivery {p!r}")
                elif p.type == PUBREL:
                    self.unreleased.discard(p.packet_id)
                    c.send(ack_packet(PUBCOMP, p.packet_id))
            c.disconnect()
        except GONE:
            pass
        except Exception as e:  # noqa: BLE001
            self.errors.append(f"{self.client_id}: {e!r}")


def test_kill_9_loop_loses_no_acknowledged_message(tmp_path):
    rng = random.Random(12)
    d = DurableBroker(tmp_path, sync="full")
    d.start()
    subs = [Subscriber("s1", 1, "crash/q1"), Subscriber("s2", 2, "crash/q2")]
    pubs = [Publisher("p1", 1, "crash/q1"), Publisher("p2", 2, "crash/q2")]
    for s in subs:
        s.setup(d.port)
    started = time.monotonic()
    for i in range(ITERATIONS):
        if i:
            d.start()
        stop = threading.Event()
        threads = [threading.Thread(target=x.run, args=(d.port, stop)) for x in subs + pubs]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.1, 0.6) * SLOW)
        d.crash()  # kill -9 at a random moment of the traffic
        stop.set()
        for t in threads:
            t.join(timeout=15)
            assert not t.is_alive()
    # Last start: publishers finish what they had in flight; subscribers
    # drain until nothing comes for a second.
    d.start()
    stop = threading.Event()
    stop.set()
    for p in pubs:
        p.run(d.port, stop)
    threads = [threading.Thread(target=s.run, args=(d.port, stop, 1.0 * SLOW)) for s in subs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    d.stop()

    errors = [e for x in subs + pubs for e in x.errors]
    assert not errors, errors
    q1_acked, q2_done = set(pubs[0].done), set(pubs[1].done)
    q1_got = collections.Counter(subs[0].received)
    q2_got = collections.Counter(subs[1].received)
    q1_lost = sorted(q1_acked - set(q1_got))
    q2_lost = sorted(q2_done - set(q2_got))
    q2_twice = sorted(n for n, k in q2_got.items() if k > 1)
    print(f"\ncrash loop: {ITERATIONS} kill -9 in {time.monotonic() - started:.1f} s; "
          f"QoS 1: {len(q1_acked)} PUBACK'd, {len(q1_got)} distinct delivered, "
          f"{sum(q1_got.values()) - len(q1_got)} duplicates, {len(q1_lost)} lost; "
          f"QoS 2: {len(q2_done)} PUBCOMP'd, {len(q2_got)} delivered, {len(q2_twice)} twice, "
          f"{len(q2_lost)} lost")
    assert len(q1_acked) > ITERATIONS and len(q2_done) > ITERATIONS  # traffic did flow
    assert not q1_lost, f"QoS 1 acknowledged but never delivered: {q1_lost[:20]}"
    assert not q2_lost, f"QoS 2 completed but never delivered: {q2_lost[:20]}"
    assert not q2_twice, f"QoS 2 delivered twice: {q2_twice[:20]}"
