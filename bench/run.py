#!/usr/bin/python3
"""Benchmarks mqttoolsd against Debian's mosquitto and a do-nothing forwarder.

Run through `scripts/dev bench [ARGS]`, which builds build-release first.
Every broker runs pinned to CPU 0 (`taskset -c 0`) and the load generator
(bench/load/mqtt_load) to CPU 1. Each scenario runs against each broker
several times, interleaved, with a fresh broker process per run; the table
holds medians. Results go to stdout, docs/benchmarks.md and
docs/benchmarks.png (gnuplot), and the raw runs to BUILD/bench-results.json.

Only 127.0.0.0/8 addresses are used, and only the processes started here are
ever stopped, by their PID.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import websocket as ws_bench  # noqa: E402  (the WebSocket scenario, issue 14)

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
BROKERS = ["mqttoolsd", "mosquitto", "forwarder"]

FANIN_GENERATOR = ["--procs", "2", "--read-batch-us", "50"]
# name -> (description, mqtt_load arguments, brokers, kind)
SCENARIOS = {
    "pairs": ("one-to-one, 100 pairs at 10,000 msg/s",
              ["--scenario", "pairs", "--pairs", "100", "--rate", "10000"], BROKERS, "traffic"),
    "pairs-sat": ("one-to-one, 100 pairs saturated (16 in flight each)",
                  ["--scenario", "pairs", "--pairs", "100", "--rate", "0", "--window", "16"], BROKERS, "traffic"),
    # Fan-in: the subscriber reads in its own process, 50 µs after a wake-up
    # that found data (issue 17 "Also"): one generator process reading once
    # per message was itself near saturation and bunched the publishers'
    # writes; its latency then was the generator's (docs/profiling.md).
    "fanin": ("fan-in, 10 → 1 at 50,000 msg/s",
              ["--scenario", "fanin", "--pubs", "10", "--rate", "50000"] + FANIN_GENERATOR, BROKERS, "traffic"),
    "fanin-qos1": ("fan-in at QoS 1, 10 → 1 at 20,000 msg/s",
                   ["--scenario", "fanin", "--pubs", "10", "--qos", "1", "--rate", "20000"] + FANIN_GENERATOR,
                   BROKERS, "traffic"),
    "fanout": ("fan-out, 1 → 100 at 1,000 msg/s (100,000 deliveries/s)",
               ["--scenario", "fanout", "--subs", "100", "--rate", "1000"], BROKERS, "traffic"),
    "idle-10k": ("10,000 idle connections",
                 ["--scenario", "idle", "--conns", "10000", "--src-addrs", "4", "--hold", "1"],
                 ["mqttoolsd", "mosquitto"], "idle"),
    "idle-10k-ka": ("10,000 idle connections with Keep Alive 60",
                    ["--scenario", "idle", "--conns", "10000", "--src-addrs", "4", "--hold", "1",
                     "--keep-alive", "60"],
                    ["mqttoolsd", "mosquitto"], "idle"),
    "idle-100k": ("100,000 idle connections",
                  ["--scenario", "idle", "--conns", "100000", "--src-addrs", "8", "--hold", "1",
                   "--connect-timeout", "40"],
                  ["mqttoolsd", "mosquitto"], "idle"),
}
SCENARIOS[ws_bench.SCENARIO[0]] = ws_bench.SCENARIO[1]
DEFAULT_SCENARIOS = list(SCENARIOS)
# One run of these is enough: they are about holding, not timing.
SINGLE_RUN = {"idle-100k"}
# A run name is a scenario name, or SCENARIO@rt for the same scenario with the
# broker and the generator under SCHED_FIFO (`--sched rt|both`).
RT_SUFFIX = "@rt"


def base(name):
    return name.split("@")[0]


def is_rt(name):
    return name.endswith(RT_SUFFIX)


def fixed_rate(name):
    _, load_args, _, kind = SCENARIOS[base(name)]
    return kind == "traffic" and load_args[load_args.index("--rate") + 1] != "0"


def describe(name):
    return SCENARIOS[base(name)][0] + (" [SCHED_FIFO]" if is_rt(name) else "")


def run_names(names, sched):
    """Scenario names -> run names for the scheduling mode (normal, rt, both)."""
    out = []
    if sched in ("normal", "both"):
        out += names
    if sched == "rt":
        out += [n + RT_SUFFIX if fixed_rate(n) else n for n in names]
    if sched == "both":
        out += [n + RT_SUFFIX for n in names if fixed_rate(n)]
    return out

# (scenario, metric, comparison, factor): the targets, each a ratio
# of mqttoolsd's median to another broker's median in the same run.
TARGETS = [
    ("pairs", "cpu_us_per_msg", "forwarder", 1.10),
    ("pairs", "p99_us", "mosquitto", 1.0),
    ("fanin", "cpu_us_per_msg", "mosquitto", 0.5),
    ("fanin", "p99_us", "mosquitto", 1.0),
    ("fanin-qos1", "cpu_us_per_msg", "mosquitto", 0.4),
    ("fanin-qos1", "lost", "zero", 0),
    ("fanout", "cpu_us_per_msg", "forwarder", 1.10),
    ("fanout", "p99_us", "mosquitto", 1.0),
    ("idle-10k", "rss_per_conn_bytes", "absolute", 600),
    ("idle-10k-ka", "rss_per_conn_bytes", "absolute", 600),
    ("idle-100k", "held", "absolute-min", 100000),
] + ws_bench.TARGETS

TRAFFIC_METRICS = [
    ("cpu_us_per_msg", "broker CPU µs / delivered msg", 2),
    ("delivered_per_s", "delivered msg/s", 0),
    ("p50_us", "latency p50 µs", 0),
    ("p99_us", "latency p99 µs", 0),
    ("lost", "lost messages", 0),
    ("wakeups_per_msg", "broker wake-ups / delivered msg (≈)", 2),
]
IDLE_METRICS = [
    ("rss_per_conn_bytes", "broker RSS bytes / connection", 0),
    ("held", "connections held", 0),
]


def log(msg):
    print(f"== {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def stop(proc):
    """Stops a process this script started, by its PID only."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def arguments(doc, runs=3, duration=5.0, warmup=1.0, mqttoolsd=True, build="build-release"):
    """The parser every bench/ script starts from: DOC as its --help, --build,
    and the run options its scenarios take (None: not taken)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=build)
    if mqttoolsd:
        p.add_argument("--mqttoolsd", help="broker binary (default BUILD/src/daemon/mqttoolsd)")
    if runs is not None:
        p.add_argument("--runs", type=int, default=runs)
    if duration is not None:
        p.add_argument("--duration", type=float, default=duration, help="measured seconds per traffic run")
    if warmup is not None:
        p.add_argument("--warmup", type=float, default=warmup)
    return p


def check_ranges(p, args, **ranges):
    """Refuses the command line (p.error) when an option is outside its
    range (name=(low, high)); the message lists every range."""
    if any(not lo <= getattr(args, name) <= hi for name, (lo, hi) in ranges.items()):
        p.error(", ".join(f"--{name.replace('_', '-')} {lo}..{hi}" for name, (lo, hi) in ranges.items()))


def raise_file_limit():
    """The open-file soft limit up to the hard one (returned); children
    inherit it (raising the hard one needs CAP_SYS_RESOURCE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.load = os.path.join(self.build, "bench", "load", "mqtt_load")
        self.binaries = {
            "mqttoolsd": args.mqttoolsd or os.path.join(self.build, "src", "daemon", "mqttoolsd"),
            "mosquitto": shutil.which("mosquitto") or "/usr/sbin/mosquitto",
            "forwarder": os.path.join(self.build, "bench", "load", "mqtt_forwarder"),
        }
        self.tmp = tempfile.mkdtemp(prefix="mqttools-bench-")
        self.pin = os.cpu_count() and os.cpu_count() >= 2 and shutil.which("taskset")
        self.results = {}  # (scenario, broker) -> [json]
        self.notes = []

    def available(self, broker):
        path = self.binaries[broker]
        return os.path.isfile(path) and os.access(path, os.X_OK)

    def pinned(self, cpu, argv, rt=False):
        if self.pin:
            argv = ["taskset", "-c", str(cpu)] + argv
        if rt:
            # SCHED_FIFO: wakeups are not delayed behind other users' jobs.
            # Only for fixed-rate runs, whose CPU use is bounded.
            argv = ["chrt", "-f", "10"] + argv
        return argv

    def start_broker(self, broker, port, log_path, rt=False, websocket=False):
        if broker == "mqttoolsd":
            # The same limits as the Mosquitto config below, and no per-connection log lines.
            conf = os.path.join(self.tmp, f"mqttoolsd-{port}.toml")
            with open(conf, "w") as f:
                f.write("allow_anonymous = true\n"
                        "max_queued_messages = 1000000\n"
                        "max_connections = -1\n"
                        "log_level = \"warning\"\n" + (ws_bench.mqttoolsd_listener(port) if websocket else ""))
            argv = [self.binaries[broker], "-c", conf] + ([] if websocket else ["-p", str(port)])
        elif broker == "forwarder":
            argv = [self.binaries[broker], "-p", str(port)]
        else:
            conf = os.path.join(self.tmp, f"mosquitto-{port}.conf")
            with open(conf, "w") as f:
                f.write((ws_bench.mosquitto_listener(port, free_port()) if websocket else f"listener {port} {HOST}\n") +
                        "allow_anonymous true\n"
                        "set_tcp_nodelay true\n"
                        "persistence false\n"
                        "max_queued_messages 1000000\n"
                        "max_connections -1\n"
                        "log_dest stderr\n"
                        "log_type error\n"
                        "log_type warning\n")
            argv = [self.binaries[broker], "-c", conf]
        out = open(log_path, "ab")
        proc = subprocess.Popen(self.pinned(0, argv, rt), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()
        if not wait_port(port, proc):
            stop(proc)
            return None
        return proc

    def run_one(self, name, broker, run_index):
        desc, load_args, _, kind = SCENARIOS[base(name)]
        port = free_port()
        log_path = os.path.join(self.tmp, f"{broker}-{name}-{run_index}.log")
        rt = is_rt(name)
        proc = self.start_broker(broker, port, log_path, rt, websocket=ws_bench.is_websocket(load_args))
        if proc is None:
            log(f"{broker} did not start (log: {log_path})")
            return {"ok": False, "error": "broker did not start"}
        argv = [self.load, "--host", HOST, "--port", str(port), "--broker-pid", str(proc.pid),
                "--label", f"{name}/{broker}/{run_index}"] + load_args
        if kind == "traffic":
            argv += ["--warmup", str(self.args.warmup), "--duration", str(self.args.duration),
                     "--drain", "2"]
        timeout = self.args.warmup + self.args.duration + 120
        perf = None
        switches0 = self.switches_of(proc.pid)
        try:
            gen = subprocess.Popen(self.pinned(1, argv, rt), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            if self.args.perf and broker == "mqttoolsd" and kind == "traffic":
                perf = self.start_perf(name, proc.pid, run_index)
            try:
                stdout, stderr = gen.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                gen.kill()
                stdout, stderr = gen.communicate()
                stdout, stderr = "", "generator timed out"
            lines = [l for l in stdout.splitlines() if l.startswith("{")]
            result = json.loads(lines[-1]) if lines else {"ok": False, "error": stderr.strip()[-300:]}
        finally:
            if perf is not None:
                try:
                    perf.wait(timeout=self.args.duration + 30)
                except subprocess.TimeoutExpired:
                    stop(perf)
            alive = proc.poll() is None
            switches1 = self.switches_of(proc.pid) if alive else None
            if kind == "idle" and alive:
                result_limit = self.nofile_of(proc.pid)
            stop(proc)
        if not alive:
            result["ok"] = False
            result["error"] = (result.get("error") or "") + f" broker exited (code {proc.returncode})"
        if kind == "idle" and alive:
            result["broker_nofile"] = result_limit
        if kind == "traffic" and switches0 is not None and switches1 is not None:
            # Sleeps in epoll_wait and the like, over the whole run: setup and
            # drain add few, so per delivered message over warm-up + window.
            result["broker_wakeups"] = switches1 - switches0
            delivered = result.get("delivered_per_s", 0) * (self.args.warmup + self.args.duration)
            if delivered > 0:
                result["wakeups_per_msg"] = (switches1 - switches0) / delivered
        return result

    def start_perf(self, name, pid, run_index):
        """perf record (software cpu-clock, call graphs) on the broker for the measured window."""
        if not shutil.which("perf"):
            log("perf not found: no profile")
            return None
        # Connections take a moment; start inside the measured window.
        time.sleep(self.args.warmup + 0.5)
        out = os.path.join(self.build, f"perf-{name}-{run_index}.data")
        log(f"perf record -> {out}")
        return subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-g", "-p", str(pid),
                                 "-o", out, "--", "sleep", str(max(self.args.duration - 1.0, 0.5))],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def switches_of(pid):
        """Voluntary context switches of all the process' threads: how often it
        went to sleep (in epoll_wait) and had to be woken up again."""
        total = 0
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            total += int(line.split()[1])
        except (OSError, ValueError):
            return None
        return total

    @staticmethod
    def nofile_of(pid):
        """The broker's own soft RLIMIT_NOFILE, from /proc/PID/limits."""
        try:
            with open(f"/proc/{pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        return int(line.split()[3])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def run(self, names, brokers):
        runs = self.args.runs
        for name in names:
            _, _, allowed, _ = SCENARIOS[base(name)]
            targets = [b for b in brokers if b in allowed and self.available(b)]
            n = 1 if base(name) in SINGLE_RUN else runs
            for i in range(n):
                for broker in targets:
                    r = self.run_one(name, broker, i)
                    self.results.setdefault((name, broker), []).append(r)
                    log(self.summary(name, broker, i, r))

    @staticmethod
    def summary(name, broker, i, r):
        if r.get("scenario") == "idle":
            return (f"{name:10} {broker:9} #{i}: held {r.get('held')}/{r.get('conns')} "
                    f"rss/conn {r.get('rss_per_conn_bytes', 0):.0f} B  {r.get('error', '')}")
        lat = r.get("lat_us", {})
        return (f"{name:10} {broker:9} #{i}: {r.get('delivered_per_s', 0):10.0f} msg/s  "
                f"cpu {r.get('cpu_us_per_msg', 0):6.2f} µs/msg  p50 {lat.get('p50', 0):8.1f} µs  "
                f"p99 {lat.get('p99', 0):8.1f} µs  lost {r.get('lost', '?')}  "
                f"wake-ups/msg {r.get('wakeups_per_msg', 0):.2f}  gen {r.get('gen_cpu_pct', 0):.0f}%"
                f"{'' if r.get('ok') else '  FAILED: ' + str(r.get('error'))}")


def metric(r, key):
    if key in ("p50_us", "p99_us"):
        return r.get("lat_us", {}).get(key[:-3])
    return r.get(key)


def median(results, key):
    vals = [metric(r, key) for r in results if metric(r, key) is not None and
            (r.get("ok") or key in ("held", "lost", "rss_per_conn_bytes"))]
    return statistics.median(vals) if vals else None


def fmt(v, digits):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def replace_docs_section(begin, end, text):
    """Puts `text` between the `begin` and `end` markers of docs/benchmarks.md
    (appended with its markers when they are not there yet): each scenario
    family's script owns one section of that file."""
    path = os.path.join(TOP, "docs", "benchmarks.md")
    doc = open(path).read() if os.path.exists(path) else ""
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)


def build_table(bench, names, brokers):
    cols = [b for b in BROKERS if b in brokers]
    head = "| scenario | metric | " + " | ".join(cols) + " | mqttoolsd/mosquitto | mqttoolsd/forwarder |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    medians = {}
    for name in names:
        _, _, allowed, kind = SCENARIOS[base(name)]
        desc = describe(name)
        metrics = TRAFFIC_METRICS if kind == "traffic" else IDLE_METRICS
        for key, label, digits in metrics:
            row = [desc, label]
            vals = {}
            for b in cols:
                v = median(bench.results.get((name, b), []), key) if b in allowed else None
                vals[b] = v
                medians[(name, b, key)] = v
                row.append(fmt(v, digits))
            r1 = ratio(vals.get("mqttoolsd"), vals.get("mosquitto"))
            r2 = ratio(vals.get("mqttoolsd"), vals.get("forwarder"))
            row.append(fmt(r1, 2) if r1 is not None else "–")
            row.append(fmt(r2, 2) if r2 is not None else "–")
            lines.append("| " + " | ".join(row) + " |")
    return lines, medians


def paired_ratio(bench, name, key, against):
    """Median over run indexes of mqttoolsd's value / the other broker's in the
    same run index (they ran back to back, so share the machine's noise)."""
    ours = bench.results.get((name, "mqttoolsd"), [])
    theirs = bench.results.get((name, against), [])
    rs = []
    for a, b in zip(ours, theirs):
        va, vb = metric(a, key), metric(b, key)
        if a.get("ok") and b.get("ok") and va is not None and vb:
            rs.append(va / vb)
    return statistics.median(rs) if rs else None


def check_targets(bench, medians, names):
    lines = ["| scenario | target | measured (medians) | paired per-run ratio | met |", "|---|---|---|---|---|"]
    for name, key, against, factor in [(n, k, a, f) for n in names for (t, k, a, f) in TARGETS if base(n) == t]:
        ours = medians.get((name, "mqttoolsd", key))
        paired = "–"
        if against == "zero":
            want, got = "0 lost", fmt(ours, 0)
            ok = ours is not None and ours == 0
        elif against == "absolute":
            want, got = f"≤ {factor} B", fmt(ours, 0)
            ok = ours is not None and ours <= factor
        elif against == "absolute-min":
            want, got = f"≥ {factor:,} held", fmt(ours, 0)
            ok = ours is not None and ours >= factor
        elif against.startswith("scenario:"):
            # The same broker in another scenario of this run (ws vs TCP).
            other_name = against.split(":", 1)[1] + name[len(base(name)):]
            other = medians.get((other_name, "mqttoolsd", key))
            r = ratio(ours, other)
            want = f"{key} ≤ {factor:g}× mqttoolsd in {other_name}"
            got = f"{fmt(ours, 2)} vs {fmt(other, 2)} = {fmt(r, 2)}×" if r is not None else "–"
            ok = r is not None and r <= factor
            rs = [metric(a, key) / metric(b, key) for a, b in zip(bench.results.get((name, "mqttoolsd"), []),
                                                                  bench.results.get((other_name, "mqttoolsd"), []))
                  if a.get("ok") and b.get("ok") and metric(a, key) is not None and metric(b, key)]
            paired = f"{fmt(statistics.median(rs), 2)}×" if rs else "–"
        else:
            other = medians.get((name, against, key))
            r = ratio(ours, other)
            want = f"{key} ≤ {factor:g}× {against}"
            got = f"{fmt(ours, 2)} vs {fmt(other, 2)} = {fmt(r, 2)}×" if r is not None else "–"
            ok = r is not None and r <= factor
            pr = paired_ratio(bench, name, key, against)
            paired = f"{fmt(pr, 2)}×" if pr is not None else "–"
        verdict = "yes" if ok else ("no" if ours is not None else "not measured")
        lines.append(f"| {describe(name)} | {want} | {got} | {paired} | {verdict} |")
    return lines


def plot(bench, medians, names, brokers, png):
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        log("gnuplot not found: no plot")
        return False
    traffic = [n for n in names if SCENARIOS[base(n)][3] == "traffic"]
    cols = [b for b in BROKERS if b in brokers]
    dat = os.path.join(bench.tmp, "bench.dat")
    with open(dat, "w") as f:
        for key in ("cpu_us_per_msg", "p99_us"):
            for n in traffic:
                vals = [medians.get((n, b, key)) for b in cols]
                f.write(f"\"{n}\" " + " ".join("NaN" if v is None else f"{v:.4f}" for v in vals) + "\n")
            f.write("\n\n")
    plots = ", ".join(f"'{dat}' index IDX using {i + 2}:xtic(1) title '{b}'" for i, b in enumerate(cols))
    script = f"""
set terminal pngcairo noenhanced size 1100,800 font 'sans,10'
set output '{png}'
set multiplot layout 2,1 title 'mqttoolsd vs mosquitto vs do-nothing forwarder (medians, broker on one core)'
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key top right
set grid ytics
set ylabel 'broker CPU µs per delivered message'
plot {plots.replace('IDX', '0')}
set ylabel 'p99 latency µs (log)'
set logscale y
plot {plots.replace('IDX', '1')}
unset multiplot
"""
    r = subprocess.run([gnuplot], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        log("gnuplot failed: " + r.stderr.strip()[-300:])
        return False
    return True


def cpuidle_driver():
    try:
        with open("/sys/devices/system/cpu/cpuidle/current_driver") as f:
            return f.read().strip()
    except OSError:
        return "none"


def hold_idle_poll(bench):
    """Asks for zero wake-up latency from idle (PM QoS, /dev/cpu_dma_latency)
    for as long as the returned descriptor stays open: the cpuidle governor
    then keeps idle CPUs in their polling state. In a VM a halted vCPU costs a
    VM exit to sleep and an interrupt through the hypervisor to wake, tens of
    microseconds charged to whichever process sleeps or wakes it, for every
    broker alike; with polling idle the per-message costs are the brokers' and
    the kernel's, as on a busy or bare-metal machine. Returns None (and notes
    it) where the request cannot be made."""
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
        os.write(fd, struct.pack("i", 0))
    except OSError as e:
        bench.args.idle = "halt"
        bench.notes.append(f"/dev/cpu_dma_latency could not be held at 0 ({e.strerror}): idle CPUs halted "
                           "as usual (`--idle halt`).")
        return None
    return fd


def environment(bench):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    mosq = subprocess.run([bench.binaries["mosquitto"], "-h"], capture_output=True, text=True).stdout.splitlines()
    commit = subprocess.run(["git", "-C", TOP, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu} × {os.cpu_count()}",
        "kernel": platform.release(),
        "mosquitto": mosq[0] if mosq else "?",
        "commit": commit,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "cpuidle": cpuidle_driver(),
    }


def write_markdown(path, bench, env, table, targets, names, png_ok):
    a = bench.args
    out = ["# Benchmarks", "",
           "Generated by `scripts/dev bench` (bench/run.py); do not edit by hand. "
           "Method, scenarios and caveats: see the end of this page.", "",
           f"- Date: {env['date']}, commit `{env['commit']}`",
           f"- Machine: {env['cpu']}, Linux {env['kernel']} (shared, noisy: medians of "
           f"{a.runs} run(s) per broker, interleaved)",
           f"- Brokers: mqttoolsd (this commit, release build), {env['mosquitto']} (Debian), "
           "`mqtt_forwarder` (bench/load: read, frame, write, nothing else)",
           f"- Each traffic run: {a.warmup:g} s warm-up, {a.duration:g} s measured, 64-byte payloads, MQTT 5; "
           "broker pinned to CPU 0, generator to CPU 1; " + SCHED_TEXT[a.sched],
           f"- Idle CPUs: {IDLE_TEXT[a.idle]} (cpuidle driver: {env['cpuidle']})",
           "", "## Results (medians)", ""] + table + ["", "## Targets (issue 8)", ""] + targets + [""]
    if png_ok:
        out += ["![CPU per message and p99 latency](benchmarks.png)", ""]
    if bench.notes:
        out += ["## Notes from this run", ""] + [f"- {n}" for n in bench.notes] + [""]
    out += METHOD.splitlines()
    text = "\n".join(out) + "\n"
    # The other scenario scripts (bridge, production, persistence, websocket)
    # own marked sections after the method (replace_docs_section): a run of
    # the main scenarios rewrites its own part and keeps theirs.
    if os.path.exists(path):
        old = open(path).read()
        marks = [m.start() for m in re.finditer(r"^<!-- [a-z-]+:begin -->$", old, re.M)]
        if marks:
            text += "\n" + old[marks[0]:]
    with open(path, "w") as f:
        f.write(text)


IDLE_TEXT = {
    "poll": "polling during the runs (`--idle poll`: /dev/cpu_dma_latency held at 0)",
    "halt": "halting as the kernel chooses (`--idle halt`)",
}

SCHED_TEXT = {
    "normal": "normal scheduling (`--sched normal`)",
    "rt": "fixed-rate runs with broker and generator under SCHED_FIFO (`--sched rt`)",
    "both": "fixed-rate runs twice: normal scheduling, then broker and generator under SCHED_FIFO "
            "(rows marked [SCHED_FIFO]; `--sched both`)",
}

METHOD = """## Method

- `bench/load/mqtt_load` is one process with one epoll set and many MQTT 5
  connections, built on the project's codec. Every payload carries the
  CLOCK_MONOTONIC send time and the publisher's index; latency is receive time
  minus send time at the subscriber. Only messages sent inside the measured
  window count; lost = sent in the window × subscribers − received (after a
  drain of at most 2 s).
- Fixed-rate scenarios send on a global schedule, round-robin over the
  publishers, one `write()` per message (independent clients). Saturated runs
  keep 16 messages in flight per pair, written in batches.
- Broker CPU is the broker process' CPU clock (`clock_getcpuclockid`, the same
  time as utime+stime in /proc/PID/stat, but in ns) read at the start of the
  window and after the drain, divided by the messages delivered in the window.
  For fan-out that is CPU per delivery.
- Broker wake-ups per message: the voluntary context switches of all the
  broker's threads (/proc/PID/task/*/status) from before the generator starts
  to its end, over delivered msg/s × (warm-up + window). At a fixed rate the
  CPU per message is mostly the kernel's cost per wake-up divided by the
  messages each wake-up finds, so a broker that answers later (higher
  latency) wakes less often and looks cheaper: read the CPU row with this one.
- RSS per idle connection: VmRSS (/proc/PID/status) after all CONNACKs minus
  before the first connection, over the connections held. Connections come from
  127.0.0.2… (several source addresses, so one address' ephemeral ports do not
  run out), in worker processes of at most RLIMIT_NOFILE connections each.
- Every broker runs fresh for each run (`taskset -c 0`), the generator with
  `taskset -c 1`. Mosquitto gets its own config: `listener PORT 127.0.0.1`,
  `allow_anonymous true`, `set_tcp_nodelay true`, `persistence false`,
  `max_queued_messages 1000000`, errors and warnings logged only. mqttoolsd
  gets the same limits (`-c` a TOML file with `allow_anonymous = true`,
  `max_queued_messages = 1000000`, `log_level = "warning"`, then `-p PORT`).
  Both keep their default `max_inflight_messages` (20).
- The forwarder row of the QoS 1 fan-in is a floor, not a broker: the
  cheapest correct QoS 1 forwarding on one epoll thread. `mqtt_forwarder`
  answers each QoS 1 PUBLISH with a PUBACK, forwards it at QoS 1 under a
  packet id it assigns per subscriber (rewriting only those two bytes),
  keeps at most the subscriber's Receive Maximum (65535 from `mqtt_load`)
  unacknowledged and consumes the subscriber's PUBACKs, with one read and
  one write per connection per reactor turn; no sessions, no copies kept
  for redelivery. mqttoolsd/forwarder there is the broker's distance from
  what the kernel alone costs.
- Scheduling: the machine is shared. Under normal scheduling a broker's
  wake-up is often delayed behind other work, so one wake-up finds several
  messages (fewer wake-ups, lower CPU per message, latency tails of
  milliseconds that belong to the machine). Under SCHED_FIFO (`chrt -f 10`,
  fixed-rate runs only, so the CPU they take is bounded) every message is
  delivered by its own wake-up as on an idle machine: the latency is the
  brokers', and the CPU per message includes a full sleep/wake-up cycle.
- Idle policy: by default (`--idle poll`) the run holds /dev/cpu_dma_latency
  at 0, as cyclictest does, so an idle CPU polls instead of halting. In this
  VM (cpuidle driver haltpoll, with the guest's own halt polling off) a
  halted vCPU sleeps through a VM exit and is woken by an interrupt through
  the hypervisor: measured here, that put about 30 µs of CPU on every broker
  wake-up (100 pairs at 10,000 msg/s: forwarder 39 µs per message halting,
  10 µs polling; Mosquitto 42.6 and 13.4), which hid the brokers' own costs
  behind the hypervisor's. Polling time is idle time: it is charged to no
  process, so it does not enter the CPU per message. `--idle halt` measures
  the machine as it comes.
- Raw results of every run: `BUILD/bench-results.json`.
"""


def main():
    if "--persistence" in sys.argv[1:]:
        # Persistence (issue 12): durable QoS 1 and restart benchmarks, in
        # bench/persistence.py on this file's machinery.
        import persistence
        return persistence.main([a for a in sys.argv[1:] if a != "--persistence"])
    if "--bridge" in sys.argv[1:]:
        # Bridges (issue 16): edge broker CPU per message, bench/bridge.py.
        import bridge
        return bridge.main([a for a in sys.argv[1:] if a != "--bridge"])
    if "--auth" in sys.argv[1:]:
        # External authentication (issue 28): HTTP auth service vs files, bench/auth.py.
        import auth
        return auth.main([a for a in sys.argv[1:] if a != "--auth"])
    if "--production" in sys.argv[1:]:
        # Production workloads (issue 17): storms, retained floods, big
        # messages, wide fan-out, in bench/production.py.
        import production
        return production.main([a for a in sys.argv[1:] if a != "--production"])
    p = arguments(__doc__)
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                   help="comma-separated: " + ",".join(SCENARIOS))
    p.add_argument("--brokers", default=",".join(BROKERS))
    p.add_argument("--quick", action="store_true", help="1 run, 2 s windows, no 100,000-connection test")
    p.add_argument("--no-docs", action="store_true", help="print only; leave docs/ alone")
    p.add_argument("--from-json", metavar="FILE",
                   help="no runs: rebuild the table, docs and plot from a saved bench-results.json")
    p.add_argument("--sched", choices=["normal", "rt", "both"], default="normal",
                   help="rt: fixed-rate runs with broker and generator under SCHED_FIFO (chrt -f 10); "
                        "both: fixed-rate runs once each way")
    p.add_argument("--rt", action="store_true", help="same as --sched rt")
    p.add_argument("--idle", choices=["poll", "halt"], default="poll",
                   help="poll (default): hold /dev/cpu_dma_latency at 0 for the run, so idle CPUs poll "
                        "instead of halting (cyclictest does the same); halt: leave the idle policy alone")
    p.add_argument("--cluster", action="store_true",
                   help="only the cluster scenarios (bench/cluster.py: nodes over nats-server, issue 13)")
    p.add_argument("--cluster-idle", action="store_true",
                   help="only the cluster's 100,000 idle connections over 6 nodes (bench/cluster.py --idle)")
    p.add_argument("--admin", action="store_true",
                   help="only the management API scenario: listing 100,000 clients under 100 pairs (bench/admin.py)")
    p.add_argument("--perf", action="store_true",
                   help="record a perf profile of mqttoolsd in each traffic run (BUILD/perf-SCENARIO-RUN.data)")
    args = p.parse_args()
    if args.cluster_idle:
        sys.exit(subprocess.call([sys.executable, os.path.join(TOP, "bench", "cluster.py"), "--build", args.build,
                                  "--idle"]))
    if args.admin:
        cmd = [sys.executable, os.path.join(TOP, "bench", "admin.py"), "--build", args.build,
               "--runs", str(1 if args.quick else args.runs), "--duration", str(5.0 if args.quick else 10.0)]
        sys.exit(subprocess.call(cmd))
    if args.cluster:
        # Registered here, run in its own file: its setups (several nodes and
        # nats-server per run) differ from the single-broker ones.
        cmd = [sys.executable, os.path.join(TOP, "bench", "cluster.py"), "--build", args.build,
               "--runs", str(1 if args.quick else args.runs), "--duration", str(2.0 if args.quick else args.duration)]
        code = subprocess.call(cmd)
        # Then the churn soak (issue 26): storage and RSS per 10,000 client
        # ids and deleted retained topics.
        churn = [sys.executable, os.path.join(TOP, "bench", "cluster_churn.py"), "--build", args.build]
        if args.quick:
            churn += ["--rounds", "4", "--ids", "2000", "--pause", "1"]
        code = subprocess.call(churn) or code
        # Then high availability (issue 25): QoS 1 through JetStream against
        # nats-server's own MQTT, replicated vs local sessions, failover time.
        ha = [sys.executable, os.path.join(TOP, "bench", "cluster_ha.py"), "--build", args.build,
              "--runs", str(1 if args.quick else args.runs), "--duration", str(2.0 if args.quick else args.duration)]
        if args.quick:
            ha += ["--kills", "5"]
        sys.exit(subprocess.call(ha) or code)
    if args.quick:
        args.runs, args.duration, args.warmup = 1, 2.0, 0.5
    names = [n for n in args.scenarios.split(",") if n]
    if args.quick and args.scenarios == p.get_default("scenarios"):
        names = [n for n in names if n != "idle-100k"]
    brokers = [b for b in args.brokers.split(",") if b]
    if args.rt:
        args.sched = "rt"
    for n in names:
        if n not in SCENARIOS:
            p.error(f"unknown scenario {n}")
    for b in brokers:
        if b not in BROKERS:
            p.error(f"unknown broker {b}")
    check_ranges(p, args, runs=(1, 20), duration=(0.5, 120), warmup=(0, 30))
    hard = raise_file_limit()

    bench = Bench(args)
    if not os.access(bench.load, os.X_OK):
        sys.exit(f"{bench.load} not built (scripts/dev bench builds it)")
    for b in brokers:
        if not bench.available(b):
            log(f"{b} not found at {bench.binaries[b]}: skipped")
            bench.notes.append(f"{b} was not available ({bench.binaries[b]}): its columns are empty.")
    names = run_names(names, args.sched)
    if any(SCENARIOS[base(n)][3] == "idle" for n in names) and hard < 110000:
        bench.notes.append(f"RLIMIT_NOFILE hard limit here is {hard} and cannot be raised without "
                           "CAP_SYS_RESOURCE: no single broker process can hold more than about that many "
                           "connections, so the 100,000-connection test is bounded by it.")
    idle_hold = hold_idle_poll(bench) if args.idle == "poll" and not args.from_json else None
    started = time.monotonic()
    if args.from_json:
        with open(args.from_json) as f:
            for key, runs in json.load(f).items():
                name, broker = key.split("/")
                if name in names and broker in brokers:
                    bench.results[(name, broker)] = runs
    else:
        bench.run(names, brokers)
        with open(os.path.join(bench.build, "bench-results.json"), "w") as f:
            json.dump({f"{k[0]}/{k[1]}": v for k, v in bench.results.items()}, f, indent=1)
    elapsed = time.monotonic() - started
    if idle_hold is not None:
        os.close(idle_hold)  # the kernel drops the latency request with the descriptor

    table, medians = build_table(bench, names, brokers)
    targets = check_targets(bench, medians, names)
    print("\n".join(table))
    print()
    print("\n".join(targets))
    print(f"\n({elapsed:.0f} s)")
    if not args.no_docs:
        docs = os.path.join(TOP, "docs")
        env = environment(bench)
        main_names = [n for n in names if base(n) != ws_bench.SCENARIO[0]]
        # The main table is rewritten only by a run of all of its scenarios
        # (a `--scenarios pairs,ws-pairs` run must not shrink it to two rows).
        wanted = {n for n in DEFAULT_SCENARIOS if n != ws_bench.SCENARIO[0]}
        if args.quick:
            wanted.discard("idle-100k")
        if wanted <= {base(n) for n in main_names}:
            m_table, _ = build_table(bench, main_names, brokers)
            png = os.path.join(docs, "benchmarks.png")
            png_ok = plot(bench, medians, main_names, brokers, png)
            write_markdown(os.path.join(docs, "benchmarks.md"), bench, env, m_table,
                           check_targets(bench, medians, main_names), main_names, png_ok)
            log(f"wrote docs/benchmarks.md{' and docs/benchmarks.png' if png_ok else ''}")
        else:
            log("not every main scenario ran: the main table of docs/benchmarks.md is left as it was")
        if any(base(n) == ws_bench.SCENARIO[0] for n in names):
            ws_bench.write_docs(bench, env, names, table, targets, replace_docs_section, describe)
            log("wrote the WebSocket section of docs/benchmarks.md")
    shutil.rmtree(bench.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
