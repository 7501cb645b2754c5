"""A node out of touch with its cluster (issue 25): cut off from NATS for
longer than `[cluster] disconnect_after` it sends its clients away; frozen
(SIGSTOP) for longer than another node waits for it, it finds on SIGCONT
that its sessions were resumed elsewhere and drops them (0x8E) without
sending anything twice."""
import signal
import threading
import time

import pytest

from conftest import wait_until
from mqttwire import CONNACK, DISCONNECT, PUBLISH, Client, connect_packet, sub_options
from test_cluster import connect, link, nats  # noqa: F401 (fixture)
from test_cluster_ha import (SESSION, SLOW, Receiver, check_delivered, ha_nodes, pair,  # noqa: F401 (fixture)
                             publish_acked, pytestmark, resume)

__all__ = ["pytestmark"]


def test_a_node_cut_off_from_nats_past_the_bound_sends_its_clients_away(ha_nodes, nats):
    # nats-server killed for good: after disconnect_after the node closes
    # its clients (MQTT 5: DISCONNECT 0x9C Use another server) and refuses
    # CONNECTs (0x88; 3.1.1: 3 Server unavailable) instead of serving them
    # cut off from the cluster. Back once NATS is.
    (a,) = ha_nodes(1, cluster="disconnect_after = 1000")
    v5 = connect(a.port, "v5")
    v5.subscribe([("c/#", sub_options(1))])
    v3 = Client(a.port, version=4)
    assert v3.connect("v3").reason == 0
    assert v5.publish("c/x", b"before", qos=1, packet_id=1).reason == 0
    assert v5.expect(PUBLISH).payload == b"before"
    t0 = time.monotonic()
    nats.stop(signal.SIGKILL)
    got = v5.expect_closed(timeout=15 * SLOW)
    held = time.monotonic() - t0
    assert [(p.type, p.reason) for p in got if p.type == DISCONNECT] == [(DISCONNECT, 0x9C)], got
    assert held >= 0.9, f"disconnected after {held:.2f} s, before the bound"
    v3.expect_closed(timeout=5 * SLOW)
    again = Client(a.port)
    again.send(connect_packet("v5", 5, False, 60, properties=SESSION))
    assert again.expect(CONNACK).reason == 0x88
    old = Client(a.port, version=4)
    assert old.connect("v3b").reason == 3
    nats.start()

    def accepted():
        c = Client(a.port)
        ok = c.connect("v5", clean_start=False, properties=SESSION).reason == 0
        c.close()
        return ok

    assert wait_until(accepted, timeout=20 * SLOW)


class DupReceiver(Receiver):
    """Also notes every delivery's DUP flag."""

    def __init__(self):
        super().__init__()
        self.deliveries = []  # (payload, dup)

    def take(self, c, p):
        if p.type == PUBLISH:
            self.deliveries.append((p.payload, p.dup))
        super().take(c, p)

    def twice_without_dup(self):
        seen, out = set(), []
        for payload, dup in self.deliveries:
            if payload in seen and not dup:
                out.append(payload)
            seen.add(payload)
        return out


@pytest.mark.parametrize("claims", ["kept", "lost"])
def test_a_frozen_node_gives_up_the_sessions_resumed_elsewhere(ha_nodes, nats, claims):
    # Node a frozen (SIGSTOP) under a QoS 1 stream to its subscriber; the
    # subscriber gives up on it and resumes on b (Session Present 1) while
    # its old connection stays open. On SIGCONT a learns that b owns the
    # session: the old connection gets DISCONNECT 0x8E and not one PUBLISH
    # more; every acknowledged message reached the subscriber, and none
    # twice without DUP. "kept": b's claim waits in a's NATS connection;
    # "lost": nats-server restarted while a was frozen, so the claim never
    # reaches a, which must ask the ownership bucket.
    a, b = ha_nodes(2)
    sub, pub = pair(a.port, b.port, "f1", "f", 1)
    r = DupReceiver()
    finish = r.pump_in_background(sub)
    frozen = threading.Event()

    def freeze():
        a.proc.send_signal(signal.SIGSTOP)
        frozen.set()
        if claims == "lost":
            nats.stop(signal.SIGKILL)
            time.sleep(0.3)
            nats.start()

    payloads = [b"%d" % i for i in range(300)]
    try:
        acked = publish_acked(pub, "f/x", payloads, 1, rate=150, on_half=freeze)
    finally:
        finish()
    assert frozen.is_set()
    try:
        r.pump(sub, 0.5)  # what a sent before it froze
        again, ack = resume(b.port, "f1")
        assert ack.session_present, "Session Present 0 after the node froze"
        r.drain(again, acked, 20)
        time.sleep(0.5)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    after = sub.expect_closed(timeout=15 * SLOW)
    assert [p.type for p in after] == [DISCONNECT], after
    assert after[0].reason == 0x8E, after
    r.pump(again, 1.0)
    check_delivered(r, acked, 1)
    twice = r.twice_without_dup()
    assert not twice, f"{len(twice)} delivered twice without DUP: {twice[:10]}"
    assert wait_until(lambda: "dropping it here" in a.log_path.read_text(errors="replace"), timeout=5 * SLOW)
    # a is a working node again: its clients are served.
    c = connect(a.port, "after")
    assert c.publish("f/y", b"1", qos=1, packet_id=1).reason == 0


def test_disconnect_after_errors_name_file_line_and_key(tmp_path):
    from conftest import refused_config_output
    for bad in ("50", "-1", '"10s"', "3600001"):
        conf = tmp_path / "bad.toml"
        conf.write_text(f'[cluster]\nnats_url = "nats://127.0.0.1:1"\ndisconnect_after = {bad}\n')
        err = refused_config_output(conf, bad)
        assert f"{conf}:3:" in err and "cluster.disconnect_after" in err and "0 (never)" in err, err
