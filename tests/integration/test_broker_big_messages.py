"""Big messages (issue 17, scenario 5): a 16 MB QoS 1 payload for 10
subscribers is held once, not once per subscriber's output. Each
subscriber's output refers to the stored message, so the broker's peak RSS
grows by a few payload sizes (the publisher's read buffer and the stored
copy), not ten, even while one subscriber does not read at all; the others
get it whole and are not held up by the one that does not read."""
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import MQTTOOLSD, SLOW, wait_until
from mqttwire import PUBACK, PUBLISH, Client, Closed, Packet, ack_packet, publish_packet

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

SIZE = 16 << 20
READERS = 9


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def recv_big(c, timeout):
    """Client.recv for big packets: the body goes straight into one buffer
    (Client.recv's bytes concatenation is quadratic in the packet size)."""
    deadline = time.monotonic() + timeout
    c._fill(2, deadline)
    length, pos, mult = 0, 1, 1
    while True:
        c._fill(pos + 1, deadline)
        b = c.buf[pos]
        pos += 1
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    first = c.buf[0]
    body = bytearray(length)
    have = c.buf[pos:pos + length]
    body[:len(have)] = have
    c.buf = c.buf[pos + len(have):]
    got = len(have)
    view = memoryview(body)
    while got < length:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the big packet did not arrive in time")
        c.sock.settimeout(remaining)
        n = c.sock.recv_into(view[got:], length - got)
        if n == 0:
            raise Closed()
        got += n
    return Packet(first >> 4, first & 0x0F, body, c.version)


def subscribers(port, stuck_id="stuck"):
    """READERS subscribers that read, and one that never does (a 16 KiB
    receive buffer: the broker's socket to it fills at once)."""
    readers = []
    for i in range(READERS):
        c = Client(port, timeout=30)
        assert c.connect(f"reader-{i}").reason == 0
        assert c.subscribe([("big/#", 1)]).codes == [1]
        readers.append(c)
    stuck = Client(port, timeout=30)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    assert stuck.connect(stuck_id).reason == 0
    assert stuck.subscribe([("big/#", 1)]).codes == [1]
    return readers, stuck


def publish_big(port, payload):
    pub = Client(port, timeout=60)
    assert pub.connect("big-pub").reason == 0
    pub.send(publish_packet("big/firmware", payload, qos=1, packet_id=7))
    ack = pub.expect(PUBACK, timeout=60 * SLOW)
    assert ack.packet_id == 7 and ack.reason == 0
    return pub


def read_whole(c, payload):
    p = recv_big(c, timeout=60 * SLOW)
    assert p.type == PUBLISH and p.qos == 1 and p.topic == "big/firmware"
    assert len(p.payload) == len(payload) and p.payload == payload
    c.send(ack_packet(PUBACK, p.packet_id))


def read_all(readers, payload):
    """Every reader reads at once (a thread each: recv_into releases the
    GIL), as independent clients would."""
    with ThreadPoolExecutor(len(readers)) as pool:
        for f in [pool.submit(read_whole, c, payload) for c in readers]:
            f.result()


def test_16mb_to_ten_subscribers_is_held_once(start_broker):
    b = start_broker(config="stuck_client_timeout = 0\n")
    pid = b.proc.pid
    readers, stuck = subscribers(b.port)
    peak_before = status_kb(pid, "VmHWM")
    payload = os.urandom(SIZE)
    pub = publish_big(b.port, payload)
    read_all(readers, payload)
    peak = status_kb(pid, "VmHWM") - peak_before
    print(f"\npeak RSS growth for a {SIZE >> 20} MiB message to {READERS + 1} subscribers: {peak >> 10} MiB")
    # One payload per subscriber's output would be 10 copies (160 MiB and
    # more); held once it is the publisher's read buffer plus the stored
    # message, and (under ASan) their shadow.
    assert peak * 1024 < 4 * SIZE
    # The readers are not held up by the one that does not read: a small
    # message behind the big one reaches them at once.
    pub.send(publish_packet("big/status", b"done", qos=1, packet_id=8))
    pub.expect(PUBACK)
    for c in readers:
        p = c.expect(PUBLISH, timeout=5 * SLOW)
        assert p.topic == "big/status" and p.payload == b"done"
        c.ack(p)
    # The one that did not read gets it all when it starts reading: its
    # output still referred to the message the others acknowledged.
    read_whole(stuck, payload)
    p = stuck.expect(PUBLISH, timeout=5 * SLOW)
    assert p.topic == "big/status"
    stuck.ack(p)
    pub.ping()
    for c in readers + [stuck, pub]:
        c.disconnect()
    assert b.stop() == 0, b.output()


def test_a_stuck_subscriber_dropped_with_a_big_message_in_its_output(start_broker):
    # Dropped while its output refers to the message: freeing its output
    # releases the last reference (ASan checks nothing is used after).
    # The readers' outputs are over the (default) 8 MiB bound for a moment
    # too, while they read: 3 s is far longer than that takes.
    b = start_broker(config="stuck_client_timeout = 3\n")
    readers, stuck = subscribers(b.port)
    payload = os.urandom(SIZE)
    pub = publish_big(b.port, payload)
    read_all(readers, payload)
    assert wait_until(lambda: "Client stuck has not read its output" in b.output(), timeout=15)
    stuck.close()
    # A second big message: the readers get it, the broker is well.
    payload = os.urandom(SIZE)
    pub.send(publish_packet("big/firmware", payload, qos=1, packet_id=9))
    assert pub.expect(PUBACK, timeout=60 * SLOW).packet_id == 9
    read_all(readers, payload)
    assert not re.search(r"Client reader-\d+ has not read", b.output())
    pub.ping()
    for c in readers + [pub]:
        c.disconnect()
    assert b.stop() == 0, b.output()
