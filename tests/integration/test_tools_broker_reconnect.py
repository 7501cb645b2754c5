"""`mqttools broker` (the same broker in the foreground, TLS included),
`subscribe` reconnecting when its broker restarts, and TLS client options."""
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import MQTTOOLS, MQTTOOLSD, free_port, wait_for_port
from test_tools_subscribe_publish import block, mqttools, publish
from test_tools_subscribe_publish import subscribers  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not (MQTTOOLS.exists() and MQTTOOLSD.exists()),
                                reason="mqttools or mqttoolsd not built")


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tools-certs")
    for ca in ("ca", "other-ca"):
        openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN={ca}")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    return d


def tls_handshake_works(port, cafile):
    ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        with socket.create_connection(("localhost", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                return True
    except (OSError, ssl.SSLError):
        return False


class ToolsBroker:
    def __init__(self, tmp_path, *args, port=None):
        self.port = port or free_port()
        self.log = open(tmp_path / f"broker-{self.port}.out", "w+b")
        self.proc = subprocess.Popen([str(MQTTOOLS), "broker", "--port", str(self.port), *map(str, args)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc)

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def tools_brokers(tmp_path):
    started = []

    def start(*args, port=None):
        b = ToolsBroker(tmp_path, *args, port=port)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def test_broker_subcommand_serves_clients(tools_brokers, subscribers):
    b = tools_brokers()
    assert b.output().splitlines()[0] == f"Starting a broker at 'localhost:{b.port}'."
    s = subscribers(b.port, "--count", "1", "b/t")
    s.wait_connected()
    publish(b.port, "--qos", "2", "b/t", "through mqttools broker")
    code, out, err = s.finish()
    assert code == 0, err
    assert out.endswith(block("b/t", "through mqttools broker"))
    assert b.stop() == 0


def test_broker_subcommand_with_tls_and_client_cafile(tools_brokers, certs, subscribers):
    secure = free_port()
    b = tools_brokers("--secure-port", secure, "--certfile", certs / "server.crt",
                      "--keyfile", certs / "server.key", "--cafile", certs / "ca.crt")
    wait_for_port(secure, proc=b.proc)
    lines = b.output().splitlines()
    assert lines[:5] == [f"Starting a broker at 'localhost:{b.port}'.",
                         f"Starting a secure broker at 'localhost:{secure}'.",
                         f"Certfile: '{certs / 'server.crt'}'",
                         f"Keyfile:  '{certs / 'server.key'}'",
                         f"CA File:  '{certs / 'ca.crt'}'"]
    if not tls_handshake_works(secure, certs / "ca.crt"):
        pytest.skip("this mqttoolsd does not serve TLS listeners yet")
    s = subscribers(b.port, "--count", "2", "tls/#")
    s.wait_connected()
    # The certificate names localhost: checked and accepted.
    publish(secure, "--cafile", certs / "ca.crt", "tls/checked", "one")
    # Connecting by address: the name check fails unless it is turned off.
    r = mqttools("publish", "--host", "127.0.0.1", "--port", secure, "--cafile", certs / "ca.crt", "tls/x", "m")
    assert r.returncode == 1
    assert r.stderr.decode().startswith(f"Connecting to '127.0.0.1:{secure}'.\n"
                                        f"error: cannot connect to '127.0.0.1:{secure}': TLS: ")
    r = mqttools("publish", "--host", "127.0.0.1", "--port", secure, "--cafile", certs / "ca.crt",
                 "--no-check-hostname", "tls/unchecked", "two")
    assert r.returncode == 0, r.stderr
    # A certificate from another CA is refused whatever the name.
    r = mqttools("publish", "--port", secure, "--cafile", certs / "other-ca.crt", "--no-check-hostname",
                 "tls/x", "m")
    assert r.returncode == 1
    assert "certificate verify failed" in r.stderr.decode()
    code, out, err = s.finish()
    assert code == 0, err
    assert out.endswith(block("tls/checked", "one") + block("tls/unchecked", "two"))


def test_subscribe_reconnects_when_the_broker_restarts(tools_brokers, subscribers):
    b = tools_brokers()
    port = b.port
    s = subscribers(port, "--count", "2", "re/t")
    s.wait_connected()
    publish(port, "re/t", "before")
    s.read_until(b"ResponseTopic: None\n")
    assert b.stop() == 0
    s.read_err_until(b"Broker connection lost!\n")
    tools_brokers(port=port)
    # The subscription is made again before "Connected." is printed.
    s.wait_connected(count=2)
    publish(port, "re/t", "after")
    code, out, err = s.finish()
    assert code == 0, err
    assert out == block("re/t", "before") + block("re/t", "after")
    head = f"Connecting to 'localhost:{port}'.\n"
    assert err.startswith(head + "Connected.\nBroker connection lost!\n" + head)
    assert err.endswith(head + "Connected.\n")


def test_subscribe_keeps_retrying_while_the_broker_is_down(tools_brokers, subscribers):
    """mosquitto_sub and the monitor reconnect; so does subscribe, with
    back-off (1, 2, 4, 8 s), saying so on stderr; Ctrl-C ends it cleanly."""
    b = tools_brokers()
    s = subscribers(b.port, "re/t")
    s.wait_connected()
    assert b.stop() == 0
    started = time.monotonic()
    # Attempts at once, then after 1 and 2 s: the third failure comes ~3 s
    # after the loss, long after the old client gave up (~1.5 s).
    s.read_err_until(b"retrying in 4 s.\n", timeout=20)
    assert time.monotonic() - started > 2.5
    assert s.proc.poll() is None
    s.proc.send_signal(signal.SIGINT)
    code, out, err = s.finish(timeout=10)
    assert code == 0, err
    assert out == ""
    head = f"Connecting to 'localhost:{b.port}'.\n"
    refused = f"Connection failed: cannot connect to 'localhost:{b.port}': Connection refused; retrying in"
    assert err.startswith(head + "Connected.\nBroker connection lost!\n" + head + refused + " 1 s.\n"
                          + head + refused + " 2 s.\n" + head + refused + " 4 s.\n")
