"""A small raw MQTT client for the security tests: it speaks exact bytes so
the tests see every reason code the broker sends (no library retries or
hides them). No tests live here; pytest imports it as a module."""
import socket
import struct
import time

# Framing primitives are the shared raw-socket helper's (tests/integration/mqttwire.py).
from mqttwire import (AUTH, CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBCOMP,  # noqa: F401
                      PUBLISH, PUBREC, PUBREL, SUBACK, SUBSCRIBE, UNSUBACK, UNSUBSCRIBE, Closed, Wire,
                      packet, read_vbi, utf8, vbi)


class RawClient(Wire):
    def __init__(self, port, version=5, tls=None, server_hostname="localhost", timeout=5.0):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=server_hostname)
        super().__init__(sock)
        self.version = version
        self.stash = []  # packets that arrived while waiting for another type

    def recv(self, timeout=5.0):
        """Next packet as (type, flags, body); raises Closed at EOF."""
        first, body = self.read_packet(timeout)
        return first >> 4, first & 0x0F, body

    def recv_type(self, wanted, timeout=5.0):
        """The next packet of type `wanted`; others that arrive first are
        kept (in order) for later recv_type calls."""
        for i, (ptype, flags, body) in enumerate(self.stash):
            if ptype == wanted:
                del self.stash[i]
                return flags, body
        deadline = time.monotonic() + timeout
        while True:
            ptype, flags, body = self.recv(max(0.01, deadline - time.monotonic()))
            if ptype == wanted:
                return flags, body
            if ptype in (PUBLISH, PUBREL):
                self.stash.append((ptype, flags, body))

    def props(self, props):
        return vbi(len(props)) + props if self.version == 5 else b""

    def connect(self, client_id="", username=None, password=None, clean=True, keepalive=60,
                properties=b""):
        """Sends CONNECT; returns (session_present, reason code) from CONNACK
        (3.1.1 return codes as they are on the wire)."""
        flags = 0x02 if clean else 0
        payload = utf8(client_id)
        if username is not None:
            flags |= 0x80
        if password is not None:
            flags |= 0x40
        if username is not None:
            payload += utf8(username)
        if password is not None:
            payload += utf8(password)
        body = utf8("MQTT") + bytes([self.version, flags]) + struct.pack("!H", keepalive)
        body += self.props(properties) + payload
        self.send(packet(CONNECT, 0, body))
        ptype, _, body = self.recv()
        assert ptype == CONNACK, ptype
        return body[0] & 1, body[1]

    def subscribe(self, filters, packet_id=1, qos=0):
        """SUBSCRIBE to each filter; returns the SUBACK codes."""
        payload = b"".join(utf8(f) + bytes([qos]) for f in filters)
        body = struct.pack("!H", packet_id) + self.props(b"") + payload
        self.send(packet(SUBSCRIBE, 2, body))
        _, body = self.recv_type(SUBACK)
        assert struct.unpack("!H", body[:2])[0] == packet_id
        pos = 2
        if self.version == 5:
            plen, pos = read_vbi(body, pos)
            pos += plen
        return list(body[pos:])

    def publish(self, topic, payload=b"", qos=0, retain=False, packet_id=1):
        """PUBLISH; for QoS 1/2 returns the PUBACK/PUBREC reason code."""
        if isinstance(payload, str):
            payload = payload.encode()
        body = utf8(topic)
        if qos:
            body += struct.pack("!H", packet_id)
        body += self.props(b"") + payload
        self.send(packet(PUBLISH, (qos << 1) | (1 if retain else 0), body))
        if qos == 0:
            return None
        _, body = self.recv_type(PUBACK if qos == 1 else PUBREC)
        assert struct.unpack("!H", body[:2])[0] == packet_id
        code = body[2] if len(body) > 2 else 0
        if qos == 2 and code < 0x80:
            self.send(packet(PUBREL, 2, struct.pack("!H", packet_id)))
            self.recv_type(PUBCOMP)
        return code

    def parse_publish(self, flags, body):
        qos = (flags >> 1) & 3
        tlen = struct.unpack("!H", body[:2])[0]
        topic = body[2:2 + tlen].decode()
        pos = 2 + tlen
        packet_id = None
        if qos:
            packet_id = struct.unpack("!H", body[pos:pos + 2])[0]
            pos += 2
        if self.version == 5:
            plen, pos = read_vbi(body, pos)
            pos += plen
        if qos == 1:
            self.send(packet(PUBACK, 0, struct.pack("!H", packet_id)))
        return topic, bytes(body[pos:]), qos, bool(flags & 1)

    def next_publish(self, timeout=5.0):
        flags, body = self.recv_type(PUBLISH, timeout)
        return self.parse_publish(flags, body)

    def publishes_until_quiet(self, quiet=0.3):
        """Every PUBLISH that arrives until none has come for `quiet` s."""
        got = []
        while True:
            try:
                got.append(self.next_publish(quiet))
            except TimeoutError:
                return got

    def ping(self, timeout=5.0):
        """PINGREQ/PINGRESP: everything sent before it has been handled."""
        self.send(packet(PINGREQ, 0, b""))
        self.recv_type(PINGRESP, timeout)

    def disconnect(self):
        try:
            self.send(packet(DISCONNECT, 0, b"\x00\x00" if self.version == 5 else b""))
        except OSError:
            pass
        self.close()
