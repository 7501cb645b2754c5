"""What a user migrating from Mosquitto 2.0 tripped over (issue 30), broker
side: the same files and clients that work with Mosquitto work here, and
where we differ on purpose the documentation says so."""
import collections
import pathlib
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import paho.mqtt.client as paho
import pytest

from conftest import MQTTOOLSD, TOP, free_port, wait_or_fail, wait_until
from test_cluster import NATS_SERVER, nats  # noqa: F401 (fixture)
from test_cluster_ha import ha_nodes  # noqa: F401 (fixture)

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
    time.sleep(1.0)  # anything logged late would come now
    lines = [l.split(": ", 1)[1] for l in b.output().splitlines() if " disconnected" in l or "closed its" in l]
    counts = collections.Counter(lines)
    assert len(counts) == 4 and set(counts.values()) == {1}, lines


CONNECTED = re.compile(r"New client connected from .*? as (\S+) \(")
CLOSED = re.compile(r"Client (\S+) (disconnected[.:]|closed its connection\.)")


def closes_logged_once(output):
    """Every id's close lines, asserting none is logged more often than the
    id connected."""
    connects, closes = collections.Counter(), collections.defaultdict(list)
    for line in output.splitlines():
        if m := CONNECTED.search(line):
            connects[m.group(1)] += 1
        if m := CLOSED.search(line):
            closes[m.group(1)].append(line.split(": ", 1)[1])
    twice = {cid: lines for cid, lines in closes.items() if len(lines) > connects[cid]}
    assert not twice, f"closes logged more often than the client connected: {twice}\n{output}"
    return closes


def test_every_close_path_logs_once(start_broker, tmp_path):
    """Issue 30 item 18, every path examined (besides the four of the test
    above). Only Broker::close_connection prints a client's close (log_close);
    it returns at once for a connection already closing, and closing is the
    last state (nothing sets another after it), so one connection is logged
    once whatever races its end: a takeover by the same client id, the keep
    alive timeout against the client's own close, a CONNECT still waiting
    for its password check with its DISCONNECT and FIN behind it, a kick by
    the management API, a will with a delay, the server stopping. Two lines
    for one id need two connections with it: a generated `auto-` id is 64
    random bits checked against the sessions, so it is not given twice.
    What did print "Client X disconnected." for a close the client never
    asked for: a node cut off from NATS, or one dropping a session another
    node took (both suppress the will, and the log took that for a
    DISCONNECT); in a cluster sharing a port and a journal the dropping
    node and the node where the client really disconnected then printed
    the same line. Both now name their reason (the cut-off: the test
    below; the drop: test_cluster_ha_fence's frozen-node tests log
    "disconnected: Session taken over."). Also scanned: the logs of the connect,
    session, transport, WebSocket, bridge, persistence, admin and cluster
    (HA, fence, wills) integration files, one node and 3 nodes with
    reuse_port, for an id closed more often than it connected: none."""
    from test_admin_api import Api, make_key_file
    api_port = free_port()
    passwords = tmp_path / "passwords"
    mosquitto_passwd(passwords, "alice", "secret")
    keys = make_key_file(tmp_path / "api_keys")
    b = start_broker(config=f'allow_anonymous = true\npassword_file = "{passwords}"\n'
                            f'[[listener]]\nport = {api_port}\nprotocol = "http_api"\napi_key_file = "{keys}"\n')
    from mqttwire import (CONNACK, DISCONNECT, SESSION_EXPIRY_INTERVAL, WILL_DELAY_INTERVAL, Client,
                          connect_packet, disconnect_packet)
    # A takeover by the same client id: the old connection is closed
    # (0x8E) and its client's own close after that is not logged again.
    old = Client(b.port)
    assert old.connect("same").reason == 0
    new = Client(b.port)
    assert new.connect("same").reason == 0
    assert [p.reason for p in old.expect_closed(WAIT) if p.type == DISCONNECT] == [0x8E]
    old.close()
    new.disconnect()
    # Generated ids, 3.1.1 and 5, all closing at once.
    many = [Client(b.port, version=4 if i % 2 else 5) for i in range(20)]
    for c in many:
        assert c.connect("").reason == 0
    for c in many:
        c.disconnect()
    # Keep alive 1: closed by the broker after 1.5 s, the client closing
    # its side when it sees that; and one closing at about that moment.
    idle = Client(b.port)
    assert idle.connect("idle", keepalive=1).reason == 0
    racing = Client(b.port)
    assert racing.connect("racing", keepalive=1).reason == 0
    idle.expect_closed(5 * WAIT)
    idle.close()
    racing.close()
    # CONNECT, DISCONNECT and FIN together while the password hash is
    # checked on the auth pool (the DISCONNECT waits behind the CONNECT; a
    # FIN seen before the answer is a client gone before its CONNACK: no
    # CONNACK and nothing logged, which one depends on the host's load).
    s = socket.create_connection(("127.0.0.1", b.port), timeout=WAIT)
    s.sendall(connect_packet("hashed", username="alice", password=b"secret") + disconnect_packet())
    s.shutdown(socket.SHUT_WR)
    hashed_connected = s.recv(4096)[:1] == bytes([CONNACK << 4])
    s.close()
    # A will with a delay and a session that outlives the connection.
    willing = Client(b.port)
    assert willing.connect("willing", properties={SESSION_EXPIRY_INTERVAL: 60}, will_topic="w/t",
                           will_payload=b"gone", will_properties={WILL_DELAY_INTERVAL: 1}).reason == 0
    willing.close()
    # Kicked by the management API.
    kicked = Client(b.port)
    assert kicked.connect("kicked").reason == 0
    assert Api(api_port).request("DELETE", "/api/v5/clients/kicked")[0] == 204
    kicked.expect_closed(WAIT)
    kicked.close()
    # Still connected when the server stops.
    staying = [Client(b.port) for _ in range(3)]
    for i, c in enumerate(staying):
        assert c.connect(f"staying{i}").reason == 0
    wait_or_fail(lambda: "Client willing closed its connection." in b.output()
                 and ("Client hashed disconnected." in b.output() or not hashed_connected)
                 and "Client racing " in b.output(), "the closes to be logged")
    time.sleep(1.5)  # the delayed will, and anything logged late
    assert b.stop() == 0
    closes = closes_logged_once(b.log_path.read_text(errors="replace"))
    generated = [cid for cid in closes if cid.startswith("auto-")]
    assert len(generated) == 20 and all(closes[cid] == [f"Client {cid} disconnected."] for cid in generated)
    assert closes["same"] == ["Client same disconnected: Session taken over.", "Client same disconnected."]
    assert closes["idle"] == ["Client idle disconnected: Keep Alive timeout."]
    assert len(closes["racing"]) == 1
    assert closes.get("hashed", []) == (["Client hashed disconnected."] if hashed_connected else [])
    assert closes["willing"] == ["Client willing closed its connection."]
    assert closes["kicked"] == ["Client kicked disconnected: Administrative action."]
    for i in range(3):
        assert closes[f"staying{i}"] == [f"Client staying{i} disconnected: Server shutting down."]


@pytest.mark.skipif(not pathlib.Path(NATS_SERVER).exists(), reason="nats-server is not installed")
def test_a_close_the_broker_decides_names_its_reason(ha_nodes, nats):
    """A node cut off from NATS past disconnect_after closes its clients
    with the will suppressed (the cluster decides it): the log said
    "Client X disconnected.", the words of the client's own DISCONNECT,
    and EMQX's event said "normal". Now the reason is named, as for every
    other close the broker decides; a real DISCONNECT keeps its line."""
    from mqttwire import Client
    (a,) = ha_nodes(1, cluster="disconnect_after = 1000")
    v5 = Client(a.port)
    assert v5.connect("cut5").reason == 0
    v3 = Client(a.port, version=4)
    assert v3.connect("cut3").reason == 0
    polite = Client(a.port)
    assert polite.connect("polite").reason == 0
    polite.disconnect()
    wait_or_fail(lambda: "Client polite disconnected." in a.output(), "the DISCONNECT's line")
    nats.stop(signal.SIGKILL)
    v5.expect_closed(5 * WAIT)
    v3.expect_closed(5 * WAIT)
    wait_or_fail(lambda: "Client cut3 disconnected: Use another server." in a.output(), "the cut-off's lines")
    closes = closes_logged_once(a.output())
    assert closes["cut5"] == ["Client cut5 disconnected: Use another server."]
    assert closes["cut3"] == ["Client cut3 disconnected: Use another server."]
    assert closes["polite"] == ["Client polite disconnected."]
