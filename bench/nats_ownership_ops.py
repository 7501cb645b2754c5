#!/usr/bin/env python3
"""nats-server's CPU per NATS operation a new client id costs the cluster (issue 26).

Starts its own nats-server (JetStream, file storage, pinned to CPU 0) and, over
NATS' own protocol, times each kind of operation the nodes send for a new
client id, N of each, against a bucket stream configured like the ownership
bucket (one value per key, deletes allowed):
  - the claim: a conditional write (Nats-Expected-Last-Subject-Sequence: 0);
  - the claim's broadcast to the other nodes (2 subscribers), one message per
    claim and 64 claims per message;
  - the release at the session's end: a stream purge filtered on the key
    (what js_CreateKeyValue's buckets, which deny deletes, need) or a delete
    of the key's message by its sequence, each with and without a reply. One entry older than the ids' stays (a
    live session): a filtered purge walks the stream from its first sequence.
Prints nats-server's CPU (user + system, /proc) per operation in µs.

    python3 bench/nats_ownership_ops.py [N]   (default 10,000; bounded to 50,000)
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

PORT = 14999
STREAM = "KV_o"


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Conn:
    def __init__(self):
        self.sock = socket.create_connection(("127.0.0.1", PORT), timeout=30)
        self.buf = b""
        self.line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n')
        self.sync()

    def line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(1 << 20)
        out, self.buf = self.buf.split(b"\r\n", 1)
        return out

    def body(self, n):
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(1 << 20)
        out, self.buf = self.buf[:n], self.buf[n + 2:]
        return out

    def messages(self, count):
        """Reads `count` MSG/HMSG; returns the last body."""
        last = None
        while count > 0:
            head = self.line()
            if head.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
            elif head.startswith((b"MSG", b"HMSG")):
                last = self.body(int(head.split()[-1]))
                count -= 1
            elif head.startswith(b"-ERR"):
                raise RuntimeError(head.decode())
        return last

    def sync(self):
        """Everything sent so far was processed (PING/PONG)."""
        self.sock.sendall(b"PING\r\n")
        while True:
            head = self.line()
            if head.startswith(b"PONG"):
                return
            if head.startswith((b"MSG", b"HMSG")):
                self.body(int(head.split()[-1]))


def pub(subject, body, reply=""):
    return f"PUB {subject} {reply} {len(body)}\r\n".encode() + body + b"\r\n"


def main():
    n = max(100, min(int(sys.argv[1]) if len(sys.argv) > 1 else 10000, 50000))
    store = tempfile.mkdtemp(prefix="nats-ops-")
    server = subprocess.Popen(["taskset", "-c", "0", "nats-server", "-p", str(PORT), "-js", "-sd", store],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.7)
        c, sub1, sub2 = Conn(), Conn(), Conn()
        c.sock.sendall(b"SUB _a.> 1\r\n")
        config = {"name": STREAM, "subjects": ["$KV.o.>"], "max_msgs_per_subject": 1, "discard": "new",
                  "deny_delete": False, "allow_rollup_hdrs": True, "storage": "file", "num_replicas": 1}
        c.sock.sendall(pub(f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps(config).encode(), "_a.create"))
        assert b"error" not in c.messages(1)

        def phase(name, frames, answers=0, per=n, subscribers=()):
            before, t0 = cpu_s(server.pid), time.time()
            for i in range(0, len(frames), 500):
                c.sock.sendall(b"".join(frames[i:i + 500]))
                if answers:
                    c.messages(min(500, len(frames) - i))
            c.sync()
            for s, count in subscribers:
                s.messages(count)
            used = cpu_s(server.pid) - before
            print(f"{name:48s} {used * 1e6 / per:7.1f} µs of nats-server CPU each ({time.time() - t0:.2f} s)",
                  flush=True)

        hdr = b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 0\r\n\r\n"
        # A session that stays (as the background's clients do in bench/cluster.py connects): its
        # entry, older than the ids', keeps the stream's first sequence where it is.
        c.sock.sendall(f"HPUB $KV.o.kept _a.k {len(hdr)} {len(hdr) + 6}\r\n".encode() + hdr + b"node-1\r\n")
        c.messages(1)
        creates = [f"HPUB $KV.o.id{i} _a.c.{i} {len(hdr)} {len(hdr) + 6}\r\n".encode() + hdr + b"node-1\r\n"
                   for i in range(n)]
        phase("claim: conditional create", creates, answers=n)
        for s in (sub1, sub2):
            s.sock.sendall(b"SUB p.claim 1\r\n")
            s.sync()
        claims = [f"{(1 << 63) | i} node-1 - - id{i}".encode() for i in range(n)]
        phase("broadcast, one message per claim", [pub("p.claim", b) for b in claims],
              subscribers=((sub1, n), (sub2, n)))
        packed = [pub("p.claim", b"\n".join(claims[i:i + 64])) for i in range(0, n, 64)]
        phase("broadcast, 64 claims per message", packed, subscribers=((sub1, len(packed)), (sub2, len(packed))))
        half = n // 2
        purges = [pub(f"$JS.API.STREAM.PURGE.{STREAM}", json.dumps({"filter": f"$KV.o.id{i}", "seq": i + 3}).encode(),
                      f"_a.p.{i}") for i in range(half)]
        phase("release: filtered purge, answered", purges, answers=half, per=half)
        purges = [pub(f"$JS.API.STREAM.PURGE.{STREAM}", json.dumps({"filter": f"$KV.o.id{i}", "seq": i + 3}).encode())
                  for i in range(half, n)]
        phase("release: filtered purge, no reply", purges, per=n - half)
        c.sock.sendall(pub(f"$JS.API.STREAM.INFO.{STREAM}", b"", "_a.info"))
        first = json.loads(c.messages(1))["state"]["last_seq"] + 1
        phase("claim again (the keys are gone)", creates, answers=n)
        deletes = [pub(f"$JS.API.STREAM.MSG.DELETE.{STREAM}", json.dumps({"seq": first + i, "no_erase": True}).encode(),
                       f"_a.d.{i}") for i in range(half)]
        phase("release: delete by sequence, answered", deletes, answers=half, per=half)
        deletes = [pub(f"$JS.API.STREAM.MSG.DELETE.{STREAM}", json.dumps({"seq": first + i, "no_erase": True}).encode())
                   for i in range(half, n)]
        phase("release: delete by sequence, no reply", deletes, per=n - half)
        c.sock.sendall(pub(f"$JS.API.STREAM.INFO.{STREAM}", b"", "_a.info"))
        print("entries left (the one that stays):", json.loads(c.messages(1))["state"]["messages"])
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
