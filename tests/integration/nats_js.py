"""A minimal NATS client for the tests' JetStream API calls ($JS.API.*
request/reply with JSON bodies): enough to read and change a stream's
config from a test, with no NATS library for Python in Debian 12."""
import base64
import json
import socket
import time


class NatsRequester:
    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.file.readline()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nSUB _t.> 1\r\n')
        self.n = 0

    def request(self, subject, body=None, timeout=10.0):
        """The JSON answer to `body` (a dict) on `subject`."""
        self.n += 1
        inbox = f"_t.{self.n}"
        data = json.dumps(body or {}).encode()
        self.sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), inbox.encode(), len(data), data))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            line = self.file.readline()
            if not line:
                raise ConnectionError("NATS closed the connection")
            if line.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith((b"MSG ", b"HMSG ")):
                parts = line.split()
                size = int(parts[-1])
                payload = self.file.read(size + 2)[:size]
                if line.startswith(b"HMSG"):
                    payload = payload[int(parts[-2]):]
                if parts[1].decode() == inbox:
                    return json.loads(payload) if payload else {}
        raise TimeoutError(f"no answer on {subject}")

    def close(self):
        self.sock.close()


def ask(port, subject, body=None):
    """One request on a connection of its own: the JSON answer, or None
    when nats-server did not answer (down, electing a leader)."""
    try:
        js = NatsRequester(port, timeout=5)
    except OSError:
        return None
    try:
        return js.request(subject, body, timeout=5)
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        js.close()


def session_record(port, client_id, prefix="mqtt"):
    """The cluster's stored record of `client_id`'s session (bytes), read
    from the session bucket's stream leader, or None (none stored, or
    JetStream not answering). Its header: version (1 byte), time written
    (8), connected (1): nats_sessions.cpp, store_session."""
    key = "s" + client_id.encode().hex()
    r = ask(port, f"$JS.API.STREAM.MSG.GET.KV_MQTT_SESSIONS_{prefix}",
            {"last_by_subj": f"$KV.MQTT_SESSIONS_{prefix}.{key}"}) or {}
    data = (r.get("message") or {}).get("data")
    return base64.b64decode(data) if data else None


def record_says_disconnected(port, client_id, prefix="mqtt"):
    """The stored record is the one written when the client went away."""
    record = session_record(port, client_id, prefix)
    return record is not None and len(record) > 9 and record[9] == 0
