"""Resource bounds: max_connections, subscription and topic-level caps,
memory_limit, and a slow consumer that must not take the broker down."""
import socket
import struct
import threading
import time

import pytest

from conftest import MQTTOOLSD, SANITIZED
from test_deploy_util import wait_until
from test_security_mqtt import RawClient, Closed, packet, utf8, PUBLISH

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

QUOTA_EXCEEDED = 0x97


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def refused(client, **kw):
    """CONNECT; True when the broker says 0x97 or just closes the connection."""
    try:
        return client.connect(**kw)[1] == QUOTA_EXCEEDED
    except (Closed, ConnectionError):
        return True


def test_max_connections(start_broker):
    b = start_broker(config="max_connections = 2\n")
    first, second = RawClient(b.port), RawClient(b.port)
    assert first.connect(client_id="c1")[1] == 0
    assert second.connect(client_id="c2")[1] == 0
    third = RawClient(b.port)
    assert refused(third, client_id="c3")
    third.close()
    first.disconnect()
    # The slot is free again once the broker has seen the disconnect.
    deadline = time.monotonic() + 5
    while True:
        again = RawClient(b.port)
        try:
            code = again.connect(client_id="c4")[1]
        except (Closed, ConnectionError):
            code = QUOTA_EXCEEDED
        if code == 0:
            break
        again.close()
        assert time.monotonic() < deadline, "slot never freed"
        time.sleep(0.05)
    again.disconnect()
    second.disconnect()


def test_subscription_and_topic_level_caps(start_broker):
    b = start_broker(config="max_subscriptions_per_client = 2\nmax_topic_levels = 3\n")
    c = RawClient(b.port)
    assert c.connect(client_id="caps")[1] == 0
    assert c.subscribe(["a/b/c", "a/b/c/d"]) == [0, QUOTA_EXCEEDED]
    assert c.subscribe(["x", "y", "a/b/c"], packet_id=2) == [0, QUOTA_EXCEEDED, 0]  # a/b/c: replaced
    assert c.publish("a/b/c/d", "deep", qos=1, packet_id=3) == QUOTA_EXCEEDED
    assert c.publish("a/b/c", "ok", qos=1, packet_id=4) == 0
    assert c.next_publish()[:2] == ("a/b/c", b"ok")
    c.disconnect()


def test_memory_limit_refuses_new_work(start_broker):
    limit = 48 << 20
    b = start_broker(config=f"memory_limit = {limit}\nmax_queued_bytes = 0\n")
    pub = RawClient(b.port)
    assert pub.connect(client_id="filler")[1] == 0
    payload = b"m" * (1 << 20)
    codes = []
    # Retained messages stay in memory: keep adding until the broker says no.
    for i in range(1, 160):
        code = pub.publish(f"fill/{i}", payload, qos=1, retain=True, packet_id=i)
        codes.append(code)
        if code == QUOTA_EXCEEDED:
            break
    assert codes[-1] == QUOTA_EXCEEDED, "memory_limit never refused a publish"
    assert len(codes) > 8  # it did accept work below the limit
    if not SANITIZED:  # ASan's shadow memory and quarantine are not the broker's
        assert rss_bytes(b.proc.pid) < limit * 3
    late = RawClient(b.port)
    assert refused(late, client_id="late")
    late.close()
    # Clearing the retained messages frees the memory, and work is accepted again.
    # (An empty retained message only frees memory: it is accepted over the limit.)
    for i in range(1, len(codes)):
        assert pub.publish(f"fill/{i}", b"", qos=1, retain=True, packet_id=i) in (0, 0x10)
    deadline = time.monotonic() + 5
    while True:
        again = RawClient(b.port)
        try:
            code = again.connect(client_id="again")[1]
        except (Closed, ConnectionError):
            code = QUOTA_EXCEEDED
        if code == 0:
            break
        again.close()
        assert time.monotonic() < deadline, "still refusing after memory was freed"
        time.sleep(0.1)
    again.disconnect()
    pub.disconnect()


def test_slow_consumer_does_not_grow_the_broker(start_broker):
    total = (128 if SANITIZED else 1024) << 20  # the 1 GiB; less under ASan
    bound = 8 << 20
    b = start_broker(config=f"max_client_output_bytes = {bound}\nmax_queued_messages = 100\n")
    baseline = rss_bytes(b.proc.pid)

    # The stuck subscriber: subscribes, then never reads again.
    stuck = RawClient(b.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    assert stuck.connect(client_id="stuck")[1] == 0
    assert stuck.subscribe(["load/#", "ping"]) == [0, 0]

    # A healthy subscriber reads everything in a thread.
    healthy = RawClient(b.port)
    assert healthy.connect(client_id="healthy")[1] == 0
    assert healthy.subscribe(["ping"], qos=1) == [1]
    pings = []
    stop = threading.Event()

    def read_healthy():
        while not stop.is_set():
            try:
                topic, payload, _, _ = healthy.next_publish(timeout=0.5)
                pings.append(payload)
            except TimeoutError:
                continue
            except (Closed, OSError):
                return

    reader = threading.Thread(target=read_healthy, daemon=True)
    reader.start()

    peak = [baseline]

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes(b.proc.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    pub = RawClient(b.port)
    assert pub.connect(client_id="firehose")[1] == 0
    chunk = 64 << 10
    frame = packet(PUBLISH, 0, utf8("load/x") + b"\x00" + b"z" * chunk)
    sent, n = 0, 0
    deadline = time.monotonic() + 60
    pinger = RawClient(b.port)
    assert pinger.connect(client_id="pinger")[1] == 0
    while sent < total and time.monotonic() < deadline:
        pub.send(frame * 16)
        sent += 16 * chunk
        n += 1
        if n % 8 == 0:
            assert pinger.publish("ping", str(n), qos=1, packet_id=(n // 8) % 60000 + 1) in (0, 0x10)
    assert sent >= total, f"only {sent >> 20} MiB sent in 60 s"
    pub.ping(timeout=30)  # the broker has handled every publish
    expected = n // 8
    t_end = time.monotonic() + 10
    while len(pings) < expected and time.monotonic() < t_end:
        time.sleep(0.05)
    stop.set()
    reader.join(2)
    watcher.join(2)
    assert len(pings) == expected, "the healthy subscriber stopped receiving"
    growth = peak[0] - baseline
    print(f"slow consumer: sent {sent >> 20} MiB, {expected} pings received, "
          f"RSS {baseline >> 20} -> peak {peak[0] >> 20} MiB")
    # Bounded by the per-client output bound plus buffers, not by the volume sent.
    assert growth < 6 * bound + (32 << 20), f"RSS grew {growth >> 20} MiB for {total >> 20} MiB sent"
    assert b.proc.poll() is None
    for c in (pub, pinger, healthy, stuck):
        c.close()


@pytest.mark.parametrize("timeout", [2, 0])
def test_stuck_client_timeout(start_broker, timeout):
    """A client whose output stays over max_client_output_bytes for
    stuck_client_timeout seconds is disconnected (0 = never); the others go on."""
    b = start_broker(config=f"max_client_output_bytes = 65536\nstuck_client_timeout = {timeout}\n")
    stuck = RawClient(b.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    assert stuck.connect(client_id="stuck")[1] == 0
    assert stuck.subscribe(["load/#"]) == [0]
    healthy = RawClient(b.port)
    assert healthy.connect(client_id="healthy")[1] == 0
    assert healthy.subscribe(["ping"], qos=1) == [1]
    pub = RawClient(b.port)
    assert pub.connect(client_id="pub")[1] == 0
    frame = packet(PUBLISH, 0, utf8("load/x") + b"\x00" + b"z" * (16 << 10))
    # 32 MiB in all: past the bound once the kernel's send buffer towards
    # the stuck client (autotuned up to several MiB on loopback) is full.
    for _ in range(512):
        pub.send(frame * 4)
    pub.ping()
    went_over = time.monotonic()
    line = "Client stuck has not read its output"
    wait_until(lambda: line in b.output(), timeout + 3 if timeout else 4, step=0.1)
    if timeout:
        assert line in b.output(), b.output()
        # Housekeeping notices the bound within a second, then waits the timeout.
        assert time.monotonic() - went_over >= timeout - 1
        with pytest.raises(Closed):
            while True:  # what was queued, then the end of the connection
                stuck.recv(timeout=5)
    else:
        assert line not in b.output()
        stuck.ping(timeout=10)  # still connected: it reads its backlog, then answers
    # The other clients were not affected.
    assert pub.publish("ping", "after", qos=1, packet_id=7) == 0
    flags, body = healthy.recv_type(PUBLISH)
    assert body.endswith(b"after")
    for c in (pub, healthy, stuck):
        c.close()
