"""Cluster high availability under random crashes (issue 25): three nodes
over one nats-server with JetStream, 3 QoS 1 publishers and 3 persistent
QoS 1 subscribers spread over the nodes; each round kill -9 one node or
nats-server at a random moment and count, per subscriber, what the
publishers had acknowledged against what arrived.

The randomness (victims, moments, reconnect targets) comes from one seed,
printed and named in every failure: MQTTOOLS_HA_SEED=N replays a run's
choices (the timing around them is the host's)."""
import os
import random
import signal
import threading
import time

import pytest

from conftest import SANITIZED, Broker
from mqttwire import (CONNACK, PUBACK, PUBLISH, PUBREC, PUBREL, Client, Closed, ack_packet, connect_packet,
                      publish_packet, sub_options, subscribe_packet)
from nats_js import NatsRequester
from test_cluster import NATS_SERVER, link, nats  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed")
SLOW = 3 if SANITIZED else 1
SESSION = {0x11: 3600}  # Session Expiry Interval 3600 s

SEED = int(os.environ.get("MQTTOOLS_HA_SEED", "25"))
# 20 rounds as the issue asks. Under ASan the nodes are slower but the
# round's cost is mostly fixed waits (the 1.5 s hand-over wait, the
# replay after a NATS reconnect), so the same 20 rounds fit.
ROUNDS = int(os.environ.get("MQTTOOLS_HA_ROUNDS", "20"))
PUBLISH_SECONDS = 2.0
RATE = int(os.environ.get("MQTTOOLS_HA_RATE", "100"))  # messages/s per publisher
WINDOW = 10          # QoS 1 messages in flight per publisher
HOLD_TIMEOUT_MS = 5000


class Cluster:
    """Three nodes, restartable under their node ids (a restarted node
    listens on a new port); which ones are alive, under a lock, for the
    clients choosing where to reconnect."""

    def __init__(self, tmp_path, nats, n=3, hold_timeout_ms=HOLD_TIMEOUT_MS):
        self.tmp_path, self.nats, self.hold_timeout_ms = tmp_path, nats, hold_timeout_ms
        self.lock = threading.Lock()
        self.nodes = [None] * n
        self.alive = [False] * n
        self.dead = []  # killed Brokers, closed at the end
        for i in range(n):
            self.start(i)

    def start(self, i):
        # max_queued_messages = 0 (no limit): a subscriber resuming after
        # its node died gets the replayed backlog at once; the default
        # 1,000 would drop the overflow by design and read as a loss.
        config = (f"allow_anonymous = true\nmax_queued_messages = 0\n[cluster]\n"
                  f"nats_url = \"{self.nats.url}\"\nnode_id = \"node{i + 1}\"\n"
                  f"hold_timeout = {self.hold_timeout_ms}\n")
        b = Broker(self.tmp_path, config=config)
        with self.lock:
            self.nodes[i], self.alive[i] = b, True

    def kill(self, i):
        with self.lock:
            self.alive[i] = False  # nobody picks it from now on
            b = self.nodes[i]
        b.proc.kill()
        b.proc.wait()
        self.dead.append(b)

    def port(self, i):
        with self.lock:
            return self.nodes[i].port if self.alive[i] else None

    def live(self):
        with self.lock:
            return [i for i in range(len(self.nodes)) if self.alive[i]]

    def stop(self):
        bad = []
        for b in self.nodes + self.dead:
            code = b.stop()
            if code not in (0, -9):
                bad.append(f"node exited with {code}:\n{b.output()[-3000:]}")
        return bad


class Subscriber(threading.Thread):
    """A persistent QoS 1 subscriber to c/#, acknowledging as it reads;
    when its connection breaks it resumes (Clean Start 0) on a random
    surviving node and records the CONNACK's Session Present."""

    def __init__(self, cluster, k, rng):
        super().__init__(daemon=True)
        self.cluster, self.cid, self.rng = cluster, f"sub{k}", rng
        self.lock = threading.Lock()
        self.got = set()
        self.events = []       # (round, text) of every resume
        self.lost_session = []  # resumes answered with Session Present 0
        self.round = 0
        self.stopping = threading.Event()
        self.move_to, self.moved = None, threading.Event()
        self.node = k
        self.conn = Client(cluster.port(k))
        self.conn.connect(self.cid, clean_start=True, properties=SESSION)
        self.conn.subscribe([("c/#", sub_options(1))])

    def received(self, prefix):
        with self.lock:
            return {p for p in self.got if p.startswith(prefix)}

    def run(self):
        while not self.stopping.is_set():
            if self.move_to is not None:
                # A clean move (DISCONNECT keeps the session): the live
                # hand-over between two nodes.
                self.conn.disconnect()
                self.resume_elsewhere(self.move_to)
                self.move_to = None
                self.moved.set()
                continue
            try:
                p = self.conn.recv(0.2)
            except TimeoutError:
                continue
            except (Closed, OSError):
                self.resume_elsewhere()
                continue
            if p.type == PUBLISH:
                with self.lock:
                    self.got.add(p.payload)
                if p.qos:
                    try:
                        self.conn.send(ack_packet(PUBACK, p.packet_id))
                    except OSError:
                        pass

    def resume_elsewhere(self, target=None):
        """Reconnects with Clean Start 0, to `target` or a random live node
        other than the one it was on; retries for a while (a node chosen
        may die meanwhile in a later round, not this one)."""
        t0 = time.monotonic()
        self.conn.close()
        deadline = t0 + 30 * SLOW
        while time.monotonic() < deadline and not self.stopping.is_set():
            choices = [i for i in self.cluster.live() if i != self.node] or self.cluster.live()
            node = target if target is not None else self.rng.choice(sorted(choices))
            port = self.cluster.port(node)
            if port is None:
                time.sleep(0.05)
                continue
            try:
                c = Client(port, timeout=20 * SLOW)
                c.send(connect_packet(self.cid, 5, False, 60, properties=SESSION))
                ack = c.expect(CONNACK, timeout=20 * SLOW)
            except (Closed, OSError, TimeoutError, AssertionError):
                time.sleep(0.1)
                continue
            took = time.monotonic() - t0
            self.conn, self.node = c, node
            self.events.append((self.round, f"{self.cid} -> node{node + 1} in {took:.2f} s, "
                                            f"Session Present {int(ack.session_present)}"))
            if not ack.session_present or ack.reason:
                self.lost_session.append((self.round, node, ack.reason))
                # Subscribed again so that later rounds still count.
                c.send(subscribe_packet([("c/#", sub_options(1))], packet_id=2))
            return
        raise AssertionError(f"{self.cid} could not resume on any node")


class Publisher:
    """A QoS 1 publisher on c/pK with WINDOW in flight at RATE; a broken
    connection is reopened on a random surviving node. Payloads
    b"rROUND pK SEQ"; acked holds those acknowledged with a success code."""

    def __init__(self, cluster, k, rng):
        self.cluster, self.k, self.rng = cluster, k, rng
        self.conn, self.node = None, None
        self.refused = 0

    def connect(self, node):
        if self.conn:
            self.conn.disconnect()
        c = Client(self.cluster.port(node), timeout=10 * SLOW)
        assert c.connect(f"pub{self.k}").reason == 0
        self.conn, self.node = c, node

    def reconnect_elsewhere(self):
        deadline = time.monotonic() + 30 * SLOW
        while time.monotonic() < deadline:
            live = self.cluster.live()
            node = self.rng.choice(live) if live else None
            port = self.cluster.port(node) if node is not None else None
            if port is None:
                time.sleep(0.05)
                continue
            try:
                c = Client(port, timeout=10 * SLOW)
                if c.connect(f"pub{self.k}").reason == 0:
                    self.conn, self.node = c, node
                    return
            except (Closed, OSError, TimeoutError, AssertionError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"pub{self.k} could not reconnect")

    def run_round(self, rnd, seconds, out):
        acked, in_flight, seq, pid = set(), {}, 0, 0
        start = time.monotonic()
        end = start + seconds
        while True:
            now = time.monotonic()
            sending = now < end
            if not sending and (not in_flight or now > end + (HOLD_TIMEOUT_MS / 1000 + 5) * SLOW):
                break
            try:
                due = start + seq / RATE
                if sending and len(in_flight) < WINDOW and now >= due:
                    seq += 1
                    pid = pid % 65000 + 1
                    payload = b"r%d p%d %d" % (rnd, self.k, seq)
                    in_flight[pid] = payload
                    self.conn.send(publish_packet(f"c/p{self.k}", payload, qos=1, packet_id=pid))
                    continue
                wait = max(0.001, due - now) if sending and len(in_flight) < WINDOW else 0.2
                try:
                    p = self.conn.recv(wait)
                except TimeoutError:
                    continue
                if p.type == PUBACK and p.packet_id in in_flight:
                    payload = in_flight.pop(p.packet_id)
                    if p.reason < 0x80:
                        acked.add(payload)
                    else:
                        self.refused += 1
            except (Closed, OSError):
                in_flight.clear()  # never acknowledged: not counted
                self.reconnect_elsewhere()
        out[self.k] = (acked, seq)


def test_twenty_random_kills_lose_nothing_acknowledged(tmp_path, nats):
    rng = random.Random(SEED)
    print(f"\nMQTTOOLS_HA_SEED={SEED} ({ROUNDS} rounds)")
    cluster = Cluster(tmp_path, nats)
    subs = [Subscriber(cluster, k, random.Random(SEED * 10 + k)) for k in range(3)]
    pubs = [Publisher(cluster, k, random.Random(SEED * 20 + k)) for k in range(3)]
    failures, log = [], []
    try:
        for s in subs:
            s.start()
        # Every subscription has crossed to every node before round 0.
        for k, p in enumerate(pubs):
            p.connect((k + 1) % 3)
        deadline = time.monotonic() + 15 * SLOW
        n = 0
        while time.monotonic() < deadline:
            n += 1
            for p in pubs:
                p.conn.publish(f"c/p{p.k}", b"link %d" % n, qos=1, packet_id=1)
            if all(s.received(b"link") for s in subs):
                break
            time.sleep(0.1)
        assert all(s.received(b"link") for s in subs), "subscriptions never crossed NATS"

        for rnd in range(ROUNDS):
            # Killed nodes come back (same node id, a new port); every node
            # gets a publisher, and a subscriber where it has none.
            for i in range(3):
                if not cluster.alive[i]:
                    cluster.start(i)
            for s in subs:
                s.round = rnd
            for i in range(3):
                if not any(s.node == i for s in subs):
                    crowded = max(range(3), key=lambda j: sum(s.node == j for s in subs))
                    mover = next(s for s in subs if s.node == crowded)
                    mover.moved.clear()
                    mover.move_to = i
                    assert mover.moved.wait(30 * SLOW), f"{mover.cid} did not move"
            for k, p in enumerate(pubs):
                p.connect((k + rnd) % 3)

            victim = rng.choice(["node1", "node2", "node3", "nats"])
            at = rng.uniform(0.2, PUBLISH_SECONDS - 0.2)
            out = {}
            threads = [threading.Thread(target=p.run_round, args=(rnd, PUBLISH_SECONDS, out)) for p in pubs]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            if victim == "nats":
                nats.stop(signal.SIGKILL)
                time.sleep(0.5)
                nats.start()
            else:
                cluster.kill(int(victim[-1]) - 1)
            for t in threads:
                t.join(timeout=60 * SLOW)
            assert len(out) == 3, f"seed {SEED} round {rnd}: a publisher did not finish"
            acked = set().union(*(a for a, _ in out.values()))
            sent = sum(n for _, n in out.values())
            prefix = b"r%d " % rnd
            deadline = time.monotonic() + 30 * SLOW
            while time.monotonic() < deadline and not all(acked <= s.received(prefix) for s in subs):
                time.sleep(0.1)
            lost = {s.cid: sorted(acked - s.received(prefix)) for s in subs}
            line = (f"round {rnd:2}: kill {victim} at {at:.2f} s; sent {sent}, acknowledged {len(acked)}; "
                    + ", ".join(f"{s.cid} on node{s.node + 1} got {len(s.received(prefix) & acked)} "
                                f"lost {len(lost[s.cid])}" for s in subs))
            log.append(line)
            print(line)
            for s in subs:
                for r, text in s.events:
                    if r == rnd:
                        print("   ", text)
            if any(lost.values()):
                failures.append(line + "; first lost: "
                                + "; ".join(f"{c}: {v[:5]}" for c, v in lost.items() if v))
    finally:
        for s in subs:
            s.stopping.set()
        for s in subs:
            s.join(timeout=30)
        bad = cluster.stop()
    lost_sessions = [(s.cid, x) for s in subs for x in s.lost_session]
    assert not failures, f"MQTTOOLS_HA_SEED={SEED}: acknowledged messages lost in " \
                         f"{len(failures)} of {ROUNDS} rounds:\n" + "\n".join(failures)
    assert not lost_sessions, f"MQTTOOLS_HA_SEED={SEED}: Session Present 0 on resume: {lost_sessions}"
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("qos", [1, 2])
def test_a_message_stored_late_reaches_a_session_resumed_meanwhile(tmp_path, nats, qos):
    # The random test's loss made deterministic: the stream refuses stores
    # for a while (max_msgs reached, discard new) while NATS core carries
    # the live copies; the subscriber's node dies, the subscriber resumes
    # on the node that had the live copies (a watcher there subscribed),
    # then the stream takes the stores again and the publisher gets its
    # PUBACKs. Every acknowledged message must reach the subscriber (it
    # was lost, 9-10 of 10, before the resumed session's replay stayed open
    # for hold_timeout), and none twice: messages published after the
    # resume come live and from the stream's late part too (QoS 2: each to
    # the application once; QoS 1: not sent again either).
    from test_cluster_ha import Receiver
    cluster = Cluster(tmp_path, nats, hold_timeout_ms=15000)
    try:
        sub = Client(cluster.port(1))
        sub.connect("late-sub", clean_start=True, properties=SESSION)
        sub.subscribe([("late/#", sub_options(qos))])
        watcher = Client(cluster.port(2))
        watcher.connect("late-watch")
        watcher.subscribe([("late/#", sub_options(0))])
        pub = Client(cluster.port(0))
        pub.connect("late-pub")
        link(pub, sub, "late/probe")
        link(pub, watcher, "late/probe")
        time.sleep(0.7)  # the subscriber's record is written
        js = NatsRequester(nats.port)
        info = js.request("$JS.API.STREAM.INFO.MQTT_MSGS_mqtt")
        config = info["config"]
        held = dict(config, max_msgs=max(1, info["state"]["messages"]), discard="new")
        assert "error" not in js.request("$JS.API.STREAM.UPDATE.MQTT_MSGS_mqtt", held), "stream update refused"
        cluster.kill(1)
        for i in range(10):
            pub.send(publish_packet("late/x", b"%d" % i, qos=qos, packet_id=100 + i))
        seen = [p.payload for p in watcher.messages(quiet=1.0) if p.topic == "late/x"]
        assert len(seen) == 10, f"the live copies did not cross: {seen}"
        again = Client(cluster.port(2), timeout=20 * SLOW)
        again.send(connect_packet("late-sub", 5, False, 60, properties=SESSION))
        ack = again.expect(CONNACK, timeout=20 * SLOW)
        assert ack.session_present, "Session Present 0 after the node died"
        assert "error" not in js.request("$JS.API.STREAM.UPDATE.MQTT_MSGS_mqtt", config), "stream update refused"
        r = Receiver()
        stop = r.pump_in_background(again)
        try:
            acked = set()
            for i in range(10, 20):  # after the resume: live, and in the stream's late part
                pub.send(publish_packet("late/x", b"%d" % i, qos=qos, packet_id=100 + i))
            deadline = time.monotonic() + 20 * SLOW
            while len(acked) < 20 and time.monotonic() < deadline:
                try:
                    p = pub.recv(1)
                except TimeoutError:
                    continue
                if p.type in (PUBACK, PUBREC) and p.reason < 0x80:
                    acked.add(b"%d" % (p.packet_id - 100))
                    if p.type == PUBREC:
                        pub.send(ack_packet(PUBREL, p.packet_id))
            assert len(acked) == 20, f"only {len(acked)} of 20 acknowledged once the stream took them"
            deadline = time.monotonic() + 10 * SLOW
            while not acked <= set(r.got) and time.monotonic() < deadline:
                time.sleep(0.2)
            # The stream's late part reads each message within ~0.1 s of
            # its store: a second copy would come in this time.
            time.sleep(2 * SLOW)
        finally:
            stop()
        missing = acked - set(r.got)
        assert not missing, f"{len(missing)} of 20 acknowledged never delivered to the resumed session"
        twice = sorted(x for x in set(r.got) if r.got.count(x) > 1)
        assert not twice, f"delivered twice to the application (QoS {qos}): {twice}"
    finally:
        bad = cluster.stop()
    assert not bad, "\n".join(bad)
