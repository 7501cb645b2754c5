#!/usr/bin/python3
"""Bridge benchmark (issue 16), on the machinery of bench/run.py.

  bench/bridge.py --build build-release        (or: scripts/dev bench --bridge)

One-to-one through a bridge: the publisher talks to the edge broker under
test, the subscriber to a remote Mosquitto that the edge bridges to
(`topic bench/# out QOS`), 10,000 msg/s at QoS 0 and at QoS 1. The edge is
mqttoolsd with a [[bridge]] table, or Mosquitto with the same `connection`
block; both MQTT 3.1.1 with try_private, both pinned to CPU 0, the remote
and the load generator share CPU 1. The figure is the edge broker's CPU per
delivered message; the runs are interleaved, a fresh edge and remote per
run. Shared-machine numbers are noisy: compare the columns of one run.
Results are printed and written to docs/benchmarks.md between the "bridge"
markers (other sections are left alone).
"""
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import run as R  # noqa: E402
import mqttwire as W  # noqa: E402

EDGES = ["mqttoolsd-bridge", "mosquitto-bridge"]
SCENARIOS = {
    "bridge-qos0": ("one-to-one through a bridge, QoS 0, 10,000 msg/s",
                    ["--scenario", "pairs", "--pairs", "1", "--rate", "10000", "--qos", "0"], EDGES, "traffic"),
    "bridge-qos1": ("one-to-one through a bridge, QoS 1, 10,000 msg/s",
                    ["--scenario", "pairs", "--pairs", "1", "--rate", "10000", "--qos", "1"], EDGES, "traffic"),
}
BEGIN, END = "<!-- bridge:begin -->", "<!-- bridge:end -->"
CLIENT_ID = "bench-edge"
# Set explicitly on both edges: Mosquitto's default names the client id,
# ours the bridge name (as the issue asks).
STATE = f"$SYS/broker/connection/{CLIENT_ID}/state"


def bridged(port, timeout=10.0):
    """True once the remote holds the edge's retained state "1"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = W.Client(port, timeout=2.0)
            c.connect("")
            c.subscribe([(STATE, 0)])
            try:
                if c.expect(W.PUBLISH, timeout=0.3).payload == b"1":
                    c.close()
                    return True
            except TimeoutError:
                pass
            c.close()
        except OSError:
            pass
        time.sleep(0.1)
    return False


class BridgeBench(R.Bench):
    def __init__(self, args):
        super().__init__(args)
        self.binaries["mqttoolsd-bridge"] = self.binaries["mqttoolsd"]
        self.binaries["mosquitto-bridge"] = self.binaries["mosquitto"]
        self.remote = None
        self.qos = 0

    def start_remote(self, port, log_path):
        conf = os.path.join(self.tmp, f"remote-{port}.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} {R.HOST}\nallow_anonymous true\nset_tcp_nodelay true\n"
                    "persistence false\nmax_queued_messages 1000000\nlog_dest stderr\nlog_type error\n")
        out = open(log_path, "ab")
        proc = subprocess.Popen(self.pinned(1, [self.binaries["mosquitto"], "-c", conf]),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()
        return proc if R.wait_port(port, proc) else None

    def start_broker(self, broker, port, log_path, rt=False, websocket=False):
        remote_port = R.free_port()
        self.remote = self.start_remote(remote_port, log_path + ".remote")
        if self.remote is None:
            return None
        self.load_args[-1] = str(remote_port)
        if broker == "mqttoolsd-bridge":
            conf = os.path.join(self.tmp, f"edge-{port}.toml")
            with open(conf, "w") as f:
                f.write("allow_anonymous = true\nmax_queued_messages = 1000000\nmax_connections = -1\n"
                        "log_level = \"warning\"\n"
                        f"[[bridge]]\nname = \"bench\"\naddress = \"{R.HOST}:{remote_port}\"\n"
                        f"topic = [\"bench/# out {self.qos}\"]\nremote_clientid = \"{CLIENT_ID}\"\n"
                        f"notification_topic = \"{STATE}\"\n")
            argv = [self.binaries[broker], "-c", conf, "-p", str(port)]
        else:
            conf = os.path.join(self.tmp, f"edge-{port}.conf")
            with open(conf, "w") as f:
                f.write(f"listener {port} {R.HOST}\nallow_anonymous true\nset_tcp_nodelay true\n"
                        "persistence false\nmax_queued_messages 1000000\nmax_connections -1\n"
                        "log_dest stderr\nlog_type error\nlog_type warning\n"
                        f"connection bench\naddress {R.HOST}:{remote_port}\n"
                        f"topic bench/# out {self.qos}\nremote_clientid {CLIENT_ID}\n"
                        f"notification_topic {STATE}\n")
            argv = [self.binaries[broker], "-c", conf]
        out = open(log_path, "ab")
        proc = subprocess.Popen(self.pinned(0, argv, rt), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()
        if not R.wait_port(port, proc) or not bridged(remote_port):
            R.stop(proc)
            return None
        return proc

    def run_one(self, name, broker, run_index):
        # The subscribers' port is the remote's, known once it started:
        # start_broker writes it into the scenario's mqtt_load arguments,
        # which run_one reads after starting the broker.
        load_args = SCENARIOS[name][1]
        self.qos = int(load_args[load_args.index("--qos") + 1])
        original = list(load_args)
        load_args.extend(["--sub-port", "0"])
        self.load_args = load_args
        try:
            return super().run_one(name, broker, run_index)
        finally:
            load_args[:] = original
            if self.remote is not None:
                R.stop(self.remote)
                self.remote = None


def main(argv):
    p = R.arguments(__doc__)
    p.add_argument("--no-docs", action="store_true")
    args = p.parse_args(argv)
    args.perf = False
    R.check_ranges(p, args, runs=(1, 20), duration=(0.5, 120))
    R.SCENARIOS.update(SCENARIOS)
    R.raise_file_limit()
    bench = BridgeBench(args)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    bench.run(list(SCENARIOS), EDGES)
    lines = [BEGIN, "", f"### Bridges ({started}, {args.runs} runs of {args.duration:g} s, medians, "
             f"{os.path.basename(os.path.abspath(args.build))})", "",
             "Publisher on the edge broker, subscriber on a remote Mosquitto the edge bridges to; "
             "CPU of the edge broker per delivered message (bench/bridge.py).", "",
             "| scenario | mqttoolsd µs/msg | Mosquitto µs/msg | mqttoolsd/Mosquitto (per-run median) | "
             "delivered msg/s (mqttoolsd, Mosquitto) | lost |",
             "|---|---|---|---|---|---|"]
    for name, (desc, *_rest) in SCENARIOS.items():
        ours = [r for r in bench.results.get((name, "mqttoolsd-bridge"), []) if r.get("ok")]
        theirs = [r for r in bench.results.get((name, "mosquitto-bridge"), []) if r.get("ok")]
        med = lambda rs, k: statistics.median([r[k] for r in rs]) if rs else None  # noqa: E731
        ratios = [a["cpu_us_per_msg"] / b["cpu_us_per_msg"] for a, b in zip(ours, theirs)
                  if b.get("cpu_us_per_msg")]
        lost = sum(r.get("lost", 0) for r in ours + theirs)
        lines.append(f"| {desc} | {R.fmt(med(ours, 'cpu_us_per_msg'), 2)} | {R.fmt(med(theirs, 'cpu_us_per_msg'), 2)} | "
                     f"{R.fmt(statistics.median(ratios) if ratios else None, 2)} | "
                     f"{R.fmt(med(ours, 'delivered_per_s'), 0)}, {R.fmt(med(theirs, 'delivered_per_s'), 0)} | {lost} |")
    lines += ["", END]
    print("\n".join(lines))
    if not args.no_docs:
        R.replace_docs_section(BEGIN, END, "\n".join(lines[1:-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
