"""Helpers for the persistence tests (issue 12): a broker whose state lives
in an SQLite file in the test's folder, restarted on that same file, and
waits that poll with deadlines. No tests live here."""
import os
import pathlib
import selectors
import socket
import subprocess
import threading
import time

from mqttwire import (SESSION_EXPIRY_INTERVAL, Client, connect_packet, disconnect_packet, sub_options,
                      subscribe_packet)
from conftest import MQTTOOLSD, SANITIZED, SLOW, Broker, free_port, wait_until  # noqa: F401 (re-exported)



def persistence_config(location, sync="full", extra=""):
    return (f'persistence = true\npersistence_location = "{location}"\n'
            f'persistence_sync = "{sync}"\n{extra}')


class DurableBroker:
    """mqttoolsd on a fixed file; start() again after stop()/crash()."""

    def __init__(self, tmp_path, sync="full", extra="", location=None):
        self.tmp_path = tmp_path
        self.location = pathlib.Path(location or tmp_path)
        self.config = persistence_config(self.location, sync, extra)
        self.db = self.location / "mqttoolsd.db"
        self.broker = None
        self.logs = []

    def start(self):
        self.broker = Broker(self.tmp_path, config=self.config)
        self.logs.append(self.broker.log_path)
        return self.broker

    @property
    def port(self):
        return self.broker.port

    def stop(self):
        code = self.broker.stop()
        assert code == 0, f"exit {code}: " + self.output()
        return code

    def committed(self):
        """Returns once all the broker did before is on disk. A retained QoS 1
        PUBLISH is acknowledged only after its transaction commits, and the one
        store thread commits in order, so its PUBACK (and the second one, which
        clears it again) follows every earlier change. A clean DISCONNECT has
        no acknowledgement of its own: a test that crashes the broker right
        after one calls this first."""
        c = Client(self.port)
        c.connect("")
        assert c.publish("barrier/committed", b"x", qos=1, retain=True).reason < 0x80
        assert c.publish("barrier/committed", b"", qos=1, retain=True, packet_id=2).reason < 0x80
        c.disconnect()

    def crash(self):
        """kill -9: no shutdown code runs."""
        self.broker.proc.kill()
        self.broker.proc.wait()
        self.broker.log.close()

    def output(self):
        if not self.broker.log.closed:
            self.broker.log.flush()
        return self.broker.log_path.read_text(errors="replace")


def run_refused(tmp_path, config, timeout=20):
    """Runs mqttoolsd expecting it to refuse to start: (exit code, output)."""
    conf = tmp_path / "refuse.toml"
    conf.write_text(config)
    port = free_port()
    p = subprocess.run([str(MQTTOOLSD), "-p", str(port), "-c", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


# ---- the WAL's bound (issue 31)

# src/store/sqlite_store.hpp: wal_limit_bytes.
WAL_LIMIT = 16 << 20


def wal_state(db):
    """(size of the WAL file, its checkpoint sequence number): the number
    (WAL header bytes 12-15, sqlite.org/fileformat.html 4.1) changes each
    time the log starts over. (0, None) without a WAL or its header."""
    wal = db.parent / (db.name + "-wal")
    try:
        with open(wal, "rb") as f:
            header = f.read(16)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return 0, None
    return size, (int.from_bytes(header[12:16], "big") if len(header) == 16 else None)


class WalSampler:
    """Samples the WAL's size every `period` seconds on a thread while the
    test runs: the largest size seen, and how many times the log started over."""

    def __init__(self, db, period=0.005):
        self.db = db
        self.period = period
        self.largest = 0
        self.samples = 0
        self.sequences = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            size, seq = wal_state(self.db)
            self.largest = max(self.largest, size)
            self.samples += 1
            if seq is not None:
                self.sequences.add(seq)
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def report(self):
        return (f"largest WAL {self.largest / 2**20:.1f} MiB in {self.samples} samples, "
                f"{len(self.sequences)} WAL generations")


def short_sessions(port, prefix, clients, expiry=1, batch=200, timeout=60):
    """`clients` sessions with Session Expiry `expiry` that each subscribe
    (QoS 1) and disconnect, `batch` connections at a time over raw sockets;
    returns once the broker closed every one."""
    props = {SESSION_EXPIRY_INTERVAL: expiry}
    pending = list(range(clients))
    live = set()
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + timeout * SLOW
    try:
        while (pending or live) and time.monotonic() < deadline:
            while pending and len(live) < batch:
                i = pending.pop()
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(connect_packet(f"{prefix}-{i}", properties=props)
                          + subscribe_packet([(f"short/{prefix}/{i}", sub_options(qos=1))])
                          + disconnect_packet())
                s.setblocking(False)
                live.add(s)
                sel.register(s, selectors.EVENT_READ)
            for key, _ in sel.select(timeout=0.5):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    live.discard(key.fileobj)
    finally:
        for s in live:
            s.close()
        sel.close()
    assert not pending and not live, f"{len(pending)} not started, {len(live)} not closed in time"
