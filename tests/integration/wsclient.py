"""A minimal RFC 6455 client for the WebSocket tests: the upgrade request
byte by byte as the test wants it, masked frames, and a frame reader for
what the broker sends. Deliberately small and independent of the broker's
C++ code, so the two check each other."""
import base64
import hashlib
import os
import socket
import struct
import time

from mqttwire import Wire

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_for(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def upgrade_request(path="/mqtt", host="127.0.0.1", key=None, protocol="mqtt", version="13",
                    extra=(), drop=()):
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    headers = [("Host", host), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", version)]
    if protocol is not None:
        headers.append(("Sec-WebSocket-Protocol", protocol))
    headers += list(extra)
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers if k not in drop]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


def frame(payload, opcode=0x2, fin=True, mask=True, length=None, rsv=0):
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class WsConn(Wire):
    """A socket after (or during) the upgrade. recv_* raise TimeoutError
    when the broker says nothing in time."""

    def __init__(self, port, timeout=10.0):
        super().__init__(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        self.mqtt = b""  # MQTT bytes received but not yet asked for
        self.timeout = timeout

    def _more(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the broker said nothing in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("the broker said nothing in time") from None
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def http_response(self, timeout=None):
        """(status, headers dict lower-case, body read until EOF or Content-Length)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            self._more(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._more(deadline)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def upgrade(self, path="/mqtt", **kwargs):
        request, key = upgrade_request(path=path, **kwargs)
        self.send(request)
        status, headers, _ = self.http_response()
        assert status == 101, (status, headers)
        assert headers["sec-websocket-accept"] == accept_for(key)
        return headers

    def recv_frame(self, timeout=None):
        """(opcode, payload) of the next frame; server frames are unmasked."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < 2:
            self._more(deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80 == 0, "the server masked a frame"
        assert b0 & 0x70 == 0, "RSV bits set by the server"
        n, at = b1 & 0x7F, 2
        if n == 126:
            while len(self.buf) < 4:
                self._more(deadline)
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            while len(self.buf) < 10:
                self._more(deadline)
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        while len(self.buf) < at + n:
            self._more(deadline)
        payload, self.buf = self.buf[at:at + n], self.buf[at + n:]
        return b0 & 0x0F, payload

    def recv_mqtt(self, n, timeout=None):
        """n bytes of the MQTT stream, whatever the framing."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.mqtt) < n:
            opcode, payload = self.recv_frame(max(deadline - time.monotonic(), 0.01))
            assert opcode in (0x0, 0x2), f"opcode {opcode} while reading MQTT"
            self.mqtt += payload
        out, self.mqtt = self.mqtt[:n], self.mqtt[n:]
        return out

    def expect_close(self, code, timeout=None):
        """The broker's Close frame with `code`, then an orderly end of stream."""
        while True:
            opcode, payload = self.recv_frame(timeout)
            if opcode == 0x8:
                break
            assert opcode in (0x0, 0x2, 0xA), f"unexpected opcode {opcode}"
        got = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        assert got == code, f"close code {got}, expected {code}"
        self.expect_eof(timeout)

    def expect_eof(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        self.buf = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the connection stayed open")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("the connection stayed open") from None
            if not chunk:
                return
