"""Password checks off the reactor: a $7$ (PBKDF2) hash runs on the broker's
worker threads while the CONNECT waits, so connected clients are not stalled
by a storm of authenticated connects. The waiting connection must cope with
packets sent before its CONNACK, a hang-up, a refusal and a takeover."""
import statistics
import subprocess
import threading
import time

import pytest

from conftest import MQTTOOLS, MQTTOOLSD
from mqttwire import (CONNACK, DISCONNECT, PINGRESP, PUBACK, PUBLISH, SUBACK, SESSION_EXPIRY_INTERVAL,
                      Client, Closed, connect_packet, publish_packet, subscribe_packet, PINGREQ_PACKET)

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

SLOW_ITERATIONS = 200_000   # about 0.1-0.3 s of PBKDF2-SHA512 per check
SLOWER_ITERATIONS = 800_000


def passwd(path, user, password, iterations, create=False):
    cmd = [str(MQTTOOLS), "passwd", "-I", str(iterations)] + (["-c"] if create else []) + \
          ["-b", str(path), user, password]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


@pytest.fixture(scope="module")
def pwfile(tmp_path_factory):
    path = tmp_path_factory.mktemp("pw") / "passwords"
    passwd(path, "alice", "wonderland", SLOW_ITERATIONS, create=True)
    passwd(path, "slow", "snail", SLOWER_ITERATIONS)
    passwd(path, "fast", "hare", 1000)
    return path


@pytest.fixture
def secured(start_broker, pwfile):
    # Anonymous clients are let in without a hash: they are the "already
    # connected" clients whose latency is watched.
    return start_broker(config=f'allow_anonymous = true\npassword_file = "{pwfile}"\n')


def timed_connect(port, **kw):
    c = Client(port)
    t0 = time.monotonic()
    ack = c.connect(**kw)
    return c, ack, time.monotonic() - t0


def test_hashing_connects_do_not_stall_connected_clients(secured):
    # One check alone: what the reactor would freeze for per CONNECT.
    c, ack, t_hash = timed_connect(secured.port, client_id="calibrate", username="alice",
                                   password=b"wonderland")
    assert ack.reason == 0
    c.disconnect()

    watcher = Client(secured.port)
    assert watcher.connect("watcher").reason == 0
    storm = []
    for i in range(8):
        s = Client(secured.port, timeout=60)
        s.send(connect_packet(f"storm{i}", username="alice", password=b"wonderland"))
        storm.append(s)
    acks = {}

    def collect():
        for i, s in enumerate(storm):
            acks[i] = s.expect(CONNACK, timeout=60)

    t = threading.Thread(target=collect)
    t.start()
    rtts = []
    deadline = time.monotonic() + 60
    while t.is_alive() and time.monotonic() < deadline:
        t0 = time.monotonic()
        watcher.ping(timeout=30)
        rtts.append(time.monotonic() - t0)
        time.sleep(0.005)
    t.join(timeout=60)
    assert len(acks) == 8 and all(a.reason == 0 for a in acks.values())
    # Eight hashes take about 8 * t_hash of CPU; checked on the reactor they
    # would hold every ping for a whole hash or more.
    assert len(rtts) >= 5, (rtts, t_hash)
    assert statistics.median(rtts) < t_hash / 4, (rtts, t_hash)
    for s in storm:
        s.ping()
        s.disconnect()
    watcher.disconnect()


def test_packets_sent_before_connack_are_processed_after_it_in_order(secured):
    c = Client(secured.port, timeout=30)
    c.send(connect_packet("early", username="alice", password=b"wonderland") +
           subscribe_packet([("early/t", 1)], packet_id=7) +
           publish_packet("early/t", b"first", qos=1, packet_id=8) +
           PINGREQ_PACKET)
    got = []
    while not got or got[-1].type != PINGRESP:
        got.append(c.recv(timeout=30))
    assert got[0].type == CONNACK and got[0].reason == 0
    assert got[1].type == SUBACK and got[1].packet_id == 7
    types = [p.type for p in got]
    assert PUBACK in types and PUBLISH in types, got
    assert [p.payload for p in got if p.type == PUBLISH] == [b"first"]
    c.disconnect()


def test_refused_connect_ignores_what_followed(secured):
    # [MQTT-3.1.4-5]: nothing sent after a refused CONNECT is processed.
    c = Client(secured.port, timeout=30)
    c.send(connect_packet("liar", username="alice", password=b"not-it") +
           publish_packet("refused/t", b"must not be kept", retain=True))
    ack = c.expect(CONNACK, timeout=30)
    assert ack.reason == 0x86
    with pytest.raises((Closed, ConnectionError)):
        c.recv(timeout=5)
    c.close()
    check = Client(secured.port)
    assert check.connect("check").reason == 0
    check.subscribe([("refused/t", 0)])
    check.nothing(timeout=0.5)
    check.disconnect()


def test_hangup_while_pending_leaves_no_session(secured):
    for _ in range(3):
        c = Client(secured.port)
        c.send(connect_packet("gone", clean_start=False, username="alice", password=b"wonderland",
                              properties={SESSION_EXPIRY_INTERVAL: 300}))
        c.close()  # before the hash is done
    time.sleep(0.05)
    c, ack, _ = timed_connect(secured.port, client_id="gone", clean_start=False, username="alice",
                              password=b"wonderland", properties={SESSION_EXPIRY_INTERVAL: 300})
    assert ack.reason == 0
    # The clients that hung up never got a CONNACK, so no session was made.
    assert not ack.session_present
    c.ping()
    c.disconnect()


def test_takeover_follows_connect_order_not_hash_order(secured):
    # The first CONNECT's hash is four times slower than the second's, yet
    # the second client is the one that ends up with the session.
    first = Client(secured.port, timeout=60)
    first.send(connect_packet("same", username="slow", password=b"snail"))
    time.sleep(0.02)
    second = Client(secured.port, timeout=60)
    second.send(connect_packet("same", username="fast", password=b"hare"))
    assert first.expect(CONNACK, timeout=60).reason == 0
    d = first.expect(DISCONNECT, timeout=30)
    assert d.reason == 0x8E  # Session taken over
    assert second.expect(CONNACK, timeout=60).reason == 0
    second.ping()
    second.nothing(timeout=0.3)
    second.disconnect()
    first.close()


def test_shutdown_with_connects_pending_is_clean(start_broker, pwfile):
    b = start_broker(config=f'allow_anonymous = false\npassword_file = "{pwfile}"\n')
    clients = []
    for i in range(4):
        c = Client(b.port)
        c.send(connect_packet(f"p{i}", username="slow", password=b"snail"))
        clients.append(c)
    time.sleep(0.05)
    assert b.stop() == 0, b.output()
    for c in clients:
        c.close()
