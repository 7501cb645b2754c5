#!/usr/bin/python3
"""Churn soak of a cluster (issue 26): does anything grow with client ids and
retained topics that come and go?

One nats-server (JetStream on) and two mqttoolsd nodes. Each round:

  ids       10,000 new client ids connect (MQTT 5, Clean Start, Session
            Expiry 0) alternately to node 1 and node 2, up to --window at
            once, and disconnect: CONNECT/s cluster-wide, CONNACK p99
  retained  10,000 new retained topics set, then deleted (empty payload)

After each round: the JetStream streams' messages and bytes (ownership
bucket, retained stream), nats-server's JetStream storage, and the RSS of
nats-server and both nodes. Flat after warm-up = nothing grows per id or
per deleted topic. Deletion markers are purged once 30 s old, so the
retained rows settle after ~30 s of rounds (--pause between rounds).
Loopback only; only processes started here are stopped, by PID.

    bench/cluster_churn.py --build build-release [--rounds 8] [--ids 10000] [--pause 3]
"""
import json
import os
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import HOST, free_port, stop, wait_port  # noqa: E402
from run import arguments, check_ranges  # noqa: E402


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def mqtt_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(cid):
    body = mqtt_str("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 60) + b"\x00" + mqtt_str(cid)
    return b"\x10" + varint(len(body)) + body


DISCONNECT = b"\xe0\x00"


def publish_packet(topic, payload, retain):
    body = mqtt_str(topic) + b"\x00" + payload
    return bytes([0x30 | (1 if retain else 0)]) + varint(len(body)) + body


def nats_request(port, subject):
    with socket.create_connection((HOST, port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b'CONNECT {"verbose":false}\r\nSUB _b.r 1\r\n' + f"PUB {subject} _b.r 0\r\n\r\n".encode())
        while True:
            line = f.readline()
            if not line:
                return {}
            if line.startswith(b"PING"):
                s.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG"):
                return json.loads(f.read(int(line.split()[-1]) + 2))


def churn_ids(ports, prefix, n, window, timeout=120.0):
    """n CONNECT/CONNACK/DISCONNECT, up to `window` at once, alternating
    ports: (seconds, CONNACK latencies in s, failures)."""
    sel = selectors.DefaultSelector()
    lat, failed, started, done = [], 0, 0, 0
    t0 = time.monotonic()
    deadline = t0 + timeout
    while done < n and time.monotonic() < deadline:
        while started < n and started - done < window:
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect_ex((HOST, ports[started % len(ports)]))
            except OSError:
                failed += 1
                done += 1
                started += 1
                continue
            sel.register(s, selectors.EVENT_WRITE, [f"{prefix}-{started}", None, b""])
            started += 1
        for key, ev in sel.select(timeout=0.2):
            s, st = key.fileobj, key.data
            try:
                if ev & selectors.EVENT_WRITE and st[1] is None:
                    s.sendall(connect_packet(st[0]))
                    st[1] = time.monotonic()
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                chunk = s.recv(4096)
                st[2] += chunk
                if len(st[2]) >= 2 and st[2][0] == 0x20:
                    lat.append(time.monotonic() - st[1])
                    if len(st[2]) < 4 or st[2][3] != 0:
                        failed += 1
                    s.sendall(DISCONNECT)
                elif not chunk or len(st[2]) >= 2:
                    failed += 1
            except OSError:
                failed += 1
            sel.unregister(s)
            s.close()
            done += 1
    for key in list(sel.get_map().values()):
        key.fileobj.close()
        failed += 1
    return time.monotonic() - t0, lat, failed + (n - done)


def churn_retained(port, prefix, n):
    """n retained topics set, then deleted, by one QoS 0 publisher; a PINGREQ
    round trip at the end so the node has read them all."""
    s = socket.create_connection((HOST, port))
    s.sendall(connect_packet(f"{prefix}-retainer"))
    s.recv(64)
    for start in range(0, n, 1000):
        s.sendall(b"".join(publish_packet(f"{prefix}/{i}", b"v" * 32, True) for i in range(start, min(n, start + 1000))))
    for start in range(0, n, 1000):
        s.sendall(b"".join(publish_packet(f"{prefix}/{i}", b"", True) for i in range(start, min(n, start + 1000))))
    s.sendall(b"\xc0\x00")
    buf = b""
    while b"\xd0\x00" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.sendall(DISCONNECT)
    s.close()


def main():
    p = arguments(__doc__, runs=None, duration=None, warmup=None, mqttoolsd=False)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--ids", type=int, default=10000)
    p.add_argument("--window", type=int, default=200)
    p.add_argument("--pause", type=float, default=3.0, help="seconds between rounds")
    a = p.parse_args()
    check_ranges(p, a, rounds=(1, 50), ids=(100, 50000), window=(1, 2000), pause=(0, 60))
    mqttoolsd = os.path.join(os.path.abspath(a.build), "src", "daemon", "mqttoolsd")
    tmp = tempfile.mkdtemp(prefix="mqttools-cluster-churn-")
    procs = []
    try:
        nport = free_port()
        with open(f"{tmp}/nats.conf", "w") as f:
            f.write(f"listen: {HOST}:{nport}\njetstream {{ store_dir: \"{tmp}\" }}\n")
        nats = subprocess.Popen([shutil.which("nats-server") or "/usr/bin/nats-server", "-c", f"{tmp}/nats.conf"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(nats)
        wait_port(nport, nats)
        ports, nodes = [], []
        for i in (1, 2):
            port = free_port()
            with open(f"{tmp}/n{i}.toml", "w") as f:
                f.write("allow_anonymous = true\nmax_connections = -1\nlog_level = \"warning\"\n"
                        f"[cluster]\nnats_url = \"nats://{HOST}:{nport}\"\nnode_id = \"churn{i}\"\n")
            n = subprocess.Popen([mqttoolsd, "-c", f"{tmp}/n{i}.toml", "-p", str(port)],
                                 stdout=open(f"{tmp}/n{i}.log", "ab"), stderr=subprocess.STDOUT)
            procs.append(n)
            if not wait_port(port, n):
                raise RuntimeError(f"node {i} did not start: {tmp}")
            ports.append(port)
            nodes.append(n)
        time.sleep(1.0)
        print("| round | ids/s (CONNACK p99 ms, failed) | owners bucket msgs / KiB | retained stream msgs / KiB "
              "| JetStream storage KiB | RSS KiB nats-server / node 1 / node 2 |")
        print("|---|---|---|---|---|---|")
        rows = []
        for r in range(a.rounds):
            secs, lat, failed = churn_ids(ports, f"c{r}", a.ids, a.window)
            churn_retained(ports[r % 2], f"rt{r}", a.ids)
            time.sleep(a.pause)
            owners = nats_request(nport, "$JS.API.STREAM.INFO.KV_MQTT_OWNERS_mqtt").get("state", {})
            ret = nats_request(nport, "$JS.API.STREAM.INFO.MQTT_RETAINED_mqtt").get("state", {})
            info = nats_request(nport, "$JS.API.INFO")
            p99 = statistics.quantiles(lat, n=100)[98] * 1000 if len(lat) > 100 else 0
            row = (r + 1, a.ids / secs, p99, failed, owners.get("messages", 0), owners.get("bytes", 0) / 1024,
                   ret.get("messages", 0), ret.get("bytes", 0) / 1024, info.get("storage", 0) / 1024,
                   rss_kb(nats.pid), rss_kb(nodes[0].pid), rss_kb(nodes[1].pid))
            rows.append(row)
            print("| %d | %.0f (%.1f, %d) | %d / %.0f | %d / %.0f | %.0f | %d / %d / %d |" % row, flush=True)
        if len(rows) >= 4:
            half = rows[len(rows) // 2]
            last = rows[-1]
            per = (len(rows) - 1 - len(rows) // 2) * a.ids / 10000
            print(f"\nFrom round {half[0]} to {last[0]}, per 10,000 ids and 10,000 deleted retained topics: "
                  f"JetStream storage {(last[8] - half[8]) / per:+.0f} KiB, RSS nats-server "
                  f"{(last[9] - half[9]) / per:+.0f} KiB, node 1 {(last[10] - half[10]) / per:+.0f} KiB, "
                  f"node 2 {(last[11] - half[11]) / per:+.0f} KiB")
    finally:
        for pr in reversed(procs):
            stop(pr)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
