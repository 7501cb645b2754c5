"""MQTT over WebSocket listeners (ws and wss): the real mqttoolsd with
`protocol = "websockets"` listeners, spoken to by a raw RFC 6455 client
(wsclient.py) for byte-level checks and bad input, and by python3-paho-mqtt
with transport="websockets" (MQTT 5 and 3.1.1)."""
import http.client
import os
import signal
import socket
import ssl
import struct
import time

import pytest

from conftest import MQTTOOLSD, SANITIZED, free_port, wait_for_port, wait_until
from mqttwire import (CONNACK, PUBLISH, SUBACK, connect_packet, disconnect_packet, publish_packet,
                      subscribe_packet)
from test_security_tls import certs  # noqa: F401  (module fixture: a CA and server certificates)
from wsclient import WsConn, accept_for, frame, upgrade_request

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

paho = pytest.importorskip("paho.mqtt.client")

WAIT = 20.0 if SANITIZED else 10.0


class WsBroker:
    def __init__(self, broker, ws_port, wss_port, metrics_port=None):
        self.b = broker
        self.port = broker.port  # plain MQTT
        self.ws = ws_port
        self.wss = wss_port
        self.metrics = metrics_port


def start_ws_broker(start_broker, tmp_path, certs, extra="", ws_extra="", metrics=False):  # noqa: F811
    ws_port, wss_port = free_port(), free_port()
    metrics_port = free_port() if metrics else None
    conf = (f"allow_anonymous = true\nconnect_timeout = 2\n{extra}\n"
            f"[[listener]]\nport = {ws_port}\nprotocol = \"websockets\"\n{ws_extra}\n"
            f"[[listener]]\nport = {wss_port}\nprotocol = \"websockets\"\n"
            f"certfile = \"{certs / 'server.crt'}\"\nkeyfile = \"{certs / 'server.key'}\"\n")
    if metrics:
        conf += f"[metrics]\nport = {metrics_port}\n"
    b = start_broker(config=conf)
    wait_for_port(ws_port, proc=b.proc)
    wait_for_port(wss_port, proc=b.proc)
    return WsBroker(b, ws_port, wss_port, metrics_port)


@pytest.fixture
def wsb(start_broker, tmp_path, certs):  # noqa: F811
    return start_ws_broker(start_broker, tmp_path, certs)


def mqtt_connect(conn, client_id, version=5, split=False, **kwargs):
    """CONNECT over an upgraded WsConn; split=True sends it in 1-3 byte
    frames as MQTT.js does ([MQTT-6.0.0-2]). Returns the CONNACK reason."""
    p = connect_packet(client_id, version=version, **kwargs)
    if split:
        conn.send(b"".join(frame(p[i:i + 3]) for i in range(0, len(p), 3)))
    else:
        conn.send(frame(p))
    head = conn.recv_mqtt(2)
    assert head[0] >> 4 == CONNACK
    body = conn.recv_mqtt(head[1])
    return body[1]


class Paho:
    """A paho-mqtt client with its own network thread, recording messages."""

    def __init__(self, port, client_id, transport="websockets", version=paho.MQTTv5, tls_ca=None,
                 path="/mqtt"):
        kwargs = {"client_id": client_id, "protocol": version, "transport": transport}
        if version != paho.MQTTv5:
            kwargs["clean_session"] = True
        self.c = paho.Client(**kwargs)
        if transport == "websockets":
            self.c.ws_set_options(path=path)
        if tls_ca:
            self.c.tls_set(ca_certs=str(tls_ca))
        self.messages = []
        self.connected = False
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.c.on_connect = self._on_connect
        self.c.connect("localhost" if tls_ca else "127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        assert wait_until(lambda: self.connected), f"{client_id}: no CONNACK"

    def _on_connect(self, c, u, flags, rc, props=None):
        self.connected = rc == 0

    def subscribe(self, topic, qos=1):
        done = []
        self.c.on_subscribe = lambda *a: done.append(1)
        self.c.subscribe(topic, qos)
        assert wait_until(lambda: done), "no SUBACK"

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT)
        assert info.is_published()

    def wait_messages(self, n):
        assert wait_until(lambda: len(self.messages) >= n), self.messages
        return self.messages

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


# ---- handshake and framing, byte by byte


def test_upgrade_then_mqtt_split_over_frames_and_packed_in_one(wsb):
    c = WsConn(wsb.ws)
    # permessage-deflate is offered by browsers and MQTT.js: never accepted.
    headers = c.upgrade(path="/any/path", extra=[
        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")])
    assert headers["sec-websocket-protocol"] == "mqtt"
    assert headers["upgrade"].lower() == "websocket"
    assert "sec-websocket-extensions" not in headers
    assert mqtt_connect(c, "ws-raw", split=True) == 0
    # SUBSCRIBE and a retained PUBLISH for it in one frame.
    c.send(frame(subscribe_packet([("ws/raw", 0)]) + publish_packet("ws/raw", b"both in one frame", retain=True)))
    suback = c.recv_mqtt(2)
    assert suback[0] >> 4 == SUBACK
    c.recv_mqtt(suback[1])
    pub = c.recv_mqtt(2)
    assert pub[0] >> 4 == PUBLISH
    assert c.recv_mqtt(pub[1]).endswith(b"both in one frame")
    # A ping mid-stream: the pong carries its payload.
    c.send(frame(b"are you there", opcode=0x9))
    assert c.recv_frame() == (0xA, b"are you there")
    # Our Close is answered with the same code, then the stream ends.
    c.send(frame(struct.pack("!H", 1000), opcode=0x8))
    c.expect_close(1000)
    c.close()


def test_firefox_connection_token_list_and_mqttv31_subprotocol(wsb):
    c = WsConn(wsb.ws)
    request, key = upgrade_request(protocol="mqttv3.1")
    c.send(request.replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"))
    status, headers, _ = c.http_response()
    assert status == 101
    assert headers["sec-websocket-accept"] == accept_for(key)
    assert headers["sec-websocket-protocol"] == "mqttv3.1"
    assert mqtt_connect(c, "ws-v311", version=4) == 0
    c.close()


BAD_REQUESTS = [
    ("no upgrade header", b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", 426),
    ("wrong version", upgrade_request(version="8")[0], 426),
    ("missing key", upgrade_request(drop=("Sec-WebSocket-Key",))[0], 400),
    ("malformed key", upgrade_request(key="short")[0], 400),
    ("no Connection: Upgrade", upgrade_request(drop=("Connection",))[0], 400),
    ("POST", upgrade_request()[0].replace(b"GET", b"POST", 1), 405),
    ("only other subprotocols", upgrade_request(protocol="chat")[0], 400),
    ("oversized headers", upgrade_request(extra=[("Cookie", "c" * 5000)])[0], 431),
    ("MQTT on a WebSocket port", connect_packet("not-http"), 400),
]


@pytest.mark.parametrize("name,request_bytes,status", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_upgrade_requests_get_an_http_error_and_a_clean_close(wsb, name, request_bytes, status):
    # A client on the plain port must not notice.
    bystander = Paho(wsb.port, f"bystander-{status}", transport="tcp")
    bystander.subscribe("ws/bystander")
    c = WsConn(wsb.ws)
    c.send(request_bytes)
    got, headers, body = c.http_response()
    assert got == status, body
    assert headers["connection"] == "close"
    assert body.strip(), "the error says why"
    if status == 426:
        assert headers["sec-websocket-version"] == "13"
    c.expect_eof()  # an orderly end, not a reset and not a hang
    c.close()
    bystander.publish("ws/bystander", b"still here")
    assert bystander.wait_messages(1)[0][1] == b"still here"
    bystander.close()
    assert "WebSocket upgrade refused" in wsb.b.output()


def test_slow_handshake_is_answered_408_at_the_connect_timeout(wsb):
    c = WsConn(wsb.ws)
    start = time.monotonic()
    c.send(upgrade_request()[0][:40])  # and then nothing
    status, _, _ = c.http_response(timeout=15)
    assert status == 408
    assert 1.5 <= time.monotonic() - start < 12
    c.expect_eof()
    c.close()


BAD_FRAMES = [
    ("unmasked frame", lambda p: frame(p, mask=False), 1002),
    ("text frame", lambda p: frame(p, opcode=0x1), 1003),
    ("2^63-length frame", lambda p: frame(b"", length=1 << 63)[:10] + b"\0\0\0\0", 1002),
    ("frame over max_packet_size", lambda p: frame(b"x" * 3000), 1009),
    ("RSV1 (deflate) without agreement", lambda p: frame(p, rsv=0x40), 1002),
    ("continuation without a message", lambda p: frame(p, opcode=0x0), 1002),
]


@pytest.mark.parametrize("name,make,code", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_close_with_their_code(start_broker, tmp_path, certs, name, make, code):  # noqa: F811
    wsb = start_ws_broker(start_broker, tmp_path, certs, extra="max_packet_size = 2048")
    bystander = WsConn(wsb.ws)
    bystander.upgrade()
    assert mqtt_connect(bystander, "ws-bystander") == 0
    bystander.send(frame(subscribe_packet([("ws/after", 0)])))
    head = bystander.recv_mqtt(2)
    bystander.recv_mqtt(head[1])
    c = WsConn(wsb.ws)
    c.upgrade()
    assert mqtt_connect(c, "ws-bad") == 0
    c.send(make(publish_packet("ws/after", b"x")))
    c.expect_close(code)
    c.close()
    # The other WebSocket client carries on.
    other = WsConn(wsb.ws)
    other.upgrade()
    assert mqtt_connect(other, "ws-other") == 0
    other.send(frame(publish_packet("ws/after", b"fine")))
    pub = bystander.recv_mqtt(2)
    assert bystander.recv_mqtt(pub[1]).endswith(b"fine")
    assert "WebSocket protocol error" in wsb.b.output()
    for x in (bystander, other):
        x.close()


def test_close_mid_packet_ends_the_session_with_its_will(wsb):
    watcher = Paho(wsb.port, "will-watcher", transport="tcp")
    watcher.subscribe("ws/will")
    c = WsConn(wsb.ws)
    c.upgrade()
    p = connect_packet("ws-will", will_topic="ws/will", will_payload=b"gone")
    c.send(frame(p))
    assert c.recv_mqtt(2)[0] >> 4 == CONNACK
    half = publish_packet("ws/x", b"y" * 100)[:30]
    c.send(frame(half))
    c.sock.shutdown(socket.SHUT_WR)  # the frame ends inside the PUBLISH
    c.expect_eof()
    c.close()
    assert watcher.wait_messages(1)[0][:2] == ("ws/will", b"gone")
    watcher.close()


def test_broker_disconnect_is_followed_by_a_close_frame(wsb):
    c = WsConn(wsb.ws)
    c.upgrade()
    assert mqtt_connect(c, "ws-twice") == 0
    c.send(frame(connect_packet("ws-twice")))  # a second CONNECT: Protocol Error
    head = c.recv_mqtt(2)
    assert head[0] >> 4 == 14  # DISCONNECT
    assert c.recv_mqtt(head[1])[0] == 0x82
    c.expect_close(1000)
    c.close()


# ---- real clients


@pytest.mark.parametrize("version", [paho.MQTTv5, paho.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_paho_over_ws_and_wss_with_tcp_clients(wsb, certs, version):  # noqa: F811
    tag = "5" if version == paho.MQTTv5 else "311"
    ws_sub = Paho(wsb.ws, f"paho-ws-{tag}", version=version)
    wss_sub = Paho(wsb.wss, f"paho-wss-{tag}", version=version, tls_ca=certs / "ca.crt", path="/")
    tcp = Paho(wsb.port, f"paho-tcp-{tag}", transport="tcp", version=version)
    for s in (ws_sub, wss_sub, tcp):
        s.subscribe(f"paho{tag}/#")
    ws_sub.publish(f"paho{tag}/from-ws", b"over ws")
    wss_sub.publish(f"paho{tag}/from-wss", b"over wss")
    tcp.publish(f"paho{tag}/from-tcp", b"over tcp")
    for s in (ws_sub, wss_sub, tcp):
        got = sorted(m[:2] for m in s.wait_messages(3))
        assert got == [(f"paho{tag}/from-tcp", b"over tcp"), (f"paho{tag}/from-ws", b"over ws"),
                       (f"paho{tag}/from-wss", b"over wss")]
    # Retained, to a later subscriber over wss.
    ws_sub.publish(f"paho{tag}/kept", b"retained over ws", retain=True)
    late = Paho(wsb.wss, f"paho-late-{tag}", version=version, tls_ca=certs / "ca.crt")
    late.subscribe(f"paho{tag}/kept")
    assert late.wait_messages(1)[0] == (f"paho{tag}/kept", b"retained over ws", True)
    for s in (ws_sub, wss_sub, tcp, late):
        s.close()


def test_large_messages_and_bursts_over_ws(wsb, certs):  # noqa: F811
    sub = Paho(wsb.ws, "big-sub")
    sub.subscribe("big/#")
    wss_sub = Paho(wsb.wss, "big-wss-sub", tls_ca=certs / "ca.crt")
    wss_sub.subscribe("big/#")
    pub = Paho(wsb.ws, "big-pub")
    big = os.urandom(1 << 20)
    pub.publish("big/one", big)
    for i in range(300):
        pub.publish("big/burst", b"%05d" % i + b"z" * 2000, qos=0 if i % 2 else 1)
    for s in (sub, wss_sub):
        got = s.wait_messages(301)
        assert got[0][1] == big
        assert [m[1][:5] for m in got[1:]] == [b"%05d" % i for i in range(300)]
    for s in (sub, wss_sub, pub):
        s.close()


def test_metrics_sys_and_logs_count_websocket_clients(start_broker, tmp_path, certs):  # noqa: F811
    wsb = start_ws_broker(start_broker, tmp_path, certs, extra="sys_interval = 1", metrics=True)
    a = Paho(wsb.ws, "count-ws")
    b = Paho(wsb.wss, "count-wss", tls_ca=certs / "ca.crt")
    t = Paho(wsb.port, "count-tcp", transport="tcp")

    def metric(name):
        conn = http.client.HTTPConnection("127.0.0.1", wsb.metrics, timeout=5)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
        conn.close()
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    assert wait_until(lambda: metric("mqttools_websocket_clients_connected") == 2)
    assert metric("mqttools_clients_connected") == 3
    assert metric("mqttools_websocket_connections_total") >= 2
    t.subscribe("$SYS/broker/clients/websockets", qos=0)
    assert wait_until(lambda: any(m[1] == b"2" for m in t.messages))
    a.close()
    assert wait_until(lambda: metric("mqttools_websocket_clients_connected") == 1)
    out = wsb.b.output()
    assert "as count-ws (" in out and ", ws)." in out
    assert "as count-wss (" in out and ", wss)." in out
    assert "websockets listener" in out
    b.close()
    t.close()


def test_origin_allow_list_and_reload(start_broker, tmp_path, certs):  # noqa: F811
    wsb = start_ws_broker(start_broker, tmp_path, certs,
                          ws_extra='websockets_origin = ["https://good.example"]\nwebsockets_headers_size = 1024')

    def status(origin, cookie=0):
        c = WsConn(wsb.ws)
        extra = [("Origin", origin)] if origin else []
        if cookie:
            extra.append(("Cookie", "c" * cookie))
        c.send(upgrade_request(extra=extra)[0])
        s = c.http_response()[0]
        c.close()
        return s

    assert status("https://good.example") == 101
    assert status("https://evil.example") == 403
    assert status(None) == 403
    assert status("https://good.example", cookie=1500) == 431
    conf = wsb.b.proc.args[wsb.b.proc.args.index("-c") + 1]
    text = open(conf).read().replace('["https://good.example"]', '["https://good.example", "https://evil.example"]')
    text = text.replace("websockets_headers_size = 1024", "websockets_headers_size = 4096")
    open(conf, "w").write(text)
    os.kill(wsb.b.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: status("https://evil.example") == 101)
    assert status("https://good.example", cookie=1500) == 101
    assert status("https://other.example") == 403


def test_wss_handshake_over_tls_with_python_ssl(wsb, certs):  # noqa: F811
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    c = WsConn(wsb.wss)
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    c.upgrade()
    assert mqtt_connect(c, "wss-raw", split=True) == 0
    c.send(frame(disconnect_packet()))
    c.expect_eof()
    c.close()


def test_socket_activation_gives_the_inherited_socket_its_websocket_listener(tmp_path):
    from test_deploy_systemd import launch_activated
    listen_sock = socket.socket()
    listen_sock.bind(("127.0.0.1", 0))
    listen_sock.listen(16)
    port = listen_sock.getsockname()[1]
    proc, log = launch_activated(
        tmp_path, listen_sock,
        config=f"allow_anonymous = true\n[[listener]]\nport = {port}\nprotocol = \"websockets\"\n")
    try:
        # Queued by the kernel on the inherited socket until the broker runs.
        c = WsConn(port, timeout=WAIT)
        listen_sock.close()
        c.upgrade()
        assert mqtt_connect(c, "ws-activated") == 0
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        log.close()
        assert code == 0, (tmp_path / "activated.log").read_text()


def test_mqttools_cli_over_ws_and_wss_urls(wsb, certs):  # noqa: F811
    import subprocess
    from conftest import MQTTOOLS
    watcher = Paho(wsb.port, "cli-watcher", transport="tcp")
    watcher.subscribe("cli/#")
    watcher.publish("cli/kept", b"retained for the cli", retain=True)
    r = subprocess.run([str(MQTTOOLS), "subscribe", "-L", f"ws://127.0.0.1:{wsb.ws}/mqtt", "-C", "1",
                        "-t", "cli/kept"], capture_output=True, timeout=WAIT + 10)
    assert r.returncode == 0, r.stderr
    assert b"retained for the cli" in r.stdout
    r = subprocess.run([str(MQTTOOLS), "publish", "-L", f"wss://localhost:{wsb.wss}/", "--cafile",
                        str(certs / "ca.crt"), "-q", "1", "-t", "cli/over-wss", "-m", "from the cli"],
                       capture_output=True, timeout=WAIT + 10)
    assert r.returncode == 0, r.stderr
    assert ("cli/over-wss", b"from the cli", False) in watcher.wait_messages(2)
    assert "(wss)" in wsb.b.output()
    watcher.close()
