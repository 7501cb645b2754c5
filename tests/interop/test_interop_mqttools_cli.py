"""`mqttools publish` / `subscribe` next to Debian's mosquitto_pub /
mosquitto_sub (2.0.11): the same command lines (-v, -F, -N, -R, -T,
--retained-only on the subscriber side; -m, -n, -l, -s, -f, --repeat, -q,
-r on the publisher side) print the same bytes, whichever tool published."""
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from .conftest import BUILD, MQTTOOLSD, TOP, WAIT, free_port, stop_process, wait_for_port

MQTTOOLS = BUILD / "src" / "tools" / "mqttools"

pytestmark = [
    pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto-clients not installed"),
    pytest.mark.skipif(not MQTTOOLS.exists(), reason="mqttools not built"),
]

# Subscriber variants: extra arguments and how many messages end them (-C).
# The broker holds one retained message (ip/r old) before they start; then
# 9 live messages come, one of them on ip/b.
VARIANTS = {
    "v": (["-v"], 10),
    "F": (["-F", "%t|%p|%q|%r|%l|%x|%X"], 10),
    "N": (["-N"], 10),
    "R": (["-v", "-R"], 9),
    "T": (["-v", "-T", "ip/b"], 9),
    "retained-only": (["-v", "--retained-only"], None),
}


class Sub:
    """One subscriber; its stdout is collected by a thread. mosquitto_sub
    runs with -d (debug lines on stdout, removed afterwards) so that we know
    when its SUBACK came; mqttools says "Connected." on stderr."""

    def __init__(self, procs, tool, port, args, count):
        cmd = [*tool, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", "ip/#", *args]
        self.mosquitto = "mosquitto_sub" in tool
        if count is not None:
            cmd += ["-C", str(count)]
        if self.mosquitto:
            cmd += ["-V", "5", "-d"]
        self.proc = procs.start(cmd)
        self.out = b""
        self.err = b""
        self.ready = threading.Event()
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self):
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self.out += chunk
            if self.mosquitto and b"received SUBACK" in self.out:
                self.ready.set()

    def _read_err(self):
        while chunk := os.read(self.proc.stderr.fileno(), 65536):
            self.err += chunk
            if b"Connected.\n" in self.err:
                self.ready.set()

    def wait_ready(self):
        assert self.ready.wait(WAIT), (self.out, self.err)

    def finish(self):
        self.proc.wait(timeout=WAIT)
        time.sleep(0.1)  # the reader threads take the last bytes
        out = self.out
        if self.mosquitto:
            # -d lines ("Client ID received ...", "Subscribed (mid: 1): 1"),
            # also glued to a -N payload; no test payload looks like one.
            out = re.sub(rb"Client \S+ (?:received|sending) [^\n]*\n|Subscribed \(mid: \d+\): [^\n]*\n", b"", out)
        return self.proc.returncode, out


def publish_sequence(tool, port, tmp_path):
    f = tmp_path / "payload.bin"
    f.write_bytes(b"file\x01data")
    steps = [
        (["-t", "ip/a", "-m", "hello"], None),
        (["-t", "ip/b", "-n"], None),
        (["-t", "ip/a", "-l"], b"x\ny\n"),
        (["-t", "ip/a", "-s"], b"multi\nline"),
        (["-t", "ip/a", "-f", str(f)], None),
        (["-t", "ip/a", "-m", "r", "--repeat", "2"], None),
        (["-t", "ip/a", "-q", "1", "-r", "-m", "last"], None),
    ]
    for args, stdin in steps:
        cmd = [*tool, "-h", "127.0.0.1", "-p", str(port), "-V", "5", *args]
        if tool[0] != "mosquitto_pub":
            cmd.append("--quiet")
        r = subprocess.run(cmd, input=stdin or b"", capture_output=True, timeout=WAIT)
        assert r.returncode == 0, (cmd, r.stderr)


@pytest.mark.parametrize("publisher", ["mosquitto_pub", "mqttools"])
def test_same_command_lines_print_the_same(broker, procs, tmp_path, publisher):
    r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-r", "-t", "ip/r",
                        "-m", "old"], capture_output=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr
    subs = {}
    for name, (args, count) in VARIANTS.items():
        # stdbuf: mosquitto_sub's stdout is block-buffered into a pipe.
        subs[name] = (Sub(procs, ["stdbuf", "-oL", "mosquitto_sub"], broker.port, args, count),
                      Sub(procs, [str(MQTTOOLS), "subscribe"], broker.port, args, count))
    for pair in subs.values():
        for s in pair:
            s.wait_ready()
    tool = ["mosquitto_pub"] if publisher == "mosquitto_pub" else [str(MQTTOOLS), "publish"]
    publish_sequence(tool, broker.port, tmp_path)
    for name, (mosq, ours) in subs.items():
        mosq_code, mosq_out = mosq.finish()
        our_code, our_out = ours.finish()
        assert (our_code, our_out) == (mosq_code, mosq_out), name
    # And what they printed is what was sent (checked once, on -v).
    assert subs["v"][0].finish()[1] == (b"ip/r old\nip/a hello\nip/b (null)\nip/a x\nip/a y\n"
                                       b"ip/a multi\nline\nip/a file\x01data\nip/a r\nip/a r\nip/a last\n")


@pytest.mark.parametrize("tool", ["mosquitto_sub", "mqttools"])
def test_remove_retained_and_E_match_mosquitto_sub(broker, tool):
    """--remove-retained (with -T sparing a topic), -W and -E: the same
    command line gives the same output, exit status and broker state."""
    sub = ["mosquitto_sub", "-V", "5"] if tool == "mosquitto_sub" else [str(MQTTOOLS), "subscribe"]

    def run(*args):
        r = subprocess.run([*sub, "-h", "127.0.0.1", "-p", str(broker.port), *args], capture_output=True,
                           timeout=WAIT + 5)
        return r.returncode, sorted(r.stdout.splitlines())

    for t in ("rm/a", "rm/b", "rm/keep"):
        r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-r", "-t", t, "-m", "x"],
                           capture_output=True, timeout=WAIT)
        assert r.returncode == 0, r.stderr
    # The clearing messages come back live as "(null)" (no --nl).
    assert run("--remove-retained", "-T", "rm/keep", "-v", "-t", "rm/#", "-W", "2") == (
        27, [b"rm/a (null)", b"rm/a x", b"rm/b (null)", b"rm/b x"])
    assert run("-v", "-t", "rm/#", "-W", "2") == (27, [b"rm/keep x"])
    assert run("-E", "-t", "rm/#") == (0, [])


# ---------------------------------------------------------------------------
# Issue 30: what a Mosquitto user tripped over, side by side with
# mosquitto_pub/mosquitto_sub on the same broker (mqttoolsd, started here).

PUB = {"mosquitto_pub": ["mosquitto_pub"], "mqttools": [str(MQTTOOLS), "publish"]}
SUB = {"mosquitto_sub": ["mosquitto_sub"], "mqttools": [str(MQTTOOLS), "subscribe"]}


class OwnBroker:
    """mqttoolsd on a fixed port with a config; restartable on that port."""

    def __init__(self, tmp_path, config=""):
        self.port = free_port()
        self.conf = tmp_path / f"mqttoolsd-{self.port}.toml"
        self.conf.write_text(config)
        self.log_path = tmp_path / f"mqttoolsd-{self.port}.log"
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(MQTTOOLSD), "-c", str(self.conf), "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc)

    def stop(self):
        code = stop_process(self.proc)
        self.log.close()
        return code

    def output(self):
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def own_broker(tmp_path):
    made = []

    def make(config=""):
        made.append(OwnBroker(tmp_path, config))
        return made[-1]

    yield make
    for b in made:
        assert b.stop() == 0, b.output()


def run(cmd, port, *args, input=b"", timeout=WAIT):
    return subprocess.run([*cmd, "-h", "127.0.0.1", "-p", str(port), *map(str, args)], input=input,
                          capture_output=True, timeout=timeout)


def test_publish_is_silent_and_debug_goes_to_stdout(own_broker):
    """7: nothing on stdout on success; 8: -d lines on stdout; 9: no blank
    status line."""
    b = own_broker()
    for tool, cmd in PUB.items():
        r = run(cmd, b.port, "-t", "q/t", "-m", "x")
        assert (r.returncode, r.stdout) == (0, b""), tool
        r = run(cmd, b.port, "-t", "q/t", "-m", "x", "-d")
        assert r.returncode == 0, (tool, r.stderr)
        out = r.stdout.decode()
        for step in ("sending CONNECT", "received CONNACK", "sending PUBLISH", "sending DISCONNECT"):
            assert re.search(rf"^Client \S+ {step}", out, re.M), (tool, out)
        assert "sending" not in r.stderr.decode(), tool
        if tool == "mqttools":
            assert r.stderr.decode() == f"Connecting to '127.0.0.1:{b.port}'.\n"
    # The seed's benchmark form keeps its summary.
    r = run(PUB["mqttools"], b.port, "--count", "3", "q/t")
    assert r.returncode == 0 and r.stdout.startswith(b"Published 3 message(s) in "), r


def test_refused_connect_exits_with_the_connack_code(own_broker, tmp_path):
    """10: bad password / not authorised exit with the CONNACK's code, as
    mosquitto_pub/sub (4 or 5 in 3.1.1, 134/135 in MQTT 5); --help exits 1."""
    pw = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "alice", "a"], check=True, capture_output=True)
    b = own_broker(f'allow_anonymous = false\npassword_file = "{pw}"\n')
    for version, bad_password, anonymous in (("5", 134, 135), ("311", 4, 5)):
        for tools in (PUB, SUB):
            codes = {}
            for tool, cmd in tools.items():
                extra = ["-m", "x"] if tools is PUB else ["-W", "5"]
                codes[tool] = (run(cmd, b.port, "-V", version, "-t", "t", "-u", "alice", "-P", "no", *extra).returncode,
                               run(cmd, b.port, "-V", version, "-t", "t", *extra).returncode)
            assert set(codes.values()) == {(bad_password, anonymous)}, (version, codes)
    for cmd in (*PUB.values(), *SUB.values()):
        r = subprocess.run([*cmd, "--help"], capture_output=True, timeout=WAIT)
        assert r.returncode == 1 and b"-t" in r.stdout, cmd


def test_json_timestamps_have_microseconds(own_broker):
    """11: %j's "tst" as mosquitto_sub prints it."""
    b = own_broker()
    stamps = {}
    for tool, cmd in SUB.items():
        p = subprocess.Popen([*cmd, "-h", "127.0.0.1", "-p", str(b.port), "-t", "j/t", "-C", "1", "-F", "%j"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + WAIT
        while p.poll() is None and time.monotonic() < deadline:
            run(PUB["mosquitto_pub"], b.port, "-t", "j/t", "-m", "x")
            try:
                p.wait(timeout=0.3)
            except subprocess.TimeoutExpired:
                pass
        out, _ = p.communicate(timeout=WAIT)
        stamps[tool] = re.search(rb'"tst":"([^"]*)"', out).group(1)
    for tool, tst in stamps.items():
        assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z[+-]\d{4}", tst), (tool, tst)


def test_a_missing_topic_names_t(own_broker):
    """12: both tools exit 1; ours says which option is missing."""
    b = own_broker()
    for tools in (PUB, SUB):
        codes = {tool: run(cmd, b.port, "-m", "x") if tools is PUB else run(cmd, b.port, "-v")
                 for tool, cmd in tools.items()}
        assert {r.returncode for r in codes.values()} == {1}
        ours = codes["mqttools"].stderr.decode()
        assert "-t TOPIC" in ours and "the following argument" not in ours, ours


def test_numeric_payload_taken_as_hex_is_warned(own_broker):
    """19: the seed's `publish TOPIC 1234` sends two bytes; it says so."""
    b = own_broker()
    sub = subprocess.Popen([*SUB["mosquitto_sub"], "-h", "127.0.0.1", "-p", str(b.port), "-t", "n/#", "-C", "2",
                            "-F", "%x"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    r = run(PUB["mqttools"], b.port, "n/a", "1234")
    assert r.returncode == 0
    assert "warning: '1234' is sent as 2 byte(s) of hex" in r.stderr.decode()
    r = run(PUB["mqttools"], b.port, "n/b", "21.5")
    assert r.returncode == 0 and "warning" not in r.stderr.decode()
    out, _ = sub.communicate(timeout=WAIT)
    assert out.split() == [b"1234", b"32312e35"]


@pytest.mark.parametrize("tool", ["mosquitto_pub", "mqttools"])
def test_publish_l_goes_on_after_a_broker_restart(own_broker, tool):
    """4: -l reconnects (with back-off) when the broker restarts, and the
    lines written meanwhile arrive; 20: --help and the man page say so."""
    b = own_broker()
    pub = subprocess.Popen([*PUB[tool], "-h", "127.0.0.1", "-p", str(b.port), "-t", "l/t", "-l", "-q", "1"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(b.port), "-t", "l/t", "-C", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        pub.stdin.write(b"before\n")
        pub.stdin.flush()
        assert sub.communicate(timeout=WAIT)[0] == b"before\n"
        assert b.stop() == 0
        time.sleep(0.5)
        b.start()
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(b.port), "-t", "l/t", "-C", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        # Written until one arrives: the publisher may not have noticed the
        # restart before the first line (a QoS 1 line then waits for it).
        got = b""
        deadline = time.monotonic() + 3 * WAIT
        while not got and time.monotonic() < deadline:
            assert pub.poll() is None, pub.communicate()
            pub.stdin.write(b"after\n")
            pub.stdin.flush()
            try:
                got = sub.communicate(timeout=2)[0]
            except subprocess.TimeoutExpired:
                pass
        assert got == b"after\n"
        pub.stdin.close()
        assert pub.wait(timeout=WAIT) == 0
    finally:
        if pub.poll() is None:
            pub.kill()
            pub.wait()
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    if tool == "mqttools":
        assert b"reconnect" in subprocess.run([str(MQTTOOLS), "publish", "--help"], capture_output=True).stdout
        man = (TOP / "docs" / "mqttools.1").read_text()
        assert "reconnects" in man[man.index("publish"):]


def test_a_websocket_url_on_a_plain_port_says_so(own_broker):
    """16: not a TLS hint; the broker logs the refused upgrade and who."""
    b = own_broker()
    r = subprocess.run([str(MQTTOOLS), "publish", "-L", f"ws://127.0.0.1:{b.port}/mqtt", "-t", "w/t", "-m", "x"],
                       capture_output=True, timeout=3 * WAIT)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "is this a WebSocket port?" in err and "--cafile" not in err, err
    deadline = time.monotonic() + WAIT
    while "an HTTP request" not in b.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert re.search(r"Client 127\.0\.0\.1:\d+ refused: an HTTP request", b.output()), b.output()
