#!/usr/bin/python3
"""Persistence benchmarks (issue 12), on the machinery of bench/run.py.

  bench/persistence.py --build build-release        (or: scripts/dev bench --persistence)

1. QoS 1 traffic to persistent subscribers (Session Expiry 3600), same run,
   interleaved: mqttoolsd without persistence ("in RAM"), with
   persistence_sync = "full" and "normal", and Mosquitto with
   `persistence true` (which writes a snapshot every autosave_interval: not
   durable per message). Broker CPU includes the store thread.
2. Restart: 10,000 persistent sessions with 100 queued QoS 1 messages each
   (1,000,000 queued deliveries of 100 stored messages), filled over MQTT,
   then the broker is stopped and started again: seconds until READY=1
   (sd_notify on a NOTIFY_SOCKET this script listens on) and RSS then, for
   mqttoolsd and Mosquitto loading its own file.

3. Soak (issue 31): QoS 1 at full speed (100 pairs, 16 in flight each,
   persistent subscribers) for --soak seconds (600 by default; 0 skips it)
   against mqttoolsd with sync full and normal: WAL and database size every
   second, plotted (docs/benchmarks-persistence-soak.png), their maxima, and
   disk bytes written per message (/proc/PID/io write_bytes).

The durable traffic rows also report the WAL's largest size (sampled every
20 ms) and the disk bytes written per delivered message.

Shared-machine numbers are noisy: compare the columns of one run (ratios).
Results are printed and written to docs/benchmarks.md between the
"persistence" markers (other sections are left alone).
"""
import json
import os
import re
import selectors
import shutil
import threading
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import run as R  # noqa: E402
import mqttwire as W  # noqa: E402

VARIANTS = ["mqttoolsd", "mqttoolsd-full", "mqttoolsd-normal", "mosquitto-persist"]
LABELS = {"mqttoolsd": "mqttoolsd in RAM", "mqttoolsd-full": "mqttoolsd sync full",
          "mqttoolsd-normal": "mqttoolsd sync normal", "mosquitto-persist": "Mosquitto persistence true"}
SCENARIOS = {
    "pairs-qos1-durable": ("QoS 1, 100 pairs at 10,000 msg/s, persistent subscribers",
                           ["--scenario", "pairs", "--pairs", "100", "--rate", "10000", "--qos", "1",
                            "--session-expiry", "3600"], VARIANTS, "traffic"),
    "pairs-qos1-sat-durable": ("QoS 1, 100 pairs saturated (16 in flight each), persistent subscribers",
                               ["--scenario", "pairs", "--pairs", "100", "--rate", "0", "--window", "16",
                                "--qos", "1", "--session-expiry", "3600"], VARIANTS, "traffic"),
}
BEGIN, END = "<!-- persistence:begin -->", "<!-- persistence:end -->"


def register(scenarios):
    """Makes the scenarios known to bench/run.py's Bench.run_one."""
    scenarios.update(SCENARIOS)


class PersistBench(R.Bench):
    def __init__(self, args):
        super().__init__(args)
        for v in VARIANTS:
            if v not in self.binaries:
                self.binaries[v] = self.binaries["mosquitto" if v.startswith("mosquitto") else "mqttoolsd"]

    def fresh_dir(self, port):
        d = os.path.join(self.tmp, f"state-{port}")
        os.makedirs(d, exist_ok=True)
        return d

    def start_broker(self, broker, port, log_path, rt=False, websocket=False, state=None, notify=None):
        env = dict(os.environ)
        if notify:
            env["NOTIFY_SOCKET"] = notify
        if broker.startswith("mqttoolsd") and broker != "mqttoolsd":
            state = state or self.fresh_dir(port)
            sync = "full" if broker == "mqttoolsd-full" else "normal"
            conf = os.path.join(self.tmp, f"mqttoolsd-{port}.toml")
            with open(conf, "w") as f:
                f.write("allow_anonymous = true\nmax_queued_messages = 1000000\nmax_connections = -1\n"
                        f"log_level = \"info\"\npersistence = true\npersistence_location = \"{state}\"\n"
                        f"persistence_sync = \"{sync}\"\n")
            argv = [self.binaries[broker], "-c", conf, "-p", str(port)]
        elif broker == "mosquitto-persist":
            state = state or self.fresh_dir(port)
            conf = os.path.join(self.tmp, f"mosquitto-{port}.conf")
            with open(conf, "w") as f:
                # user root: started as root, Mosquitto would switch to its own
                # user, which cannot write in this script's private folder.
                f.write(f"listener {port} {R.HOST}\nallow_anonymous true\nset_tcp_nodelay true\nuser root\n"
                        f"persistence true\npersistence_location {state}/\nmax_queued_messages 1000000\n"
                        "max_inflight_messages 20\nmax_connections -1\nlog_dest stderr\n"
                        "log_type error\nlog_type warning\nlog_type notice\n")
            argv = [self.binaries[broker], "-c", conf]
        else:
            return super().start_broker(broker, port, log_path, rt)
        out = open(log_path, "ab")
        proc = subprocess.Popen(self.pinned(0, argv, rt), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=env)
        out.close()
        if not R.wait_port(port, proc, timeout=120):
            R.stop(proc)
            return None
        if broker.startswith("mqttoolsd-"):
            self.watch = StoreWatch(proc.pid, os.path.join(state, "mqttoolsd.db"), period=0.02)
        return proc

    def run_one(self, name, broker, run_index):
        self.watch = None
        result = super().run_one(name, broker, run_index)
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.stop()
            result.update(watch.figures(result.get("delivered_per_s", 0) * (self.args.warmup + self.args.duration)))
        return result


class StoreWatch:
    """Samples a broker's store files and its disk writes on a thread until
    stop() (or the process is gone): WAL and database sizes, /proc/PID/io
    write_bytes (what the process sent to the block device)."""

    def __init__(self, pid, db, period=1.0):
        self.pid, self.db, self.period = pid, db, period
        self.samples = []  # (seconds, wal bytes, db bytes, write_bytes, rchar)
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def size(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    def io(self):
        """write_bytes (to the block device) and rchar (read by any syscall:
        mostly the clients' packets, so its rate follows the message rate)."""
        fields = {}
        try:
            with open(f"/proc/{self.pid}/io") as f:
                for line in f:
                    name, _, value = line.partition(":")
                    fields[name] = int(value)
        except (OSError, ValueError):
            return None
        return fields.get("write_bytes"), fields.get("rchar")

    def _run(self):
        while not self._stop.is_set():
            io = self.io()
            if io is None:
                break
            self.samples.append((time.monotonic() - self.t0, self.size(self.db + "-wal"), self.size(self.db), *io))
            self._stop.wait(self.period)

    def stop(self):
        self._stop.set()
        self._thread.join()

    def figures(self, delivered):
        if not self.samples:
            return {}
        out = {"wal_max_mib": max(s[1] for s in self.samples) / 2**20,
               "db_max_mib": max(s[2] for s in self.samples) / 2**20}
        if delivered > 0:
            out["write_bytes_per_msg"] = (self.samples[-1][3] - self.samples[0][3]) / delivered
        return out


# ------------------------------------------------------------------ restart


def pipelined(port, clients, per_client, batch=250, timeout=300):
    """Sends each client's bytes (ending in DISCONNECT) on its own
    connection, `batch` connections at a time, each until the broker closes it."""
    sel = selectors.DefaultSelector()
    pending = list(range(clients))
    live = set()
    deadline = time.monotonic() + timeout
    while (pending or live) and time.monotonic() < deadline:
        while pending and len(live) < batch:
            s = socket.create_connection((R.HOST, port))
            s.sendall(per_client(pending.pop()))
            s.setblocking(False)
            live.add(s)
            sel.register(s, selectors.EVENT_READ)
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                live.discard(s)
    for s in live:
        s.close()
    return not pending and not live


def fill(port, sessions, messages, payload=64):
    """`sessions` persistent sessions subscribed at QoS 1 to one topic, then
    `messages` QoS 1 messages to it while they are away."""
    keep = {W.SESSION_EXPIRY_INTERVAL: 86400}

    def session(i):
        # Clean Start 0: Mosquitto saves no session whose CONNECT had Clean Start 1.
        return (W.connect_packet(f"restart-{i}", clean_start=False, properties=keep)
                + W.subscribe_packet([("restart/all", W.sub_options(qos=1))], packet_id=1)
                + W.disconnect_packet())
    if not pipelined(port, sessions, session):
        raise RuntimeError("sessions not set up in time")
    c = W.Client(port, timeout=120)
    c.connect("restart-publisher")
    body = os.urandom(payload)
    for n in range(messages):
        c.send(W.publish_packet("restart/all", body, qos=1, packet_id=n % 65535 + 1))
    for _ in range(messages):
        c.expect(W.PUBACK, timeout=300)
    c.disconnect()


def port_open(port):
    try:
        with socket.create_connection((R.HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_ready(sock, proc, port, timeout=120):
    """READY=1 on the notify socket; a broker built without sd_notify (Debian's
    Mosquitto sends none here) counts as ready once its port accepts: both
    load their file before they listen."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        sock.settimeout(0.01)
        try:
            msg = sock.recv(4096).decode(errors="replace")
            if "READY=1" in msg.split("\n"):
                return "READY=1"
        except socket.timeout:
            pass
        if port_open(port):
            return "port"
    return None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def restart(bench, broker, sessions, messages, runs):
    """Fills once, then restarts `runs` times: [(seconds to READY, RSS MiB)]."""
    state = bench.fresh_dir(f"restart-{broker}")
    port = R.free_port()
    log_path = os.path.join(bench.tmp, f"{broker}-restart.log")
    proc = bench.start_broker(broker, port, log_path, state=state)
    if proc is None:
        return None
    t0 = time.monotonic()
    fill(port, sessions, messages)
    R.log(f"{broker}: filled {sessions} sessions x {messages} messages in {time.monotonic() - t0:.1f} s")
    R.stop(proc)
    out = []
    for _ in range(runs):
        path = os.path.join(bench.tmp, f"notify-{broker}-{time.monotonic_ns()}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        port = R.free_port()
        began = time.monotonic()
        # Not waiting for the port: READY=1 comes after the load and the listeners.
        proc = bench.start_broker_nowait(broker, port, log_path, state, path)
        ok = wait_ready(sock, proc, port)
        took = time.monotonic() - began
        rss = rss_kib(proc.pid) if ok else None
        R.stop(proc)
        sock.close()
        os.unlink(path)
        if not ok:
            R.log(f"{broker}: no READY=1 (log {log_path})")
            return None
        out.append((took, rss / 1024 if rss else None))
        R.log(f"{broker}: ready ({ok}) after {took:.2f} s, RSS {rss / 1024:.0f} MiB")
    with open(log_path, errors="replace") as f:
        loaded = re.findall(r"loaded in \d+ ms: .*", f.read())
    if loaded:
        R.log(f"{broker}: {loaded[-1]}")
    return out


def start_broker_nowait(self, broker, port, log_path, state, notify):
    """start_broker without waiting for the port (the caller waits for READY=1)."""
    wait = R.wait_port
    R.wait_port = lambda *a, **k: True
    try:
        return self.start_broker(broker, port, log_path, state=state, notify=notify)
    finally:
        R.wait_port = wait


PersistBench.start_broker_nowait = start_broker_nowait


# ------------------------------------------------------------------ report


def table(bench, names):
    cols = [v for v in VARIANTS if any((n, v) in bench.results for n in names)]
    lines = ["| scenario | metric | " + " | ".join(LABELS[c] for c in cols) + " | full / in RAM |",
             "|" + "---|" * (len(cols) + 3)]
    for name in names:
        for key, label, digits in R.TRAFFIC_METRICS:
            if key == "wakeups_per_msg":
                continue
            vals = {c: R.median(bench.results.get((name, c), []), key) for c in cols}
            r = R.ratio(vals.get("mqttoolsd-full"), vals.get("mqttoolsd"))
            lines.append(f"| {SCENARIOS[name][0]} | {label} | " + " | ".join(R.fmt(vals[c], digits) for c in cols)
                         + f" | {R.fmt(r, 2) if r is not None else '–'} |")
        for key, label, digits in STORE_METRICS:
            vals = {c: R.median(bench.results.get((name, c), []), key) for c in cols}
            lines.append(f"| {SCENARIOS[name][0]} | {label} | "
                         + " | ".join(R.fmt(vals[c], digits) if vals[c] is not None else "–" for c in cols) + " | |")
    return lines


STORE_METRICS = [("wal_max_mib", "largest WAL (MiB)", 1), ("write_bytes_per_msg", "disk bytes written / msg", 0)]
SOAK_PNG = os.path.join(os.path.dirname(HERE), "docs", "benchmarks-persistence-soak.png")


def soak(bench, broker, seconds):
    """QoS 1 at full speed through persistent sessions for `seconds`: the
    store's sizes every second, the generator's result, bytes written."""
    port = R.free_port()
    log_path = os.path.join(bench.tmp, f"{broker}-soak.log")
    state = bench.fresh_dir(f"soak-{broker}")
    proc = bench.start_broker(broker, port, log_path, state=state)
    bench.watch = None
    if proc is None:
        return None
    watch = StoreWatch(proc.pid, os.path.join(state, "mqttoolsd.db"), period=1.0)
    argv = [bench.load, "--host", R.HOST, "--port", str(port), "--broker-pid", str(proc.pid),
            "--label", f"soak/{broker}"] + SCENARIOS["pairs-qos1-sat-durable"][1] + [
            "--warmup", "5", "--duration", str(seconds), "--drain", "2"]
    try:
        gen = subprocess.run(bench.pinned(1, argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=seconds + 180)
        lines = [l for l in gen.stdout.splitlines() if l.startswith("{")]
        result = json.loads(lines[-1]) if lines else {"ok": False, "error": gen.stderr.strip()[-300:]}
    finally:
        watch.stop()
        R.stop(proc)
    with open(log_path, errors="replace") as f:
        warnings = [l for l in f if "WAL" in l]
    result.update(watch.figures(result.get("delivered_per_s", 0) * (seconds + 5)))
    s = watch.samples
    late = [x for x in s if x[0] >= 60]  # after a minute of warm-up
    if late:
        result["wal_max_late_mib"] = max(x[1] for x in late) / 2**20
        half = [x for x in late if x[0] >= (late[0][0] + late[-1][0]) / 2]
        result["db_max_first_half_mib"] = max(x[2] for x in late if x not in half) / 2**20 if len(late) > len(half) else None
        result["db_max_second_half_mib"] = max(x[2] for x in half) / 2**20
    # Throughput over time: the rate of bytes the broker read (the clients'
    # packets) in the second minute and in the last minute, scaled to the
    # generator's mean msg/s: a store that slows as it ages shows here.
    def read_rate(t0, t1):
        window = [x for x in s if t0 <= x[0] <= t1]
        if len(window) < 2 or window[-1][0] <= window[0][0]:
            return None
        return (window[-1][4] - window[0][4]) / (window[-1][0] - window[0][0])
    whole, early, last = read_rate(0, s[-1][0]) if s else None, read_rate(60, 120), read_rate(s[-1][0] - 60, s[-1][0]) if s else None
    mean = result.get("delivered_per_s")
    if whole and early and last and mean:
        result["rate_2nd_minute"], result["rate_last_minute"] = mean * early / whole, mean * last / whole
    result["samples"] = s
    result["warnings"] = warnings
    return result


def plot_soak(results, png):
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        R.log("gnuplot not found: no soak plot")
        return None
    dat = png + ".dat"
    with open(dat, "w") as f:
        for broker, r in results.items():
            for t, wal, db, *_ in r["samples"]:
                f.write(f"{t:.1f} {wal / 2**20:.3f} {db / 2**20:.3f}\n")
            f.write("\n\n")
    plots = []
    for i, broker in enumerate(results):
        plots.append(f"'{dat}' index {i} using 1:2 with lines lw 1.5 title '{LABELS[broker]}: WAL'")
        plots.append(f"'{dat}' index {i} using 1:3 with lines lw 1.5 dt 2 title '{LABELS[broker]}: database'")
    script = f"""
set terminal pngcairo noenhanced size 900,380 font 'sans,9'
set output '{png}'
set title 'QoS 1 at full speed through persistent sessions: store files over time'
set xlabel 'seconds'
set ylabel 'MiB'
set yrange [0:*]
set grid
set key outside right
plot {", ".join(plots)}
"""
    r = subprocess.run([gnuplot], input=script, text=True, capture_output=True)
    os.unlink(dat)
    if r.returncode != 0:
        R.log("gnuplot failed: " + r.stderr.strip()[-300:])
        return None
    return png


def main(argv=None):
    p = R.arguments(__doc__)
    p.add_argument("--perf", action="store_true")
    p.add_argument("--brokers", default=",".join(VARIANTS))
    p.add_argument("--sessions", type=int, default=10000)
    p.add_argument("--messages", type=int, default=100, help="queued per session")
    p.add_argument("--restart-runs", type=int, default=3)
    p.add_argument("--skip-traffic", action="store_true")
    p.add_argument("--skip-restart", action="store_true")
    p.add_argument("--soak", type=float, default=600.0,
                   help="seconds of the full-speed soak per sync mode (issue 31); 0 skips it")
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    register(R.SCENARIOS)
    bench = PersistBench(args)
    brokers = [b for b in args.brokers.split(",") if b and bench.available(b)]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    names = list(SCENARIOS)
    lines = [f"## Persistence (issue 12)", "",
             f"`bench/persistence.py`, {started}, {args.runs} interleaved runs of {args.duration:g} s per "
             "cell, medians; broker on CPU 0, generator on CPU 1, on a shared 2-core VM: compare columns of "
             "this run (ratios), not absolute figures across runs. Subscribers have Session Expiry 3600, so "
             "every QoS 1 message is written (queue row) and deleted (PUBACK) by the durable broker.", ""]
    if not args.skip_traffic:
        bench.run(names, brokers)
        lines += table(bench, names)
        full = R.median(bench.results.get((names[1], "mqttoolsd-full"), []), "delivered_per_s")
        ram = R.median(bench.results.get((names[1], "mqttoolsd"), []), "delivered_per_s")
        cpu_full = R.median(bench.results.get((names[0], "mqttoolsd-full"), []), "cpu_us_per_msg")
        cpu_ram = R.median(bench.results.get((names[0], "mqttoolsd"), []), "cpu_us_per_msg")
        lines += ["",
                  f"- Targets: CPU per message at 10,000 msg/s with sync full ≤ 2× in RAM: "
                  f"{R.fmt(R.ratio(cpu_full, cpu_ram), 2) if cpu_full and cpu_ram else '–'}×; saturated durable "
                  f"msg/s ≥ 1/4 of in RAM: {R.fmt(R.ratio(full, ram), 2) if full and ram else '–'}."]
    if not args.skip_restart:
        lines += ["", f"Restart with {args.sessions * args.messages:,} queued QoS 1 deliveries "
                  f"({args.sessions:,} sessions × {args.messages} messages of 64 bytes, filled over MQTT, "
                  "clean stop, start): seconds from exec to READY=1 (mqttoolsd) or to its port accepting "
                  "(Mosquitto sends no READY=1 here; it, too, loads before it listens), RSS then (median of "
                  f"{args.restart_runs} starts).", "",
                  "| broker | ready after (s) | RSS after load (MiB) |", "|---|---|---|"]
        for b in ("mqttoolsd-full", "mosquitto-persist"):
            if b not in brokers:
                continue
            r = restart(bench, b, args.sessions, args.messages, args.restart_runs)
            if not r:
                lines.append(f"| {LABELS[b]} | failed | – |")
                continue
            lines.append(f"| {LABELS[b]} | {statistics.median(t for t, _ in r):.2f} | "
                         f"{statistics.median(m for _, m in r if m):.0f} |")
    if args.soak > 0:
        soaked = {}
        for b in ("mqttoolsd-full", "mqttoolsd-normal"):
            if b in brokers:
                R.log(f"soak: {b} for {args.soak:g} s")
                r = soak(bench, b, args.soak)
                if r:
                    soaked[b] = r
        lines += ["", f"Soak (issue 31): QoS 1, 100 pairs saturated (16 in flight each), persistent subscribers, "
                  f"{args.soak:g} s after 5 s of warm-up per sync mode, one after the other; store files sampled "
                  "every second, disk bytes from /proc/PID/io write_bytes, the rate over time from its rchar (bytes the "
                  "broker read, scaled to the generator's mean msg/s); host shared with other engineers.", "",
                  "| sync | delivered msg/s | msg/s, 2nd minute → last minute | p99 µs | largest WAL (MiB) | "
                  "largest WAL after 60 s | database max, 1st → 2nd half after 60 s (MiB) | "
                  "disk bytes written / msg | WAL warnings |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for b, r in soaked.items():
            lines.append(f"| {b.split('-')[1]} | {R.fmt(r.get('delivered_per_s'), 0)} | "
                         f"{R.fmt(r.get('rate_2nd_minute'), 0)} → {R.fmt(r.get('rate_last_minute'), 0)} | "
                         f"{R.fmt(R.metric(r, 'p99_us'), 0)} | "
                         f"{R.fmt(r.get('wal_max_mib'), 1)} | {R.fmt(r.get('wal_max_late_mib'), 1)} | "
                         f"{R.fmt(r.get('db_max_first_half_mib'), 1)} → {R.fmt(r.get('db_max_second_half_mib'), 1)} | "
                         f"{R.fmt(r.get('write_bytes_per_msg'), 0)} | {len(r['warnings'])} |")
        lines += ["", "Both files' sizes are high-water marks: after each checkpoint SQLite writes the WAL from its "
                  "start again and reuses freed database pages, so a file grows only when a larger backlog than "
                  "any before is in flight at once (a step in the plot: a stall of the shared host) and shrinks "
                  "back (WAL truncated, incremental vacuum) after 1 s of idle; the WAL's bound is "
                  "journal_size_limit (16 MiB), asserted in tests/integration/test_persistence_wal.py."]
        if soaked and not args.no_docs and plot_soak(soaked, SOAK_PNG):
            lines += ["", f"![store files during the soak]({os.path.basename(SOAK_PNG)})"]
    text = "\n".join(lines)
    print(text)
    if not args.no_docs:
        R.replace_docs_section(BEGIN, END, text)


if __name__ == "__main__":
    main()
