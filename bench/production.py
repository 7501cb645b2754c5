#!/usr/bin/python3
"""The workloads that hurt brokers in production (issue 17), on the machinery
of bench/run.py:

  bench/production.py --build build-release     (or: scripts/dev bench --production)

Each scenario runs against mqttoolsd and Debian's Mosquitto in the same run,
interleaved, a fresh broker per run, broker on CPU 0 and generators on CPU 1.
While a scenario runs, a background load of 100 pairs at 1,000 msg/s in
total (`mqtt_load --scenario pairs`, a second process) measures the latency
that the other, already connected clients see: its p99 and max.

  storm        10,000 clients CONNECT at once (all handshakes in flight):
               seconds until all have their CONNACK
  storm-pw     the same with a Mosquitto $7$ password file (PBKDF2-SHA512,
               1,000 iterations) and every client authenticating
  storm-pw-2cpu the same with the broker allowed on both CPUs (taskset -c
               0,1; the generator stays on CPU 1 and does no hashing):
               mqttoolsd's credential workers then use the second core,
               Mosquitto hashes on its one thread either way
  retained     100,000 retained topics, then 100 clients subscribe to `#`
               one after another: seconds until all got every message, RSS
  big-1m       1 publisher -> 10 subscribers, 1 MB payloads, saturated
               (4 in flight): MB/s delivered and RSS
  big-16m      the same with 16 MB payloads
  fanout-10k   1 -> 10,000 subscribers at 10 msg/s (100,000 deliveries/s):
               CPU per delivery (compare with fanout-100: 1 -> 100 at
               1,000 msg/s, the same delivery rate)
  slow-base    100 pairs at 1,000 msg/s, 1 KiB payloads: the healthy p99
  stuck        the same plus 10 subscribers to every topic that stop
               reading: healthy p99 (vs slow-base), broker peak RSS, stuck
               ones dropped (mqttoolsd runs with max_client_output_bytes
               1 MiB and stuck_client_timeout 3 s here; Mosquitto has no
               equivalent and runs as configured)
  tls-pairs    100 pairs at 10,000 msg/s over TLS 1.3: CPU per message
               (compare with tcp-pairs, the same over plain TCP)
  storm-tls    5,000 TLS 1.3 handshakes + CONNECTs, 500 at a time: handshakes/s
  tree-empty   100 pairs at 10,000 msg/s publishing under tree/: CPU per
               message with no other subscriptions
  tree         the same while 10,000 clients hold 100 subscriptions each
               (1,000,000; 8 in 10 exact, 2 in 10 with + or #, all under
               tree/): SUBSCRIBE rate, RSS per subscription, CPU per message

Shared-machine numbers are noisy: compare the columns of one run (ratios).
Results are printed and written to docs/benchmarks.md between the
"production" markers (other sections are left alone).
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as R  # noqa: E402

BROKERS = ["mqttoolsd", "mosquitto"]
PASSWORD_USER, PASSWORD = "bench", "storm-password"
PASSWORD_STORM = ["--scenario", "idle", "--conns", "10000", "--src-addrs", "4", "--hold", "0.5",
                  "--handshake-window", "10000", "--connect-timeout", "90",
                  "--username", PASSWORD_USER, "--password", PASSWORD]
# name -> (description, mqtt_load arguments, kind, headline metrics)
SCENARIOS = {
    "storm": ("reconnect storm: 10,000 CONNECTs at once",
              ["--scenario", "idle", "--conns", "10000", "--src-addrs", "4", "--hold", "0.5",
               "--handshake-window", "10000", "--connect-timeout", "60"], "storm"),
    "storm-pw": ("reconnect storm with a $7$ password file (1,000 iterations)", PASSWORD_STORM, "storm"),
    "storm-pw-2cpu": ("the same, the broker allowed on both CPUs", PASSWORD_STORM, "storm"),
    "retained": ("retained flood: 100,000 topics, 100 `#` subscribers one after another",
                 ["--scenario", "retained", "--topics", "100000", "--subs", "100", "--size", "32",
                  "--connect-timeout", "300"], "retained"),
    "big-1m": ("big messages: 1 MB, 1 -> 10 subscribers, 4 in flight",
               ["--scenario", "fanout", "--subs", "10", "--rate", "0", "--window", "4", "--size", "1048576"],
               "traffic"),
    "big-16m": ("big messages: 16 MB, 1 -> 10 subscribers, 2 in flight",
                ["--scenario", "fanout", "--subs", "10", "--rate", "0", "--window", "2", "--size", "16777216"],
                "traffic"),
    "fanout-100": ("fan-out 1 -> 100 at 1,000 msg/s (100,000 deliveries/s)",
                   ["--scenario", "fanout", "--subs", "100", "--rate", "1000"], "traffic"),
    "fanout-10k": ("fan-out 1 -> 10,000 at 10 msg/s (100,000 deliveries/s)",
                   ["--scenario", "fanout", "--subs", "10000", "--rate", "10", "--connect-timeout", "120"],
                   "traffic"),
    "slow-base": ("100 pairs at 1,000 msg/s, 1 KiB (baseline of stuck)",
                  ["--scenario", "pairs", "--pairs", "100", "--rate", "1000", "--size", "1024"], "stuck"),
    "stuck": ("100 pairs at 1,000 msg/s, 1 KiB, + 10 stuck subscribers to all",
              ["--scenario", "pairs", "--pairs", "100", "--rate", "1000", "--size", "1024", "--stuck", "10"],
              "stuck"),
    "tcp-pairs": ("100 pairs at 10,000 msg/s over TCP (baseline of tls-pairs)",
                  ["--scenario", "pairs", "--pairs", "100", "--rate", "10000"], "traffic"),
    "tls-pairs": ("100 pairs at 10,000 msg/s over TLS 1.3",
                  ["--scenario", "pairs", "--pairs", "100", "--rate", "10000", "--tls", "1.3"], "traffic"),
    # Not 10,000 at once: the generator's own half of the handshakes (one
    # core) cannot finish them all within the brokers' CONNECT timeouts.
    "storm-tls-10k": ("TLS 1.3 reconnect storm: 10,000 CONNECTs at once",
                      ["--scenario", "idle", "--conns", "10000", "--src-addrs", "4", "--hold", "0.5",
                       "--handshake-window", "10000", "--connect-timeout", "120", "--tls", "1.3"], "storm"),
    "storm-tls": ("TLS 1.3 handshakes: 5,000 connects, 500 in flight",
                  ["--scenario", "idle", "--conns", "5000", "--src-addrs", "4", "--hold", "0.5",
                   "--handshake-window", "500", "--connect-timeout", "120", "--tls", "1.3"], "storm"),
    "tree-empty": ("100 pairs at 10,000 msg/s under tree/, no other subscriptions",
                   ["--scenario", "pairs", "--pairs", "100", "--rate", "10000", "--topic-prefix", "tree/"], "traffic"),
    "tree": ("the same with 1,000,000 subscriptions (10,000 clients × 100)",
             ["--scenario", "pairs", "--pairs", "100", "--rate", "10000", "--topic-prefix", "tree/"], "tree"),
}
# The subscription tree: held by a second mqtt_load while the traffic runs.
TREE = ["--scenario", "idle", "--conns", "10000", "--subs-per-conn", "100", "--src-addrs", "4",
        "--handshake-window", "512", "--connect-timeout", "300"]
# Measured seconds per scenario where --duration does not fit: a stuck
# subscriber is over 1 MiB after its socket buffers fill (a few seconds at
# 1 MB/s), then dropped 3 s later.
DURATION = {"slow-base": 12.0, "stuck": 12.0}
# mqttoolsd settings per scenario (Mosquitto has no stuck-client timeout).
MQTTOOLSD_CONF = {"stuck": "max_client_output_bytes = 1048576\nstuck_client_timeout = 3\n",
                  "slow-base": "max_client_output_bytes = 1048576\nstuck_client_timeout = 3\n"}
BACKGROUND = ["--scenario", "pairs", "--pairs", "100", "--rate", "1000"]
BEGIN, END = "<!-- production:begin -->", "<!-- production:end -->"


class ProductionBench(R.Bench):
    def __init__(self, args):
        super().__init__(args)
        self.pwfile = os.path.join(self.tmp, "passwords")
        mqttools = os.path.join(self.build, "src", "tools", "mqttools")
        # One $7$ file for both brokers (mqttools passwd writes Mosquitto's format).
        subprocess.run([mqttools, "passwd", "-c", "-I", "1000", "-b", self.pwfile, PASSWORD_USER, PASSWORD],
                       check=True, stdout=subprocess.DEVNULL)
        # Mosquitto started as root reads it after switching to its own user.
        os.chmod(self.tmp, 0o755)
        os.chmod(self.pwfile, 0o644)
        # A throw-away certificate for the TLS listeners (clients do not check it).
        self.cert = os.path.join(self.tmp, "server.crt")
        self.key = os.path.join(self.tmp, "server.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=localhost"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(self.key, 0o644)

    def start_broker(self, broker, port, log_path, rt=False, websocket=False, password=False, extra="",
                     tls_port=None, cpus=0):
        if broker == "mqttoolsd":
            conf = os.path.join(self.tmp, f"mqttoolsd-{port}.toml")
            with open(conf, "w") as f:
                f.write("allow_anonymous = true\nmax_queued_messages = 1000000\nmax_connections = -1\n"
                        "log_level = \"warning\"\n" + extra)
                if password:
                    f.write(f"password_file = \"{self.pwfile}\"\n")
                if tls_port:  # besides the plain -p port
                    f.write(f"[[listener]]\nport = {tls_port}\nbind = \"{R.HOST}\"\n"
                            f"certfile = \"{self.cert}\"\nkeyfile = \"{self.key}\"\n")
            argv = [self.binaries[broker], "-c", conf, "-p", str(port)]
        else:
            conf = os.path.join(self.tmp, f"mosquitto-{port}.conf")
            with open(conf, "w") as f:
                f.write(f"listener {port} {R.HOST}\nallow_anonymous true\nset_tcp_nodelay true\n"
                        "persistence false\nmax_queued_messages 1000000\nmax_connections -1\n"
                        "log_dest stderr\nlog_type error\nlog_type warning\n")
                if password:
                    f.write(f"password_file {self.pwfile}\n")
                if tls_port:
                    f.write(f"listener {tls_port} {R.HOST}\ncertfile {self.cert}\nkeyfile {self.key}\n"
                            "tls_version tlsv1.3\n")
            argv = [self.binaries[broker], "-c", conf]
        out = open(log_path, "ab")
        proc = subprocess.Popen(self.pinned(cpus, argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()
        if not R.wait_port(port, proc) or (tls_port and not R.wait_port(tls_port, proc)):
            R.stop(proc)
            return None
        return proc

    def generator(self, port, proc, label, args, rt=False):
        argv = [self.load, "--host", R.HOST, "--port", str(port), "--broker-pid", str(proc.pid),
                "--label", label] + args
        return subprocess.Popen(self.pinned(1, argv, rt), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @staticmethod
    def flatten_latency(result):
        lat = result.get("lat_us") or {}
        result["p99_us"] = lat.get("p99")
        result["max_us"] = lat.get("max")
        return result

    @staticmethod
    def result_of(gen, timeout):
        try:
            stdout, stderr = gen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            gen.kill()
            gen.communicate()
            return {"ok": False, "error": "timed out"}
        lines = [l for l in stdout.splitlines() if l.startswith("{")]
        return json.loads(lines[-1]) if lines else {"ok": False, "error": stderr.strip()[-300:]}

    def run_scenario(self, name, broker, i):
        desc, load_args, kind = SCENARIOS[name]
        port = R.free_port()
        log_path = os.path.join(self.tmp, f"{broker}-{name}-{i}.log")
        tls = "--tls" in load_args
        tls_port = R.free_port() if tls else None
        proc = self.start_broker(broker, port, log_path, password=name.startswith("storm-pw"),
                                 cpus="0,1" if name == "storm-pw-2cpu" else 0,
                                 extra=MQTTOOLSD_CONF.get(name, ""), tls_port=tls_port)
        # The scenario's own clients use the TLS port; the background load stays plain.
        gen_port = tls_port or port
        if proc is None:
            return {"ok": False, "error": "broker did not start"}
        result = {"ok": False}
        try:
            if kind == "tree":
                return self.run_tree(name, broker, i, port, proc, load_args)
            if kind in ("traffic", "stuck"):
                d = DURATION.get(name, self.args.duration)
                gen = self.generator(gen_port, proc, f"{name}/{broker}/{i}",
                                     load_args + ["--warmup", str(self.args.warmup), "--duration", str(d),
                                                  "--drain", "3"])
                result = self.flatten_latency(self.result_of(gen, self.args.warmup + d + 240))
                if result.get("delivered_per_s") and "--size" in load_args:
                    size = int(load_args[load_args.index("--size") + 1])
                    result["mb_per_s"] = result["delivered_per_s"] * size / 1e6
                return result
            # Background first (it connects with the password too where one
            # is required), then the scenario inside its measured window.
            bg_args = BACKGROUND + ["--warmup", "1", "--duration", str(self.args.background), "--drain", "2",
                                    "--connect-timeout", "30"]
            if name.startswith("storm-pw"):
                bg_args += ["--username", PASSWORD_USER, "--password", PASSWORD]
            # SCHED_FIFO (its load is fixed-rate, so bounded): the storm's own
            # generator saturates the same core, and the background's
            # latencies must be the broker's, not that generator's queue.
            bg = self.generator(port, proc, f"{name}/{broker}/{i}/background", bg_args, rt=True)
            time.sleep(2.0)
            gen = self.generator(gen_port, proc, f"{name}/{broker}/{i}", load_args)
            result = self.result_of(gen, 400)
            if result.get("connect_s"):
                result["conns_per_s"] = result.get("held", 0) / result["connect_s"]
            if bg.poll() is None and time.monotonic() and result.get("ok") is not None:
                pass
            background = self.result_of(bg, self.args.background + 120)
            lat = background.get("lat_us", {})
            result["bg_ok"] = background.get("ok", False)
            result["bg_p99_us"] = lat.get("p99")
            result["bg_max_us"] = lat.get("max")
            result["bg_lost"] = background.get("lost")
            if not background.get("ok"):
                result["bg_error"] = background.get("error")
            return result
        finally:
            R.stop(proc)

    def run_tree(self, name, broker, i, port, proc, load_args):
        """Loads the subscription tree (a held idle mqtt_load), then runs the
        traffic while it is in place."""
        d = self.args.duration
        hold = self.args.warmup + d + 30
        tree = self.generator(port, proc, f"{name}/{broker}/{i}/tree", TREE + ["--hold", str(hold)])
        deadline = time.monotonic() + 330
        loaded = False
        while time.monotonic() < deadline and tree.poll() is None:
            line = tree.stderr.readline()
            if line.startswith("connected"):
                loaded = True
                break
        if not loaded:
            return {"ok": False, "error": "tree: " + self.result_of(tree, 30).get("error", "not loaded")}
        gen = self.generator(port, proc, f"{name}/{broker}/{i}",
                             load_args + ["--warmup", str(self.args.warmup), "--duration", str(d), "--drain", "3"])
        result = self.flatten_latency(self.result_of(gen, self.args.warmup + d + 120))
        loaded = self.result_of(tree, hold + 60)
        for key in ("subscriptions", "rss_per_sub_bytes", "subs_per_s", "connect_s"):
            result[key] = loaded.get(key)
        if not loaded.get("ok"):
            result["ok"] = False
            result["error"] = "tree: " + str(loaded.get("error"))
        return result

    def run_all(self, names, brokers):
        for name in names:
            for i in range(self.args.runs):
                for broker in brokers:
                    r = self.run_scenario(name, broker, i)
                    self.results.setdefault((name, broker), []).append(r)
                    R.log(f"{name} {broker} run {i}: " + json.dumps(
                        {k: r.get(k) for k in ("ok", "connect_s", "deliver_s", "delivered_per_s", "mb_per_s",
                                               "cpu_us_per_msg", "broker_rss_kb", "rss_peak_kb", "bg_p99_us",
                                               "bg_max_us", "stuck_dropped", "rss_per_sub_bytes", "subs_per_s",
                                               "error", "bg_error") if r.get(k) is not None}))


# Per kind: (result key, label, digits, scale)
METRICS = {
    "storm": [("connect_s", "seconds until all connected", 2, 1),
              ("conns_per_s", "connections (TLS: handshakes) / s", 0, 1),
              ("broker_cpu_us_per_conn", "broker CPU µs / connection", 0, 1),
              ("bg_p99_us", "background p99 ms", 2, 1e-3), ("bg_max_us", "background max ms", 2, 1e-3)],
    "retained": [("deliver_s", "seconds until 100 × 100,000 delivered", 2, 1),
                 ("delivered_per_s", "retained msg/s delivered", 0, 1),
                 ("rss_peak_kb", "broker peak RSS MiB", 0, 1 / 1024),
                 ("bg_p99_us", "background p99 ms", 2, 1e-3), ("bg_max_us", "background max ms", 2, 1e-3)],
    "traffic": [("mb_per_s", "payload MB/s delivered", 0, 1), ("delivered_per_s", "delivered msg/s", 0, 1),
                ("cpu_us_per_msg", "broker CPU µs / delivery", 2, 1), ("p99_us", "latency p99 µs", 0, 1),
                ("broker_rss_kb", "broker RSS MiB at the end", 0, 1 / 1024),
                ("rss_peak_kb", "broker peak RSS MiB", 0, 1 / 1024), ("lost", "lost", 0, 1)],
    "stuck": [("p99_us", "healthy latency p99 µs", 0, 1), ("max_us", "healthy latency max µs", 0, 1),
              ("delivered_per_s", "healthy delivered msg/s", 0, 1), ("lost", "healthy lost", 0, 1),
              ("rss_peak_kb", "broker peak RSS MiB", 1, 1 / 1024), ("stuck_dropped", "stuck ones dropped", 0, 1)],
    "tree": [("subs_per_s", "subscriptions/s while loading", 0, 1),
             ("rss_per_sub_bytes", "broker RSS bytes / subscription (connections included)", 0, 1),
             ("cpu_us_per_msg", "broker CPU µs / message", 2, 1), ("p99_us", "latency p99 µs", 0, 1),
             ("lost", "lost", 0, 1)],
}


def med(bench, name, broker, key):
    vals = [r[key] for r in bench.results.get((name, broker), []) if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def table(bench, names, brokers):
    lines = ["| scenario | metric | " + " | ".join(brokers) + " | mqttoolsd / Mosquitto |",
             "|" + "---|" * (len(brokers) + 3)]
    for name in names:
        desc, _, kind = SCENARIOS[name]
        for key, label, digits, scale in METRICS[kind]:
            if kind == "traffic" and key == "mb_per_s" and not name.startswith("big"):
                continue
            vals = {b: med(bench, name, b, key) for b in brokers}
            shown = [R.fmt(v * scale, digits) if v is not None else "–" for v in vals.values()]
            r = R.ratio(vals.get("mqttoolsd"), vals.get("mosquitto"))
            lines.append(f"| {desc} | {label} | " + " | ".join(shown) + f" | {R.fmt(r, 2) if r else '–'} |")
    return lines


def plot(bench, names, brokers, outdir):
    """One PNG per scenario (OUTDIR/NAME.png): a panel per headline metric,
    mqttoolsd's median beside Mosquitto's, each run's value as a point.
    Returns {name: path} of the plots written (none without gnuplot)."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        R.log("gnuplot not found: no plots")
        return {}
    os.makedirs(outdir, exist_ok=True)
    written = {}
    for name in names:
        desc, _, kind = SCENARIOS[name]
        metrics = [m for m in METRICS[kind] if m[0] != "lost" and not (kind == "traffic" and m[0] == "mb_per_s"
                                                                       and not name.startswith("big"))]
        metrics = [m for m in metrics if any(med(bench, name, b, m[0]) is not None for b in brokers)]
        if not metrics:
            continue
        dat = os.path.join(bench.tmp, f"plot-{name}.dat")
        with open(dat, "w") as f:
            for key, label, digits, scale in metrics:
                for i, b in enumerate(brokers):
                    v = med(bench, name, b, key)
                    runs = [r[key] * scale for r in bench.results.get((name, b), [])
                            if r.get("ok") and r.get(key) is not None]
                    f.write(f"{i} \"{b}\" {'NaN' if v is None else f'{v * scale:.6g}'} "
                            + " ".join(f"{x:.6g}" for x in runs) + "\n")
                f.write("\n\n")
        png = os.path.join(outdir, f"{name}.png")
        panels = []
        for idx, (key, label, digits, scale) in enumerate(metrics):
            label = label.replace("'", "")
            panels.append(f"set title '{label}'\n"
                          f"plot '{dat}' index {idx} using 1:3:xtic(2) with boxes lc rgb '#4477aa' notitle, "
                          f"'' index {idx} using 1:4 with points pt 7 ps 0.6 lc rgb 'black' notitle, "
                          f"'' index {idx} using 1:5 with points pt 7 ps 0.6 lc rgb 'black' notitle, "
                          f"'' index {idx} using 1:6 with points pt 7 ps 0.6 lc rgb 'black' notitle")
        script = f"""
set terminal pngcairo noenhanced size {max(420, 260 * len(metrics))},300 font 'sans,9'
set output '{png}'
set multiplot layout 1,{len(metrics)} title '{desc.replace("'", "")} (bars: medians, points: runs)'
set style fill solid 0.7 border -1
set boxwidth 0.6
set xrange [-0.6:{len(brokers) - 0.4}]
set yrange [0:*]
set grid ytics
""" + "\n".join(panels) + "\nunset multiplot\n"
        r = subprocess.run([gnuplot], input=script, text=True, capture_output=True)
        if r.returncode != 0:
            R.log(f"gnuplot failed for {name}: " + r.stderr.strip()[-300:])
            continue
        written[name] = png
    return written


def main(argv=None):
    p = R.arguments(__doc__)
    p.add_argument("--background", type=float, default=20.0,
                   help="measured seconds of the background load (must cover the storm or flood)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--brokers", default=",".join(BROKERS))
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--plots", default=os.path.join(R.TOP, "docs", "production"),
                   help="directory for one PNG per scenario (docs/production)")
    p.add_argument("--replot", nargs="+", metavar="JSON",
                   help="run nothing: table and plots from saved bench-production.json files (later files "
                        "add runs to earlier ones)")
    args = p.parse_args(argv)
    args.perf = False
    names = [n for n in args.scenarios.split(",") if n]
    for n in names:
        if n not in SCENARIOS:
            p.error(f"unknown scenario {n}")
    R.raise_file_limit()
    bench = ProductionBench(args)
    brokers = [b for b in args.brokers.split(",") if b in BROKERS and bench.available(b)]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.replot:
        for path in args.replot:
            with open(path) as f:
                for key, runs in json.load(f).items():
                    name, broker = key.split("/", 1)
                    bench.results.setdefault((name, broker), []).extend(runs)
        have = {n for n, _ in bench.results}
        names = [n for n in names if n in have] if args.scenarios != ",".join(SCENARIOS) else \
            [n for n in SCENARIOS if n in have]
        started = "replotted " + started
    else:
        bench.run_all(names, brokers)
        with open(os.path.join(bench.build, "bench-production.json"), "w") as f:
            json.dump({f"{k[0]}/{k[1]}": v for k, v in bench.results.items()}, f, indent=1)
    lines = ["## Production workloads (issue 17)", "",
             f"`bench/production.py`, {started}, {args.runs} interleaved run(s) per cell, medians of the runs "
             "that completed; broker on CPU 0, generators on CPU 1, on a shared 2-core VM with other jobs "
             "running: compare the columns of this run (ratios), not absolute figures across runs. "
             "\"Background\" is a second mqtt_load (SCHED_FIFO on CPU 1) with 100 pairs at 1,000 msg/s in total, connected before "
             "the storm or flood starts; its p99 and max cover its whole measured window.", ""]
    lines += table(bench, names, brokers)
    failed = [f"{n}/{b}: {r.get('error') or r.get('bg_error')}" for (n, b), rs in bench.results.items()
              for r in rs if not r.get("ok") or r.get("bg_error")]
    if failed:
        lines += ["", "Runs that failed (left out of the medians):", ""] + [f"- {f}" for f in failed]
    plots = plot(bench, names, brokers, args.plots)
    if plots:
        lines += ["", "Plots (bars: medians, points: the runs):", ""]
        rel = os.path.relpath(args.plots, os.path.join(R.TOP, "docs"))
        lines += [f"![{SCENARIOS[n][0]}]({rel}/{os.path.basename(path)})" for n, path in plots.items()]
    text = "\n".join(lines)
    print(text)
    if not args.no_docs:
        R.replace_docs_section(BEGIN, END, text)
    shutil.rmtree(bench.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
