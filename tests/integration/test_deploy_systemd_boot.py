"""The installed units under a real systemd as PID 1: a Debian 12 root made
with debootstrap (from the machine's own apt source), `meson install` into it,
booted with systemd-nspawn sharing the host's network. Checks what the
protocol-level tests in test_deploy_systemd.py cannot: that the hardened unit
(DynamicUser, seccomp filter, capabilities) starts, Type=notify readiness,
STATUS, the watchdog, journald, reload, a clean stop and socket activation.

Runs as root only (nspawn), and in the plain build only (an ASan binary
needs its runtime inside the root too)."""
import os
import re
import subprocess
import time

import pytest

import nspawn
from conftest import BUILD, MQTTOOLS, MQTTOOLSD, SANITIZED, free_port, wait_for_port
from nspawn import Container
from test_deploy_util import wait_until
from mqttwire import DISCONNECT
from test_security_mqtt import RawClient, Closed

pytestmark = [
    pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built"),
    pytest.mark.skipif(SANITIZED, reason="the plain build covers the units; ASan needs its runtime in the root"),
    pytest.mark.skipif(os.geteuid() != 0, reason="systemd-nspawn needs root"),
]

# systemd itself; the run-time libraries of mqttoolsd and mqttools come from `ldd`.
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "procps"]
PREFIX = "/usr/local"  # build/ is configured with meson's default prefix


def make_root():
    """The debootstrapped root, made once per build folder (about a minute)."""
    return nspawn.make_root(BUILD / "systemd-root",
                            BASE_PACKAGES + nspawn.runtime_packages(MQTTOOLSD, MQTTOOLS))


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    root = make_root()
    r = subprocess.run(["meson", "install", "-C", str(BUILD), "--no-rebuild", "--destdir", str(root)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    port, socket_port = free_port(), free_port()
    (root / PREFIX.lstrip("/") / "etc" / "mqttools" / "mqttoolsd.toml").write_text(
        f"allow_anonymous = true\n[[listener]]\nport = {port}\nbind = \"127.0.0.1\"\n")
    etc = root / "etc" / "systemd" / "system"
    # The shipped units with test ports and a short watchdog (the broker pings every WatchdogSec/2).
    (etc / "mqttoolsd.service.d").mkdir(parents=True, exist_ok=True)
    (etc / "mqttoolsd.service.d" / "test.conf").write_text("[Service]\nWatchdogSec=2s\n")
    (etc / "mqttoolsd.socket.d").mkdir(parents=True, exist_ok=True)
    (etc / "mqttoolsd.socket.d" / "test.conf").write_text(
        f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{socket_port}\n")
    wants = etc / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "mqttoolsd.service"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(f"{PREFIX}/lib/systemd/system/mqttoolsd.service")
    c = Container(root, tmp_path_factory.mktemp("nspawn") / "container.log")
    c.port, c.socket_port = port, socket_port
    try:
        yield c
    finally:
        c.stop()


def test_hardened_unit_starts_and_reports_ready(booted):
    c = booted
    assert c.show("mqttoolsd", "ActiveState") == "active", c.journal()
    assert c.show("mqttoolsd", "Type") == "notify"
    assert re.fullmatch(r"\d+ clients? connected", c.show("mqttoolsd", "StatusText"))
    wait_for_port(c.port)
    pid = c.show("mqttoolsd", "MainPID")
    status = c.run("cat", f"/proc/{pid}/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert int(fields["Uid"].split()[0]) != 0  # DynamicUser
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # SystemCallFilter
    assert fields["CapEff"].strip() == "0000000000000400"  # CAP_NET_BIND_SERVICE only


def test_messages_flow_and_the_journal_has_the_log(booted):
    c = booted
    sub = RawClient(c.port)
    assert sub.connect(client_id="nspawn-sub")[1] == 0
    assert sub.subscribe(["nspawn/#"], qos=1) == [1]
    pub = RawClient(c.port)
    assert pub.connect(client_id="nspawn-pub")[1] == 0
    assert pub.publish("nspawn/t", b"through systemd", qos=1, packet_id=1) == 0
    assert sub.next_publish()[:2] == ("nspawn/t", b"through systemd")
    assert wait_until(lambda: c.show("mqttoolsd", "StatusText") == "2 clients connected", 15, step=0.2)
    assert wait_until(lambda: "as nspawn-sub" in c.journal(), 10, step=0.2), c.journal()
    # Info lines go to the journal with syslog priority 6.
    out = c.run("journalctl", "-u", "mqttoolsd", "--no-pager", "-o", "verbose", "--grep", "as nspawn-pub").stdout
    assert "PRIORITY=6" in out, out
    pub.disconnect()
    sub.disconnect()


def test_watchdog_is_fed(booted):
    c = booted
    first = int(c.show("mqttoolsd", "WatchdogTimestampMonotonic"))
    assert wait_until(lambda: int(c.show("mqttoolsd", "WatchdogTimestampMonotonic")) > first, 5, step=0.2)
    time.sleep(3)  # longer than WatchdogSec=2s: a missed ping would have restarted it
    assert c.show("mqttoolsd", "NRestarts") == "0"
    assert c.show("mqttoolsd", "ActiveState") == "active"


def test_reload_keeps_clients(booted):
    c = booted
    sub = RawClient(c.port)
    assert sub.connect(client_id="reload-sub")[1] == 0
    assert sub.subscribe(["reload/#"]) == [0]
    c.run("systemctl", "reload", "mqttoolsd")
    assert wait_until(lambda: "Configuration reloaded." in c.journal(), 10, step=0.2), c.journal()
    pub = RawClient(c.port)
    assert pub.connect(client_id="reload-pub")[1] == 0
    pub.publish("reload/t", b"after reload")
    assert sub.next_publish()[:2] == ("reload/t", b"after reload")
    pub.disconnect()
    sub.disconnect()


def test_stop_then_socket_activation(booted):
    c = booted
    client = RawClient(c.port)
    assert client.connect(client_id="at-stop")[1] == 0
    c.run("systemctl", "stop", "mqttoolsd")
    # Clients are told the server is shutting down (0x8B), then the exit is clean.
    ptype, _, body = client.recv(timeout=10)
    assert (ptype, body[:1]) == (DISCONNECT, b"\x8b")
    with pytest.raises(Closed):
        client.recv(timeout=10)
    assert c.show("mqttoolsd", "Result") == "success"
    assert c.show("mqttoolsd", "ExecMainStatus") == "0"

    # systemd holds the port; the first connection starts the service with it.
    c.run("systemctl", "start", "mqttoolsd.socket")
    assert c.show("mqttoolsd", "ActiveState") == "inactive"
    late = RawClient(c.socket_port, timeout=30)
    assert late.connect(client_id="activated")[1] == 0
    assert c.show("mqttoolsd", "ActiveState") == "active"
    assert c.show("mqttoolsd", "TriggeredBy") == "mqttoolsd.socket"
    late.disconnect()
