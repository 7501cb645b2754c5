"""$SYS topics with Mosquitto's names, and Prometheus /metrics."""
import pytest
import http.client
import re
import time

from conftest import free_port
from test_deploy_util import MQTTOOLSD, Client, Daemon, parse_publish, port_accepts, publish_packet, wait_until

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def start(tmp_path, extra=""):
    port = free_port()
    d = Daemon(tmp_path, [], config=f"allow_anonymous = true\nsys_interval = 1\n{extra}"
                                    f"[[listener]]\nport = {port}\n")
    assert wait_until(lambda: port_accepts(port) or d.proc.poll() is not None, 10)
    assert d.proc.poll() is None, d.output()
    return d, port


def collect(client, seconds):
    """topic -> (payload, retain) of every PUBLISH within SECONDS."""
    got = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            kind, flags, body = client.read(max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            break
        if kind == 3:
            topic, payload, retain = parse_publish(flags, body)
            got[topic] = (payload.decode(), retain)
    return got


def test_sys_topics_arrive_retained(tmp_path):
    d, port = start(tmp_path)
    try:
        pub = Client(port, "deploy-sys-pub")
        for i in range(5):
            pub.send(publish_packet("sys/test", b"x" * 10))
        assert pub.ping()
        time.sleep(1.2)  # at least one $SYS round after the publishes
        sub = Client(port, "deploy-sys-sub")
        assert sub.subscribe("$SYS/broker/#") == 0
        got = collect(sub, 1.5)
        for name in ("version", "uptime", "clients/connected", "clients/total",
                     "clients/maximum", "clients/disconnected", "messages/received",
                     "messages/sent", "publish/messages/received", "bytes/received",
                     "bytes/sent", "subscriptions/count", "retained messages/count",
                     "load/messages/received/1min", "load/bytes/sent/15min",
                     "load/connections/5min"):
            assert f"$SYS/broker/{name}" in got, (name, sorted(got))
        # Retained: they were stored before we subscribed.
        assert got["$SYS/broker/version"][1] is True
        assert re.fullmatch(r"mqttools version \d+\.\d+\.\d+.*", got["$SYS/broker/version"][0])
        assert re.fullmatch(r"\d+ seconds", got["$SYS/broker/uptime"][0])
        assert int(got["$SYS/broker/clients/connected"][0]) >= 1
        assert int(got["$SYS/broker/publish/messages/received"][0]) >= 5
        assert re.fullmatch(r"\d+\.\d\d", got["$SYS/broker/load/messages/received/1min"][0])
        # Updated every sys_interval: uptime moves on.
        later = collect(sub, 2.5)
        assert "$SYS/broker/uptime" in later
        assert later["$SYS/broker/uptime"][1] is False  # live updates are not flagged retained
        assert int(later["$SYS/broker/uptime"][0].split()[0]) > int(got["$SYS/broker/uptime"][0].split()[0])
        # A plain "#" subscription never sees $SYS [MQTT-4.7.2-1].
        hashsub = Client(port, "deploy-sys-hash")
        assert hashsub.subscribe("#") == 0
        assert not [t for t in collect(hashsub, 1.5) if t.startswith("$SYS")]
        for c in (pub, sub, hashsub):
            c.close()
    finally:
        assert d.stop() == 0, d.output()


def get_metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    body = resp.read().decode()
    headers = dict(resp.getheaders())
    conn.close()
    return resp.status, headers, body


def samples(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)', line)
        assert m, f"not exposition format: {line!r}"
        out[m.group(1)] = float(m.group(2))
    return out


def test_metrics_endpoint(tmp_path):
    mport = free_port()
    d, port = start(tmp_path, f"[metrics]\nport = {mport}\n")
    try:
        clients = [Client(port, f"deploy-metrics-{i}") for i in range(3)]
        assert clients[0].subscribe("m/t") == 0
        for _ in range(10):
            clients[1].send(publish_packet("m/t", b"0123456789"))
        for _ in range(10):
            kind, _, _ = clients[0].read(5)
            assert kind == 3
        status, headers, body = get_metrics(mport)
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        s = samples(body)
        # Every family has HELP and TYPE lines.
        for name in {re.match(r"[a-z_]+", k).group(0) for k in s}:
            assert f"# TYPE {name} " in body and f"# HELP {name} " in body, name
        assert s["mqttools_clients_connected"] == 3
        assert s["mqttools_publish_received_total"] >= 10
        assert s["mqttools_publish_sent_total"] >= 10
        assert s["mqttools_bytes_received_total"] > 0
        assert s["mqttools_subscriptions"] >= 1
        assert f'mqttools_listener_connections_total{{listener="127.0.0.1:{port}"}}' in s
        assert "mqttools_publish_dropped_total" in s
        assert "mqttools_queued_messages" in s
        for c in clients:
            c.close()
        # The count follows disconnects.
        assert wait_until(lambda: samples(get_metrics(mport)[2])["mqttools_clients_connected"] == 0, 5)
        conn = http.client.HTTPConnection("127.0.0.1", mport, timeout=5)
        conn.request("GET", "/nothing")
        assert conn.getresponse().status == 404
        conn.close()
    finally:
        assert d.stop() == 0, d.output()
