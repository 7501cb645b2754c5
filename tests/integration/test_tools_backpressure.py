"""`mqttools subscribe` whose output is not read: the client's bounded
message queue (10,000 messages) makes it stop reading the broker, so its
memory stays bounded however much is published (the broker, not the client,
then deals with the slow consumer), and what it queued comes out in order."""
import os
import subprocess
import time

import pytest

from conftest import MQTTOOLS, MQTTOOLSD, SANITIZED
from test_tools_subscribe_publish import publish

pytestmark = [
    pytest.mark.skipif(not (MQTTOOLS.exists() and MQTTOOLSD.exists()), reason="mqttools or mqttoolsd not built"),
    # ASan's quarantine keeps freed memory resident: RSS says nothing there.
    pytest.mark.skipif(SANITIZED, reason="RSS is not meaningful under ASan"),
]

COUNT = 100_000
SIZE = 1000  # 100 MB published in all
QUEUE_BOUND = 10_000  # ClientOptions::max_queued_messages default


def peak_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def counter_of(message_line):
    """The publish counter from a `Message:` line (the payload is hex: the
    zero-padded counter, then 0xA5 bytes)."""
    value = message_line[len("Message:       "):]
    return int(bytes.fromhex(value).rstrip(b"\xa5").decode())


def test_unread_subscriber_memory_stays_bounded_and_queued_messages_come_in_order(broker):
    sub = subprocess.Popen([str(MQTTOOLS), "subscribe", "--port", str(broker.port), "bp/t"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Status lines are on stderr; stdout carries only messages.
        assert sub.stderr.readline() == f"Connecting to 'localhost:{broker.port}'.\n".encode()
        assert sub.stderr.readline() == b"Connected.\n"
        baseline = peak_rss_bytes(sub.pid)

        # Nobody reads the subscriber's output from here: its pipe fills, it
        # stops taking messages, its queue fills, it stops reading the socket.
        count, _, _, _ = publish(broker.port, "--count", COUNT, "--size", SIZE, "bp/t", timeout=60)
        assert count == COUNT
        time.sleep(0.5)  # whatever is still in flight reaches it
        grown = peak_rss_bytes(sub.pid) - baseline
        # The queue holds 10,000 messages of ~1 KB (plus per-message
        # overhead), the read buffer at most ~1 MB: far from the 100 MB sent.
        assert grown < 40 << 20, f"subscriber grew by {grown} bytes"
        assert sub.poll() is None

        # Reading again: the first messages (all queued, none dropped by the
        # client) come out complete and in order.
        counters = []
        while len(counters) < QUEUE_BOUND:
            line = sub.stdout.readline()
            assert line, sub.stderr.read().decode()
            if line.startswith(b"Message:"):
                counters.append(counter_of(line.decode().rstrip("\n")))
        assert counters == list(range(QUEUE_BOUND))
    finally:
        if sub.poll() is None:
            os.kill(sub.pid, 15)
        sub.communicate(timeout=10)
