#!/usr/bin/python3
"""Cluster benchmarks (issue 13): mqttoolsd nodes over NATS, same run.

  pairs        100 one-to-one pairs at 10,000 msg/s: one node (publishers and
               subscribers on it) vs two nodes (publishers on node 1,
               subscribers on node 2); CPU per delivered message of every
               process involved (nodes + nats-server), p99 latency
  pairs-sat    the same, saturated (16 in flight per publisher): msg/s
  pairs-311    MQTT 3.1.1 pairs at 10,000 msg/s: our 2-node cluster vs
               nats-server's own MQTT listener on the same NATS
  idle-100k    100,000 idle connections held across 6 nodes (one
               nats-server), each node on its own port; the generator
               forks 6 processes (each within the 20,000-file limit) and
               connects from several 127.0.0.x source addresses. VmRSS of
               every node before and after: bytes per connection per node,
               connect time. Beside it, in the same run, one node without
               a cluster and Mosquitto, each holding one node's share
               (100,000 / 6): a single process cannot hold 100,000 under
               the file limit. `--idle` runs only this one; `--idle-conns`
               changes the count (bounded: 6 × 19,000).
  pairs-311-q1 MQTT 3.1.1 QoS 1 pairs at 2,000 msg/s: one node, our 2-node
               cluster, nats-server's own MQTT listener (its QoS 1 goes
               through JetStream)
  connects     18,000 new client ids CONNECT over the nodes' ports while 100
               pairs run at 1,000 msg/s: ids/s cluster-wide, the
               background's p99 (one node without a cluster and Mosquitto
               beside it). Each setup runs twice (`--connects-sched`): every
               generator at the brokers' priority, and as clients on other
               hosts would see the brokers (the background's generator
               under SCHED_FIFO, the storm's at nice 19: on this host they
               share the brokers' 2 cores). CPU per id while they connect
               and at their end (disconnects, ownership releases). Not in
               the default set: `--scenarios connects`.
  pairs-tls    `pairs` across 2 nodes with NATS over TLS (a test CA made
               with openssl): plain NATS vs TLS on the reactor's data
               connection vs, with `--before OLD/mqttoolsd`, an older build
               whose TLS data connection was libnats'. Not in the default
               set: `--scenarios pairs-tls [--before PATH]`.

Every broker process is pinned to CPU 0 and the generator (mqtt_load) to
CPU 1 for the fixed-rate runs; saturated runs are not pinned (the two nodes
may then use both cores, as a cluster on one host would). Runs interleave,
a fresh set of processes per run; the table holds medians and the per-run
ratios. Only 127.0.0.1 is used, and only processes started here are stopped,
by their PID. Figures from a shared machine are noisy: compare ratios.

    bench/cluster.py --build build-release [--runs 3] [--duration 5]
    bench/cluster.py --build build-release --idle [--idle-conns 100000]
"""
import argparse
import json
import math
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def last_json(stdout, stderr):
    """The generator's result: the last JSON line it printed."""
    lines = [l for l in stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {"ok": False, "error": stderr[-300:]}


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Setup:
    """The processes of one run: nats-server (optional), N mqttoolsd nodes."""

    def __init__(self, bench, nodes, nats, pin, keys=None):
        self.bench, self.procs, self.ports = bench, [], []
        self.keys = getattr(bench, 'node_extra', '') if keys is None else keys
        self.nats = self.nats_mqtt_port = None
        self.pin = pin
        # nats "tls": nats-server requires TLS and the nodes speak it;
        # "tls-before": the same, nodes from --before (an older build whose
        # data connection over TLS was libnats').
        self.tls = nats in ("tls", "tls-before")
        self.binary = bench.before if nats == "tls-before" else bench.mqttoolsd
        if nats:
            self.start_nats()
        for i in range(nodes):
            self.start_node(i)

    def pinned(self, argv):
        return (["taskset", "-c", "0"] + argv) if self.pin and shutil.which("taskset") else argv

    def start_nats(self):
        port, mqtt = free_port(), free_port()
        d = tempfile.mkdtemp(dir=self.bench.tmp)
        conf = os.path.join(d, "nats.conf")
        with open(conf, "w") as f:
            f.write(f"listen: {HOST}:{port}\nserver_name: bench\n"
                    f"jetstream {{ store_dir: \"{d}\" }}\nmqtt {{ listen: \"{HOST}:{mqtt}\" }}\n")
            if self.tls:
                c = self.bench.certs()
                f.write(f"tls {{ cert_file: \"{c}/server.crt\"\n key_file: \"{c}/server.key\"\n timeout: 5 }}\n")
        log = open(os.path.join(d, "nats.log"), "ab")
        p = subprocess.Popen(self.pinned([self.bench.nats_server, "-c", conf]), stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(p)
        if not wait_port(port, p) or not wait_port(mqtt, p):
            raise RuntimeError("nats-server did not start: " + d)
        self.nats, self.nats_port, self.nats_mqtt_port = p, port, mqtt

    def start_node(self, i):
        port = free_port()
        conf = os.path.join(self.bench.tmp, f"node-{port}.toml")
        with open(conf, "w") as f:
            f.write("allow_anonymous = true\nmax_queued_messages = 1000000\nmax_connections = -1\n"
                    "log_level = \"warning\"\n")
            if self.nats:
                f.write(f"[cluster]\nnats_url = \"{'tls' if self.tls else 'nats'}://{HOST}:{self.nats_port}\"\n"
                        f"node_id = \"bench{i}\"\n{self.keys}\n")  # more [cluster] keys (cluster_ha.py, --cluster-keys)
                if self.tls:
                    f.write(f"cafile = \"{self.bench.certs()}/ca.crt\"\n")
        log = open(os.path.join(self.bench.tmp, f"node-{port}.log"), "ab")
        p = subprocess.Popen(self.pinned([self.binary, "-c", conf, "-p", str(port)]), stdout=log,
                             stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(p)
        if not wait_port(port, p):
            raise RuntimeError("mqttoolsd did not start: " + conf)
        self.ports.append(port)

    def start_mosquitto(self):
        port = free_port()
        conf = os.path.join(self.bench.tmp, f"mosquitto-{port}.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} {HOST}\nallow_anonymous true\npersistence false\nmax_connections -1\n"
                    "log_dest stderr\nlog_type error\nlog_type warning\n")
        log = open(os.path.join(self.bench.tmp, f"mosquitto-{port}.log"), "ab")
        p = subprocess.Popen(self.pinned([self.bench.mosquitto, "-c", conf]), stdout=log, stderr=log,
                             stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(p)
        if not wait_port(port, p):
            raise RuntimeError("mosquitto did not start: " + conf)
        self.ports.append(port)

    def check_alive(self, res):
        """res, marked failed if one of the run's processes exited."""
        if not all(p.poll() is None for p in self.procs):
            res["ok"] = False
            res["error"] = (res.get("error") or "") + " a process exited"
        return res

    def close(self):
        for p in reversed(self.procs):
            stop(p)


# name -> (description, setups) ; setup = (label, nodes, nats, target, load args)
RATE = ["--scenario", "pairs", "--pairs", "100", "--rate", "10000"]
SAT = ["--scenario", "pairs", "--pairs", "100", "--rate", "0", "--window", "16"]
RATE_Q1 = ["--scenario", "pairs", "--pairs", "100", "--rate", "2000", "--qos", "1", "--mqtt-version", "4"]
SCENARIOS = {
    "pairs": ("one-to-one, 100 pairs at 10,000 msg/s",
              [("1 node", 1, False, "local", RATE), ("2 nodes", 2, True, "cross", RATE)]),
    "pairs-sat": ("one-to-one, 100 pairs saturated (16 in flight each)",
                  [("1 node", 1, False, "local", SAT), ("2 nodes", 2, True, "cross", SAT)]),
    "pairs-311": ("MQTT 3.1.1, 100 pairs at 10,000 msg/s",
                  [("2 nodes", 2, True, "cross", RATE + ["--mqtt-version", "4"]),
                   ("nats-server MQTT", 0, True, "nats", RATE + ["--mqtt-version", "4"])]),
    "pairs-311-q1": ("MQTT 3.1.1 QoS 1, 100 pairs at 2,000 msg/s",
                     [("1 node", 1, False, "local", RATE_Q1),
                      ("2 nodes", 2, True, "cross", RATE_Q1),
                      ("nats-server MQTT", 0, True, "nats", RATE_Q1)]),
    # NATS over TLS (issue 26): the data connection on the reactor over TLS vs
    # plain TCP, and vs an older build (--before) whose TLS data connection
    # was libnats'. Not in the default set.
    "pairs-tls": ("one-to-one, 100 pairs at 10,000 msg/s, NATS over TLS",
                  [("2 nodes, plain NATS", 2, True, "cross", RATE),
                   ("2 nodes, TLS on the reactor", 2, "tls", "cross", RATE),
                   ("2 nodes, TLS, --before build", 2, "tls-before", "cross", RATE)]),
}
DEFAULT_SCENARIOS = [n for n in SCENARIOS if n != "pairs-tls"]

# The CONNECT storm (issue 26): --connects (18,000: one node's file limit) new client ids connect over every
# node's port (--procs 2 generator processes, CONNECTS_WINDOW CONNECTs
# awaiting their CONNACK at once in each) while 100 pairs exchange QoS 0
# messages at 1,000 msg/s in the background (publishers on the first node,
# subscribers on the last); reported: new ids per second cluster-wide and the
# background's p99 during the storm. Not pinned (a cluster on one host uses
# every core). `connects` in --scenarios.
CONNECTS_NAME = "connects"
# (label, nodes, nats, broker): Mosquitto holds the ids like one node does,
# the anchor for the background's p99 on one node.
CONNECTS_SETUPS = [("1 node", 1, False, "mqttoolsd"), ("2 nodes", 2, True, "mqttoolsd"),
                   ("Mosquitto", 0, False, "mosquitto")]
CONNECTS_BACKGROUND = ["--scenario", "pairs", "--pairs", "100", "--rate", "1000"]


# The idle scenario: (label, nodes, nats, broker, share) ; share "all": every
# connection, "node": one node's share (a single process' file limit).
IDLE_NAME = "idle-100k"
IDLE_SETUPS = [("6 nodes", 6, True, "mqttoolsd", "all"),
               ("1 node, no cluster", 1, False, "mqttoolsd", "node"),
               ("Mosquitto", 0, False, "mosquitto", "node")]
IDLE_NODES = 6


def connects_label(label, rt):
    return label + (", as from other hosts" if rt else "")


class Bench:
    def __init__(self, args):
        self.args = args
        build = os.path.abspath(args.build)
        self.load = os.path.join(build, "bench", "load", "mqtt_load")
        self.mqttoolsd = os.path.join(build, "src", "daemon", "mqttoolsd")
        self.nats_server = shutil.which("nats-server") or "/usr/bin/nats-server"
        self.mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.tmp = tempfile.mkdtemp(prefix="mqttools-cluster-bench-")
        self.results = {}  # (scenario, label) -> [json]
        self.setup_keys = {}  # label -> its own [cluster] lines (--compare-keys)
        self.before = os.path.abspath(args.before) if getattr(args, "before", None) else None
        self._certs = None

    def certs(self):
        """A CA and a server certificate for 127.0.0.1 (made once per run)."""
        if self._certs is None:
            d = tempfile.mkdtemp(dir=self.tmp)
            run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True, capture_output=True)
            run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench-ca")
            with open(os.path.join(d, "server.ext"), "w") as f:
                f.write(f"subjectAltName=IP:{HOST}\n")
            run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=bench-nats")
            run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
            self._certs = d
        return self._certs

    def run_one(self, scenario, label, nodes, nats, target, load_args):
        saturated = "0" == load_args[load_args.index("--rate") + 1]
        s = Setup(self, nodes, nats, pin=not saturated, keys=self.setup_keys.get(label))
        try:
            if target == "nats":
                port, sub_port, pid, extra = s.nats_mqtt_port, None, s.nats.pid, []
            else:
                port = s.ports[0]
                sub_port = s.ports[1] if target == "cross" else None
                pid = s.procs[1 if nats else 0].pid
                extra = [p.pid for p in s.procs if p.pid != pid]
            argv = [self.load, "--host", HOST, "--port", str(port), "--broker-pid", str(pid),
                    "--label", f"{scenario}/{label}", "--warmup", str(self.args.warmup),
                    "--duration", str(self.args.duration), "--drain", "2"] + load_args
            if sub_port:
                argv += ["--sub-port", str(sub_port)]
            if extra:
                argv += ["--extra-pids", ",".join(map(str, extra))]
            if not saturated and shutil.which("taskset"):
                argv = ["taskset", "-c", "1"] + argv
            # A cluster's interest reaches NATS a few ms after the SUBACKs:
            # the warm-up covers it.
            r = subprocess.run(argv, capture_output=True, text=True,
                               timeout=self.args.warmup + self.args.duration + 120)
            res = last_json(r.stdout, r.stderr)
            return s.check_alive(res)
        finally:
            s.close()

    def run_idle(self, label, nodes, nats, broker, share):
        """One idle run: connect, hold, read every node's RSS (mqtt_load --scenario idle)."""
        total = self.args.idle_conns
        conns = total if share == "all" else math.ceil(total / IDLE_NODES)
        s = Setup(self, nodes, nats, pin=False)
        try:
            if broker == "mosquitto":
                s.start_mosquitto()
            node_procs = [p for p in s.procs if p is not s.nats]
            argv = [self.load, "--host", HOST, "--scenario", "idle", "--conns", str(conns),
                    "--ports", ",".join(map(str, s.ports)), "--node-pids", ",".join(str(p.pid) for p in node_procs),
                    "--procs", str(IDLE_NODES), "--src-addrs", "12", "--hold", str(self.args.idle_hold),
                    "--keep-alive", "600", "--handshake-window", str(self.args.idle_window),
                    "--connect-timeout", str(self.args.idle_timeout), "--label", f"{IDLE_NAME}/{label}"]
            if s.nats:
                argv += ["--extra-pids", str(s.nats.pid)]
            r = subprocess.run(argv, capture_output=True, text=True,
                               timeout=self.args.idle_timeout + self.args.idle_hold + 60)
            res = last_json(r.stdout, r.stderr)
            return s.check_alive(res)
        finally:
            s.close()

    def run_connects(self, label, nodes, nats, broker, rt):
        """New client ids connecting while the background pairs run: ids/s and the background's latency.
        rt: what clients on other hosts would see (the brokers' host running only the brokers): the
        background generator under SCHED_FIFO (chrt -f 10) and the storm's generators at nice 19, so that
        neither the background's sends and receipts nor the brokers wait behind the storm's generators,
        which here share the brokers' 2 cores."""
        s = Setup(self, nodes, nats, pin=False)
        try:
            if broker == "mosquitto":
                s.start_mosquitto()
            bg = [self.load, "--host", HOST, "--port", str(s.ports[0]), "--label", f"{CONNECTS_NAME}/{label}",
                  "--warmup", "1.0", "--duration", str(self.args.connects_duration), "--drain", "2"]
            bg += CONNECTS_BACKGROUND
            if len(s.ports) > 1:
                bg += ["--sub-port", str(s.ports[-1])]
            storm = [self.load, "--host", HOST, "--scenario", "idle", "--conns", str(self.args.connects),
                     "--ports", ",".join(map(str, s.ports)), "--procs", "2", "--src-addrs", "4", "--hold", "0.5",
                     "--keep-alive", "600", "--handshake-window", str(self.args.connects_window),
                     "--connect-timeout", "60", "--label", f"{CONNECTS_NAME}/{label}/storm",
                     "--node-pids", ",".join(str(p.pid) for p in s.procs if p is not s.nats)]
            if s.nats:
                storm += ["--extra-pids", str(s.nats.pid)]
            if rt and shutil.which("chrt"):
                bg = ["chrt", "-f", "10"] + bg
            back = subprocess.Popen(bg, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # The storm starts once the background's clients are connected
            # and warmed up, inside its measured window.
            time.sleep(1.8)
            r = subprocess.run(storm, capture_output=True, text=True, timeout=120,
                               preexec_fn=(lambda: os.setpriority(os.PRIO_PROCESS, 0, 19)) if rt else None)
            out, err = back.communicate(timeout=self.args.connects_duration + 60)
            st, bgr = last_json(r.stdout, r.stderr), last_json(out, err)
            res = {"ok": bool(st.get("ok")) and bool(bgr.get("ok")), "error": st.get("error") or bgr.get("error"),
                   "held": st.get("held", 0), "conns": st.get("conns", 0), "connect_s": st.get("connect_s", 0),
                   "ids_per_s": st.get("held", 0) / st["connect_s"] if st.get("connect_s") else 0,
                   "bg_p99_us": bgr.get("lat_us", {}).get("p99", 0), "bg_p50_us": bgr.get("lat_us", {}).get("p50", 0),
                   "bg_lost": bgr.get("lost", 0), "node_cpu_us_per_id": st.get("broker_cpu_us_per_conn", 0),
                   "nats_cpu_us_per_id": st.get("extra_cpu_us_per_conn", 0),
                   # the ids' end: disconnects and the release of each ended session's ownership entry
                   "node_close_cpu_us_per_id": st.get("broker_close_cpu_us_per_conn", 0),
                   "nats_close_cpu_us_per_id": st.get("extra_close_cpu_us_per_conn", 0)}
            return s.check_alive(res)
        finally:
            s.close()

    def connects_sched(self):
        """The generators' scheduling in `connects`: False = normal, True = as from other hosts."""
        return {"normal": [False], "hosts": [True], "both": [False, True]}[self.args.connects_sched]

    def connects_setups(self):
        wanted = self.args.connects_setups.split(",")
        return [s for s in CONNECTS_SETUPS if s[0] in wanted]

    def record(self, name, label, suffix, run, describe):
        """One run of a setup: its result kept (a failure too) and one line on stderr."""
        try:
            r = run()
        except Exception as e:  # a process that did not start: recorded, not fatal
            r = {"ok": False, "error": str(e)}
        self.results.setdefault((name, label), []).append(r)
        print(f"  {name} / {label}{suffix}: " + (describe(r) if r.get("ok") else "FAILED " + str(r.get("error"))),
              file=sys.stderr)

    def run(self, names):
        for i in range(self.args.runs):
            for name in names:
                if name == CONNECTS_NAME:
                    for (label, nodes, nats, broker), rt in ((setup, rt) for rt in self.connects_sched()
                                                             for setup in self.connects_setups()):
                        self.record(name, connects_label(label, rt), f" run {i + 1}",
                                    lambda: self.run_connects(label, nodes, nats, broker, rt),
                                    lambda r: f"{r['held']} new ids in {r['connect_s']:.2f} s = {r['ids_per_s']:.0f}/s, "
                                    f"background p50 {r['bg_p50_us']:.0f} µs p99 {r['bg_p99_us']:.0f} µs, lost "
                                    f"{r['bg_lost']}; CPU µs per id: nodes {r['node_cpu_us_per_id']:.0f}, "
                                    f"nats-server {r['nats_cpu_us_per_id']:.0f}; at their end: nodes "
                                    f"{r['node_close_cpu_us_per_id']:.0f}, nats-server {r['nats_close_cpu_us_per_id']:.0f}")
                    continue
                if name == IDLE_NAME:
                    if i > 0:
                        continue  # about holding, not timing: one run
                    for label, nodes, nats, broker, share in IDLE_SETUPS:
                        self.record(name, label, "", lambda: self.run_idle(label, nodes, nats, broker, share),
                                    lambda r: f"{r.get('held', 0)} held in {r.get('connect_s', 0):.1f} s, "
                                    f"{r.get('rss_per_conn_bytes', 0):.0f} B RSS per connection per node")
                    continue
                for label, nodes, nats, target, load_args in SCENARIOS[name][1]:
                    if nats == "tls-before" and not self.before:
                        continue
                    self.record(name, label, f" run {i + 1}",
                                lambda: self.run_one(name, label, nodes, nats, target, load_args),
                                lambda r: f"{r.get('delivered_per_s', 0):.0f} msg/s, "
                                f"{r.get('cpu_us_per_msg', 0):.2f} µs CPU/msg, "
                                f"p99 {r.get('lat_us', {}).get('p99', 0):.0f} µs, lost {r.get('lost', 0)}")

    def med(self, name, label, key, sub=None):
        vals = []
        for r in self.results.get((name, label), []):
            if not r.get("ok"):
                continue
            v = r.get(key)
            if sub is not None and isinstance(v, dict):
                v = v.get(sub)
            if isinstance(v, (int, float)):
                vals.append(v)
        return statistics.median(vals) if vals else None

    def ratios(self, name, a, b, key):
        out = []
        for ra, rb in zip(self.results.get((name, a), []), self.results.get((name, b), [])):
            if ra.get("ok") and rb.get("ok") and rb.get(key):
                out.append(ra[key] / rb[key])
        return out

    def idle_table(self):
        rows = ["| setup | connections held / asked | connect s | RSS bytes / connection per node: mean (min–max) "
                "| CPU µs / connection (all nodes) | nats-server RSS growth MiB / CPU µs per connection |",
                "|---|---|---|---|---|---|"]
        for label, *_ in IDLE_SETUPS:
            for r in self.results.get((IDLE_NAME, label), []):
                nodes = [n["rss_per_conn_bytes"] for n in r.get("nodes", []) if n.get("held")]
                spread = f" ({min(nodes):.0f}–{max(nodes):.0f})" if len(nodes) > 1 else ""
                nats = "–"
                if r.get("others"):
                    o = r["others"][0]
                    nats = (f"{(o['rss_after_kb'] - o['rss_before_kb']) / 1024:.0f} / "
                            f"{r.get('extra_cpu_us_per_conn', 0):.0f}")
                rows.append(f"| {label} | {r.get('held', 0):,} / {r.get('conns', 0):,}"
                            f"{'' if r.get('ok') else ' (FAILED: ' + str(r.get('error'))[:80] + ')'} | "
                            f"{r.get('connect_s', 0):.1f} | {r.get('rss_per_conn_bytes', 0):.0f}{spread} | "
                            f"{r.get('broker_cpu_us_per_conn', 0):.0f} | {nats} |")
        return "\n".join(rows)

    def connects_table(self):
        rows = ["| setup | new client ids connected | ids / s (median; per run) | background p50 µs | "
                "background p99 µs (median; per run) | background lost | CPU µs per id: nodes / nats-server | "
                "CPU µs per id at its end: nodes / nats-server |",
                "|---|---|---|---|---|---|---|---|"]
        for label in (connects_label(setup[0], rt) for rt in self.connects_sched() for setup in self.connects_setups()):
            runs = self.results.get((CONNECTS_NAME, label), [])
            ok = [r for r in runs if r.get("ok")]
            f = lambda key: ", ".join(f"{r.get(key, 0):.0f}" for r in runs) or "–"
            m = lambda key: f"{statistics.median(r[key] for r in ok):,.0f}" if ok else "–"
            rows.append(f"| {label} | {m('held')} | {m('ids_per_s')} ({f('ids_per_s')}) | {m('bg_p50_us')} | "
                        f"{m('bg_p99_us')} ({f('bg_p99_us')}) | {m('bg_lost')} | "
                        f"{m('node_cpu_us_per_id')} / {m('nats_cpu_us_per_id')} | "
                        f"{m('node_close_cpu_us_per_id')} / {m('nats_close_cpu_us_per_id')} |")
        return "\n".join(rows)

    def table(self, names):
        out = []
        if CONNECTS_NAME in names:
            out.append(self.connects_table())
            names = [n for n in names if n != CONNECTS_NAME]
            if not names:
                return "\n".join(out)
            out.append("")
        if IDLE_NAME in names:
            out.append(self.idle_table())
            names = [n for n in names if n != IDLE_NAME]
            if not names:
                return "\n".join(out)
            out.append("")
        rows = ["| scenario | setup | delivered msg/s | CPU µs/msg (all processes) | p99 µs | lost |",
                "|---|---|---|---|---|---|"]
        for name in names:
            for label, *_ in SCENARIOS[name][1]:
                f = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
                rows.append(f"| {SCENARIOS[name][0]} | {label} | {f(self.med(name, label, 'delivered_per_s'), 0)} | "
                            f"{f(self.med(name, label, 'cpu_us_per_msg'))} | "
                            f"{f(self.med(name, label, 'lat_us', 'p99'), 0)} | "
                            f"{f(self.med(name, label, 'lost'), 0)} |")
        rows.append("")
        for name, a, b, key, what in [
                ("pairs", "2 nodes", "1 node", "cpu_us_per_msg", "CPU/msg, 2 nodes + nats-server vs 1 node (issue 26: ≤ 2)"),
                ("pairs-sat", "2 nodes", "1 node", "delivered_per_s", "saturated msg/s, 2 nodes vs 1 node"),
                ("pairs-311", "2 nodes", "nats-server MQTT", "cpu_us_per_msg",
                 "3.1.1 CPU/msg, our 2 nodes + nats-server vs nats-server's MQTT"),
                ("pairs-311-q1", "2 nodes", "nats-server MQTT", "cpu_us_per_msg",
                 "3.1.1 QoS 1 CPU/msg, our 2 nodes + nats-server vs nats-server's MQTT"),
                ("pairs-311-q1", "2 nodes", "1 node", "cpu_us_per_msg", "3.1.1 QoS 1 CPU/msg, 2 nodes vs 1 node"),
                ("pairs-tls", "2 nodes, TLS on the reactor", "2 nodes, plain NATS", "cpu_us_per_msg",
                 "CPU/msg, NATS over TLS on the reactor vs plain NATS"),
                ("pairs-tls", "2 nodes, TLS, --before build", "2 nodes, TLS on the reactor", "cpu_us_per_msg",
                 "CPU/msg, NATS over TLS through libnats (--before) vs on the reactor")]:
            if name in names:
                rs = self.ratios(name, a, b, key)
                rows.append(f"- {what}: per-run ratios {', '.join(f'{r:.2f}' for r in rs) or '–'}"
                            + (f", median {statistics.median(rs):.2f}" if rs else ""))
                if name in ("pairs", "pairs-sat", "pairs-311"):
                    for label in self.setup_keys:
                        rs = self.ratios(name, label, b, key)
                        rows.append(f"  - with {label[len('2 nodes, '):]}: per-run ratios "
                                    f"{', '.join(f'{r:.2f}' for r in rs) or '–'}"
                                    + (f", median {statistics.median(rs):.2f}" if rs else ""))
        return "\n".join(out + rows)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.path.join(TOP, "build-release"))
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS))  # + connects, pairs-tls
    p.add_argument("--before", help="pairs-tls: an older mqttoolsd (its TLS data connection libnats')")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--json", help="write the raw runs here")
    p.add_argument("--cluster-keys", default="",
                   help='more [cluster] lines for every node, e.g. \'batch_time = "300us"\'')
    p.add_argument("--compare-keys", action="append", default=[],
                   help="one more 2-node setup of pairs and pairs-311 with these [cluster] lines instead "
                        "(repeatable): same-run A/B of a key")
    p.add_argument("--idle", action="store_true", help=f"only {IDLE_NAME}")
    p.add_argument("--idle-conns", type=int, default=100000, help="idle connections over the 6 nodes")
    p.add_argument("--idle-hold", type=float, default=2.0, help="seconds the idle connections are held")
    p.add_argument("--idle-timeout", type=float, default=150.0, help="seconds allowed for connecting")
    p.add_argument("--idle-window", type=int, default=512,
                   help="CONNECTs awaiting their CONNACK at once per generator process (6 processes)")
    p.add_argument("--connects", type=int, default=18000,
                   help=f"{CONNECTS_NAME}: new client ids connecting (held until the storm ends)")
    p.add_argument("--connects-window", type=int, default=1000, help=f"{CONNECTS_NAME}: CONNECTs in flight per process")
    p.add_argument("--connects-duration", type=float, default=4.0,
                   help=f"{CONNECTS_NAME}: seconds the background is measured (the storm starts 0.8 s into it)")
    p.add_argument("--connects-setups", default=",".join(s[0] for s in CONNECTS_SETUPS),
                   help=f"{CONNECTS_NAME}: which of " + ", ".join(s[0] for s in CONNECTS_SETUPS))
    p.add_argument("--connects-sched", choices=["normal", "hosts", "both"], default="both",
                   help=f"{CONNECTS_NAME}: every generator at the brokers' priority (normal), or as clients "
                   "on other hosts would see it (hosts: the background generator under SCHED_FIFO, the storm's at "
                   "nice 19), or both")
    args = p.parse_args()
    names = [IDLE_NAME] if args.idle else [n for n in args.scenarios.split(",") if n]
    if not (1 <= args.connects <= 18000 and 1 <= args.connects_window <= 18000 and 1 <= args.connects_duration <= 60):
        p.error("--connects 1..18000, --connects-window 1..18000, --connects-duration 1..60")
    for n in names:
        if n not in SCENARIOS and n not in (IDLE_NAME, CONNECTS_NAME):
            p.error(f"unknown scenario {n}")
    # Bounded in count and time: each node and each generator process stays
    # within the 20,000-file limit of this machine.
    if not (1 <= args.idle_conns <= IDLE_NODES * 19000 and 0 <= args.idle_hold <= 60
            and 10 <= args.idle_timeout <= 600 and 1 <= args.idle_window <= 19000):
        p.error(f"--idle-conns 1..{IDLE_NODES * 19000}, --idle-hold 0..60, --idle-timeout 10..600, "
                "--idle-window 1..19000")
    # Children (nodes, Mosquitto, the generator) inherit the raised soft
    # file limit (the hard one needs CAP_SYS_RESOURCE).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    b = Bench(args)
    b.node_extra = args.cluster_keys.replace("\\n", "\n")
    for keys in args.compare_keys:
        label = f"2 nodes, {keys}"
        b.setup_keys[label] = keys.replace("\\n", "\n")
        for name in ("pairs", "pairs-sat", "pairs-311"):
            setups = SCENARIOS[name][1]
            two = next(x for x in setups if x[0] == "2 nodes")
            setups.insert(setups.index(two) + 1, (label,) + two[1:])
    for path in (b.load, b.mqttoolsd, b.nats_server) + ((b.mosquitto,) if {IDLE_NAME, CONNECTS_NAME} & set(names) else ()):
        if not os.access(path, os.X_OK):
            p.error(f"{path} is missing")
    b.run(names)
    print(b.table(names))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}/{k[1]}": v for k, v in b.results.items()}, f, indent=1)
    shutil.rmtree(b.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
