#!/usr/bin/python3
"""Where a cross-node message's CPU goes (issues 25, 26), one run.

Starts nats-server (JetStream on) and two mqttoolsd nodes, then mqtt_load's
100 pairs (publishers on node 1, subscribers on node 2) at a fixed rate, and
reports per delivered message:

  threads    CPU µs (user / system) of every thread of both nodes and of
             nats-server, read from /proc/PID/task/*/stat around the
             measured phase
  strace     syscalls per message of one node (`strace -c -f`)
  callgrind  instructions per message of one node, by function
             (`valgrind --tool=callgrind`; run at a low rate)

Everything on 127.0.0.1; only processes started here are stopped, by PID.

    bench/cluster_profile.py --build build-release --mode threads
    bench/cluster_profile.py --build build-release --mode strace --node 2
    bench/cluster_profile.py --build build-release --mode callgrind --node 2 --rate 2000
    bench/cluster_profile.py --build build-release --mode threads --qos 1 --mqtt-version 4 --rate 2000
    bench/cluster_profile.py --build build-release --mode threads --saturated   # as pairs-sat: unpinned

With --saturated the publishers keep 16 QoS 0 messages in flight each (rate
0, as bench/cluster.py's pairs-sat) and nothing is pinned, so the processes
share both cores; the threads mode then also prints each process' share of a
core over the window, which shows the one at 100 %.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import HOST, free_port, stop, wait_port  # noqa: E402
from run import check_ranges  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def threads(pid):
    """tid -> (name, utime ticks, stime ticks, context switches)"""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        switches = 0
        try:
            with open(f"{base}/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except OSError:
            pass
        out[int(tid)] = (name, int(fields[11]), int(fields[12]), switches)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default="build-release")
    p.add_argument("--mode", choices=["threads", "strace", "callgrind"], default="threads")
    p.add_argument("--node", type=int, choices=[0, 1, 2], default=2,
                   help="the node strace/callgrind watches (strace: 0 = nats-server)")
    p.add_argument("--rate", type=int, default=10000)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--out", default=None, help="callgrind: output file")
    p.add_argument("--cluster-keys", default="", help='more [cluster] lines, e.g. \'batch_time = 0\'')
    p.add_argument("--single", action="store_true", help="one node without a cluster (the anchor)")
    p.add_argument("--qos", type=int, choices=[0, 1], default=0)
    p.add_argument("--mqtt-version", type=int, choices=[4, 5], default=5)
    p.add_argument("--session-expiry", type=int, default=0, help="MQTT 5: persistent sessions (seconds)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (nodes' logs)")
    p.add_argument("--saturated", action="store_true",
                   help="16 messages in flight per publisher, no rate, nothing pinned (pairs-sat)")
    a = p.parse_args()
    check_ranges(p, a, rate=(100, 100000), duration=(1, 60))
    # taskset prefix for a process: none when saturated (the cores are shared as in pairs-sat).
    pin = (lambda cpu: []) if a.saturated else (lambda cpu: ["taskset", "-c", str(cpu)])
    load_rate = ["--rate", "0", "--window", "16"] if a.saturated else ["--rate", str(a.rate)]
    if a.node == 0 and a.mode == "callgrind":
        p.error("--node 0 (nats-server) is for --mode strace")
    build = os.path.abspath(a.build)
    load = os.path.join(build, "bench", "load", "mqtt_load")
    mqttoolsd = os.path.join(build, "src", "daemon", "mqttoolsd")
    tmp = tempfile.mkdtemp(prefix="mqttools-cluster-profile-")
    procs = []
    try:
        port = free_port()
        with open(f"{tmp}/nats.conf", "w") as f:
            f.write(f"listen: {HOST}:{port}\njetstream {{ store_dir: \"{tmp}\" }}\n")
        nats = subprocess.Popen(pin(0) + [shutil.which("nats-server") or "/usr/bin/nats-server",
                                 "-c", f"{tmp}/nats.conf"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(nats)
        wait_port(port, nats)
        nodes, ports = [], []
        for i in ((1,) if a.single else (1, 2)):
            mport = free_port()
            conf = f"{tmp}/node{i}.toml"
            with open(conf, "w") as f:
                f.write("allow_anonymous = true\nmax_queued_messages = 1000000\nlog_level = \"warning\"\n")
                if not a.single:
                    f.write(f"[cluster]\nnats_url = \"nats://{HOST}:{port}\"\nnode_id = \"prof{i}\"\n"
                            f"{a.cluster_keys}\n")
            argv = pin(0) + [mqttoolsd, "-c", conf, "-p", str(mport)]
            if i == (1 if a.single else a.node) and a.mode == "callgrind":
                argv = argv[:-5] + ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                   f"--callgrind-out-file={a.out or tmp + '/callgrind.out'}"] + argv[-5:]
            n = subprocess.Popen(argv, stdout=open(f"{tmp}/node{i}.log", "ab"), stderr=subprocess.STDOUT)
            procs.append(n)
            if not wait_port(mport, n, timeout=60):
                raise RuntimeError(f"node {i} did not start: {tmp}")
            nodes.append(n)
            ports.append(mport)
        time.sleep(1.0)
        watched = nats if a.node == 0 else nodes[0 if a.single else a.node - 1]
        real_pid = watched.pid
        loadp = subprocess.Popen(pin(1) + [load, "--host", HOST, "--port", str(ports[0]),
                                  "--sub-port", str(ports[-1]), "--scenario", "pairs", "--pairs", "100",
                                  *load_rate, "--warmup", str(a.warmup), "--duration", str(a.duration),
                                  "--drain", "2", "--broker-pid", str(nodes[0].pid), "--qos", str(a.qos),
                                  "--mqtt-version", str(a.mqtt_version)]
                                 + (["--session-expiry", str(a.session_expiry)] if a.session_expiry else []),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(a.warmup + 0.3)
        if a.mode == "callgrind":
            subprocess.run(["callgrind_control", "-i", "on", str(real_pid)], capture_output=True)
        tracer = None
        if a.mode == "strace":
            # Attached for the measured phase only.
            tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(real_pid), "-o", f"{tmp}/strace.txt"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
        before = {pid: threads(pid) for pid in [nats.pid] + [n.pid for n in nodes]} if a.mode == "threads" else {}
        t0 = time.monotonic()
        time.sleep(a.duration - 0.6)
        elapsed = time.monotonic() - t0
        after = {pid: threads(pid) for pid in before}
        if tracer:
            tracer.send_signal(2)
            tracer.wait(timeout=30)
        if a.mode == "callgrind":
            subprocess.run(["callgrind_control", "-i", "off", str(real_pid)], capture_output=True)
            # Dumped now (OUT.1): the node may take too long to exit under valgrind.
            subprocess.run(["callgrind_control", "-d", str(real_pid)], capture_output=True, timeout=60)
        out, err = loadp.communicate(timeout=a.duration + 60)
        res = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
        msgs = res.get("delivered_per_s", 0) * elapsed
        print(f"delivered {res.get('delivered_per_s', 0):.0f} msg/s, p99 {res.get('lat_us', {}).get('p99', 0):.0f} µs,"
              f" lost {res.get('lost')}; {msgs:.0f} messages in the window; generator"
              f" {res.get('gen_cpu_us_per_msg', 0):.2f} µs/msg, {res.get('gen_cpu_pct', 0):.0f} % of a core")
        if a.mode == "threads":
            total = 0.0
            labels = ["one node"] if a.single else ["node 1 (publishers)", "node 2 (subscribers)"]
            for pid, label in list(zip([n.pid for n in nodes], labels)) + ([] if a.single else [(nats.pid, "nats-server")]):
                rows = []
                for tid, (name, u, s, sw) in after[pid].items():
                    b = before[pid].get(tid, (name, 0, 0, 0))
                    du, ds = (u - b[1]) / TICK * 1e6 / msgs, (s - b[2]) / TICK * 1e6 / msgs
                    cs = (sw - b[3]) / msgs
                    if du + ds > 0 or cs > 0.01:
                        rows.append((du + ds, tid, name, du, ds, cs))
                rows.sort(reverse=True)
                sub = sum(r[0] for r in rows)
                total += sub
                print(f"{label}: {sub:.2f} µs/msg, {sub * msgs / elapsed / 1e4:.0f} % of a core")
                for t, tid, name, du, ds, cs in rows[:12]:
                    print(f"    {name:16s} tid {tid:7d}: {t:6.2f} µs/msg (user {du:.2f}, system {ds:.2f}),"
                          f" {cs:.2f} context switches/msg")
            print(f"all: {total:.2f} µs/msg")
    finally:
        for pr in reversed(procs):
            stop(pr)
        if a.mode == "strace":
            try:
                print(open(f"{tmp}/strace.txt").read())
            except OSError:
                pass
        if a.mode == "callgrind":
            print(f"callgrind output: {a.out or tmp + '/callgrind.out'}")
        elif a.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
