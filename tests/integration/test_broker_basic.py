"""mqttoolsd basics over real TCP: CONNECT/CONNACK, SUBSCRIBE, QoS 0
routing, PING, DISCONNECT, in MQTT 5 and 3.1.1, and Mosquitto's clients."""
import queue
import shutil
import subprocess
import threading
import time

import pytest

from conftest import MQTTOOLSD
from mqttwire import (Client, CONNACK, PUBLISH, PINGRESP, SUBACK, SHARED_SUBSCRIPTION_AVAILABLE,
                      RECEIVE_MAXIMUM, TOPIC_ALIAS_MAXIMUM, RETAIN_AVAILABLE,
                      WILDCARD_SUBSCRIPTION_AVAILABLE, SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                      ASSIGNED_CLIENT_IDENTIFIER)

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def test_connect_v5_advertises_capabilities(broker):
    c = Client(broker.port)
    ack = c.connect("basic-1")
    assert (ack.reason, ack.session_present) == (0, False)
    assert ack.prop(RECEIVE_MAXIMUM) == 65535
    assert ack.prop(TOPIC_ALIAS_MAXIMUM) == 10
    assert ack.prop(RETAIN_AVAILABLE) == 1
    assert ack.prop(WILDCARD_SUBSCRIPTION_AVAILABLE) == 1
    assert ack.prop(SUBSCRIPTION_IDENTIFIER_AVAILABLE) == 1
    assert ack.prop(SHARED_SUBSCRIPTION_AVAILABLE) == 1
    assert ack.prop(ASSIGNED_CLIENT_IDENTIFIER) is None
    c.disconnect()


def test_empty_client_id_gets_an_assigned_one(broker):
    c = Client(broker.port)
    ack = c.connect("")
    assert ack.reason == 0
    assigned = ack.prop(ASSIGNED_CLIENT_IDENTIFIER)
    assert assigned and len(assigned) > 5
    c.disconnect()


def test_connect_v311_exact_connack(broker):
    c = Client(broker.port, version=4)
    c.connect("basic-311")
    assert c.raw_last == b"\x20\x02\x00\x00"
    c.disconnect()


@pytest.mark.parametrize("sub_version,pub_version", [(5, 5), (4, 4), (5, 4), (4, 5)])
def test_qos0_routing_between_versions(broker, sub_version, pub_version):
    sub = Client(broker.port, version=sub_version)
    sub.connect("sub")
    assert sub.subscribe([("t/+/x", 0), ("t/#", 0)]).codes == [0, 0]
    pub = Client(broker.port, version=pub_version)
    pub.connect("pub")
    pub.publish("t/a/x", b"hello")
    pub.publish("other", b"not for you")
    pub.publish("t", b"parent")
    got = sub.messages()
    # t/a/x matches two filters of one client: delivered once.
    assert [(m.topic, m.payload, m.qos) for m in got] == [("t/a/x", b"hello", 0), ("t", b"parent", 0)]
    pub.disconnect()
    sub.disconnect()


def test_ping_and_disconnect(broker):
    c = Client(broker.port)
    c.connect("pinger")
    assert c.ping().type == PINGRESP
    assert c.raw_last == b"\xd0\x00"
    c.disconnect()


def test_first_packet_must_be_connect(broker):
    c = Client(broker.port)
    c.send(b"\xc0\x00")  # PINGREQ before CONNECT
    assert c.expect_closed() == []


def test_sigterm_sends_server_shutting_down(start_broker):
    b = start_broker()
    c = Client(b.port)
    c.connect("stay")
    old = Client(b.port, version=4)
    old.connect("stay-311")
    assert b.stop() == 0
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(14, 0x8B)]
    assert old.expect_closed() == []


needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto clients missing")


def _lines(proc):
    q = queue.Queue()
    threading.Thread(target=lambda: [q.put(line.rstrip("\n")) for line in proc.stdout], daemon=True).start()
    return q


@needs_mosquitto
@pytest.mark.parametrize("version", ["5", "311"])
def test_mosquitto_clients(broker, version):
    sub = subprocess.Popen(["mosquitto_sub", "-V", version, "-p", str(broker.port), "-t", "m/#", "-v"],
                           stdout=subprocess.PIPE, text=True)
    try:
        lines = _lines(sub)
        probe = Client(broker.port)
        probe.connect("probe")
        # Until mosquitto_sub has subscribed, warm-up messages go nowhere.
        deadline = time.monotonic() + 5
        while True:
            probe.publish("m/warm", b"w")
            try:
                assert lines.get(timeout=0.1) == "m/warm w"
                break
            except queue.Empty:
                assert time.monotonic() < deadline, "mosquitto_sub never subscribed"
        while True:  # drain duplicates of the warm-up
            try:
                lines.get(timeout=0.2)
            except queue.Empty:
                break
        for payload in ("one", "two"):
            subprocess.run(["mosquitto_pub", "-V", version, "-p", str(broker.port), "-t", "m/x", "-m", payload],
                           check=True, timeout=5)
        assert [lines.get(timeout=5), lines.get(timeout=5)] == ["m/x one", "m/x two"]
        probe.disconnect()
    finally:
        sub.terminate()
        sub.wait()
