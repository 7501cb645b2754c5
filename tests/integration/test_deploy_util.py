"""Helpers for the deployment tests (test_deploy_*.py): a minimal raw MQTT 5
client over TCP, a NOTIFY_SOCKET listener and a daemon launcher. No tests
here; pytest collects nothing from this file."""
import os
import pathlib
import select
import signal
import socket
import struct
import subprocess
import time

from conftest import MQTTOOLSD, free_port, wait_until
from mqttwire import utf8 as mqtt_str, vbi

TOP = pathlib.Path(__file__).resolve().parents[2]


# --- MQTT 5 packets -------------------------------------------------------

def packet(first_byte, body):
    return bytes([first_byte]) + vbi(len(body)) + body


def connect_packet(client_id, keepalive=60, will=None, clean_start=True, username=None,
                   password=None):
    flags = 0x02 if clean_start else 0
    payload = mqtt_str(client_id)
    if will is not None:
        topic, message = will
        flags |= 0x04
        payload += b"\x00" + mqtt_str(topic) + mqtt_str(message)  # empty will properties
    if username is not None:
        flags |= 0x80
        payload += mqtt_str(username)
    if password is not None:
        flags |= 0x40
        payload += mqtt_str(password)
    body = mqtt_str("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive) + b"\x00" + payload
    return packet(0x10, body)


def subscribe_packet(packet_id, topic_filter, options=0):
    return packet(0x82, struct.pack("!H", packet_id) + b"\x00" + mqtt_str(topic_filter) + bytes([options]))


def publish_packet(topic, payload, retain=False):
    return packet(0x30 | (1 if retain else 0), mqtt_str(topic) + b"\x00" + payload)


PINGREQ = b"\xc0\x00"


class Client:
    """A blocking MQTT 5 client on a raw socket, enough for these tests."""

    def __init__(self, port, client_id, timeout=5.0, **connect_args):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.sock.sendall(connect_packet(client_id, **connect_args))
        kind, _, body = self.read()
        assert kind == 2, f"expected CONNACK, got packet type {kind}"
        self.connack_reason = body[1]

    def send(self, data):
        self.sock.sendall(data)

    def read(self, timeout=5.0):
        """Next packet as (type, flags, body); raises on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                mult, length, i = 1, 0, 1
                while i < len(self.buf) and i <= 4:
                    b = self.buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        if len(self.buf) >= i + length:
                            first = self.buf[0]
                            body = self.buf[i:i + length]
                            self.buf = self.buf[i + length:]
                            return first >> 4, first & 0x0F, body
                        break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet")
            self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.buf += data

    def subscribe(self, topic_filter, packet_id=1):
        self.send(subscribe_packet(packet_id, topic_filter))
        kind, _, body = self.read()
        assert kind == 9, f"expected SUBACK, got {kind}"
        return body[-1]

    def ping(self, timeout=5.0):
        self.send(PINGREQ)
        kind, _, _ = self.read(timeout)
        return kind == 13

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def parse_publish(flags, body):
    """(topic, payload, retain) of a QoS 0 MQTT 5 PUBLISH body."""
    tlen = struct.unpack("!H", body[:2])[0]
    topic = body[2:2 + tlen].decode()
    i = 2 + tlen
    if (flags >> 1) & 3:
        i += 2  # packet identifier
    mult, plen = 1, 0
    while True:
        b = body[i]
        i += 1
        plen += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return topic, body[i + plen:], bool(flags & 1)


# --- systemd notify socket -----------------------------------------------

class NotifySocket:
    """The receiving end of NOTIFY_SOCKET, as systemd would hold it."""

    def __init__(self, tmp_path):
        self.path = str(tmp_path / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def recv(self, timeout):
        """One datagram as text, or None after TIMEOUT seconds."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return None
        return self.sock.recv(4096).decode()

    def wait_for(self, predicate, timeout):
        """Datagrams until one satisfies PREDICATE; returns (match, all seen)."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(deadline - time.monotonic())
            if msg is None:
                break
            seen.append(msg)
            if predicate(msg):
                return msg, seen
        return None, seen

    def close(self):
        self.sock.close()


# --- the daemon -----------------------------------------------------------

class Daemon:
    """mqttoolsd started directly (no -p unless given), stopped by PID."""

    def __init__(self, tmp_path, args, env=None, config=None, name="mqttoolsd", **popen):
        self.log_path = tmp_path / f"{name}.log"
        self.log = open(self.log_path, "wb")
        cmd = [str(MQTTOOLSD)]
        if config is not None:
            self.config_path = tmp_path / f"{name}.toml"
            self.config_path.write_text(config)
            cmd += ["-c", str(self.config_path)]
        cmd += list(args)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, **popen)

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_for_output(self, text, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                return text in self.output()
            time.sleep(0.02)
        return False

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def port_accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


__all__ = ["Client", "Daemon", "NotifySocket", "free_port", "parse_publish", "port_accepts",
           "publish_packet", "wait_until", "TOP", "MQTTOOLSD"]
