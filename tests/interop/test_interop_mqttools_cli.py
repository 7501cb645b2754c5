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

from .conftest import BUILD, WAIT

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
