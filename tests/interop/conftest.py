"""Fixtures for the interoperability tests: a broker on a free loopback port
and real third-party clients (mosquitto_pub/sub, paho-mqtt, MQTT.js) talking
to it.

The broker under test is mqttoolsd. MQTTOOLS_INTEROP_BROKER=mosquitto runs
the same tests against Debian's mosquitto instead, which validates the tests
themselves; tests of behaviour Mosquitto 2.0.11 lacks are marked
`mqttoolsd_only` and skipped there.

Every process a test starts is stopped by its PID at teardown."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))
from port_pool import PortPool  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
TOP = HERE.parents[1]
BUILD = pathlib.Path(os.environ.get("MQTTOOLS_BUILD", TOP / "build"))
MQTTOOLSD = BUILD / "src" / "daemon" / "mqttoolsd"
BROKER_KIND = os.environ.get("MQTTOOLS_INTEROP_BROKER", "mqttoolsd")
if BROKER_KIND not in ("mqttoolsd", "mosquitto"):
    raise RuntimeError(f"MQTTOOLS_INTEROP_BROKER={BROKER_KIND!r}: use mqttoolsd or mosquitto")
SANITIZED = os.environ.get("MQTTOOLS_SANITIZED") == "1"
# How long to wait for something that should happen at once; generous
# because ~7 engineers share 2 cores, and waits end as soon as it happens.
WAIT = 15.0 if SANITIZED else 10.0
NODE_MODULES = HERE / "node_modules"


# Integration tests take 20000-29999, interop 30000-32767 (port_pool.py).
free_port = PortPool(30000, 32767).free_port


def wait_for_port(port, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def stop_process(proc, timeout=10):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class InteropBroker:
    """mqttoolsd -p PORT, or mosquitto with a config allowing anonymous
    clients on 127.0.0.1:PORT."""

    def __init__(self, tmp_path, kind=BROKER_KIND):
        self.kind = kind
        self.port = free_port()
        self.log_path = tmp_path / f"{kind}-{self.port}.log"
        if kind == "mqttoolsd":
            cmd = [str(MQTTOOLSD), "-p", str(self.port)]
        else:
            conf = tmp_path / f"mosquitto-{self.port}.conf"
            conf.write_text(f"listener {self.port} 127.0.0.1\n"
                            "allow_anonymous true\n"
                            "persistence false\n"
                            "log_dest stdout\n"
                            "log_type all\n")
            cmd = ["mosquitto", "-c", str(conf)]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, proc=self.proc)
        except Exception:
            self.stop()
            raise

    def stop(self):
        code = stop_process(self.proc)
        self.log.close()
        return code

    def output(self):
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "mqttoolsd_only: behaviour Mosquitto 2.0.11 lacks; skipped when "
                   "MQTTOOLS_INTEROP_BROKER=mosquitto")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "interop" not in str(item.fspath):
            continue
        if BROKER_KIND == "mosquitto" and item.get_closest_marker("mqttoolsd_only"):
            item.add_marker(pytest.mark.skip(reason="Mosquitto 2.0.11 lacks this"))
        elif BROKER_KIND == "mqttoolsd" and not MQTTOOLSD.exists():
            item.add_marker(pytest.mark.skip(reason=f"mqttoolsd not built ({MQTTOOLSD})"))
        elif BROKER_KIND == "mosquitto" and shutil.which("mosquitto") is None:
            item.add_marker(pytest.mark.skip(reason="mosquitto not installed"))


@pytest.fixture
def broker(tmp_path):
    """The broker under test; yields an InteropBroker (use .port)."""
    b = InteropBroker(tmp_path)
    yield b
    code = b.stop()
    if b.kind == "mqttoolsd":
        # SIGTERM must stop it cleanly; a sanitizer report makes it non-zero.
        assert code == 0, b.output()[-4000:]


class Processes:
    """Client processes started by a test, stopped by PID at teardown."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, **kwargs):
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(cmd, **kwargs)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for f in (p.stdout, p.stderr, p.stdin):
                if f is not None:
                    f.close()


@pytest.fixture
def procs():
    p = Processes()
    yield p
    p.stop_all()


def run_node(script, broker, *args, timeout=WAIT):
    """Runs tests/interop/js/SCRIPT against the broker; returns the JSON
    object the script printed as its last stdout line."""
    if shutil.which("node") is None:
        pytest.skip("node not installed")
    if not (NODE_MODULES / "mqtt").is_dir():
        pytest.skip("MQTT.js not installed (npm ci in tests/interop)")
    cmd = ["node", str(HERE / "js" / script), str(broker.port), *map(str, args)]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout + 5, cwd=HERE)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{script} timed out\nstdout: {e.stdout!r}\nstderr: {e.stderr!r}")
    lines = r.stdout.decode(errors="replace").strip().splitlines()
    assert r.returncode == 0 and lines, (
        f"{script} exited {r.returncode}\nstdout: {r.stdout.decode(errors='replace')}\n"
        f"stderr: {r.stderr.decode(errors='replace')}")
    return json.loads(lines[-1])
