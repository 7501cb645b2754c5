"""mqttwire: a small MQTT 5.0 / 3.1.1 packet builder and parser for
byte-level tests over a raw socket. It builds exact bytes (including
deliberately broken ones) and parses what the broker sends back, hiding
nothing: every reason code and property is visible to the test.

    c = Client(port)                     # TCP to 127.0.0.1:port
    ack = c.connect("id", properties={SESSION_EXPIRY_INTERVAL: 60})
    assert ack.reason == 0
    c.subscribe([("a/#", 1)])            # returns the SUBACK Packet
    c.publish("a/b", b"x", qos=1)        # returns PUBACK for QoS 1
    p = c.expect(PUBLISH)                # Packet with .topic .payload .props

No tests live here; other test files import it.
"""
import socket
import struct
import time

# Packet types
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)
TYPE_NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
              7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
              12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "AUTH"}

# Property identifiers (MQTT 5.0 section 2.2.2.2)
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

BYTE, TWO, FOUR, VBI, STRING, BINARY, PAIR = range(7)
PROPERTY_TYPES = {
    0x01: BYTE, 0x02: FOUR, 0x03: STRING, 0x08: STRING, 0x09: BINARY, 0x0B: VBI, 0x11: FOUR,
    0x12: STRING, 0x13: TWO, 0x15: STRING, 0x16: BINARY, 0x17: BYTE, 0x18: FOUR, 0x19: BYTE,
    0x1A: STRING, 0x1C: STRING, 0x1F: STRING, 0x21: TWO, 0x22: TWO, 0x23: TWO, 0x24: BYTE,
    0x25: BYTE, 0x26: PAIR, 0x27: FOUR, 0x28: BYTE, 0x29: BYTE, 0x2A: BYTE,
}

# ------------------------------------------------------------------ encoding


def vbi(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def u16(n):
    return struct.pack("!H", n)


def u32(n):
    return struct.pack("!I", n)


def utf8(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return u16(len(b)) + b


binary = utf8


def encode_property(pid, value):
    kind = PROPERTY_TYPES[pid]
    out = vbi(pid)
    if kind == BYTE:
        return out + bytes([value])
    if kind == TWO:
        return out + u16(value)
    if kind == FOUR:
        return out + u32(value)
    if kind == VBI:
        return out + vbi(value)
    if kind in (STRING, BINARY):
        return out + utf8(value)
    name, val = value
    return out + utf8(name) + utf8(val)


def property_block(props):
    """Property block with its length. `props` is a dict {id: value} (a
    list value repeats the property) or a list of (id, value) pairs (order
    kept), or raw bytes (sent as they are)."""
    if props is None:
        props = []
    if isinstance(props, (bytes, bytearray)):
        return vbi(len(props)) + bytes(props)
    items = []
    if isinstance(props, dict):
        for pid, value in props.items():
            if isinstance(value, list):
                items += [(pid, v) for v in value]
            else:
                items.append((pid, value))
    else:
        items = list(props)
    body = b"".join(encode_property(pid, v) for pid, v in items)
    return vbi(len(body)) + body


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + vbi(len(body)) + body


def connect_packet(client_id="", version=5, clean_start=True, keepalive=60, username=None,
                   password=None, will_topic=None, will_payload=b"", will_qos=0, will_retain=False,
                   will_properties=None, properties=None, protocol_name="MQTT", flags_extra=0):
    flags = (0x02 if clean_start else 0) | flags_extra
    payload = utf8(client_id)
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        if version == 5:
            payload += property_block(will_properties)
        payload += utf8(will_topic) + binary(will_payload)
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += binary(password)
    body = utf8(protocol_name) + bytes([version, flags]) + u16(keepalive)
    if version == 5:
        body += property_block(properties)
    return packet(CONNECT, 0, body + payload)


def publish_packet(topic, payload=b"", qos=0, retain=False, dup=False, packet_id=1, version=5,
                   properties=None):
    if isinstance(payload, str):
        payload = payload.encode()
    body = utf8(topic)
    if qos:
        body += u16(packet_id)
    if version == 5:
        body += property_block(properties)
    flags = (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    return packet(PUBLISH, flags, body + payload)


def subscribe_packet(filters, packet_id=1, version=5, properties=None):
    """filters: [(filter, options_byte)] or [filter] (QoS 0)."""
    body = u16(packet_id)
    if version == 5:
        body += property_block(properties)
    for f in filters:
        if isinstance(f, str):
            f = (f, 0)
        body += utf8(f[0]) + bytes([f[1]])
    return packet(SUBSCRIBE, 2, body)


def sub_options(qos=0, no_local=False, retain_as_published=False, retain_handling=0):
    return qos | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | (retain_handling << 4)


def unsubscribe_packet(filters, packet_id=1, version=5, properties=None):
    body = u16(packet_id)
    if version == 5:
        body += property_block(properties)
    for f in filters:
        body += utf8(f)
    return packet(UNSUBSCRIBE, 2, body)


def ack_packet(ptype, packet_id, reason=0, version=5, properties=None):
    body = u16(packet_id)
    if version == 5 and (reason or properties):
        body += bytes([reason]) + property_block(properties)
    return packet(ptype, 2 if ptype == PUBREL else 0, body)


def disconnect_packet(reason=0, version=5, properties=None):
    if version != 5:
        return packet(DISCONNECT, 0, b"")
    if reason == 0 and not properties:
        return packet(DISCONNECT, 0, b"")
    return packet(DISCONNECT, 0, bytes([reason]) + property_block(properties))


PINGREQ_PACKET = packet(PINGREQ, 0, b"")

# ------------------------------------------------------------------ decoding


def read_vbi(data, pos):
    mult, value = 1, 0
    while True:
        b = data[pos]
        pos += 1
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, pos
        mult *= 128


def parse_properties(data, pos):
    """Returns (list of (id, value) in wire order, new pos)."""
    length, pos = read_vbi(data, pos)
    end = pos + length
    out = []
    while pos < end:
        pid, pos = read_vbi(data, pos)
        kind = PROPERTY_TYPES[pid]
        if kind == BYTE:
            value = data[pos]
            pos += 1
        elif kind == TWO:
            value = struct.unpack_from("!H", data, pos)[0]
            pos += 2
        elif kind == FOUR:
            value = struct.unpack_from("!I", data, pos)[0]
            pos += 4
        elif kind == VBI:
            value, pos = read_vbi(data, pos)
        elif kind in (STRING, BINARY):
            n = struct.unpack_from("!H", data, pos)[0]
            value = bytes(data[pos + 2:pos + 2 + n])
            if kind == STRING:
                value = value.decode()
            pos += 2 + n
        else:
            n = struct.unpack_from("!H", data, pos)[0]
            name = bytes(data[pos + 2:pos + 2 + n]).decode()
            pos += 2 + n
            m = struct.unpack_from("!H", data, pos)[0]
            val = bytes(data[pos + 2:pos + 2 + m]).decode()
            pos += 2 + m
            value = (name, val)
        out.append((pid, value))
    return out, end


class Packet:
    """A parsed packet. Always: type, flags, body (raw). Per type:
    CONNACK session_present reason props; PUBLISH topic payload qos retain dup
    packet_id props; acks packet_id reason props; SUBACK/UNSUBACK packet_id
    codes props; DISCONNECT/AUTH reason props."""

    def __init__(self, ptype, flags, body, version=5):
        self.type, self.flags, self.body = ptype, flags, bytes(body)
        self.props = []
        self.reason = 0
        parse = getattr(self, "_parse_" + TYPE_NAMES.get(ptype, "x").lower(), None)
        if parse:
            parse(version)

    def __repr__(self):
        fields = {k: v for k, v in self.__dict__.items() if k not in ("body", "flags")}
        return f"<{TYPE_NAMES.get(self.type, self.type)} {fields}>"

    def prop(self, pid, default=None):
        for k, v in self.props:
            if k == pid:
                return v
        return default

    def prop_all(self, pid):
        return [v for k, v in self.props if k == pid]

    def _parse_connack(self, version):
        b = self.body
        self.session_present = bool(b[0] & 1)
        self.reason = b[1]
        if len(b) > 2:
            self.props, _ = parse_properties(b, 2)

    def _parse_publish(self, version):
        b = self.body
        self.qos = (self.flags >> 1) & 3
        self.retain = bool(self.flags & 1)
        self.dup = bool(self.flags & 8)
        n = struct.unpack_from("!H", b, 0)[0]
        self.topic = bytes(b[2:2 + n]).decode()
        pos = 2 + n
        self.packet_id = None
        if self.qos:
            self.packet_id = struct.unpack_from("!H", b, pos)[0]
            pos += 2
        if version == 5:
            self.props, pos = parse_properties(b, pos)
        self.payload = bytes(b[pos:])

    def _parse_ack(self, version):
        b = self.body
        self.packet_id = struct.unpack_from("!H", b, 0)[0]
        if version == 5 and len(b) > 2:
            self.reason = b[2]
            if len(b) > 3:
                self.props, _ = parse_properties(b, 3)

    _parse_puback = _parse_pubrec = _parse_pubrel = _parse_pubcomp = _parse_ack

    def _parse_suback(self, version):
        b = self.body
        self.packet_id = struct.unpack_from("!H", b, 0)[0]
        pos = 2
        if version == 5:
            self.props, pos = parse_properties(b, pos)
        self.codes = list(b[pos:])

    _parse_unsuback = _parse_suback

    def _parse_disconnect(self, version):
        b = self.body
        if b:
            self.reason = b[0]
            if len(b) > 1:
                self.props, _ = parse_properties(b, 1)

    _parse_auth = _parse_disconnect


# ------------------------------------------------------------------ client


class Closed(Exception):
    """The broker closed the connection."""


class Wire:
    """A connected socket and its receive buffer: the I/O under every raw
    client of these tests (Client here, the security tests' RawClient,
    wsclient's WsConn)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, n, deadline):
        # Joined once: appending each chunk would copy a 64 MB packet
        # a thousand times.
        parts, have = [self.buf], len(self.buf)
        try:
            while have < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no packet from the broker in time")
                self.sock.settimeout(remaining)
                try:
                    chunk = self.sock.recv(max(65536, min(n - have, 1 << 22)))
                except socket.timeout:
                    raise TimeoutError("no packet from the broker in time") from None
                except (ConnectionResetError, BrokenPipeError):
                    chunk = b""
                if not chunk:
                    raise Closed()
                parts.append(chunk)
                have += len(chunk)
        finally:
            if len(parts) > 1:
                self.buf = b"".join(parts)

    def read_packet(self, timeout=5.0):
        """(first byte, body) of the next packet; raises Closed at EOF,
        TimeoutError."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        length, pos, mult = 0, 1, 1
        while True:
            self._fill(pos + 1, deadline)
            b = self.buf[pos]
            pos += 1
            length += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        self._fill(pos + length, deadline)
        first = self.buf[0]
        body = self.buf[pos:pos + length]
        self.raw_last = self.buf[:pos + length]
        self.buf = self.buf[pos + length:]
        return first, body


class Client(Wire):
    """A raw MQTT connection to 127.0.0.1:port."""

    def __init__(self, port, version=5, timeout=5.0, host="127.0.0.1"):
        super().__init__(socket.create_connection((host, port), timeout=timeout))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.version = version

    def recv(self, timeout=5.0):
        """The next packet (a Packet); raises Closed at EOF, TimeoutError."""
        first, body = self.read_packet(timeout)
        return Packet(first >> 4, first & 0x0F, body, self.version)

    def expect(self, ptype, timeout=5.0):
        """The next packet, asserting its type."""
        p = self.recv(timeout)
        assert p.type == ptype, f"expected {TYPE_NAMES[ptype]}, got {p!r}"
        return p

    def expect_closed(self, timeout=5.0):
        """Reads until EOF; returns the packets that came before it."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got.append(self.recv(max(0.01, deadline - time.monotonic())))
            except Closed:
                return got

    def nothing(self, timeout=0.3):
        """Asserts no packet arrives within `timeout`."""
        try:
            p = self.recv(timeout)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {p!r}")

    # -- protocol helpers
    def connect(self, client_id="", clean_start=True, keepalive=60, properties=None, **kw):
        """Sends CONNECT, returns the CONNACK Packet."""
        self.send(connect_packet(client_id, self.version, clean_start, keepalive,
                                 properties=properties, **kw))
        return self.expect(CONNACK)

    def subscribe(self, filters, packet_id=1, properties=None):
        """filters: [(filter, options)] or [filter]; returns SUBACK."""
        self.send(subscribe_packet(filters, packet_id, self.version, properties))
        p = self.expect(SUBACK)
        assert p.packet_id == packet_id
        return p

    def unsubscribe(self, filters, packet_id=1, properties=None):
        self.send(unsubscribe_packet(filters, packet_id, self.version, properties))
        p = self.expect(UNSUBACK)
        assert p.packet_id == packet_id
        return p

    def publish(self, topic, payload=b"", qos=0, retain=False, packet_id=1, properties=None,
                dup=False, complete=True):
        """PUBLISH; for QoS 1 returns PUBACK, for QoS 2 PUBREC (and with
        complete=True also sends PUBREL and waits for PUBCOMP)."""
        self.send(publish_packet(topic, payload, qos, retain, dup, packet_id, self.version, properties))
        if qos == 0:
            return None
        ack = self.expect(PUBACK if qos == 1 else PUBREC)
        assert ack.packet_id == packet_id
        if qos == 2 and complete and ack.reason < 0x80:
            self.send(ack_packet(PUBREL, packet_id, version=self.version))
            self.expect(PUBCOMP)
        return ack

    def ack(self, p):
        """Acknowledges a received QoS 1/2 PUBLISH (full flow for QoS 2)."""
        if p.qos == 1:
            self.send(ack_packet(PUBACK, p.packet_id, version=self.version))
        elif p.qos == 2:
            self.send(ack_packet(PUBREC, p.packet_id, version=self.version))
            rel = self.expect(PUBREL)
            assert rel.packet_id == p.packet_id
            self.send(ack_packet(PUBCOMP, p.packet_id, version=self.version))

    def ping(self, timeout=5.0):
        """PINGREQ/PINGRESP round trip: everything sent before is handled."""
        self.send(PINGREQ_PACKET)
        return self.expect(PINGRESP, timeout)

    def disconnect(self, reason=0, properties=None):
        try:
            self.send(disconnect_packet(reason, self.version, properties))
        except OSError:
            pass
        self.close()

    def messages(self, quiet=0.3):
        """Every PUBLISH until none arrives for `quiet` seconds (other
        packets are kept out). QoS 1 messages are acknowledged."""
        got = []
        while True:
            try:
                p = self.recv(quiet)
            except TimeoutError:
                return got
            if p.type == PUBLISH:
                if p.qos == 1:
                    self.ack(p)
                got.append(p)
