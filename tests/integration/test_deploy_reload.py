"""SIGHUP reloads without dropping anyone; SIGTERM stops cleanly."""
import pytest
import shutil
import signal
import subprocess

from conftest import free_port, SANITIZED
from test_deploy_util import MQTTOOLSD, Client, Daemon, parse_publish, port_accepts, publish_packet, wait_until

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def base_config(port, extra=""):
    return f"allow_anonymous = true\nmax_keepalive = 600\n{extra}[[listener]]\nport = {port}\n"


def test_sighup_with_100_clients_drops_none(tmp_path):
    port = free_port()
    d = Daemon(tmp_path, [], config=base_config(port))
    clients = []
    try:
        assert wait_until(lambda: port_accepts(port) or d.proc.poll() is not None, 10)
        clients = [Client(port, f"deploy-hup-{i}") for i in range(100)]
        assert all(c.connack_reason == 0 for c in clients)
        assert clients[0].subscribe("reload/t") == 0

        # A new limit (applied live), a new listener (needs a restart) and
        # an unchanged listener; then SIGHUP.
        other = free_port()
        d.config_path.write_text(base_config(port, "max_connections = 500\nsys_interval = 5\n")
                                 + f"[[listener]]\nport = {other}\n")
        d.signal(signal.SIGHUP)
        assert d.wait_for_output("reload", 10), d.output()
        assert d.wait_for_output(f"127.0.0.1:{other}", 5), d.output()
        out = d.output()
        assert "restart" in out[out.index("reload"):], out

        # Every client is still connected and served.
        for c in clients:
            assert c.ping(timeout=10)
        clients[1].send(publish_packet("reload/t", b"after"))
        kind, flags, body = clients[0].read(5)
        assert kind == 3
        assert parse_publish(flags, body)[:2] == ("reload/t", b"after")
        assert d.proc.poll() is None
    finally:
        for c in clients:
            c.close()
        assert d.stop() == 0, d.output()


def test_sighup_with_a_broken_config_keeps_running(tmp_path):
    port = free_port()
    d = Daemon(tmp_path, [], config=base_config(port))
    try:
        assert wait_until(lambda: port_accepts(port) or d.proc.poll() is not None, 10)
        c = Client(port, "deploy-hup-broken")
        d.config_path.write_text(base_config(port, "sys_interval = 999999\n"))
        d.signal(signal.SIGHUP)
        assert d.wait_for_output("sys_interval: 999999 is out of range (0 to 86400)", 10), d.output()
        assert c.ping()
        assert d.proc.poll() is None
        c.close()
        # The old configuration is still in force and new clients get in.
        c2 = Client(port, "deploy-hup-broken-2")
        assert c2.connack_reason == 0
        c2.close()
    finally:
        assert d.stop() == 0, d.output()


def test_sigterm_disconnects_with_0x8b_and_publishes_wills(tmp_path):
    port = free_port()
    d = Daemon(tmp_path, ["-p", str(port)])
    try:
        assert wait_until(lambda: port_accepts(port) or d.proc.poll() is not None, 10)
        watcher = Client(port, "deploy-term-watcher")
        assert watcher.subscribe("wills/#") == 0
        willer = Client(port, "deploy-term-willer", will=("wills/w", b"gone"))
        assert willer.ping()
        d.signal(signal.SIGTERM)
        got_will = False
        reason = None
        for _ in range(5):
            try:
                kind, flags, body = watcher.read(10 if SANITIZED else 5)
            except EOFError:
                break
            if kind == 3 and parse_publish(flags, body)[:2] == ("wills/w", b"gone"):
                got_will = True
            elif kind == 14:
                reason = body[0] if body else 0
                break
        assert got_will, d.output()
        assert reason == 0x8B, d.output()
        # The willer got its DISCONNECT 0x8B as well.
        kind, _, body = willer.read(5)
        assert (kind, body[:1]) == (14, b"\x8b")
        assert d.proc.wait(timeout=10) == 0
        watcher.close()
        willer.close()
    finally:
        assert d.stop() == 0, d.output()


def mosquitto_passwd(path, user, password, create=False):
    args = ["mosquitto_passwd"] + (["-c"] if create else []) + ["-b", str(path), user, password]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_sighup_rereads_the_password_file(tmp_path):
    pw = tmp_path / "passwd"
    mosquitto_passwd(pw, "alice", "first", create=True)
    port = free_port()
    d = Daemon(tmp_path, [], config=f'allow_anonymous = false\npassword_file = "{pw}"\n'
                                    f"[[listener]]\nport = {port}\n")
    try:
        assert wait_until(lambda: port_accepts(port) or d.proc.poll() is not None, 10)
        held = Client(port, "deploy-pw-held", username="alice", password="first")
        assert held.connack_reason == 0
        mosquitto_passwd(pw, "alice", "second")
        d.signal(signal.SIGHUP)
        assert d.wait_for_output("Configuration reloaded", 10), d.output()
        old = Client(port, "deploy-pw-old", username="alice", password="first")
        assert old.connack_reason == 0x86
        old.close()
        new = Client(port, "deploy-pw-new", username="alice", password="second")
        assert new.connack_reason == 0
        new.close()
        assert held.ping()  # the client that logged in before the reload stays
        held.close()
    finally:
        assert d.stop() == 0, d.output()
