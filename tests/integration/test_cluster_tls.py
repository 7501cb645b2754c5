"""The cluster over a TLS nats-server (issue 26): the node's data connection
speaks TLS on the reactor's own socket (NatsWire + nats_tls), not through
libnats. Certificates are made by `openssl` at test time; nats-server has a
`tls {}` block on a loopback port. That a message took the reactor's path is
shown two ways: the node's log line for it, and nats-server's /connz, where
the data connection ("mqttoolsd <node> data") reports our CONNECT's
lang "C++" (libnats says "C") and its TLS version."""
import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from conftest import Broker, SANITIZED, free_port, wait_for_port, wait_until
from mqttwire import PUBLISH, sub_options
from test_cluster import Nats, connect, link, read_for, subscribed
from test_security_tls import make_ca, make_cert

NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"
pytestmark = pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed")
SLOW = 3 if SANITIZED else 1


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("nats-certs")
    make_ca(d, "ca")
    make_ca(d, "other")
    make_cert(d, "ca", "server", "localhost", True)  # DNS:localhost, IP:127.0.0.1
    make_cert(d, "ca", "node", "node", False)
    make_cert(d, "other", "stranger", "node", False)
    return d


class TlsNats(Nats):
    """nats-server with JetStream whose client port requires TLS; `verify`:
    clients must present a certificate of the test CA. A monitoring port
    serves /connz. Stopped as test_cluster's Nats is."""

    def __init__(self, tmp_path, certs, verify):
        self.certs, self.verify, self.http = certs, verify, free_port()
        super().__init__(tmp_path)

    def start(self):
        conf = self.store.parent / f"nats-{self.port}.conf"
        certs = self.certs
        conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\nhttp: "127.0.0.1:{self.http}"\n'
            f'jetstream {{ store_dir: "{self.store}" }}\n'
            # A handshake on a loaded host (and under ASan) may take longer
            # than the default half second.
            f'tls {{\n  cert_file: "{certs / "server.crt"}"\n  key_file: "{certs / "server.key"}"\n'
            f'  ca_file: "{certs / "ca.crt"}"\n  verify: {"true" if self.verify else "false"}\n  timeout: 10\n}}\n')
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc)
        wait_for_port(self.http, proc=self.proc)

    def connections(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/connz", timeout=5) as r:
            return json.load(r).get("connections") or []


@pytest.fixture
def tls_nats(tmp_path, certs):
    started = []

    def start(verify=False):
        n = TlsNats(tmp_path, certs, verify)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


@pytest.fixture
def tls_nodes(tmp_path):
    """Factory: tls_nodes(url, node_id, tls_keys) -> Broker."""
    started = []

    def start(url, node_id, tls_keys=""):
        b = Broker(tmp_path, config=(f"allow_anonymous = true\n[cluster]\nnats_url = \"{url}\"\n"
                                     f"node_id = \"{node_id}\"\n{tls_keys}"))
        started.append(b)
        return b

    yield start
    for b in started:
        code = b.stop()
        if code != 0:
            pytest.fail(f"node exited with {code}:\n{b.log_path.read_text(errors='replace')[-3000:]}")


def keys(certs, ca="ca.crt", cert=None):
    out = f'cafile = "{certs / ca}"\n'
    if cert:
        out += f'certfile = "{certs / (cert + ".crt")}"\nkeyfile = "{certs / (cert + ".key")}"\n'
    return out


def data_connection(nats, node_id):
    """nats-server's view of the node's data connection, once it is there."""
    name = f"mqttoolsd {node_id} data"

    def find():
        for c in nats.connections():
            if c.get("name") == name:
                return c
        return None

    return wait_until(find, timeout=15 * SLOW, step=0.1)


def assert_on_the_reactor_over_tls(nats, node):
    node_id = node_id_of(node)
    c = data_connection(nats, node_id)
    assert c, f"no data connection of {node_id} in /connz: {nats.connections()}"
    # Our own CONNECT says "C++"; libnats' says "C".
    assert c.get("lang") == "C++", c
    assert c.get("tls_version", "").startswith("1."), c
    assert wait_until(lambda: "NATS data connection on the reactor to" in node.output(), timeout=10 * SLOW), \
        node.output()[-3000:]


def node_id_of(node):
    for line in node.tmp_path.joinpath(f"mqttoolsd-{node.port}.toml").read_text().splitlines():
        if line.startswith("node_id"):
            return line.split('"')[1]
    raise AssertionError("no node_id")


def cross_both_qos(a, b, tag):
    """QoS 0 and QoS 1 messages published on `a` reach a subscriber on `b`,
    in order, each once."""
    sub = subscribed(b.port, f"{tag}-sub", f"{tag}/#", qos=1)
    pub = connect(a.port, f"{tag}-pub")
    link(pub, sub, f"{tag}/probe", timeout=15)
    for i in range(50):
        pub.publish(f"{tag}/q0", f"zero {i}".encode())
    for i in range(50):
        pub.publish(f"{tag}/q1", f"one {i}".encode(), qos=1)
    got = []
    deadline = time.monotonic() + 15 * SLOW
    while len(got) < 100 and time.monotonic() < deadline:
        for p in read_for(sub, 0.5):
            sub.ack(p)
            got.append(p)
    q0 = [p.payload.decode() for p in got if p.topic == f"{tag}/q0"]
    q1 = [p.payload.decode() for p in got if p.topic == f"{tag}/q1"]
    assert q0 == [f"zero {i}" for i in range(50)]
    assert q1 == [f"one {i}" for i in range(50)]
    assert all(p.qos == 1 for p in got if p.topic == f"{tag}/q1")
    pub.disconnect()
    sub.disconnect()


def test_messages_cross_over_tls_on_the_reactor(tls_nats, tls_nodes, certs):
    nats = tls_nats(verify=False)
    # One node names the server by DNS name (SNI, DNS entry), the other by
    # address (the certificate's IP entry); both verify it against the CA.
    n1 = tls_nodes(f"tls://localhost:{nats.port}", "node1", keys(certs))
    n2 = tls_nodes(f"nats://127.0.0.1:{nats.port}", "node2", keys(certs))
    assert_on_the_reactor_over_tls(nats, n1)
    assert_on_the_reactor_over_tls(nats, n2)
    cross_both_qos(n1, n2, "a2b")
    cross_both_qos(n2, n1, "b2a")


def test_mutual_tls_a_node_without_a_certificate_is_refused(tls_nats, tls_nodes, certs):
    nats = tls_nats(verify=True)
    n1 = tls_nodes(f"tls://127.0.0.1:{nats.port}", "node1", keys(certs, cert="node"))
    n2 = tls_nodes(f"tls://127.0.0.1:{nats.port}", "node2", keys(certs, cert="node"))
    assert_on_the_reactor_over_tls(nats, n1)
    assert_on_the_reactor_over_tls(nats, n2)
    assert "client certificate presented" in n1.output()
    cross_both_qos(n1, n2, "mtls")
    # A certificate from another CA, and none at all: refused by the server.
    n3 = tls_nodes(f"tls://127.0.0.1:{nats.port}", "node3", keys(certs, cert="stranger"))
    n4 = tls_nodes(f"tls://127.0.0.1:{nats.port}", "node4", keys(certs))
    for n in (n3, n4):
        assert wait_until(lambda: "cannot reach NATS at" in n.output(), timeout=15 * SLOW), n.output()[-3000:]
    assert_refused_and_isolated(nats, n1, n3)
    assert_refused_and_isolated(nats, n1, n4)


def test_wrong_ca_is_logged_nothing_crosses_and_no_busy_loop(tls_nats, tls_nodes, certs):
    nats = tls_nats(verify=False)
    good = tls_nodes(f"tls://127.0.0.1:{nats.port}", "node1", keys(certs))
    assert_on_the_reactor_over_tls(nats, good)
    bad = tls_nodes(f"tls://127.0.0.1:{nats.port}", "node2", keys(certs, ca="other.crt"))
    assert wait_until(lambda: "certificate verify failed" in bad.output(), timeout=15 * SLOW), bad.output()[-3000:]
    log = bad.output()
    # The line names the server and the reason.
    line = next(x for x in log.splitlines() if "cannot reach NATS at" in x and "TLS with" in x)
    assert f"127.0.0.1:{nats.port}" in line and "certificate verify failed" in line, line
    assert_refused_and_isolated(nats, good, bad)
    # Retrying with back-off, not spinning: little CPU over a few seconds.
    before = cpu_seconds(bad.proc.pid)
    time.sleep(3)
    used = cpu_seconds(bad.proc.pid) - before
    assert used < 1.0 * SLOW, f"{used:.2f} s of CPU in 3 s while NATS refuses us"
    assert bad.proc.poll() is None


def assert_refused_and_isolated(nats, good, bad):
    """`bad` has no data connection, serves its own clients, and nothing
    published on `good` reaches it (nor the other way)."""
    names = [c.get("name") for c in nats.connections()]
    assert f"mqttoolsd {node_id_of(bad)} data" not in names, names
    tag = f"iso{bad.port}"
    there = subscribed(bad.port, f"{tag}-there", f"{tag}/#")
    here = subscribed(good.port, f"{tag}-here", f"{tag}/#")
    local = connect(bad.port, f"{tag}-local")
    local.publish(f"{tag}/local", b"served")
    assert [p.payload for p in read_for(there, 2 * SLOW)] == [b"served"]
    other = connect(good.port, f"{tag}-pub")
    for i in range(20):
        other.publish(f"{tag}/x", b"must not cross")
    assert read_for(there, 1.5 * SLOW) == []
    # The good node got its own publishes and none from the isolated one.
    assert [p.payload for p in read_for(here, 0.5 * SLOW)] == [b"must not cross"] * 20
    for c in (there, here, local, other):
        c.disconnect()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
