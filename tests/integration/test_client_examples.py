"""The two examples in docs/examples (the seed's subscriber and publisher,
on the C++ client library) against mqttoolsd."""
import subprocess

import pytest

from conftest import BUILD, MQTTOOLSD, free_port
from test_tools_subscribe_publish import Subscriber

SUBSCRIBER = BUILD / "docs" / "examples" / "subscriber"
PUBLISHER = BUILD / "docs" / "examples" / "publisher"

pytestmark = pytest.mark.skipif(not (SUBSCRIBER.exists() and PUBLISHER.exists() and MQTTOOLSD.exists()),
                                reason="examples or mqttoolsd not built")


class ExampleSubscriber(Subscriber):
    def __init__(self, port):
        self.port = port
        self.proc = subprocess.Popen([str(SUBSCRIBER), "localhost", str(port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = b""
        self.err = b""


def publish_until_seen(s, port):
    """The subscriber prints nothing until a message comes: publish until
    its subscription is in place."""
    for _ in range(100):
        r = subprocess.run([str(PUBLISHER), "localhost", str(port)], capture_output=True, timeout=15)
        assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
        try:
            s.read_until(b"Message: bar\n", timeout=0.1)
            return
        except AssertionError:
            continue
    raise AssertionError("the subscriber never got a message")


def test_publisher_to_subscriber(broker):
    s = ExampleSubscriber(broker.port)
    try:
        publish_until_seen(s, broker.port)
        first = s.out.count(b"Topic:   /test/mqttools/foo\nMessage: bar\n")
        assert first >= 1
        r = subprocess.run([str(PUBLISHER), "localhost", str(broker.port)], capture_output=True, timeout=15)
        assert r.returncode == 0
        s.read_until(b"Topic:   /test/mqttools/foo\nMessage: bar\n", count=first + 1)
        assert s.out == b"Topic:   /test/mqttools/foo\nMessage: bar\n" * (first + 1)
    finally:
        s.stop()


def test_subscriber_reports_a_lost_broker(start_broker):
    b = start_broker()
    s = ExampleSubscriber(b.port)
    try:
        publish_until_seen(s, b.port)
        b.stop()
        code, out, _ = s.finish(timeout=10)
        assert code == 1
        assert out.endswith("Broker connection lost!\n")
    finally:
        s.stop()


def test_publisher_with_broker_down():
    port = free_port()
    r = subprocess.run([str(PUBLISHER), "localhost", str(port)], capture_output=True, timeout=15)
    assert r.returncode == 1
    assert r.stderr.decode() == f"error: cannot connect to 'localhost:{port}': Connection refused\n"
