"""Debian's mosquitto_pub / mosquitto_sub (mosquitto-clients 2.0.11) against
the broker, as MQTT 5 (`-V 5`, `-V mqttv5`) and 3.1.1 (`-V 311`,
`-V mqttv311`) clients: QoS 0/1/2, retained messages, wills, user and other
PUBLISH properties, `-C` counts and persistent sessions. Payloads are
printed as hex (`%x`) with their length (`%l`), or raw with `-N`, and
compared byte for byte."""
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

from .conftest import BUILD, WAIT

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_sub") is None,
                                reason="mosquitto-clients not installed")

# Every payload byte value, including NUL, CR and LF, which a text-mode
# client or broker would be tempted to mangle.
ALL_BYTES = bytes(range(256))
MARK = "=MSG=|"  # "@" and "%" and "\\" are format escapes
FMT = MARK + "%t|%q|%r|%l|%x|%P"

# (publisher, subscriber) protocol spellings; both spellings the 2.0.11
# clients accept for each version appear.
VERSION_PAIRS = [("5", "5"), ("mqttv311", "311"), ("mqttv5", "311"), ("311", "mqttv5")]


def is_v5(version):
    return version in ("5", "mqttv5")


class Sub:
    """A running mosquitto_sub whose stdout is read line by line in a thread.
    With `sync`, it runs with -d and start() returns once the broker has
    acknowledged the subscription, so that later publications reach it."""

    def __init__(self, procs, broker, version, topics, qos=2, count=None, fmt=FMT,
                 extra=(), sync=True):
        cmd = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
               "-V", version, "-q", str(qos), "-W", str(int(WAIT)), "-F", fmt]
        for t in topics:
            cmd += ["-t", t]
        if count is not None:
            cmd += ["-C", str(count)]
        if sync:
            cmd.append("-d")
        cmd += list(extra)
        self.cmd = cmd
        self.proc = procs.start(cmd)
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if sync:
            self.wait_for(lambda ls: any("received SUBACK" in l for l in ls), "SUBACK")

    def _read(self):
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # EOF
            self.cond.notify_all()

    def wait_for(self, pred, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred([l for l in self.lines if l is not None]):
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] is None):
                    pytest.fail(f"mosquitto_sub: no {what}; output so far:\n" +
                                "\n".join(l for l in self.lines if l is not None) +
                                f"\nstderr: {self._stderr()}\ncmd: {self.cmd}")
                self.cond.wait(left)

    def _stderr(self):
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")

    def finish(self, timeout=WAIT):
        """Waits for the -C count to be reached (exit status 0); returns the
        message lines without the marker."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.reader.join(timeout)
        out = [l for l in self.lines if l is not None]
        assert code == 0, (f"mosquitto_sub exited {code}; output:\n" + "\n".join(out) +
                           f"\nstderr: {self._stderr()}")
        return [l[len(MARK):] for l in out if l.startswith(MARK)]

    def messages(self):
        with self.cond:
            return [l[len(MARK):] for l in self.lines if l is not None and l.startswith(MARK)]


def pub(broker, version, topic, *args, payload=None, stdin=None, tmp_path=None):
    """One mosquitto_pub run; `payload` bytes are sent with -f FILE."""
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", version,
           "-t", topic]
    if payload is not None:
        f = tmp_path / f"payload-{time.monotonic_ns()}"
        f.write_bytes(payload)
        cmd += ["-f", str(f)]
    cmd += list(args)
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=WAIT)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr!r}"


def line(topic, qos, retain, payload, props=""):
    return f"{topic}|{qos}|{retain}|{len(payload)}|{payload.hex()}|{props}"


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("pubv,subv", VERSION_PAIRS)
def test_qos_exact_payload(broker, procs, tmp_path, pubv, subv, qos):
    sub = Sub(procs, broker, subv, ["q/t"], qos=2, count=3)
    pub(broker, pubv, "q/t", "-q", str(qos), payload=ALL_BYTES, tmp_path=tmp_path)
    pub(broker, pubv, "q/t", "-q", str(qos), "-n")
    pub(broker, pubv, "q/t", "-q", str(qos), "-m", "second \u00e9t\u00e9")
    assert sub.finish() == [
        line("q/t", qos, 0, ALL_BYTES),
        line("q/t", qos, 0, b""),
        line("q/t", qos, 0, "second \u00e9t\u00e9".encode()),
    ]


@pytest.mark.parametrize("version", ["5", "311"])
def test_qos_is_the_lower_of_publish_and_subscription(broker, procs, version):
    # [MQTT-3.8.4-8]: delivered at the minimum of the two QoS levels.
    subs = [Sub(procs, broker, version, ["d/t"], qos=q, count=3) for q in (0, 1, 2)]
    for q in (2, 1, 0):
        pub(broker, version, "d/t", "-q", str(q), "-m", f"pub{q}")
    for sub_qos, sub in enumerate(subs):
        # Sorted: each message comes from its own publisher, so no order is
        # required between them, and libmosquitto hands a QoS 2 message to
        # the application only on PUBREL.
        assert sorted(sub.finish()) == sorted(line("d/t", min(q, sub_qos), 0, f"pub{q}".encode())
                                              for q in (2, 1, 0))


@pytest.mark.parametrize("version", ["5", "311"])
def test_wildcards_and_multiple_topics(broker, procs, version):
    # Filters that do not overlap (overlapping ones: test_interop_paho.py).
    sub = Sub(procs, broker, version, ["w/+/x", "v/#"], qos=1, count=3)
    pub(broker, version, "w/a/x", "-q", "1", "-m", "w/a/x")
    pub(broker, version, "v", "-q", "1", "-m", "v")  # "v/#" matches "v" [MQTT-4.7.1-2]
    pub(broker, version, "w/a/y", "-q", "1", "-m", "not matched")
    pub(broker, version, "v/b/c", "-q", "1", "-m", "v/b/c")
    pub(broker, version, "other/v", "-q", "1", "-m", "not matched")
    assert sub.finish() == [line("w/a/x", 1, 0, b"w/a/x"), line("v", 1, 0, b"v"),
                            line("v/b/c", 1, 0, b"v/b/c")]


@pytest.mark.parametrize("version", ["5", "mqttv311"])
def test_raw_binary_output(broker, procs, tmp_path, version):
    # -N prints the payload with nothing added: stdout is the payload.
    pub(broker, version, "raw/t", "-r", "-q", "1", payload=ALL_BYTES, tmp_path=tmp_path)
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
                        "-V", version, "-t", "raw/t", "-C", "1", "-N", "-W", str(int(WAIT))],
                       capture_output=True, timeout=WAIT + 5)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ALL_BYTES


@pytest.mark.parametrize("pubv,subv", VERSION_PAIRS)
def test_retained(broker, procs, tmp_path, pubv, subv):
    pub(broker, pubv, "r/a", "-r", "-q", "1", payload=b"\x00retained-a\xff", tmp_path=tmp_path)
    pub(broker, pubv, "r/b", "-r", "-q", "2", "-m", "retained-b")
    pub(broker, pubv, "r/c", "-r", "-q", "0", "-m", "retained-c")
    # Replaced: only the last retained message of a topic is kept.
    pub(broker, pubv, "r/c", "-r", "-q", "0", "-m", "retained-c2")

    sub = Sub(procs, broker, subv, ["r/#"], qos=2, count=4)
    # Retained messages come before the SUBACK is reported, in any order of
    # topics; each at the lower of its own and the subscription's QoS.
    sub.wait_for(lambda ls: sum(l.startswith(MARK) for l in ls) >= 3, "3 retained")
    pub(broker, pubv, "r/a", "-q", "1", "-m", "live")
    got = sub.finish()
    assert sorted(got[:3]) == [line("r/a", 1, 1, b"\x00retained-a\xff"),
                               line("r/b", 2, 1, b"retained-b"),
                               line("r/c", 0, 1, b"retained-c2")]
    # A message forwarded to an existing subscription has retain 0
    # [MQTT-3.3.1-9], and the live non-retained one replaces nothing.
    assert got[3] == line("r/a", 1, 0, b"live")

    # An empty retained message clears the topic [MQTT-3.3.1-6]; the next
    # subscriber gets only what is still retained.
    pub(broker, pubv, "r/a", "-r", "-q", "1", "-n")
    pub(broker, pubv, "r/b", "-r", "-q", "1", "-n")
    sub2 = Sub(procs, broker, subv, ["r/#"], qos=2, count=1, sync=False)
    assert sub2.finish() == [line("r/c", 0, 1, b"retained-c2")]


@pytest.mark.parametrize("version", ["5", "311"])
@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_on_kill(broker, procs, version, will_qos):
    watcher = Sub(procs, broker, version, ["will/#"], qos=2, count=1)
    holder = Sub(procs, broker, version, ["unrelated"], qos=0,
                 extra=["--will-topic", f"will/{version}", "--will-qos", str(will_qos),
                        "--will-payload", "gone \u2620 away", "-k", "60"])
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait()
    assert watcher.finish() == [line(f"will/{version}", will_qos, 0, "gone \u2620 away".encode())]


@pytest.mark.parametrize("version", ["mqttv5", "mqttv311"])
def test_retained_will_on_kill(broker, procs, version):
    holder = Sub(procs, broker, version, ["unrelated"], qos=0,
                 extra=["--will-topic", "rwill/t", "--will-qos", "1", "--will-retain",
                        "--will-payload", "retained will"])
    holder.proc.kill()
    holder.proc.wait()
    # The will is published at once (no will delay); a later subscriber sees it
    # as retained.
    deadline = time.monotonic() + WAIT
    while True:
        r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
                            "-V", version, "-t", "rwill/t", "-q", "1", "-C", "1", "-W", "1",
                            "-F", FMT], capture_output=True, timeout=WAIT)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
    assert r.stdout.decode() == MARK + line("rwill/t", 1, 1, b"retained will") + "\n"


@pytest.mark.parametrize("version", ["5", "311"])
def test_no_will_on_normal_disconnect(broker, procs, version):
    watcher = Sub(procs, broker, version, ["nw/t"], qos=1, count=2)
    # mosquitto_pub ends with a normal DISCONNECT: its will must be discarded
    # [MQTT-3.14.4-3].
    pub(broker, version, "nw/t", "-q", "1", "-m", "first",
        "--will-topic", "nw/t", "--will-payload", "must not appear")
    pub(broker, version, "nw/t", "-q", "1", "-m", "second")
    assert watcher.finish() == [line("nw/t", 1, 0, b"first"), line("nw/t", 1, 0, b"second")]


@pytest.mark.parametrize("subv", ["5", "mqttv5"])
def test_user_properties(broker, procs, subv):
    sub = Sub(procs, broker, subv, ["up/t"], qos=1, count=2)
    pub(broker, "5", "up/t", "-q", "1", "-m", "with props",
        "-D", "publish", "user-property", "k", "v",
        "-D", "publish", "user-property", "k", "v2",
        "-D", "publish", "user-property", "empty", "",
        "-D", "publish", "user-property", "utf8", "\u00e9\u4e2d")
    pub(broker, "5", "up/t", "-q", "1", "-m", "no props")
    # Forwarded unchanged, in order, duplicates kept [MQTT-3.3.2-17/18].
    assert sub.finish() == [line("up/t", 1, 0, b"with props", "k:v k:v2 empty: utf8:\u00e9\u4e2d"),
                            line("up/t", 1, 0, b"no props")]


def test_user_properties_dropped_for_311_subscriber(broker, procs):
    sub = Sub(procs, broker, "311", ["up/t"], qos=2, count=1)
    pub(broker, "5", "up/t", "-q", "2", "-m", "payload kept",
        "-D", "publish", "user-property", "k", "v")
    assert sub.finish() == [line("up/t", 2, 0, b"payload kept")]


def test_publish_properties(broker, procs):
    fmt = MARK + "%t|%l|%x|C=%C|R=%R|F=%F|E=%E|D=%D|P=%P"
    sub = Sub(procs, broker, "5", ["pp/t"], qos=1, count=2, fmt=fmt)
    t0 = time.monotonic()
    pub(broker, "5", "pp/t", "-q", "1", "-m", "{\"a\":1}",
        "-D", "publish", "content-type", "application/json",
        "-D", "publish", "response-topic", "pp/reply",
        "-D", "publish", "correlation-data", "corr-42",
        "-D", "publish", "payload-format-indicator", "1",
        "-D", "publish", "message-expiry-interval", "3600",
        "-D", "publish", "user-property", "a", "b")
    pub(broker, "5", "pp/t", "-q", "1", "-m", "plain")
    got = sub.finish()
    elapsed = int(time.monotonic() - t0) + 1
    assert len(got) == 2
    head, expiry_and_rest = got[0].split("|E=")
    expiry, rest = expiry_and_rest.split("|", 1)
    assert head == ("pp/t|7|" + b'{"a":1}'.hex() +
                    "|C=application/json|R=pp/reply|F=1")
    # The broker sends the remaining lifetime [MQTT-3.3.2-6].
    assert 3600 - elapsed <= int(expiry) <= 3600
    assert rest == "D=corr-42|P=a:b"
    assert got[1] == "pp/t|5|" + b"plain".hex() + "|C=|R=|F=|E=|D=|P="


@pytest.mark.parametrize("version", ["5", "311"])
def test_count(broker, procs, version):
    sub = Sub(procs, broker, version, ["c/t"], qos=1, count=3)
    # -l sends one message per stdin line.
    pub(broker, version, "c/t", "-q", "1", "-l", stdin=b"one\ntwo\nthree\nfour\nfive\n")
    assert sub.finish() == [line("c/t", 1, 0, p) for p in (b"one", b"two", b"three")]
    # -C exits after exactly N: a second subscriber with a larger count sees
    # every message of a repeated publication.
    sub5 = Sub(procs, broker, version, ["c/t"], qos=1, count=5)
    pub(broker, version, "c/t", "-q", "1", "-m", "rep", "--repeat", "5", "--repeat-delay", "0")
    assert sub5.finish() == [line("c/t", 1, 0, b"rep")] * 5


@pytest.mark.parametrize("version", ["5", "311"])
def test_persistent_session(broker, procs, version):
    session = ["-c", "-i", f"persist-{version}"] + (["-x", "60"] if is_v5(version) else [])
    # -E: subscribe, wait for the SUBACK, disconnect, keeping the session.
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", version,
                        "-t", "ps/t", "-q", "2", "-E", *session], capture_output=True, timeout=WAIT)
    assert r.returncode == 0, r.stderr
    # One publisher per QoS, each sending in order (-l: one message a line).
    pub(broker, version, "ps/t", "-q", "1", "-l", stdin=b"q1-a\nq1-b\nq1-c\n")
    pub(broker, version, "ps/t", "-q", "2", "-l", stdin=b"q2-a\nq2-b\n")
    sub = Sub(procs, broker, version, ["ps/t"], qos=2, count=6, sync=False, extra=session)
    # QoS 1 and 2 messages are queued for the offline session [MQTT-3.1.2-5],
    # each publisher's in its order [MQTT-4.6.0-6]; then live delivery goes on.
    sub.wait_for(lambda ls: sum(l.startswith(MARK) for l in ls) >= 5, "5 queued")
    pub(broker, version, "ps/t", "-q", "1", "-m", "live")
    got = sub.finish()
    assert [m for m in got if "|1|" in m[:7]] == [line("ps/t", 1, 0, p) for p in
                                                 (b"q1-a", b"q1-b", b"q1-c", b"live")]
    assert [m for m in got if "|2|" in m[:7]] == [line("ps/t", 2, 0, p) for p in (b"q2-a", b"q2-b")]
    assert got[-1] == line("ps/t", 1, 0, b"live")


@pytest.mark.parametrize("version,qos", [
    ("5", 0), ("5", 1),
    # Mosquitto 2.0.11 at times sends a v5 client more QoS 2 messages than its
    # Receive Maximum; libmosquitto then fails with a protocol error.
    pytest.param("5", 2, marks=pytest.mark.mqttoolsd_only),
    ("311", 0), ("311", 1), ("311", 2)])
def test_many_messages_in_order(broker, procs, version, qos):
    # Beyond the default inflight windows (20 each way): flow control must
    # neither lose, duplicate nor reorder [MQTT-4.6.0-6].
    n = 1000
    sub = Sub(procs, broker, version, ["many/t"], qos=2, count=n, fmt=MARK + "%q|%p")
    lines = b"".join(b"m%04d\n" % i for i in range(n))
    pub(broker, version, "many/t", "-q", str(qos), "-l", stdin=lines)
    assert sub.finish() == [f"{qos}|m{i:04d}" for i in range(n)]


@pytest.mark.parametrize("version", ["5", "311"])
def test_large_payload(broker, procs, tmp_path, version):
    big = bytes((i * 7919 + (i >> 8)) & 0xFF for i in range(1 << 20))  # 1 MiB
    sub = Sub(procs, broker, version, ["big/t"], qos=1, count=2, fmt=MARK + "%l|%x")
    pub(broker, version, "big/t", "-q", "1", payload=big, tmp_path=tmp_path)
    pub(broker, version, "big/t", "-q", "0", "-r", payload=big[:65536], tmp_path=tmp_path)
    assert sub.finish() == [f"{len(big)}|{big.hex()}", f"65536|{big[:65536].hex()}"]
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", version,
                        "-t", "big/t", "-C", "1", "-N", "-W", str(int(WAIT))],
                       capture_output=True, timeout=WAIT + 5)
    assert r.returncode == 0, r.stderr
    assert r.stdout == big[:65536]


@pytest.mark.parametrize("version", ["5", "311"])
def test_shared_subscription(broker, procs, version):
    subs = [Sub(procs, broker, version, ["$share/grp/sh/+"], qos=1) for _ in range(3)]
    n = 30
    pub(broker, version, "sh/x", "-q", "1", "-l",
        stdin=b"".join(b"s%02d\n" % i for i in range(n)))
    deadline = time.monotonic() + WAIT
    while sum(len(s.messages()) for s in subs) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    # A last message through a plain subscriber proves the group is done.
    plain = Sub(procs, broker, version, ["sh/x"], qos=1, count=1)
    pub(broker, version, "sh/x", "-q", "1", "-m", "last")
    assert plain.finish() == [line("sh/x", 1, 0, b"last")]
    deadline = time.monotonic() + WAIT
    while sum(len(s.messages()) for s in subs) < n + 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    got = [m for s in subs for m in s.messages()]
    # Each message to exactly one member of the group.
    assert sorted(got) == sorted([line("sh/x", 1, 0, b"s%02d" % i) for i in range(n)] +
                                 [line("sh/x", 1, 0, b"last")])
    for s in subs:
        mine = s.messages()
        assert mine == sorted(mine, key=lambda m: (m.endswith(b"last".hex() + "|"), m))


def test_subscription_identifier(broker, procs):
    sub = Sub(procs, broker, "5", ["sid/#"], qos=1, count=1, fmt=MARK + "%t|%S|%p",
              extra=["-D", "subscribe", "subscription-identifier", "4242"])
    pub(broker, "5", "sid/x", "-q", "1", "-m", "id")
    assert sub.finish() == ["sid/x|4242|id"]


@pytest.mark.parametrize("version", ["5", "311"])
def test_unsubscribe(broker, procs, version):
    # -U unsubscribes after subscribing; what is left still works.
    sub = Sub(procs, broker, version, ["un/a", "un/b"], qos=1, count=1,
              extra=["-U", "un/a"])
    sub.wait_for(lambda ls: any("UNSUBACK" in l for l in ls), "UNSUBACK")
    pub(broker, version, "un/a", "-q", "1", "-m", "unsubscribed")
    pub(broker, version, "un/b", "-q", "1", "-m", "still subscribed")
    assert sub.finish() == [line("un/b", 1, 0, b"still subscribed")]


@pytest.mark.parametrize("version", ["5", "311"])
def test_remove_retained(broker, procs, version):
    for t in ("rr/a", "rr/b", "rr/keep"):
        pub(broker, version, t, "-r", "-q", "1", "-m", f"old {t}")
    # --remove-retained publishes an empty retained message (QoS 1 here) for
    # each retained one received, but not for -T filtered ones.
    remover = Sub(procs, broker, version, ["rr/#"], qos=1,
                  extra=["-T", "rr/keep", "--remove-retained"])
    remover.wait_for(lambda ls: sum("received PUBACK" in l for l in ls) >= 2, "2 PUBACKs")
    # It also gets its own empty messages back, as plain live messages.
    remover.wait_for(lambda ls: sum(l.startswith(MARK) for l in ls) >= 4, "4 messages")
    assert sorted(remover.messages()) == [line("rr/a", 1, 0, b""), line("rr/a", 1, 1, b"old rr/a"),
                                          line("rr/b", 1, 0, b""), line("rr/b", 1, 1, b"old rr/b")]
    sub = Sub(procs, broker, version, ["rr/#"], qos=1, count=2)
    pub(broker, version, "rr/sync", "-q", "1", "-m", "sync")
    assert sub.finish() == [line("rr/keep", 1, 1, b"old rr/keep"), line("rr/sync", 1, 0, b"sync")]


def test_retain_as_published_and_no_stale(broker, procs):
    pub(broker, "5", "rap/t", "-r", "-q", "1", "-m", "stale")
    # -R: do not print stale (retained) messages; --retain-as-published keeps
    # the flag on live messages.
    sub = Sub(procs, broker, "5", ["rap/t"], qos=1, count=2, extra=["--retain-as-published"])
    sub_r = Sub(procs, broker, "5", ["rap/t"], qos=1, count=2, extra=["-R"])
    pub(broker, "5", "rap/t", "-r", "-q", "1", "-m", "live retained")
    pub(broker, "5", "rap/t", "-q", "1", "-m", "live")
    assert sub.finish() == [line("rap/t", 1, 1, b"stale"), line("rap/t", 1, 1, b"live retained")]
    assert sub_r.finish() == [line("rap/t", 1, 0, b"live retained"), line("rap/t", 1, 0, b"live")]


def test_hash_does_not_match_sys_topics(broker, procs):
    # [MQTT-4.7.2-1]: "#" does not match topics starting with "$" even while
    # the broker publishes its $SYS tree.
    sub = Sub(procs, broker, "5", ["#"], qos=1, count=1)
    pub(broker, "5", "plain", "-q", "1", "-m", "plain")
    assert sub.finish() == [line("plain", 1, 0, b"plain")]


def test_sys_broker_version(broker):
    # Monitoring scripts written for Mosquitto read $SYS/broker/version; it is
    # retained, so it arrives at once.
    r = subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port),
                        "-t", "$SYS/broker/version", "-C", "1", "-W", "3", "-F", "%r|%p"],
                       capture_output=True, timeout=WAIT)
    assert r.returncode == 0, f"no $SYS/broker/version: {r.stderr!r}"
    retain, version = r.stdout.decode().rstrip("\n").split("|", 1)
    assert retain == "1"
    if broker.kind == "mosquitto":
        assert version.startswith("mosquitto version "), version
    else:
        # "<name> version <MQTTOOLS_VERSION>", as Mosquitto words it.
        header = (BUILD / "mqttools_version.h").read_text()
        expected = re.search(r'#define MQTTOOLS_VERSION "([^"]+)"', header).group(1)
        assert version in (f"mqttools version {expected}", f"mqttoolsd version {expected}")


@pytest.mark.parametrize("version", ["5", "311"])
def test_utf8_topics(broker, procs, version):
    topics = ["caf\u00e9/\u00b0C", "with space/\u4e2d\u6587", "emoji/\U0001F600", "a" * 2000]
    sub = Sub(procs, broker, version, ["caf\u00e9/+", "with space/#", "emoji/\U0001F600",
                                       "a" * 2000], qos=1, count=len(topics))
    for t in topics:
        pub(broker, version, t, "-q", "1", "-m", t[:20])
    assert sub.finish() == [line(t, 1, 0, t[:20].encode()) for t in topics]


@pytest.mark.parametrize("version", ["5", "311"])
def test_many_filters_in_one_subscribe(broker, procs, version):
    n = 60
    sub = Sub(procs, broker, version, [f"mf/{i}/+" for i in range(n)], qos=2, count=n)
    sub.wait_for(lambda ls: any(l.startswith("Subscribed") for l in ls), "granted QoS")
    granted = next(l for l in sub.lines if l and l.startswith("Subscribed"))
    assert granted.split("): ", 1)[1] == ", ".join(["2"] * n)
    for i in reversed(range(n)):
        pub(broker, version, f"mf/{i}/x", "-q", str(i % 3), "-m", str(i))
    assert sorted(sub.finish()) == sorted(line(f"mf/{i}/x", i % 3, 0, str(i).encode())
                                          for i in reversed(range(n)))


@pytest.mark.parametrize("version", [
    # Mosquitto 2.0.11 exceeds a v5 client's Receive Maximum here (libmosquitto
    # fails with a protocol error).
    pytest.param("5", marks=pytest.mark.mqttoolsd_only), "311"])
def test_many_retained_messages_on_subscribe(broker, procs, version):
    # 500 retained QoS 1/2 messages arrive at once on a wildcard subscription:
    # the broker must pace them within the client's inflight window
    # (libmosquitto checks its Receive Maximum in v5) and lose none.
    from .paho_client import Paho
    n = 500
    p = Paho(broker, "retained-loader")
    try:
        assert p.connect()[:2] == (0, 0)
        infos = [p.c.publish(f"mr/{i:03d}/x", b"r%03d" % i, qos=1 + i % 2, retain=True)
                 for i in range(n)]
        for info in infos:
            info.wait_for_publish(WAIT)
            assert info.is_published()
        p.disconnect()
    finally:
        p.stop()
    sub = Sub(procs, broker, version, ["mr/#"], qos=2, count=n, sync=False,
              fmt=MARK + "%t|%q|%r|%p")
    got = sub.finish()
    assert sorted(got) == [f"mr/{i:03d}/x|{1 + i % 2}|1|r{i:03d}" for i in range(n)]


@pytest.mark.parametrize("version", ["5", "311"])
def test_empty_levels_and_wildcards(broker, procs, version):
    # "+" matches an empty level, and leading/trailing "/" make empty levels
    # [MQTT-4.7.1-2/3]; "#" matches the parent level too.
    cases = {  # filter -> topics it must receive, in publication order
        "a/+/b": ["a//b", "a/x/b"],
        "+/lead": ["/lead"],
        "trail/+": ["trail/"],
        "+/+": ["/lead", "trail/", "/"],
        "/#": ["/lead", "/"],
        "a/#": ["a//b", "a/x/b", "a"],
    }
    topics = ["a//b", "a/x/b", "/lead", "trail/", "/", "a", "b//a"]
    subs = {f: Sub(procs, broker, version, [f], qos=1, count=len(ts), fmt=MARK + "%t")
            for f, ts in cases.items()}
    for t in topics:
        pub(broker, version, t, "-q", "1", "-m", "x")
    for f, ts in cases.items():
        assert subs[f].finish() == ts, f
