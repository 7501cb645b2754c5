"""TLS listeners: certificates made by `openssl` at test time, spoken to by
Debian's mosquitto clients, Python's ssl module and the mqttools client."""
import os
import signal
import ssl
import subprocess
import time

import pytest

from conftest import MQTTOOLS, MQTTOOLSD, free_port, wait_for_port
from test_security_mqtt import RawClient

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

NOT_AUTHORIZED = 0x87


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_ca(d, name):
    openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN={name}")


def make_cert(d, ca, name, cn, server):
    (d / f"{name}.ext").write_text(
        ("subjectAltName=DNS:localhost,IP:127.0.0.1\n" if server else "") + "basicConstraints=CA:FALSE\n")
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca")
    make_ca(d, "ca2")
    make_cert(d, "ca", "server", "localhost", True)
    make_cert(d, "ca2", "server2", "localhost", True)
    make_cert(d, "ca", "alice", "alice", False)
    make_cert(d, "ca2", "intruder", "alice", False)
    return d


def tls_broker(start_broker, certs, tmp_path, extra_listener="", extra=""):
    """A broker with its plain -p listener plus one TLS listener; returns
    (broker, tls_port). The server files are copies, so a test can replace
    them before a reload."""
    tls_port = free_port()
    for name in ("server.crt", "server.key"):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    conf = (f"{extra}\n[[listener]]\nport = {tls_port}\nbind = \"127.0.0.1\"\n"
            f"certfile = \"{tmp_path / 'server.crt'}\"\nkeyfile = \"{tmp_path / 'server.key'}\"\n"
            f"cafile = \"{certs / 'ca.crt'}\"\n{extra_listener}\n")
    b = start_broker(config=conf)
    wait_for_port(tls_port, proc=b.proc)
    return b, tls_port


def client_context(cafile, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=str(cafile))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def mosquitto(tool, port, cafile, *args, timeout=15):
    cmd = [tool, "-h", "localhost", "-p", str(port), "--cafile", str(cafile), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def test_mosquitto_clients_over_tls(start_broker, certs, tmp_path):
    b, port = tls_broker(start_broker, certs, tmp_path, extra="allow_anonymous = true")
    r = mosquitto("mosquitto_pub", port, certs / "ca.crt", "-t", "tls/retained", "-m", "secure", "-r", "-q", "1")
    assert r.returncode == 0, r.stderr
    r = mosquitto("mosquitto_sub", port, certs / "ca.crt", "-t", "tls/#", "-C", "1", "-W", "10", "-v")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == "tls/retained secure"
    # A client that trusts another CA refuses the server.
    r = mosquitto("mosquitto_pub", port, certs / "ca2.crt", "-t", "x", "-m", "y")
    assert r.returncode != 0
    # The same message is visible on the plain listener.
    c = RawClient(b.port)
    assert c.connect(client_id="plain")[1] == 0
    c.subscribe(["tls/#"])
    assert c.next_publish()[:2] == ("tls/retained", b"secure")
    c.disconnect()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_minimum_version_and_plain_bytes(start_broker, certs, tmp_path):
    b, port = tls_broker(start_broker, certs, tmp_path, extra="allow_anonymous = true")
    ctx = client_context(certs / "ca.crt")
    c = RawClient(port, tls=ctx)
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert c.connect(client_id="py-tls")[1] == 0
    c.disconnect()
    old = client_context(certs / "ca.crt")
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        RawClient(port, tls=old).connect(client_id="old")
    # Plain MQTT on the TLS port gets nowhere, and the broker carries on.
    raw = RawClient(port, tls=None)
    with pytest.raises(Exception):
        raw.connect(client_id="plain-on-tls")
    raw.close()
    c = RawClient(port, tls=ctx)
    assert c.connect(client_id="again")[1] == 0
    c.disconnect()


def test_require_certificate_and_identity_as_username(start_broker, certs, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic readwrite alice/#\n")
    b, port = tls_broker(start_broker, certs, tmp_path,
                         extra=f'allow_anonymous = false\nacl_file = "{acl}"',
                         extra_listener="require_certificate = true\nuse_identity_as_username = true")
    # No client certificate: refused during the handshake.
    r = mosquitto("mosquitto_pub", port, certs / "ca.crt", "-t", "alice/x", "-m", "y")
    assert r.returncode != 0
    # A certificate with the right CN but from another CA: refused.
    r = mosquitto("mosquitto_pub", port, certs / "ca.crt", "--cert", certs / "intruder.crt",
                  "--key", certs / "intruder.key", "-t", "alice/x", "-m", "y")
    assert r.returncode != 0
    # alice's certificate makes her "alice" for the ACL, whatever username she sends.
    ctx = client_context(certs / "ca.crt", certs / "alice.crt", certs / "alice.key")
    c = RawClient(port, tls=ctx)
    assert c.connect(client_id="a1", username="bob")[1] == 0
    assert c.publish("alice/x", "mine", qos=1) in (0, 0x10)
    assert c.publish("bob/x", "not mine", qos=1, packet_id=2) == NOT_AUTHORIZED
    c.disconnect()
    r = mosquitto("mosquitto_pub", port, certs / "ca.crt", "--cert", certs / "alice.crt",
                  "--key", certs / "alice.key", "-t", "alice/x", "-m", "y", "-q", "1")
    assert r.returncode == 0, r.stderr


def test_sighup_swaps_in_new_certificates(start_broker, certs, tmp_path):
    b, port = tls_broker(start_broker, certs, tmp_path, extra="allow_anonymous = true")
    old_ctx = client_context(certs / "ca.crt")
    new_ctx = client_context(certs / "ca2.crt")
    kept = RawClient(port, tls=old_ctx)
    assert kept.connect(client_id="kept")[1] == 0
    # Replace the files in place and ask for a reload.
    (tmp_path / "server.crt").write_bytes((certs / "server2.crt").read_bytes())
    (tmp_path / "server.key").write_bytes((certs / "server2.key").read_bytes())
    b.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        try:
            c = RawClient(port, tls=new_ctx)
            break
        except ssl.SSLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert c.connect(client_id="new")[1] == 0
    c.disconnect()
    with pytest.raises(ssl.SSLError):
        RawClient(port, tls=old_ctx)
    # The connection made before the reload still works.
    kept.ping()
    kept.disconnect()


@pytest.mark.skipif(not MQTTOOLS.exists(), reason="mqttools not built")
def test_mqttools_client_over_tls(start_broker, certs, tmp_path):
    b, port = tls_broker(start_broker, certs, tmp_path, extra="allow_anonymous = true")
    base = [str(MQTTOOLS), "publish", "--host", "localhost", "--port", str(port), "--retain"]
    r = subprocess.run(base + ["--cafile", str(certs / "ca.crt"), "from/mqttools", "hi"],
                       capture_output=True, timeout=15)
    assert r.returncode == 0, r.stderr
    # A CA that did not sign the server's certificate: refused.
    r = subprocess.run(base + ["--cafile", str(certs / "ca2.crt"), "from/other", "no"],
                       capture_output=True, timeout=15)
    assert r.returncode != 0
    c = RawClient(b.port)
    assert c.connect(client_id="check")[1] == 0
    c.subscribe(["from/#"])
    assert c.next_publish()[:2] == ("from/mqttools", b"hi")
    c.disconnect()


def test_many_simultaneous_handshakes_all_complete_while_plain_clients_are_served(start_broker, certs, tmp_path):
    """TLS handshake steps are rationed per reactor turn (Broker::
    setup_readable): the ones over the budget wait in a FIFO queue for
    the next turns. 120 handshakes started together must all finish, each client
    getting its CONNACK and its own message back, while a plain subscriber
    keeps receiving a plain publisher's messages in between."""
    import threading
    b, port = tls_broker(start_broker, certs, tmp_path, extra="allow_anonymous = true")
    ctx = client_context(certs / "ca.crt")
    sub = RawClient(b.port)
    assert sub.connect(client_id="plain-sub")[1] == 0
    sub.subscribe(["plain/#"])
    pub = RawClient(b.port)
    assert pub.connect(client_id="plain-pub")[1] == 0
    count = 120
    start = threading.Barrier(count + 1)
    results = [None] * count

    def tls_client(i):
        try:
            start.wait(timeout=30)
            c = RawClient(port, tls=ctx, timeout=60)
            reason = c.connect(client_id=f"storm-{i}")[1]
            c.subscribe([f"storm/{i}"])
            c.publish(f"storm/{i}", str(i).encode())
            got = c.next_publish(timeout=60)[:2]
            c.disconnect()
            results[i] = (reason, got)
        except Exception as e:  # reported below with the client's number
            results[i] = ("error", repr(e))

    threads = [threading.Thread(target=tls_client, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    start.wait(timeout=30)
    # While the handshakes run: plain messages keep flowing.
    for n in range(20):
        pub.publish(f"plain/{n}", b"x")
        assert sub.next_publish(timeout=30)[:2] == (f"plain/{n}", b"x")
    for t in threads:
        t.join(timeout=120)
    bad = [(i, r) for i, r in enumerate(results) if r != (0, (f"storm/{i}", str(i).encode()))]
    assert not bad, bad[:5]
    pub.disconnect()
    sub.disconnect()
