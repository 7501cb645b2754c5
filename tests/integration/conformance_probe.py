"""An independent black-box MQTT conformance probe: its own tiny encoder and
parser written from the MQTT 5.0 / 3.1.1 specifications (it shares no code
with the broker or with mqttwire.py), and the fixtures that start the broker
under test.

The target is mqttoolsd from MQTTOOLS_BUILD (default build/). For comparison
only (not in CI), MQTTOOLS_CONFORMANCE_TARGET=mosquitto runs the same cases
against Debian's mosquitto, started and stopped by PID:

    MQTTOOLS_CONFORMANCE_TARGET=mosquitto /usr/bin/python3 -m pytest \
        tests/integration/test_conformance_*.py

Tests import the fixtures: `from conformance_probe import probe, probe_factory`.
"""
import os
import pathlib
import select
import shutil
import socket
import struct
import subprocess
import time

import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("MQTTOOLS_BUILD", TOP / "build"))
MQTTOOLSD = BUILD / "src" / "daemon" / "mqttoolsd"
TARGET = os.environ.get("MQTTOOLS_CONFORMANCE_TARGET", "mqttoolsd")
SANITIZED = os.environ.get("MQTTOOLS_SANITIZED") == "1"
# Extra slack for timing assertions under ASan/UBSan (the broker's timers are
# exact, but a sanitized process is slower to get scheduled and to react).
SLACK = 0.25 if SANITIZED else 0.0

# Packet types (MQTT 5.0 section 2.1.2)
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)
NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
         8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
         14: "DISCONNECT", 15: "AUTH"}

# Property identifiers and their types (MQTT 5.0 section 2.2.2.2, table 2-4).
_B, _U16, _U32, _VBI, _STR, _BIN, _PAIR = range(7)
PROPERTY_TYPES = {
    0x01: _B, 0x02: _U32, 0x03: _STR, 0x08: _STR, 0x09: _BIN, 0x0B: _VBI, 0x11: _U32, 0x12: _STR,
    0x13: _U16, 0x15: _STR, 0x16: _BIN, 0x17: _B, 0x18: _U32, 0x19: _B, 0x1A: _STR, 0x1C: _STR,
    0x1F: _STR, 0x21: _U16, 0x22: _U16, 0x23: _U16, 0x24: _B, 0x25: _B, 0x26: _PAIR, 0x27: _U32,
    0x28: _B, 0x29: _B, 0x2A: _B,
}
P_PAYLOAD_FORMAT, P_MESSAGE_EXPIRY, P_CONTENT_TYPE = 0x01, 0x02, 0x03
P_RESPONSE_TOPIC, P_CORRELATION_DATA, P_SUBSCRIPTION_ID = 0x08, 0x09, 0x0B
P_SESSION_EXPIRY, P_ASSIGNED_CLIENT_ID, P_SERVER_KEEP_ALIVE = 0x11, 0x12, 0x13
P_AUTH_METHOD, P_WILL_DELAY, P_RECEIVE_MAXIMUM = 0x15, 0x18, 0x21
P_TOPIC_ALIAS_MAXIMUM, P_TOPIC_ALIAS, P_USER_PROPERTY, P_MAXIMUM_PACKET_SIZE = 0x22, 0x23, 0x26, 0x27


def h(text):
    """Bytes from a hex string with spaces: h("10 0c 00 04 4d 51 54 54")."""
    return bytes.fromhex(text.replace("\n", " "))


# ---------------------------------------------------------------- encoding
# Deliberately minimal: the data representations of MQTT 5.0 section 1.5.


def vbi(n):
    """Variable Byte Integer, section 1.5.5."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(text):
    """UTF-8 Encoded String / Binary Data: two-byte length then the bytes."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    return struct.pack("!H", len(data)) + data


def prop(pid, value):
    """One property (identifier then value, typed by PROPERTY_TYPES)."""
    kind = PROPERTY_TYPES[pid]
    if kind == _B:
        return bytes([pid, value])
    if kind == _U16:
        return bytes([pid]) + struct.pack("!H", value)
    if kind == _U32:
        return bytes([pid]) + struct.pack("!I", value)
    if kind == _VBI:
        return bytes([pid]) + vbi(value)
    if kind in (_STR, _BIN):
        return bytes([pid]) + s(value)
    return bytes([pid]) + s(value[0]) + s(value[1])


def props(*items):
    """A property block: Property Length then the given encoded properties."""
    body = b"".join(items)
    return vbi(len(body)) + body


def fixed(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + vbi(len(body)) + body


def connect(cid="", v=5, clean=True, keepalive=60, properties=b"\x00", will=None, username=None,
            password=None, flags_or=0):
    """CONNECT (section 3.1). will = (topic, payload, qos, retain, will property block)."""
    flags = (0x02 if clean else 0) | flags_or
    payload = s(cid)
    if will is not None:
        topic, message, qos, retain, wprops = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if v == 5:
            payload += wprops
        payload += s(topic) + s(message)
    if username is not None:
        flags |= 0x80
        payload += s(username)
    if password is not None:
        flags |= 0x40
        payload += s(password)
    body = s("MQTT") + bytes([v, flags]) + struct.pack("!H", keepalive)
    if v == 5:
        body += properties
    return fixed(CONNECT, 0, body + payload)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=1, properties=b"\x00", v=5):
    """PUBLISH (section 3.3)."""
    body = s(topic)
    if qos:
        body += struct.pack("!H", pid)
    if v == 5:
        body += properties
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    return fixed(PUBLISH, flags, body + (payload.encode() if isinstance(payload, str) else payload))


def subscribe(pid, filters, properties=b"\x00", v=5):
    """SUBSCRIBE (section 3.8): filters = [(filter, options byte)]."""
    body = struct.pack("!H", pid) + (properties if v == 5 else b"")
    body += b"".join(s(f) + bytes([o]) for f, o in filters)
    return fixed(SUBSCRIBE, 0x02, body)


def opts(qos=0, nl=False, rap=False, rh=0):
    """Subscription Options byte (section 3.8.3.1)."""
    return qos | (0x04 if nl else 0) | (0x08 if rap else 0) | (rh << 4)


def unsubscribe(pid, filters, v=5):
    body = struct.pack("!H", pid) + (b"\x00" if v == 5 else b"")
    body += b"".join(s(f) for f in filters)
    return fixed(UNSUBSCRIBE, 0x02, body)


def ack(ptype, pid):
    """PUBACK/PUBREC/PUBREL/PUBCOMP with reason Success, short form."""
    return fixed(ptype, 0x02 if ptype == PUBREL else 0, struct.pack("!H", pid))


def disconnect(reason=None, properties=None):
    if reason is None:
        return h("e0 00")
    return fixed(DISCONNECT, 0, bytes([reason]) + (properties if properties is not None else b"\x00"))


PINGREQ_BYTES = h("c0 00")


# ---------------------------------------------------------------- parsing


def read_vbi(data, pos):
    value, mult = 0, 1
    for i in range(4):
        if pos + i >= len(data):
            raise ValueError("truncated variable byte integer")
        b = data[pos + i]
        value += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return value, pos + i + 1
    raise ValueError("variable byte integer longer than 4 bytes")


def parse_props(data, pos):
    """Returns ({id: [values]}, position after the block)."""
    length, pos = read_vbi(data, pos)
    end = pos + length
    out = {}
    while pos < end:
        pid = data[pos]
        pos += 1
        kind = PROPERTY_TYPES[pid]
        if kind == _B:
            val, pos = data[pos], pos + 1
        elif kind == _U16:
            val, pos = struct.unpack_from("!H", data, pos)[0], pos + 2
        elif kind == _U32:
            val, pos = struct.unpack_from("!I", data, pos)[0], pos + 4
        elif kind == _VBI:
            val, pos = read_vbi(data, pos)
        elif kind in (_STR, _BIN):
            n = struct.unpack_from("!H", data, pos)[0]
            val, pos = bytes(data[pos + 2:pos + 2 + n]), pos + 2 + n
            if kind == _STR:
                val = val.decode()
        else:
            n = struct.unpack_from("!H", data, pos)[0]
            k = bytes(data[pos + 2:pos + 2 + n]).decode()
            pos += 2 + n
            n = struct.unpack_from("!H", data, pos)[0]
            val = (k, bytes(data[pos + 2:pos + 2 + n]).decode())
            pos += 2 + n
        out.setdefault(pid, []).append(val)
    if pos != end:
        raise ValueError("property block overruns its length")
    return out, end


class Pkt:
    """One received control packet, decoded per the version of the connection."""

    def __init__(self, raw, v):
        self.raw = raw
        self.type = raw[0] >> 4
        self.flags = raw[0] & 0x0F
        _, pos = read_vbi(raw, 1)
        self.body = raw[pos:]
        self.v = v
        self.props = {}
        self.reason = None
        b = self.body
        if self.type == CONNACK:
            self.session_present = b[0] & 1
            self.reason = b[1]
            if v == 5 and len(b) > 2:
                self.props, _ = parse_props(b, 2)
        elif self.type == PUBLISH:
            self.qos = (self.flags >> 1) & 3
            self.dup = bool(self.flags & 8)
            self.retain = bool(self.flags & 1)
            n = struct.unpack_from("!H", b, 0)[0]
            self.topic = bytes(b[2:2 + n]).decode()
            pos = 2 + n
            self.pid = None
            if self.qos:
                self.pid = struct.unpack_from("!H", b, pos)[0]
                pos += 2
            if v == 5:
                self.props, pos = parse_props(b, pos)
            self.payload = bytes(b[pos:])
        elif self.type in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            self.pid = struct.unpack_from("!H", b, 0)[0]
            self.reason = b[2] if len(b) > 2 else 0
            if len(b) > 3:
                self.props, _ = parse_props(b, 3)
        elif self.type in (SUBACK, UNSUBACK):
            self.pid = struct.unpack_from("!H", b, 0)[0]
            pos = 2
            if v == 5:
                self.props, pos = parse_props(b, pos)
            self.codes = list(b[pos:])
        elif self.type in (DISCONNECT, AUTH):
            self.reason = b[0] if b else 0
            if len(b) > 1:
                self.props, _ = parse_props(b, 1)

    def prop(self, pid, default=None):
        vals = self.props.get(pid)
        return vals[0] if vals else default

    def __repr__(self):
        extra = f" reason=0x{self.reason:02x}" if self.reason is not None else ""
        if self.type == PUBLISH:
            extra = f" topic={self.topic!r} qos={self.qos} retain={self.retain} dup={self.dup} payload={self.payload!r}"
        return f"<{NAMES.get(self.type, self.type)}{extra} raw={self.raw[:40].hex(' ')}>"


class Closed(Exception):
    pass


class Conn:
    """A raw TCP connection to the broker under test."""

    def __init__(self, port, v=5, timeout=3.0):
        self.v = v
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    # -- sending
    def send(self, data):
        self.sock.sendall(data)
        return self

    def send_bytewise(self, data, pause=0.0005):
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            if pause:
                time.sleep(pause)

    # -- receiving
    def _frame(self):
        """A complete packet from the buffer, or None."""
        if len(self.buf) < 2:
            return None
        try:
            length, pos = read_vbi(self.buf, 1)
        except ValueError as e:
            if "longer" in str(e):
                raise AssertionError(f"broker sent a bad remaining length: {bytes(self.buf[:8]).hex(' ')}")
            return None
        if len(self.buf) < pos + length:
            return None
        raw = bytes(self.buf[:pos + length])
        del self.buf[:pos + length]
        return Pkt(raw, self.v)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([self.sock], [], [], left)
        if not ready:
            return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def recv(self, timeout=2.0):
        """The next packet; raises Closed on EOF, TimeoutError when none comes."""
        deadline = time.monotonic() + timeout
        while True:
            p = self._frame()
            if p is not None:
                return p
            if self.eof:
                raise Closed(f"connection closed (pending bytes {bytes(self.buf).hex(' ')})")
            if not self._fill(deadline) and not self.eof:
                raise TimeoutError(f"no packet within {timeout} s")

    def expect(self, ptype, timeout=2.0):
        p = self.recv(timeout)
        assert p.type == ptype, f"expected {NAMES[ptype]}, got {p!r}"
        return p

    def until_closed(self, timeout=2.0):
        """Every packet received until the broker closes; fails when it does not
        close within `timeout`."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            p = self._frame()
            if p is not None:
                got.append(p)
                continue
            if self.eof:
                return got
            if not self._fill(deadline) and not self.eof:
                raise AssertionError(f"broker did not close the connection within {timeout} s; got {got}")

    def silent(self, timeout=0.3):
        """Asserts nothing arrives (and the connection stays open) for `timeout`."""
        try:
            p = self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {p!r}")

    def is_open(self, timeout=0.05):
        try:
            self.recv(timeout)
        except TimeoutError:
            return True
        except Closed:
            return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- conveniences built on the above
    def handshake(self, cid, **kw):
        self.send(connect(cid, v=self.v, **kw))
        ack = self.expect(CONNACK)
        assert ack.reason == 0, f"CONNACK refused: {ack!r}"
        return ack

    def sub(self, filters, pid=1, properties=b"\x00"):
        """filters: [(filter, options)] or a filter string (QoS 0)."""
        if isinstance(filters, str):
            filters = [(filters, 0)]
        self.send(subscribe(pid, filters, properties, v=self.v))
        sa = self.expect(SUBACK)
        assert sa.pid == pid
        return sa

    def ping(self):
        """A PINGREQ round trip: everything the broker sent before PINGRESP is
        returned (use it as a barrier)."""
        self.send(PINGREQ_BYTES)
        before = []
        while True:
            p = self.recv()
            if p.type == PINGRESP:
                return before
            before.append(p)

    def publishes(self, timeout=0.3):
        """Every PUBLISH received within `timeout` (others fail the test)."""
        out = []
        while True:
            try:
                p = self.recv(timeout)
            except TimeoutError:
                return out
            assert p.type == PUBLISH, f"expected PUBLISH, got {p!r}"
            out.append(p)


def client(port, cid, v=5, **kw):
    c = Conn(port, v=v)
    c.handshake(cid, **kw)
    return c


def assert_disconnected_with(c, reason):
    """The broker must send exactly one DISCONNECT with `reason`, then close."""
    got = c.until_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, reason)], \
        f"expected DISCONNECT 0x{reason:02x} then close, got {got}"
    # [MQTT-3.14.2-2] the Server MUST NOT send a Session Expiry Interval in DISCONNECT.
    assert P_SESSION_EXPIRY not in got[0].props, got[0]


def assert_refused_before_connack(c):
    """A broken CONNECT: the broker closes; if it sends anything first, it is
    one CONNACK with a reason code >= 0x80 ([MQTT-3.2.2-7]); it never sends a
    DISCONNECT before a successful CONNACK ([MQTT-3.14.0-1])."""
    got = c.until_closed()
    assert len(got) <= 1, got
    if got:
        assert got[0].type == CONNACK and got[0].reason >= 0x80, got


# ---------------------------------------------------------------- brokers

_MOSQUITTO_KEYS = {
    # mqttoolsd TOML key -> mosquitto.conf key (None: no equivalent)
    "max_keepalive": "max_keepalive",
    "max_packet_size": "max_packet_size",
    "topic_alias_maximum": "max_topic_alias",
    "receive_maximum": "max_inflight_messages",
    "max_inflight_messages": "max_inflight_messages",
    "connect_timeout": None,
}


class _Mosquitto:
    def __init__(self, tmp_path, settings):
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            self.port = sk.getsockname()[1]
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "log_dest stderr", "set_tcp_nodelay true"]
        for k, val in settings.items():
            mk = _MOSQUITTO_KEYS.get(k, k)
            if mk:
                lines.append(f"{mk} {val}")
        conf = tmp_path / f"mosquitto-{self.port}.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.log = open(tmp_path / f"mosquitto-{self.port}.log", "wb")
        self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start")
                time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return 0


@pytest.fixture
def probe_factory(request, tmp_path):
    """probe_factory(**settings) -> broker with .port. Settings use mqttoolsd's
    TOML key names (written as `key = value` lines)."""
    started = []

    def start(**settings):
        if TARGET == "mosquitto":
            b = _Mosquitto(tmp_path, settings)
        else:
            if not MQTTOOLSD.exists():
                pytest.skip("mqttoolsd not built")
            start_broker = request.getfixturevalue("start_broker")
            config = "".join(f"{k} = {v}\n" for k, v in settings.items()) if settings else None
            b = start_broker(config=config)
        started.append(b)
        return b

    yield start
    for b in started:
        code = b.stop()
        # A clean SIGTERM exit is part of every case: a crash, a hang or a
        # sanitizer report makes it fail.
        assert code == 0, f"broker exited with {code}"


@pytest.fixture
def probe(probe_factory):
    """The broker under test with default settings."""
    return probe_factory()
