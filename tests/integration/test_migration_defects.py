"""What a user migrating from Mosquitto 2.0 tripped over (issue 30), broker
side: the same files and clients that work with Mosquitto work here, and
where we differ on purpose the documentation says so."""
import pathlib
import signal
import socket
import struct
import subprocess
import threading

import paho.mqtt.client as paho
import pytest

from conftest import MQTTOOLSD, TOP, free_port, wait_or_fail, wait_until

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

WAIT = 10


def run_daemon(tmp_path, config, timeout=15, name="bad.toml"):
    conf = tmp_path / name
    conf.write_text(config)
    return subprocess.run([str(MQTTOOLSD), "-c", str(conf), "-p", str(free_port())], capture_output=True,
                          text=True, timeout=timeout)


def mosquitto_passwd(path, user, password):
    args = ["mosquitto_passwd", "-b", str(path), user, password]
    if not path.exists():
        args.insert(1, "-c")
    subprocess.run(args, check=True, capture_output=True)


class Paho:
    """A paho client whose messages and SUBACKs are collected."""

    def __init__(self, port, client_id, protocol=paho.MQTTv5, username=None, password=None):
        self.c = paho.Client(client_id=client_id, protocol=protocol)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.messages = []
        self.granted = {}
        self.connected = threading.Event()
        self.rc = None
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.on_subscribe = self._on_subscribe
        self.c.on_connect = self._on_connect
        self.c.connect("127.0.0.1", port, 30)
        self.c.loop_start()
        assert self.connected.wait(WAIT)

    def _on_connect(self, c, u, flags, rc, props=None):
        self.rc = rc
        self.connected.set()

    def _on_subscribe(self, c, u, mid, granted, props=None):
        self.granted[mid] = [g.value if hasattr(g, "value") else g for g in granted]

    def subscribe(self, topic):
        _, mid = self.c.subscribe(topic, 0)
        wait_or_fail(lambda: mid in self.granted, f"SUBACK for {topic}")
        return self.granted[mid][0]

    def stop(self):
        self.c.disconnect()
        self.c.loop_stop()


# --- 1: an ACL line whose access type is a typo ------------------------------

def test_acl_typo_access_type_refused_at_start(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic read public/#\ntopic rw sensors/#\n")
    r = run_daemon(tmp_path, f'acl_file = "{acl}"\n')
    assert r.returncode != 0
    # file:line and the word, as Mosquitto's "Invalid topic access type".
    assert f"{acl}:3: invalid topic access type 'rw'" in r.stderr + r.stdout, r.stderr


def test_acl_typo_at_sighup_keeps_the_old_rules(start_broker, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite sensors/#\n")
    b = start_broker(config=f'acl_file = "{acl}"\n')
    acl.write_text("topic rw sensors/#\n")
    b.proc.send_signal(signal.SIGHUP)
    wait_or_fail(lambda: "invalid topic access type 'rw'" in b.output(), "the reload's error")
    assert f"{acl}:1:" in b.output()
    # The old rule still holds: sensors/t readable and writable, the literal
    # "rw sensors/x" is not a topic anyone was given.
    sub = Paho(b.port, "acl-hup-sub")
    assert sub.subscribe("sensors/#") == 0
    pub = Paho(b.port, "acl-hup-pub")
    pub.c.publish("sensors/t", b"ok")
    wait_or_fail(lambda: sub.messages, "a message on sensors/t")
    assert sub.messages == [("sensors/t", b"ok")]
    sub.stop()
    pub.stop()


# --- 2: MQTT 3.1 ("MQIsdp", level 3) ------------------------------------------

def test_mqtt31_clients_are_accepted(broker):
    port = str(broker.port)
    # Retained, so that the subscriber started afterwards gets both.
    r = subprocess.run(["mosquitto_pub", "-V", "31", "-p", port, "-t", "v31/a", "-m", "one", "-r", "-q", "1"],
                       capture_output=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr
    pub = Paho(broker.port, "v31-paho", protocol=paho.MQTTv31)
    assert pub.rc == 0
    pub.c.publish("v31/b", b"two", qos=1, retain=True).wait_for_publish(WAIT)
    pub.stop()
    r = subprocess.run(["mosquitto_sub", "-V", "31", "-p", port, "-t", "v31/#", "-C", "2", "-v",
                        "-i", "v31-sub", "-W", "10"], capture_output=True, timeout=WAIT + 5)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.decode().splitlines()) == ["v31/a one", "v31/b two"]
    assert "as v31-sub (p3, c1" in broker.output()


@pytest.mark.parametrize("client_id", ["", "x" * 24])
def test_mqtt31_client_id_rules(broker, client_id):
    # MQTT 3.1: 1 to 23 bytes; otherwise CONNACK return code 2 (identifier
    # rejected), as Mosquitto answers.
    # A raw CONNECT: paho makes up an id when given none.
    def utf8(s):
        return struct.pack("!H", len(s)) + s.encode()
    body = utf8("MQIsdp") + bytes([3, 0x02]) + struct.pack("!H", 30) + utf8(client_id)
    with socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        assert sock.recv(4) == b"\x20\x02\x00\x02"
    r = subprocess.run(["mosquitto_pub", "-V", "31", "-p", str(broker.port), "-i", "y" * 23, "-t", "t",
                        "-m", "23 bytes are fine"], capture_output=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr


# --- 3: SUBSCRIBE under an ACL file: stricter than Mosquitto, documented -----

def test_acl_subscribe_rule_is_the_documented_one(start_broker, tmp_path):
    pw = tmp_path / "passwords"
    mosquitto_passwd(pw, "alice", "a")
    mosquitto_passwd(pw, "bob", "b")
    acl = tmp_path / "acl"
    acl.write_text("pattern readwrite users/%u/#\n")
    b = start_broker(config=f'allow_anonymous = false\npassword_file = "{pw}"\nacl_file = "{acl}"\n')
    alice = Paho(b.port, "alice-1", username="alice", password="a")
    bob = Paho(b.port, "bob-1", username="bob", password="b")
    # A filter no rule lets her read anything under: refused at SUBSCRIBE
    # (Mosquitto grants it and then delivers nothing).
    assert alice.subscribe("users/bob/#") == 0x87
    # A filter reaching readable topics: granted, delivery filtered per topic.
    assert alice.subscribe("users/#") == 0
    bob.c.publish("users/bob/x", b"bob's").wait_for_publish(WAIT)
    alice.c.publish("users/alice/x", b"hers").wait_for_publish(WAIT)
    wait_or_fail(lambda: alice.messages, "alice's own message")
    wait_until(lambda: False, 0.3)
    assert alice.messages == [("users/alice/x", b"hers")]
    alice.stop()
    bob.stop()
    doc = (TOP / "docs" / "configuration.md").read_text()
    assert "SUBSCRIBE under an ACL file" in doc
    assert "Mosquitto 2.0 grants" in doc


# --- 5: an unreachable NATS is said at start ---------------------------------

def test_unreachable_nats_is_reported_at_start(tmp_path):
    from conftest import Broker
    dead = free_port()  # nothing listens there
    b = Broker(tmp_path, config=f'sys_interval = 1\n[cluster]\nnats_url = "nats://127.0.0.1:{dead}"\n'
                                f'node_id = "lonely"\n')
    try:
        # Before any client: the warning names the URL and why.
        wait_or_fail(lambda: f"cannot reach NATS at nats://127.0.0.1:{dead}:" in b.output(),
                     "the start-up warning", timeout=15)
        status = {}
        c = paho.Client(client_id="watch", protocol=paho.MQTTv311)
        c.on_message = lambda c, u, m: status.update({m.topic: m.payload.decode()})
        c.connect("127.0.0.1", b.port, 30)
        c.subscribe("$SYS/broker/cluster/#")
        c.loop_start()
        # The retained value may be from before the first attempt failed
        # ("NATS link down, reconnecting"); the next ones (every second) say why.
        wait_or_fail(lambda: status.get("$SYS/broker/cluster/status", "").startswith(
            f"NATS unreachable (nats://127.0.0.1:{dead}: "), "$SYS/broker/cluster/status to name the URL", timeout=15)
        c.loop_stop()
        c.disconnect()
        assert status["$SYS/broker/cluster/links/up"] == "0"
    finally:
        assert b.stop() == 0, b.output()


# --- 13, 14, 15: configs that mislead ----------------------------------------

def test_a_missing_certificate_is_named_at_load(tmp_path):
    r = run_daemon(tmp_path, '[[listener]]\nport = 28883\ncertfile = "certs/server.crt"\n'
                             'keyfile = "certs/server.key"\n')
    assert r.returncode == 1
    conf = tmp_path / "bad.toml"
    # Its line, the path resolved against the config's folder, one reason; no OpenSSL stack.
    assert (f"{conf}:3:12: listener[0].certfile: cannot read '{tmp_path}/certs/server.crt': "
            "No such file or directory") in r.stderr, r.stderr
    assert "error:0" not in r.stderr


def test_missing_folders_are_one_rule(tmp_path):
    for key, extra in (("persistence_location", "persistence = true\n"), ("log_file", 'log_dest = "file"\n')):
        target = tmp_path / "nope" / ("logs/b.log" if key == "log_file" else "state")
        folder = target.parent if key == "log_file" else target
        r = run_daemon(tmp_path, f'{extra}{key} = "{target}"\n')
        assert r.returncode == 1, key
        assert f"{key}: the folder '{folder}' does not exist (mqttoolsd does not create it)" in r.stderr, r.stderr
        assert not folder.exists()


MOSQUITTO_CONF = """\
# a Mosquitto 2.0 configuration
listener {port} 127.0.0.1
allow_anonymous true
persistence false
log_type all
max_queued_messages 500
"""


def test_a_mosquitto_config_is_recognised_and_converted(tmp_path):
    port = free_port()
    r = run_daemon(tmp_path, MOSQUITTO_CONF.format(port=port), name="mosquitto.conf")
    assert r.returncode == 1
    conf = tmp_path / "mosquitto.conf"
    assert r.stderr.startswith(f"{conf}:2: this is a Mosquitto config ('listener {port} 127.0.0.1'); "
                               f"mqttoolsd reads TOML: `mqttools convert-config {conf}`"), r.stderr
    out = tmp_path / "mqttoolsd.toml"
    from conftest import MQTTOOLS
    r = subprocess.run([str(MQTTOOLS), "convert-config", str(conf), "-o", str(out)], capture_output=True,
                       text=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"{conf}:5: log_type all",
                                     "1 line(s) not converted: mqttoolsd has no equivalent "
                                     "(see docs/configuration.md)."]
    d = subprocess.Popen([str(MQTTOOLSD), "-c", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        from conftest import wait_for_port
        wait_for_port(port, proc=d)
        r = subprocess.run(["mosquitto_pub", "-p", str(port), "-t", "t", "-m", "x"], capture_output=True,
                           timeout=WAIT)
        assert r.returncode == 0, r.stderr
    finally:
        d.terminate()
        assert d.wait(timeout=WAIT) == 0


# --- 16: a refused WebSocket upgrade is logged with who it was ---------------

def _refused_on_ws(port, data, reset):
    """Sends `data` to the WebSocket listener; with `reset` the socket is
    closed with an RST at once (as a browser tab that goes away). Returns
    the local port (what the broker's log must name)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    local = s.getsockname()[1]
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(data)
    else:
        s.sendall(data)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    s.close()
    return local


def test_a_refused_websocket_upgrade_names_the_peer(start_broker):
    ws_port = free_port()
    b = start_broker(config=f'[[listener]]\nport = {ws_port}\nprotocol = "websockets"\n')
    # A plain MQTT client on the WebSocket port: refused at once, and said so.
    connect = bytes([0x10, 13]) + b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x01m"
    local = _refused_on_ws(ws_port, connect, reset=False)
    wait_or_fail(lambda: f"Client 127.0.0.1:{local} (ws): WebSocket upgrade refused (400)" in b.output(),
                 "the refused upgrade with the peer's address")
    assert "an MQTT CONNECT" in b.output()
    # A bad upgrade whose client resets the connection before the broker
    # logs it: the address was getpeername's "unknown" then.
    locals_ = [_refused_on_ws(ws_port, b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", reset=True) for _ in range(5)]
    wait_or_fail(lambda: all(f"Client 127.0.0.1:{p} (ws): WebSocket upgrade refused (426)" in b.output()
                             for p in locals_), "every refused upgrade with the peer's address")
    assert "Client unknown" not in b.output()


# --- 18: a disconnect is logged once, whatever follows the DISCONNECT --------

def test_a_disconnect_is_logged_once(start_broker):
    ws_port = free_port()
    b = start_broker(config=f'allow_anonymous = true\n[[listener]]\nport = {ws_port}\nprotocol = "websockets"\n')
    connect = bytes([0x10, 13]) + b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + b"\x00\x00"  # empty id: auto-...
    disconnect = b"\xe0\x00"

    def tcp(after, reset):
        s = socket.create_connection(("127.0.0.1", b.port), timeout=WAIT)
        s.sendall(connect)
        assert s.recv(4096)[0] == 0x20
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(disconnect + after)
        s.close()

    # DISCONNECT then a reset; then garbage (a protocol error) in the same
    # segment; then a second DISCONNECT; a takeover racing nothing here.
    tcp(b"", reset=True)
    tcp(b"\xff\xff\xff", reset=False)
    tcp(disconnect, reset=True)
    # Over WebSocket: DISCONNECT, the Close frame and the TCP close together.
    s = socket.create_connection(("127.0.0.1", ws_port), timeout=WAIT)
    s.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Protocol: mqtt\r\n\r\n")

    def frame(opcode, payload):  # masked, as clients must [RFC 6455 5.3]
        mask = b"\x01\x02\x03\x04"
        return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(
            c ^ mask[i % 4] for i, c in enumerate(payload))

    s.sendall(frame(2, connect))
    got = b""
    while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + 3:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    head = got.index(b"\r\n\r\n") + 4
    assert got.startswith(b"HTTP/1.1 101") and got[head] == 0x82 and got[head + 2] == 0x20, got
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(frame(2, disconnect) + frame(8, b"\x03\xe8"))
    s.close()
    assert wait_until(lambda: b.output().count(" disconnected.") >= 4), b.output()
    import collections
    import time as _time
    _time.sleep(1.0)  # anything logged late would come now
    lines = [l.split(": ", 1)[1] for l in b.output().splitlines() if " disconnected" in l or "closed its" in l]
    counts = collections.Counter(lines)
    assert len(counts) == 4 and set(counts.values()) == {1}, lines
