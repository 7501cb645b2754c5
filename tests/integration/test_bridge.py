"""Bridges (issue 16): mqttoolsd connects out to another broker with
Mosquitto's `connection` settings. The remote is Debian's real `mosquitto`
(on a free loopback port, with a temporary config) or a second mqttoolsd;
clients are raw MQTT connections (mqttwire) on either side."""
import shutil
import signal
import subprocess
import time

import pytest

from conftest import MQTTOOLSD, SLOW, free_port, wait_for_port, wait_or_fail
from mqttwire import (Client, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, CONTENT_TYPE, CORRELATION_DATA,
                      MESSAGE_EXPIRY_INTERVAL, RESPONSE_TOPIC, USER_PROPERTY, ack_packet)
from persist_helpers import DurableBroker
from test_security_tls import make_ca, make_cert

pytestmark = [
    pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built"),
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed"),
]

class Mosquitto:
    """Debian's mosquitto on a free loopback port; restartable on the same
    port (and, with persistence, the same database)."""

    def __init__(self, tmp_path, extra="", persistence=False, port=None):
        self.port = port or free_port()
        self.dir = tmp_path / f"mosquitto-{self.port}"
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        text = (f"listener {self.port} 127.0.0.1\n"
                "log_dest stdout\nlog_type all\n"
                f"persistence {'true' if persistence else 'false'}\n"
                f"persistence_location {self.dir}/\n"
                # As root, mosquitto would switch to the `mosquitto` user and
                # could not write its database into the test's folder.
                "user root\n")
        if "allow_anonymous" not in extra:
            text += "allow_anonymous true\n"
        self.conf.write_text(text + extra)
        self.log_path = self.dir / "mosquitto.log"
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def output(self):
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def remotes(tmp_path):
    started = []

    def start(**kw):
        m = Mosquitto(tmp_path, **kw)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


def bridge_toml(port, topics, name="b", version="mqttv311", extra=""):
    lines = ", ".join('"' + t.replace('"', '\\"') + '"' for t in topics)
    return (f"[[bridge]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n"
            f"topic = [{lines}]\nremote_clientid = \"edge-{name}\"\n"
            f"bridge_protocol_version = \"{version}\"\nrestart_timeout = 1\nkeepalive_interval = 10\n" + extra)


def state_topic(name="b"):
    # Mosquitto's default: the remote client id (bridge_toml sets edge-NAME).
    return f"$SYS/broker/connection/edge-{name}/state"


def read_retained(port, topic, version=5):
    """The retained payload on `topic` (None when there is none)."""
    c = Client(port, version=version)
    try:
        c.connect("")
        c.subscribe([(topic, 0)])
        try:
            return c.expect(PUBLISH, timeout=0.5).payload
        except TimeoutError:
            return None
    finally:
        c.close()


def wait_state(port, want, name="b", version=5, topic=None):
    """Polls the retained notification on a broker until it reads `want`."""
    topic = topic or state_topic(name)
    wait_or_fail(lambda: read_retained(port, topic, version) == want, what=f"{topic} = {want!r} on port {port}")


def sub(port, filters, version=5, client_id="", clean=True, props=None):
    c = Client(port, version=version)
    c.connect(client_id, clean_start=clean, properties=props)
    c.subscribe([(f, q) for f, q in filters])
    return c


def expect_pub(c, topic, payload, timeout=5.0):
    p = c.expect(PUBLISH, timeout=timeout * SLOW)
    assert (p.topic, p.payload) == (topic, payload)
    if p.qos == 1:
        c.ack(p)
    return p


def start_edge(start_broker, config):
    return start_broker(config="allow_anonymous = true\n" + config)


# ---------------------------------------------------------------- directions and prefixes

@pytest.mark.parametrize("version", ["mqttv311", "mqttv50"])
def test_directions_and_prefix_rules(start_broker, remotes, version):
    remote = remotes()
    topics = ["out/# out 1", 'cmd/# in 1 site1/ ""', "data/# out 0 edge/ cloud/",
              '"" out 1 local/exact remote/exact', "ctl/+ in 0 dev/ hq/"]
    edge = start_edge(start_broker, bridge_toml(remote.port, topics, version=version))
    wait_state(remote.port, b"1")
    rsub = sub(remote.port, [("out/#", 1), ("cloud/#", 1), ("remote/#", 1), ("edge/#", 1), ("other/#", 1)])
    lsub = sub(edge.port, [("site1/#", 1), ("dev/#", 1), ("cmd/#", 1)])
    pub = Client(edge.port)
    pub.connect("lpub")
    # out: same topic on the remote.
    pub.publish("out/a", b"1", qos=1)
    expect_pub(rsub, "out/a", b"1")
    # out with prefixes: edge/data/t -> cloud/data/t.
    pub.publish("edge/data/t", b"2", qos=0)
    expect_pub(rsub, "cloud/data/t", b"2")
    # "" pattern: the prefixes are the whole topics.
    pub.publish("local/exact", b"3", qos=1)
    expect_pub(rsub, "remote/exact", b"3")
    # Not bridged: nothing reaches the remote.
    pub.publish("other/x", b"no", qos=1)
    pub.publish("data/t", b"no", qos=1)  # data/# only under the edge/ prefix
    rsub.nothing(0.5)
    # in: cmd/x on the remote -> site1/cmd/x here; hq/ctl/y -> dev/ctl/y.
    rpub = Client(remote.port)
    rpub.connect("rpub")
    rpub.publish("cmd/x", b"4", qos=1)
    expect_pub(lsub, "site1/cmd/x", b"4")
    rpub.publish("hq/ctl/y", b"5", qos=0)
    expect_pub(lsub, "dev/ctl/y", b"5")
    rpub.publish("ctl/y", b"no", qos=1)  # not under the remote prefix
    lsub.nothing(0.5)
    # in-only topics do not go out: a local cmd/z stays here.
    pub.publish("site1/cmd/z", b"local", qos=1)
    expect_pub(lsub, "site1/cmd/z", b"local")
    rsub.nothing(0.3)
    assert edge.stop() == 0, edge.output()


@pytest.mark.parametrize("version", ["mqttv311", "mqttv50"])
def test_both_directions_without_loops(start_broker, remotes, version):
    remote = remotes()
    edge = start_edge(start_broker, bridge_toml(remote.port, ["chat/# both 1"], version=version))
    wait_state(remote.port, b"1")
    rsub = sub(remote.port, [("chat/#", 1)])
    lsub = sub(edge.port, [("chat/#", 1)])
    lpub = Client(edge.port)
    lpub.connect("lpub")
    rpub = Client(remote.port)
    rpub.connect("rpub")
    for i in range(5):
        lpub.publish(f"chat/l{i}", b"from-edge", qos=1, packet_id=i + 1)
        rpub.publish(f"chat/r{i}", b"from-remote", qos=1, packet_id=i + 1)
    # Each side sees each message exactly once: no echo, no ping-pong.
    got_l = sorted(p.topic for p in lsub.messages(quiet=1.0 * SLOW))
    got_r = sorted(p.topic for p in rsub.messages(quiet=1.0 * SLOW))
    want = sorted([f"chat/l{i}" for i in range(5)] + [f"chat/r{i}" for i in range(5)])
    assert got_l == want
    assert got_r == want
    assert edge.stop() == 0, edge.output()


def test_both_directions_to_a_second_mqttoolsd(start_broker, remotes):
    """mqttoolsd to mqttoolsd over MQTT 5: No Local keeps each message on
    each side once; retained messages and MQTT 5 properties cross intact."""
    cloud = start_broker(config="allow_anonymous = true\n")
    edge = start_edge(start_broker, bridge_toml(cloud.port, ["t/# both 2"], version="mqttv50"))
    wait_state(cloud.port, b"1")
    csub = sub(cloud.port, [("t/#", 2)])
    lsub = sub(edge.port, [("t/#", 2)])
    lpub = Client(edge.port)
    lpub.connect("lpub")
    props = {USER_PROPERTY: [("k", "v"), ("k2", "v2")], CONTENT_TYPE: "text/plain",
             RESPONSE_TOPIC: "reply/here", CORRELATION_DATA: b"\x01\x02", MESSAGE_EXPIRY_INTERVAL: 300}
    lpub.publish("t/props", b"p", qos=2, retain=True, properties=props)
    for c in (csub, lsub):
        p = c.expect(PUBLISH, timeout=5 * SLOW)
        assert (p.topic, p.payload, p.qos) == ("t/props", b"p", 2)
        assert p.prop_all(USER_PROPERTY) == [("k", "v"), ("k2", "v2")]
        assert p.prop(CONTENT_TYPE) == "text/plain"
        assert p.prop(RESPONSE_TOPIC) == "reply/here"
        assert p.prop(CORRELATION_DATA) == b"\x01\x02"
        assert 295 <= p.prop(MESSAGE_EXPIRY_INTERVAL) <= 300
        c.ack(p)
    # The retained copy reached the cloud broker too: a late subscriber gets it, retained.
    late = sub(cloud.port, [("t/#", 1)])
    p = late.expect(PUBLISH, timeout=5 * SLOW)
    assert (p.topic, p.payload, p.retain) == ("t/props", b"p", True)
    # A cloud publication comes down once, and does not bounce back up.
    cpub = Client(cloud.port)
    cpub.connect("cpub")
    cpub.publish("t/down", b"d", qos=1)
    assert [m.topic for m in lsub.messages(quiet=1.0 * SLOW)] == ["t/down"]
    assert [m.topic for m in csub.messages(quiet=0.5 * SLOW)] == ["t/down"]
    assert edge.stop() == 0, edge.output()


def test_mqttv311_to_mqttoolsd_without_try_private(start_broker):
    cloud = start_broker(config="allow_anonymous = true\n")
    edge = start_edge(start_broker, bridge_toml(cloud.port, ["up/# out 1", "down/# in 1"],
                                                extra="try_private = false\n"))
    wait_state(cloud.port, b"1")
    csub = sub(cloud.port, [("up/#", 1)])
    lsub = sub(edge.port, [("down/#", 1)])
    lpub = Client(edge.port)
    lpub.connect("lpub")
    lpub.publish("up/1", b"u", qos=1)
    expect_pub(csub, "up/1", b"u")
    cpub = Client(cloud.port)
    cpub.connect("cpub")
    cpub.publish("down/1", b"d", qos=1)
    expect_pub(lsub, "down/1", b"d")
    assert edge.stop() == 0, edge.output()


# ---------------------------------------------------------------- QoS 1/2 across a remote restart

class RemoteSubscriber:
    """A persistent session on the remote that acknowledges
    everything (QoS 2 with method B: a PUBLISH is passed on once per packet
    id until its PUBREL) and reconnects after the remote restarts."""

    def __init__(self, port, qos):
        self.port, self.qos = port, qos
        self.got = []
        self.pending_rel = set()
        self.c = None
        self.connect(clean=True)

    def connect(self, clean):
        # MQTT 3.1.1 with Clean Session 0: mosquitto 2.0.11 restores such a
        # session from its database after a restart (an MQTT 5 session with
        # a finite expiry interval came back empty in our runs).
        self.c = Client(self.port, version=4)
        ack = self.c.connect("rsub", clean_start=False)
        if clean:
            self.c.subscribe([("q/#", self.qos)])
        return ack

    def pump(self, quiet):
        while True:
            try:
                p = self.c.recv(quiet)
            except TimeoutError:
                return
            if p.type == PUBLISH:
                if p.qos == 2:
                    if p.packet_id not in self.pending_rel:
                        self.got.append(p.payload)
                        self.pending_rel.add(p.packet_id)
                    self.c.send(ack_packet(PUBREC, p.packet_id, version=4))
                else:
                    self.got.append(p.payload)
                    if p.qos == 1:
                        self.c.send(ack_packet(PUBACK, p.packet_id, version=4))
            elif p.type == PUBREL:
                self.pending_rel.discard(p.packet_id)
                self.c.send(ack_packet(PUBCOMP, p.packet_id, version=4))


@pytest.mark.parametrize("qos", [1, 2])
def test_qos_across_a_remote_restart(start_broker, remotes, qos):
    remote = remotes(persistence=True)
    edge = start_edge(start_broker, bridge_toml(remote.port, [f"q/# out {qos}"], version="mqttv50"))
    wait_state(remote.port, b"1")
    rsub = RemoteSubscriber(remote.port, qos)
    pub = Client(edge.port)
    pub.connect("lpub")
    acked = []
    n = 300
    for i in range(n):
        payload = str(i).encode()
        ack = pub.publish("q/x", payload, qos=qos, packet_id=i % 60000 + 1)
        assert ack.reason < 0x80
        acked.append(payload)
        if i == 100:
            rsub.pump(0.2)
            remote.stop()  # mid-stream: the bridge queues from here
        if i == 200:
            remote.start()
            # The subscriber comes back to its persistent session first.
            wait_or_fail(lambda: _try_resume(rsub), what="the remote subscriber to resume")
    deadline = time.monotonic() + 20 * SLOW
    while len(set(rsub.got)) < n and time.monotonic() < deadline:
        rsub.pump(0.3)
    rsub.pump(0.5)
    assert set(acked) <= set(rsub.got), f"missing {sorted(set(acked) - set(rsub.got), key=int)[:10]}"
    if qos == 2:
        dups = [p for p in set(rsub.got) if rsub.got.count(p) > 1]
        assert dups == [], f"QoS 2 duplicates: {dups[:10]}"
    assert edge.stop() == 0, edge.output()


@pytest.mark.parametrize("qos", [1, 2])
def test_queue_survives_a_restart_with_persistence(remotes, tmp_path, qos):
    """Remote down, QoS 1/2 published and acknowledged here, our broker
    stopped (SIGTERM) and started again on its database, then the remote
    back: every acknowledged message arrives (QoS 2 once)."""
    remote = remotes(persistence=True)
    edge = DurableBroker(tmp_path, extra="allow_anonymous = true\n" +
                         bridge_toml(remote.port, [f"q/# out {qos}"], version="mqttv50"))
    edge.start()
    wait_state(remote.port, b"1")
    rsub = RemoteSubscriber(remote.port, qos)
    remote.stop()
    wait_state(edge.port, b"0")
    pub = Client(edge.port)
    pub.connect("lpub")
    acked = []
    for i in range(50):
        ack = pub.publish("q/x", str(i).encode(), qos=qos, packet_id=i + 1)
        assert ack.reason == 0
        acked.append(str(i).encode())
    pub.close()
    edge.stop()
    edge.start()
    wait_or_fail(lambda: "50 stored messages loaded for the remote" in edge.output(), what="the queue loaded")
    remote.start()
    wait_or_fail(lambda: _try_resume(rsub), what="the remote subscriber to resume")
    deadline = time.monotonic() + 15 * SLOW
    while len(set(rsub.got)) < len(acked) and time.monotonic() < deadline:
        rsub.pump(0.3)
    rsub.pump(0.5)
    assert set(acked) <= set(rsub.got), f"missing {sorted(set(acked) - set(rsub.got), key=int)[:10]}"
    if qos == 2:
        assert len(rsub.got) == len(set(rsub.got)), "QoS 2 duplicates"
    # Delivered: the stored queue is empty, a restart brings nothing back.
    edge.stop()
    edge.start()
    wait_state(remote.port, b"1")
    assert "stored messages loaded for the remote" not in edge.output()
    edge.stop()


def _try_resume(rsub):
    try:
        ack = rsub.connect(clean=False)
        return ack.reason == 0
    except (OSError, TimeoutError):
        return False


# ---------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bridge-certs")
    make_ca(d, "ca")
    make_ca(d, "ca2")
    make_cert(d, "ca", "server", "localhost", True)
    make_cert(d, "ca", "edge", "edge", False)
    return d


def test_tls_to_the_remote_with_a_test_ca(start_broker, remotes, certs):
    tls_port = free_port()
    remote = remotes(extra=f"listener {tls_port} 127.0.0.1\ncafile {certs}/ca.crt\n"
                           f"certfile {certs}/server.crt\nkeyfile {certs}/server.key\n"
                           "require_certificate true\n")
    good = bridge_toml(tls_port, ["secure/# out 1"], name="good",
                       extra=f"bridge_cafile = \"{certs}/ca.crt\"\nbridge_certfile = \"{certs}/edge.crt\"\n"
                             f"bridge_keyfile = \"{certs}/edge.key\"\n")
    wrong_ca = bridge_toml(tls_port, ["secure/# out 1"], name="wrongca",
                           extra=f"bridge_cafile = \"{certs}/ca2.crt\"\nbridge_certfile = \"{certs}/edge.crt\"\n"
                                 f"bridge_keyfile = \"{certs}/edge.key\"\n")
    capath = certs / "capath"
    if not capath.exists():
        capath.mkdir()
        shutil.copy(certs / "ca.crt", capath / "ca.crt")
        subprocess.run(["openssl", "rehash", str(capath)], check=True, capture_output=True)
    by_capath = bridge_toml(tls_port, ["secure/# out 1"], name="capath",
                            extra=f"bridge_capath = \"{capath}\"\nbridge_certfile = \"{certs}/edge.crt\"\n"
                                  f"bridge_keyfile = \"{certs}/edge.key\"\nbridge_tls_version = \"tlsv1.2\"\n"
                                  "bridge_alpn = \"mqtt\"\n")
    edge = start_edge(start_broker, good + wrong_ca + by_capath)
    wait_state(remote.port, b"1", name="good")
    wait_state(remote.port, b"1", name="capath")
    rsub = sub(remote.port, [("secure/#", 1)])
    pub = Client(edge.port)
    pub.connect("lpub")
    pub.publish("secure/a", b"over tls", qos=1)
    expect_pub(rsub, "secure/a", b"over tls")
    # The bridge that does not trust the server's CA never connects, and says why.
    wait_or_fail(lambda: "Bridge wrongca" in edge.output() and "certificate verify failed" in edge.output(),
               what="the certificate error in the log")
    assert "Bridge wrongca: 127.0.0.1" in edge.output()
    assert "connected to" not in "\n".join(l for l in edge.output().splitlines() if "wrongca" in l)
    assert edge.stop() == 0, edge.output()


# ---------------------------------------------------------------- notifications

def test_notifications_state_changes(start_broker, remotes):
    remote = remotes()
    edge = start_edge(start_broker, bridge_toml(remote.port, ["n/# out 0"]))
    wait_state(remote.port, b"1")
    wait_state(edge.port, b"1")  # also retained locally
    # Killed: the remote publishes our will, 0, retained.
    edge.proc.send_signal(signal.SIGKILL)
    edge.proc.wait()
    edge.log.close()
    wait_state(remote.port, b"0")
    # Started again: 1; a clean stop says 0 itself.
    edge2 = start_edge(start_broker, bridge_toml(remote.port, ["n/# out 0"]))
    wait_state(remote.port, b"1")
    watcher = sub(remote.port, [(state_topic(), 0)])
    assert watcher.expect(PUBLISH).payload == b"1"
    assert edge2.stop() == 0, edge2.output()
    p = watcher.expect(PUBLISH, timeout=5 * SLOW)
    assert p.payload == b"0"
    # The remote went away: the local state goes to 0.
    edge3 = start_edge(start_broker, bridge_toml(remote.port, ["n/# out 0"]))
    wait_state(edge3.port, b"1")
    remote.stop()
    wait_state(edge3.port, b"0")
    assert edge3.stop() == 0, edge3.output()


# ---------------------------------------------------------------- refusals and bad config

def test_remote_refusing_the_credentials(start_broker, remotes, tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "edge", "right"], check=True,
                   capture_output=True)
    remote = remotes(extra=f"allow_anonymous false\npassword_file {pw}\n")
    edge = start_edge(start_broker, bridge_toml(remote.port, ["a/# out 1"], version="mqttv50",
                                                extra='remote_username = "edge"\nremote_password = "wrong"\n'))
    wait_or_fail(lambda: "refused the connection" in edge.output(), what="the refusal in the log")
    time.sleep(3)
    out = edge.output()
    refusals = out.count("refused the connection")
    # restart_timeout = 1: a few attempts in ~3 s, not a busy loop.
    assert 1 <= refusals <= 6, out
    assert "Bad user name or password (0x86)" in out or "Not authorized (0x87)" in out, out
    # Local clients are served meanwhile.
    c = Client(edge.port)
    assert c.connect("local").reason == 0
    c.ping()
    assert edge.stop() == 0, edge.output()


BAD = [
    ("unknown direction", 'topic = ["a/# sideways 1"]\n',
     "{f}:4:10: bridge[0].topic: unknown direction 'sideways' in 'a/# sideways 1' (expected out, in or both)"),
    ("bad address", 'topic = ["a/#"]\naddress = "127.0.0.1:70000"\n',
     "{f}:5:11: bridge[0].address: '127.0.0.1:70000': port '70000' is not a number from 1 to 65535"),
    ("missing certificate file", 'topic = ["a/#"]\nbridge_cafile = "/nonexistent/ca.crt"\n',
     "{f}:5:17: bridge[0].bridge_cafile: cannot read '/nonexistent/ca.crt': No such file or directory"),
]


@pytest.mark.parametrize("name,text,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_bridge_config(tmp_path, name, text, expected):
    conf = tmp_path / "bad.toml"
    head = '[[bridge]]\nname = "b"\n' + ('address = "127.0.0.1:1883"\n' if "address" not in text else "\n")
    conf.write_text(head + text)
    proc = subprocess.run([str(MQTTOOLSD), "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1, proc.stderr
    assert expected.format(f=conf) in proc.stderr.splitlines(), proc.stderr


# ---------------------------------------------------------------- reload

def test_sighup_adds_changes_and_removes_bridges(start_broker, remotes, tmp_path):
    remote = remotes()
    conf = tmp_path / "edge.toml"
    conf.write_text("allow_anonymous = true\n")
    edge = start_broker(args=("-c", str(conf)))
    local = Client(edge.port)
    assert local.connect("stays", clean_start=True).reason == 0
    local.subscribe([("r/#", 1)])
    rsub = sub(remote.port, [("r/#", 1), ("z/#", 1)])
    # Added.
    conf.write_text("allow_anonymous = true\n" + bridge_toml(remote.port, ["r/# out 1"]))
    edge.proc.send_signal(signal.SIGHUP)
    wait_state(remote.port, b"1")
    pub = Client(edge.port)
    pub.connect("pub")
    pub.publish("r/1", b"x", qos=1)
    expect_pub(rsub, "r/1", b"x")
    expect_pub(local, "r/1", b"x")
    # Changed: the topics now map r/ to z/.
    conf.write_text("allow_anonymous = true\n" + bridge_toml(remote.port, ["# out 1 r/ z/"]))
    edge.proc.send_signal(signal.SIGHUP)
    wait_or_fail(lambda: "configuration changed, restarting" in edge.output(), what="the restart")
    wait_state(remote.port, b"1")

    def arrives():
        pub.publish("r/2", b"y", qos=1)
        try:
            p = rsub.expect(PUBLISH, timeout=0.3)
            rsub.ack(p)
            return p.topic == "z/2"
        except TimeoutError:
            return False
    wait_or_fail(arrives, what="r/2 as z/2 on the remote")
    # Removed: the remote sees the state go to 0 and nothing more is bridged.
    conf.write_text("allow_anonymous = true\n")
    edge.proc.send_signal(signal.SIGHUP)
    wait_state(remote.port, b"0")
    rsub.messages(quiet=0.3)
    pub.publish("r/3", b"z", qos=1)
    rsub.nothing(0.5)
    # The local subscriber was never disconnected.
    assert [m.topic for m in local.messages(quiet=0.3)][-1:] == ["r/3"]
    local.ping()
    assert edge.stop() == 0, edge.output()


# ---------------------------------------------------------------- counters, queue bounds, start types

def metrics(port, name="b"):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("mqttools_bridge_") and f'{{bridge="{name}"}}' in line:
            metric, value = line.split(" ")
            out[metric.split("{")[0][len("mqttools_bridge_"):]] = int(value)
    return out


def test_counters_queue_bound_and_qos0_drops(start_broker, remotes):
    remote = remotes()
    mport = free_port()
    edge = start_edge(start_broker, "sys_interval = 1\nmax_queued_messages = 5\n"
                      f"[metrics]\nport = {mport}\n" +
                      bridge_toml(remote.port, ["m/# out 1", "z/# out 0", "in/# in 0"]))
    wait_state(remote.port, b"1")
    rsub = sub(remote.port, [("m/#", 1)])
    pub = Client(edge.port)
    pub.connect("lpub")
    for i in range(3):
        pub.publish("m/x", b"%d" % i, qos=1, packet_id=i + 1)
    for i in range(3):
        expect_pub(rsub, "m/x", b"%d" % i)
    rpub = Client(remote.port)
    rpub.connect("rpub")
    rpub.publish("in/1", b"abc")
    wait_or_fail(lambda: metrics(mport).get("messages_received_total") == 1, what="one message received")
    m = metrics(mport)
    # Sent: three messages and the state notification "1".
    assert (m["connected"], m["messages_sent_total"], m["bytes_sent_total"], m["bytes_received_total"]) == (1, 4, 4, 3)
    # The remote goes away: QoS 0 is dropped and counted, QoS 1 queued up to
    # max_queued_messages, the rest dropped and counted.
    remote.stop()
    wait_state(edge.port, b"0")
    for i in range(2):
        pub.publish("z/x", b"q0")
    for i in range(8):
        assert pub.publish("m/y", b"q1", qos=1, packet_id=i + 1).reason == 0
    wait_or_fail(lambda: metrics(mport).get("dropped_total") == 5, what="5 dropped")
    m = metrics(mport)
    assert (m["connected"], m["queued_messages"], m["reconnects_total"]) == (0, 5, 0)
    # The same in $SYS.
    s = Client(edge.port)
    s.connect("sys")
    s.subscribe([("$SYS/broker/bridge/b/#", 0)])

    def sys_values():
        got = {}
        try:
            while True:
                p = s.recv(0.3)
                got[p.topic] = p.payload
        except TimeoutError:
            pass
        return got
    vals = {}
    wait_or_fail(lambda: vals.update(sys_values()) or vals.get("$SYS/broker/bridge/b/queued") == b"5",
               what="$SYS queued = 5")
    assert vals["$SYS/broker/bridge/b/dropped"] == b"5"
    assert vals["$SYS/broker/bridge/b/connected"] == b"0"
    # Back: the queue drains, and the reconnection is counted.
    remote.start()
    wait_or_fail(lambda: metrics(mport).get("queued_messages") == 0 and metrics(mport).get("connected") == 1,
               what="the queue drained after reconnecting")
    assert metrics(mport)["reconnects_total"] == 1
    assert edge.stop() == 0, edge.output()


def test_start_type_lazy_and_once(start_broker, remotes):
    remote = remotes()
    rsub = sub(remote.port, [("l/#", 1)])
    edge = start_edge(start_broker, bridge_toml(remote.port, ["l/# out 1"], name="lazy",
                                                extra='start_type = "lazy"\nthreshold = 3\nidle_timeout = 1\n') +
                      bridge_toml(remote.port, ["o/# out 1"], name="once", extra='start_type = "once"\n'))
    wait_state(edge.port, b"1", name="once")
    pub = Client(edge.port)
    pub.connect("lpub")
    pub.publish("l/1", b"1", qos=1, packet_id=1)
    pub.publish("l/2", b"2", qos=1, packet_id=2)
    rsub.nothing(0.5)  # below the threshold: not connected
    assert "edge-lazy" not in remote.output()
    pub.publish("l/3", b"3", qos=1, packet_id=3)
    for i in (1, 2, 3):
        expect_pub(rsub, f"l/{i}", str(i).encode())
    wait_state(edge.port, b"1", name="lazy")
    # Idle for idle_timeout: it disconnects again.
    wait_state(edge.port, b"0", name="lazy")
    # once: after the remote went away it does not come back.
    remote.stop()
    wait_state(edge.port, b"0", name="once")
    remote.start()
    time.sleep(2.5)
    assert "Bridge once: start_type once: not reconnecting" in edge.output()
    assert edge.output().count("Bridge once: connected to") == 1
    assert edge.stop() == 0, edge.output()


def test_address_failover(start_broker, remotes):
    remote = remotes()
    dead = free_port()  # nothing listens there
    conf = bridge_toml(remote.port, ["f/# out 1"]).replace(
        f'address = "127.0.0.1:{remote.port}"', f'address = ["127.0.0.1:{dead}", "127.0.0.1:{remote.port}"]')
    edge = start_edge(start_broker, conf)
    wait_state(remote.port, b"1")
    out = edge.output()
    assert f"127.0.0.1:{dead}: connect: Connection refused" in out, out
    assert f"connected to 127.0.0.1:{remote.port}" in out, out
    rsub = sub(remote.port, [("f/#", 1)])
    pub = Client(edge.port)
    pub.connect("lpub")
    pub.publish("f/1", b"x", qos=1)
    expect_pub(rsub, "f/1", b"x")
    # round_robin = false (the default): the primary comes back, the bridge
    # moves back to it (probed every max(restart_timeout, 5) seconds).
    primary = remotes(port=dead)
    wait_or_fail(lambda: "answers again, moving back to it" in edge.output(), timeout=15,
               what="the move back to the primary")
    wait_state(primary.port, b"1")
    assert edge.stop() == 0, edge.output()


def test_notification_topic_local_only_and_outgoing_retain(start_broker, remotes):
    remote = remotes()
    edge = start_edge(start_broker, bridge_toml(remote.port, ["r/# out 1"], extra=(
        'notification_topic = "edge/up"\nnotifications_local_only = true\nbridge_outgoing_retain = false\n')))
    wait_state(edge.port, b"1", topic="edge/up")
    # Local only: the remote has no state message (and no will of ours).
    assert read_retained(remote.port, "edge/up") is None
    rsub = sub(remote.port, [("r/#", 1)])
    pub = Client(edge.port)
    pub.connect("lpub")
    pub.publish("r/x", b"v", qos=1, retain=True)
    expect_pub(rsub, "r/x", b"v")
    # bridge_outgoing_retain = false: it crossed, but not as retained.
    assert read_retained(remote.port, "r/x") is None
    assert read_retained(edge.port, "r/x") == b"v"
    assert edge.stop() == 0, edge.output()


# ---------------------------------------------------------------- loops (try_private, No Local, broker ids)

def test_try_private_to_mqttoolsd_both_ways(start_broker):
    """A 3.1.1 bridge with try_private (protocol level 0x84) is accepted and
    treated as a bridge: its subscriptions get No Local (no echo) and Retain
    As Published (a retained message crosses as retained)."""
    cloud = start_broker(config="allow_anonymous = true\n")
    edge = start_edge(start_broker, bridge_toml(cloud.port, ["t/# both 1"]))
    wait_state(cloud.port, b"1")
    assert "is a bridge (try_private)" in cloud.output(), cloud.output()
    csub = sub(cloud.port, [("t/#", 1)])
    lsub = sub(edge.port, [("t/#", 1)])
    lpub = Client(edge.port)
    lpub.connect("lpub")
    cpub = Client(cloud.port)
    cpub.connect("cpub")
    lpub.publish("t/e", b"1", qos=1)
    cpub.publish("t/c", b"2", qos=1)
    want = ["t/c", "t/e"]
    assert sorted(m.topic for m in lsub.messages(quiet=1.0 * SLOW)) == want
    assert sorted(m.topic for m in csub.messages(quiet=0.5 * SLOW)) == want
    # Retained on the cloud: comes down retained, so the edge keeps it too.
    cpub.publish("t/r", b"kept", qos=1, retain=True, packet_id=2)
    expect_pub(lsub, "t/r", b"kept")
    wait_or_fail(lambda: read_retained(edge.port, "t/r") == b"kept", what="t/r retained on the edge")
    assert edge.stop() == 0, edge.output()


def test_mosquitto_bridging_into_mqttoolsd_with_try_private(start_broker, remotes):
    """The receiving side: Debian's mosquitto bridges `t/# both` into
    mqttoolsd with try_private; each message reaches each side once."""
    edge = start_broker(config="allow_anonymous = true\n")
    remote = remotes(extra=(f"connection m\naddress 127.0.0.1:{edge.port}\ntopic t/# both 1\n"
                            "bridge_protocol_version mqttv311\ntry_private true\nnotifications false\n"
                            "cleansession true\nrestart_timeout 1\nremote_clientid from-mosquitto\n"))
    wait_or_fail(lambda: "from-mosquitto is a bridge (try_private)" in edge.output(), what="the bridge on mqttoolsd")
    lsub = sub(edge.port, [("t/#", 1)])
    rsub = sub(remote.port, [("t/#", 1)])

    def crossed():
        # Mosquitto subscribes after its CONNACK: probe until a message crosses.
        rpub = Client(remote.port)
        rpub.connect("")
        rpub.publish("t/probe", b"", qos=1)
        rpub.close()
        try:
            return any(m.topic == "t/probe" for m in lsub.messages(quiet=0.3))
        finally:
            rsub.messages(quiet=0.2)
    wait_or_fail(crossed, what="mosquitto's bridge to subscribe")
    lpub = Client(edge.port)
    lpub.connect("lpub")
    rpub = Client(remote.port)
    rpub.connect("rpub")
    lpub.publish("t/e", b"1", qos=1)
    rpub.publish("t/m", b"2", qos=1)
    want = ["t/e", "t/m"]
    assert sorted(m.topic for m in lsub.messages(quiet=1.0 * SLOW)) == want
    assert sorted(m.topic for m in rsub.messages(quiet=0.5 * SLOW)) == want
    remote.stop()
    assert edge.stop() == 0, edge.output()


def test_two_mqttoolsd_bridging_each_other(start_broker, tmp_path):
    """A bridges `t/# both` to B and B bridges `t/# both` to A (MQTT 5):
    the broker ids of the bridge handshake keep every message to one link
    and never back where it came from: each subscriber gets each message
    once and the bridge counters stop growing."""
    a_metrics, b_metrics = free_port(), free_port()
    a = start_broker(config=f"allow_anonymous = true\n[metrics]\nport = {a_metrics}\n")
    b = start_edge(start_broker, f"[metrics]\nport = {b_metrics}\n" +
                   bridge_toml(a.port, ["t/# both 1"], name="ba", version="mqttv50"))
    # A's configuration names B's port: added by SIGHUP.
    (tmp_path / f"mqttoolsd-{a.port}.toml").write_text(
        f"allow_anonymous = true\n[metrics]\nport = {a_metrics}\n" +
        bridge_toml(b.port, ["t/# both 1"], name="ab", version="mqttv50"))
    a.proc.send_signal(signal.SIGHUP)
    wait_state(b.port, b"1", name="ab")
    wait_state(a.port, b"1", name="ba")
    assert "is the bridge of mqttoolsd" in a.output() and "is the bridge of mqttoolsd" in b.output()
    asub = sub(a.port, [("t/#", 1)])
    bsub = sub(b.port, [("t/#", 1)])
    apub = Client(a.port)
    apub.connect("apub")
    bpub = Client(b.port)
    bpub.connect("bpub")
    apub.publish("t/a", b"1", qos=1)
    bpub.publish("t/b", b"2", qos=1)
    apub.publish("t/a0", b"3", qos=0)
    want = ["t/a", "t/a0", "t/b"]
    assert sorted(m.topic for m in asub.messages(quiet=1.0 * SLOW)) == want
    assert sorted(m.topic for m in bsub.messages(quiet=0.5 * SLOW)) == want

    def counters():
        return metrics(a_metrics, "ab"), metrics(b_metrics, "ba")
    first = counters()
    time.sleep(1.0 * SLOW)
    assert counters() == first
    # Each message crossed once: two from A (plus the state "1"), one from B.
    (ab, ba) = first
    assert (ab["messages_sent_total"], ba["messages_sent_total"]) == (3, 2), first
    assert (ab["messages_received_total"], ba["messages_received_total"]) == (0, 0), first
    assert b.stop() == 0, b.output()
    assert a.stop() == 0, a.output()
