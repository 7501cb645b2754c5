"""Cluster high availability (issue 25): with `[cluster] sessions =
"replicated"` (the default) QoS 1/2 messages and persistent sessions live
in JetStream, so a PUBACK means JetStream has the message and a session
whose node died resumes on any other node. These tests crash things
(kill -9 a node or nats-server, SIGSTOP) and count what was acknowledged
against what arrived."""
import os
import signal
import threading
import time

import pytest

from conftest import SANITIZED, Broker, freeze, wait_until
from mqttwire import (CONNACK, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, Client, Closed, ack_packet, connect_packet,
                      publish_packet, sub_options)
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
    # Every thread of nats-server stopped before the next PUBLISH: one
    # still running stored it now and then (that was the 0x00 seen at once).
    freeze(nats.proc)
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


SESSION = {0x11: 3600}  # Session Expiry Interval 3600 s


def resume(port, cid, timeout=20):
    """Reconnects `cid` with Clean Start 0; returns (client, CONNACK). A
    CONNACK 0x88 (Server unavailable: the node could not read the session's
    record or replay its messages in time) is tried again after 0.5 s, as a
    client with automatic reconnection does, until `timeout`."""
    end = time.monotonic() + timeout * SLOW
    while True:
        c = Client(port, timeout=timeout)
        c.send(connect_packet(cid, 5, False, 60, properties=SESSION))
        ack = c.expect(CONNACK, timeout=max(1.0, end - time.monotonic()))
        if ack.reason != 0x88 or time.monotonic() >= end:
            return c, ack
        print(f"\n{cid}: CONNACK 0x88 (Server unavailable), trying again")
        c.close()
        time.sleep(0.5)


class Receiver:
    """What one subscriber's application gets: QoS 2 delivered once per
    PUBLISH without DUP or with a packet id not seen unreleased (method B
    on the receiving side), acknowledged as it comes."""

    def __init__(self):
        self.got = []  # payloads in delivery order (the application's view)
        self.unreleased = set()

    def take(self, c, p):
        if p.qos == 2:
            if p.packet_id not in self.unreleased:
                self.got.append(p.payload)
                self.unreleased.add(p.packet_id)
            c.send(ack_packet(PUBREC, p.packet_id))
        else:
            self.got.append(p.payload)
            if p.qos == 1:
                c.send(ack_packet(PUBACK, p.packet_id))

    def pump(self, c, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                p = c.recv(min(0.2, max(0.01, end - time.monotonic())))
            except TimeoutError:
                continue
            if p.type == PUBLISH:
                self.take(c, p)
            elif p.type == PUBREL:
                self.unreleased.discard(p.packet_id)
                c.send(ack_packet(PUBCOMP, p.packet_id))

    def pump_in_background(self, c):
        """Pumps C on a thread (a closed connection ends it) until the
        returned function is called; that function waits for the thread."""
        stop = threading.Event()

        def read():
            while not stop.is_set():
                try:
                    self.pump(c, 0.2)
                except (Closed, OSError):
                    return

        t = threading.Thread(target=read)
        t.start()

        def finish():
            stop.set()
            t.join()
        return finish

    def drain(self, c, want, timeout):
        """Pumps until every payload of `want` arrived or `timeout`."""
        end = time.monotonic() + timeout * SLOW
        while time.monotonic() < end and not want <= set(self.got):
            self.pump(c, 0.3)
        self.pump(c, 0.5)


def publish_acked(pub, topic, payloads, qos, rate=None, on_half=None):
    """Publishes each payload at `qos` (20 in flight); returns the set of
    payloads acknowledged with a success code."""
    acked, in_flight, pid = set(), {}, 0
    interval = 1.0 / rate if rate else 0
    t_next = time.monotonic()
    half = len(payloads) // 2
    for i, payload in enumerate(payloads):
        if i == half and on_half:
            on_half()
        pid = pid % 65000 + 1
        in_flight[pid] = payload
        pub.send(publish_packet(topic, payload, qos=qos, packet_id=pid))
        if interval:
            t_next += interval
            while time.monotonic() < t_next:
                _collect(pub, acked, in_flight, max(0.0, t_next - time.monotonic()))
        while len(in_flight) >= 20:
            _collect(pub, acked, in_flight, 5 * SLOW)
    end = time.monotonic() + 10 * SLOW
    while in_flight and time.monotonic() < end:
        _collect(pub, acked, in_flight, 1)
    return acked


def _collect(pub, acked, in_flight, timeout):
    try:
        p = pub.recv(timeout)
    except TimeoutError:
        return
    if p.type in (PUBACK, PUBREC) and p.packet_id in in_flight:
        payload = in_flight.pop(p.packet_id)
        if p.reason < 0x80:
            acked.add(payload)
        if p.type == PUBREC:
            pub.send(ack_packet(PUBREL, p.packet_id))


def pair(sub_port, pub_port, cid, root, qos):
    """A subscriber `cid` (Session Expiry 3600) to ROOT/# on one node and a
    publisher on another, linked."""
    sub = Client(sub_port)
    sub.connect(cid, clean_start=True, properties=SESSION)
    sub.subscribe([(f"{root}/#", sub_options(qos))])
    pub = connect(pub_port, "p" + cid)
    link(pub, sub, f"{root}/probe")
    return sub, pub


def check_delivered(r, acked, qos):
    missing = acked - set(r.got)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged never delivered: {sorted(missing)[:10]}"
    if qos == 2:
        dups = len(r.got) - len(set(r.got))
        assert dups == 0, f"{dups} duplicates at QoS 2"


@pytest.mark.parametrize("qos", [1, 2])
def test_offline_session_survives_its_node_killed(ha_nodes, qos):
    # Row 1 of the issue: the subscriber's node is killed while the
    # subscriber is offline; it comes back on another node: Session
    # Present 1 and every acknowledged message, each once.
    a, b, c = ha_nodes(3)
    sub, pub = pair(a.port, b.port, "s1", "o", qos)
    sub.disconnect()
    time.sleep(0.3)
    payloads = [b"%d" % i for i in range(200)]
    acked = publish_acked(pub, "o/x", payloads, qos)
    assert len(acked) == 200
    time.sleep(0.3)
    a.proc.kill()
    a.proc.wait()
    t0 = time.monotonic()
    again, ack = resume(c.port, "s1")
    print(f"failover: CONNACK with Session Present after {time.monotonic() - t0:.3f} s")
    assert ack.session_present, "Session Present 0 after the node died"
    r = Receiver()
    r.drain(again, acked, 20)
    check_delivered(r, acked, qos)


@pytest.mark.parametrize("qos", [1, 2])
def test_connected_session_survives_its_node_killed_mid_stream(ha_nodes, qos):
    # Row 2: the subscriber's node is killed halfway through 400 messages
    # at 200/s; the subscriber reconnects to another node.
    a, b, c = ha_nodes(3)
    sub, pub = pair(a.port, b.port, "s2", "m", qos)
    r = Receiver()
    finish = r.pump_in_background(sub)

    def kill():
        a.proc.kill()
        a.proc.wait()

    payloads = [b"%d" % i for i in range(400)]
    try:
        acked = publish_acked(pub, "m/x", payloads, qos, rate=200, on_half=kill)
    finally:
        finish()
    assert len(acked) == 400
    again, ack = resume(c.port, "s2")
    assert ack.session_present, "Session Present 0 after the node died"
    r.drain(again, acked, 20)
    check_delivered(r, acked, qos)


@pytest.mark.parametrize("qos", [1, 2])
def test_nats_server_killed_and_restarted_loses_nothing_acknowledged(ha_nodes, nats, qos):
    # Row 3: nats-server killed halfway through 400 messages at 200/s and
    # restarted 0.5 s later: the clients stay connected, PUBACKs wait for
    # the stream, and every acknowledged message reaches the subscriber on
    # the other node (replayed from the stream after the reconnect).
    a, b = ha_nodes(2)
    sub, pub = pair(a.port, b.port, "s3", "n", qos)
    r = Receiver()
    finish = r.pump_in_background(sub)

    def bounce():
        nats.stop(signal.SIGKILL)
        time.sleep(0.5)
        nats.start()

    payloads = [b"%d" % i for i in range(400)]
    try:
        acked = publish_acked(pub, "n/x", payloads, qos, rate=200, on_half=bounce)
        end = time.monotonic() + 20 * SLOW
        while time.monotonic() < end and not acked <= set(r.got):
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        finish()
    assert len(acked) >= 300, f"only {len(acked)} acknowledged"
    check_delivered(r, acked, qos)


def test_ha_config_errors_name_file_line_and_key(tmp_path):
    from conftest import refused_config_output
    conf = tmp_path / "bad.toml"
    conf.write_text('[cluster]\nsessions = "everywhere"\nreplicas = 0\nhold_timeout = "5s"\n')
    err = refused_config_output(conf)
    assert f"{conf}:2:" in err and "cluster.sessions" in err and '"replicated" or "local"' in err
    assert f"{conf}:3:" in err and "cluster.replicas" in err
    assert f"{conf}:4:" in err and "cluster.hold_timeout" in err
