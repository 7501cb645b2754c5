"""systemd integration without systemd as PID 1: the notify protocol over a
NOTIFY_SOCKET we hold ourselves, the watchdog, and socket activation with a
listening socket passed as fd 3 (LISTEN_FDS/LISTEN_PID)."""
import pytest
import os
import signal
import socket
import subprocess

from conftest import MQTTOOLSD, free_port, SANITIZED
from test_deploy_util import Client, Daemon, NotifySocket, port_accepts, wait_until

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def test_ready_only_once_every_listener_accepts(tmp_path):
    notify = NotifySocket(tmp_path)
    p1, p2, pm = free_port(), free_port(), free_port()
    config = (f"allow_anonymous = true\n[[listener]]\nport = {p1}\n[[listener]]\nport = {p2}\n"
              f"[metrics]\nport = {pm}\n")
    d = Daemon(tmp_path, [], env={"NOTIFY_SOCKET": notify.path}, config=config)
    try:
        ready, seen = notify.wait_for(lambda m: "READY=1" in m.split("\n"), 15)
        assert ready is not None, (seen, d.output())
        # The moment READY=1 arrives, every port must already accept.
        assert port_accepts(p1) and port_accepts(p2) and port_accepts(pm)
        assert "STATUS=0 clients connected" in ready.split("\n")
        c = Client(p1, "deploy-ready")
        assert c.connack_reason == 0
        c.close()
    finally:
        assert d.stop() == 0, d.output()
        notify.close()


def test_status_counts_clients_and_stopping_on_sigterm(tmp_path):
    notify = NotifySocket(tmp_path)
    port = free_port()
    d = Daemon(tmp_path, ["-p", str(port)], env={"NOTIFY_SOCKET": notify.path})
    try:
        ready, seen = notify.wait_for(lambda m: "READY=1" in m.split("\n"), 15)
        assert ready is not None, (seen, d.output())
        clients = [Client(port, f"deploy-status-{i}") for i in range(3)]
        status, seen = notify.wait_for(lambda m: "STATUS=3 clients connected" in m, 5)
        assert status is not None, seen
        for c in clients:
            c.close()
        status, seen = notify.wait_for(lambda m: "STATUS=0 clients connected" in m, 5)
        assert status is not None, seen
        d.signal(signal.SIGTERM)
        stopping, seen = notify.wait_for(lambda m: "STOPPING=1" in m.split("\n"), 10)
        assert stopping is not None, seen
        assert d.proc.wait(timeout=10) == 0
    finally:
        assert d.stop() == 0, d.output()
        notify.close()


def test_watchdog_pings_with_watchdog_usec(tmp_path):
    notify = NotifySocket(tmp_path)
    port = free_port()
    # 300 ms timeout: pings every 150 ms are expected.
    d = Daemon(tmp_path, ["-p", str(port)],
               env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "300000"})
    try:
        ready, seen = notify.wait_for(lambda m: "READY=1" in m.split("\n"), 15)
        assert ready is not None, (seen, d.output())
        pings = 0
        import time
        start = time.monotonic()
        while time.monotonic() - start < 1.2:
            msg = notify.recv(0.5)
            if msg is not None and "WATCHDOG=1" in msg.split("\n"):
                pings += 1
        # ~8 expected in 1.2 s; allow for a loaded machine, never zero.
        assert pings >= (2 if SANITIZED else 4), pings
    finally:
        assert d.stop() == 0, d.output()
        notify.close()


def test_no_watchdog_without_watchdog_usec(tmp_path):
    notify = NotifySocket(tmp_path)
    port = free_port()
    d = Daemon(tmp_path, ["-p", str(port)], env={"NOTIFY_SOCKET": notify.path})
    try:
        ready, _ = notify.wait_for(lambda m: "READY=1" in m.split("\n"), 15)
        assert ready is not None
        ping, seen = notify.wait_for(lambda m: "WATCHDOG=1" in m, 1.0)
        assert ping is None, seen
    finally:
        assert d.stop() == 0, d.output()
        notify.close()


def launch_activated(tmp_path, listen_sock, extra_args=(), config=None, env=None):
    """Start mqttoolsd as systemd would for a .socket unit: the listening
    socket as fd 3, LISTEN_FDS=1 and LISTEN_PID set to mqttoolsd's own pid
    (the shell execs mqttoolsd, so $$ is that pid)."""
    log = open(tmp_path / "activated.log", "wb")
    cmd = ["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"', str(MQTTOOLSD)]
    if config is not None:
        conf = tmp_path / "activated.toml"
        conf.write_text(config)
        cmd += ["-c", str(conf)]
    cmd += list(extra_args)
    fd = listen_sock.fileno()

    def to_fd3():
        os.dup2(fd, 3)

    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, pass_fds=(3,),
                            preexec_fn=to_fd3, env={**os.environ, **(env or {})})
    return proc, log


def test_socket_activation_serves_inherited_socket(tmp_path):
    notify = NotifySocket(tmp_path)
    listen_sock = socket.socket()
    listen_sock.bind(("127.0.0.1", 0))
    listen_sock.listen(16)
    port = listen_sock.getsockname()[1]
    proc, log = launch_activated(tmp_path, listen_sock, env={"NOTIFY_SOCKET": notify.path})
    try:
        # A client may connect before the broker is up: the kernel queues it
        # on the inherited socket, which is the point of socket activation.
        early = socket.create_connection(("127.0.0.1", port), timeout=5)
        listen_sock.close()  # only mqttoolsd holds it now
        ready, seen = notify.wait_for(lambda m: "READY=1" in m.split("\n"), 15)
        assert ready is not None, (seen, (tmp_path / "activated.log").read_text())
        early.close()
        c = Client(port, "deploy-activated")
        assert c.connack_reason == 0
        assert c.ping()
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        log.close()
        notify.close()
        assert code == 0, (tmp_path / "activated.log").read_text()


def test_socket_activation_with_configured_listeners(tmp_path):
    """An inherited socket plus a configured listener that is not inherited:
    both are served; the configured one is opened by mqttoolsd itself."""
    listen_sock = socket.socket()
    listen_sock.bind(("127.0.0.1", 0))
    listen_sock.listen(16)
    inherited = listen_sock.getsockname()[1]
    own = free_port()
    config = (f"allow_anonymous = true\n[[listener]]\nport = {inherited}\n"
              f"[[listener]]\nport = {own}\n")
    proc, log = launch_activated(tmp_path, listen_sock, config=config)
    listen_sock.close()
    try:
        assert wait_until(lambda: port_accepts(own) or proc.poll() is not None, 10)
        assert proc.poll() is None, (tmp_path / "activated.log").read_text()
        for port in (inherited, own):
            c = Client(port, f"deploy-act-{port}")
            assert c.connack_reason == 0
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        log.close()
        assert code == 0, (tmp_path / "activated.log").read_text()
