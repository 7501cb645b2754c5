"""Shared fixtures for the integration tests: the real mqttoolsd on a free
loopback port, spoken to over TCP. Every process a test starts is stopped by
its PID at teardown."""
import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

from port_pool import PortPool

import cluster_mode

TOP = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("MQTTOOLS_BUILD", TOP / "build"))
MQTTOOLSD = BUILD / "src" / "daemon" / "mqttoolsd"
MQTTOOLS = BUILD / "src" / "tools" / "mqttools"
# Under ASan+UBSan everything is slower; timing-sensitive tests read this.
SANITIZED = os.environ.get("MQTTOOLS_SANITIZED") == "1"


# Integration tests take 20000-29999, interop 30000-32767 (port_pool.py).
free_port = PortPool(20000, 29999).free_port


def wait_for_port(port, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Broker:
    """A running mqttoolsd. `args` are extra command-line arguments."""

    def __init__(self, tmp_path, args=(), config=None, env=None):
        self.port = free_port()
        self.tmp_path = tmp_path
        self.log_path = tmp_path / f"mqttoolsd-{self.port}.log"
        cmd = [str(MQTTOOLSD), "-p", str(self.port)]
        if config is not None:
            conf = tmp_path / f"mqttoolsd-{self.port}.toml"
            conf.write_text(config)
            cmd += ["-c", str(conf)]
        cmd += list(args)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        wait_for_port(self.port, proc=self.proc)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def broker(tmp_path):
    """A broker with default settings; yields the Broker (use .port). With
    MQTTOOLS_CLUSTER set, a 3-node cluster (cluster_mode.py)."""
    b = cluster_mode.make_broker(tmp_path) or Broker(tmp_path)
    yield b
    code = b.stop()
    # A clean stop is part of every test: SIGTERM must exit 0, and a
    # sanitizer report makes the exit status non-zero.
    assert code == 0, b.output()


@pytest.fixture(scope="session", autouse=True)
def _cluster_nats():
    """Cluster mode only: the session's nats-server is stopped at the end."""
    yield
    cluster_mode.NATS.stop()


# Deadlines stretch under ASan+UBSan, which slows the broker about threefold.
SLOW = 3.0 if SANITIZED else 1.0


def wait_until(predicate, timeout=10.0, step=0.02):
    """Polls `predicate` until it returns something true (returned) or
    timeout * SLOW seconds pass (then its last value)."""
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def freeze(proc, timeout=5.0):
    """SIGSTOP `proc` and wait until every one of its threads has stopped.
    The stop is not immediate: a thread woken by I/O can run on after
    kill() returned (nats-server stored a message sent after its SIGSTOP,
    1 run in 5 on a loaded host)."""
    proc.send_signal(signal.SIGSTOP)
    tasks = f"/proc/{proc.pid}/task"

    def stopped():
        try:
            states = []
            for tid in os.listdir(tasks):
                with open(f"{tasks}/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            return all(s in ("T", "t") for s in states)
        except OSError:
            return False
    if not wait_until(stopped, timeout=timeout, step=0.001):
        raise AssertionError(f"pid {proc.pid} did not stop within {timeout} s of SIGSTOP")


def refused_config_output(conf, what=""):
    """What mqttoolsd prints when it refuses the config file CONF at start
    (it must exit non-zero)."""
    r = subprocess.run([str(MQTTOOLSD), "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0, f"{what}: accepted\n{r.stdout}{r.stderr}"
    return r.stderr + r.stdout


def wait_or_fail(predicate, what, timeout=10.0, step=0.05):
    """wait_until() for the tests that want a failure naming what never came."""
    value = wait_until(predicate, timeout, step)
    if not value:
        raise AssertionError(f"timed out waiting for {what}")
    return value


@pytest.fixture
def start_broker(tmp_path):
    """Factory: start_broker(args=(...), config="toml text") -> Broker."""
    started = []

    def start(**kwargs):
        b = cluster_mode.make_broker(tmp_path, **kwargs) or Broker(tmp_path, **kwargs)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
