"""`mqttools monitor` used as a person would: inside tmux, reading the screen
with capture-pane and pressing keys with send-keys."""
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import MQTTOOLS, MQTTOOLSD, free_port, wait_for_port
from test_tools_subscribe_publish import publish

pytestmark = pytest.mark.skipif(not (MQTTOOLS.exists() and MQTTOOLSD.exists() and shutil.which("tmux")),
                                reason="mqttools, mqttoolsd or tmux missing")

WIDTH = 60
HEIGHT = 12


class Tmux:
    """One detached tmux session on a private server socket."""

    def __init__(self, tmp_path, command):
        self.socket = str(tmp_path / "tmux.sock")
        self.run("new-session", "-d", "-s", "mon", "-x", str(WIDTH), "-y", str(HEIGHT),
                 "env TERM=xterm-256color " + command + "; sleep 30")

    def run(self, *args):
        return subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10, check=True)

    def screen(self):
        return self.run("capture-pane", "-p", "-t", "mon").stdout.split("\n")[:HEIGHT]

    def keys(self, *keys):
        self.run("send-keys", "-t", "mon", *keys)

    def wait_for(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError("screen never matched:\n" + "\n".join(lines))
            time.sleep(0.05)

    def kill(self):
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux(tmp_path):
    sessions = []

    def start(command):
        t = Tmux(tmp_path, command)
        sessions.append(t)
        return t

    yield start
    for t in sessions:
        t.kill()


def test_monitor_shows_latest_message_per_topic_and_reacts_to_keys(broker, tmux):
    t = tmux(f"{MQTTOOLS} monitor --port {broker.port} '/mon/#' other")
    menu = "q: Quit, p: Play/Pause, f: Format (auto)"
    t.wait_for(lambda s: s[-1].startswith(menu))
    screen = t.screen()
    assert screen[0].rstrip() == "TIMESTAMP  TOPIC & MESSAGE"
    assert screen[-1].rstrip() == menu

    publish(broker.port, "/mon/b", "second topic")
    publish(broker.port, "/mon/a", "x" * 70)  # wraps at WIDTH - 12 = 48 characters
    publish(broker.port, "other", "also subscribed")
    publish(broker.port, "/mon/b", "latest wins")
    screen = t.wait_for(lambda s: any("latest wins" in line for line in s)
                        and any("other" in line for line in s) and any("/mon/a" in line for line in s))
    body = [line.rstrip() for line in screen[1:-1]]
    # Topics sorted; " HH:MM:SS  topic", then the message indented by 11.
    stamp = body[0][1:9]
    assert len(stamp) == 8 and stamp[2] == ":" and stamp[5] == ":"
    assert body[0] == f" {stamp}  /mon/a"
    assert body[1] == " " * 11 + "x" * 48
    assert body[2] == " " * 11 + "x" * 22
    assert body[3][11:] == "/mon/b"
    assert body[4] == " " * 11 + "latest wins"
    assert body[5][11:] == "other"
    assert body[6] == " " * 11 + "also subscribed"

    # f: auto -> binary shows hex, and the menu says so.
    t.keys("f")
    screen = t.wait_for(lambda s: "Format (binary)" in s[-1])
    rows = [line.rstrip() for line in screen]
    assert rows[2:5] == [" " * 11 + ("x" * 70).encode().hex()[i:i + 48] for i in (0, 48, 96)]
    assert rows[5].endswith("  /mon/b")
    assert rows[6] == " " * 11 + "latest wins".encode().hex()
    t.keys("f")
    t.wait_for(lambda s: "Format (text)" in s[-1])
    t.keys("f")
    t.wait_for(lambda s: "Format (auto)" in s[-1])

    # p pauses: new messages do not show until played again. The f after
    # it shows on the menu once both keys have been handled.
    t.keys("p", "f")
    t.wait_for(lambda s: "Format (binary)" in s[-1])
    publish(broker.port, "/mon/b", "while paused")
    hexed = "while paused".encode().hex()
    time.sleep(0.5)
    assert not any(hexed in line or "while paused" in line for line in t.screen())
    t.keys("p")
    t.wait_for(lambda s: any(hexed in line for line in s))
    t.keys("f", "f")
    t.wait_for(lambda s: "Format (auto)" in s[-1] and any("while paused" in line for line in s))

    # q quits: the shell's `sleep` keeps the pane; the screen is restored.
    t.keys("q")
    t.wait_for(lambda s: not any(line.startswith("q: Quit") for line in s))


def test_monitor_follows_a_resize(broker, tmux):
    t = tmux(f"{MQTTOOLS} monitor --port {broker.port} '/r/#'")
    t.wait_for(lambda s: s[-1].startswith("q: Quit"))
    publish(broker.port, "/r/t", "y" * 40)
    t.wait_for(lambda s: any("yyyy" in line for line in s))
    t.run("resize-window", "-t", "mon", "-x", "30", "-y", "8")
    # Width 30: messages wrap at 18 characters; the menu is on the new last row.
    screen = t.wait_for(lambda s: len([line for line in s if line.strip() == "y" * 18]) >= 2)
    assert screen[7].startswith("q: Quit, p: Play/Pause, f: Fo")


def test_monitor_with_broker_down_is_an_error(tmp_path):
    port = free_port()
    r = subprocess.run([str(MQTTOOLS), "monitor", "--port", str(port), "t"], capture_output=True, timeout=20)
    assert r.returncode == 1
    assert r.stderr.decode() == f"error: cannot connect to 'localhost:{port}': Connection refused\n"


class PlainBroker:
    """mqttoolsd on a given port, so that it can be restarted on the same one."""

    def __init__(self, tmp_path, port):
        self.log = open(tmp_path / f"mqttoolsd-{port}-{time.monotonic_ns()}.log", "wb")
        self.proc = subprocess.Popen([str(MQTTOOLSD), "-p", str(port)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(port, proc=self.proc)

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.log.close()


def test_monitor_reconnects_when_the_broker_comes_back(tmp_path, tmux):
    port = free_port()
    brokers = [PlainBroker(tmp_path, port)]
    try:
        t = tmux(f"{MQTTOOLS} monitor --port {port} '/rc/#'")
        t.wait_for(lambda s: s[-1].startswith("q: Quit"))
        assert t.screen()[0].rstrip() == "TIMESTAMP  TOPIC & MESSAGE"
        publish(port, "/rc/a", "before the crash")
        t.wait_for(lambda s: any("before the crash" in line for line in s))

        # The broker dies without a word: the title says so, the screen keeps
        # its messages and the monitor keeps running.
        brokers[0].kill()
        screen = t.wait_for(lambda s: "connection lost, reconnecting" in s[0])
        assert screen[0].startswith("TIMESTAMP  TOPIC & MESSAGE  ")
        assert any("before the crash" in line for line in screen)
        assert screen[-1].startswith("q: Quit")
        time.sleep(1.2)  # at least one failed retry (after 1 s) before the broker returns
        screen = t.screen()
        assert "connection lost, reconnecting" in screen[0]
        assert any("before the crash" in line for line in screen)

        # A new broker on the same port (no session: the monitor subscribes
        # again); retries come after 1, 2, 4, 8 s.
        brokers.append(PlainBroker(tmp_path, port))
        t.wait_for(lambda s: s[0].rstrip() == "TIMESTAMP  TOPIC & MESSAGE", timeout=15)
        publish(port, "/rc/b", "after the restart")
        screen = t.wait_for(lambda s: any("after the restart" in line for line in s))
        body = [line.rstrip() for line in screen[1:-1]]
        assert body[0].endswith("  /rc/a")
        assert body[1] == " " * 11 + "before the crash"
        assert body[2].endswith("  /rc/b")
        assert body[3] == " " * 11 + "after the restart"

        # And it still quits cleanly.
        t.keys("q")
        t.wait_for(lambda s: not any(line.startswith("q: Quit") for line in s))
    finally:
        for b in brokers:
            b.kill()


def test_monitor_quits_while_reconnecting(tmp_path, tmux):
    port = free_port()
    b = PlainBroker(tmp_path, port)
    try:
        t = tmux(f"{MQTTOOLS} monitor --port {port} '/q/#'; echo monitor-exit=$?")
        t.wait_for(lambda s: s[-1].startswith("q: Quit"))
        b.kill()
        t.wait_for(lambda s: "connection lost, reconnecting" in s[0])
        t.keys("q")
        t.wait_for(lambda s: any("monitor-exit=0" in line for line in s), timeout=5)
    finally:
        b.kill()


def test_monitor_multi_line_payloads_pause_indicator_and_scrolling(broker, tmux):
    t = tmux(f"{MQTTOOLS} monitor -p {broker.port} -q 1 -t '/s/#'")
    menu = "q: Quit, p: Play/Pause, f: Format (auto)"
    t.wait_for(lambda s: s[-1].startswith(menu))
    # Continuation lines of a multi-line payload stay in the message column.
    publish(broker.port, "--message-format", "text", "/s/0", "first line\nsecond line")
    screen = t.wait_for(lambda s: any("second line" in line for line in s))
    body = [line.rstrip() for line in screen[1:-1]]
    assert body[1:3] == [" " * 11 + "first line", " " * 11 + "second line"]

    # p: the title bar says PAUSED and counts what arrives meanwhile.
    t.keys("p")
    t.wait_for(lambda s: s[0].rstrip().endswith("PAUSED"))
    publish(broker.port, "/s/1", "while paused")
    screen = t.wait_for(lambda s: s[0].rstrip().endswith("PAUSED (1 new)"))
    assert not any("while paused" in line for line in screen)
    t.keys("p")
    screen = t.wait_for(lambda s: any("while paused" in line for line in s))
    assert screen[0].rstrip() == "TIMESTAMP  TOPIC & MESSAGE"

    # 3 + 2 + 6 * 2 = 17 body rows on a 10-row body: the menu bar shows where
    # the view is, and the keys scroll.
    for n in range(2, 8):
        publish(broker.port, f"/s/{n}", f"message {n}")
    screen = t.wait_for(lambda s: s[-1].rstrip().endswith("1-10/17"))
    assert screen[1].rstrip().endswith("  /s/0")
    t.keys("End")
    screen = t.wait_for(lambda s: s[-1].rstrip().endswith("8-17/17"))
    assert screen[-2].rstrip() == " " * 11 + "message 7"
    t.keys("Home")
    t.wait_for(lambda s: s[-1].rstrip().endswith("1-10/17") and s[1].rstrip().endswith("  /s/0"))
    t.keys("Down")
    screen = t.wait_for(lambda s: s[-1].rstrip().endswith("2-11/17"))
    assert screen[1].rstrip() == " " * 11 + "first line"
    t.keys("NPage")
    t.wait_for(lambda s: s[-1].rstrip().endswith("8-17/17"))
    t.keys("PPage")
    t.wait_for(lambda s: s[-1].rstrip().endswith("1-10/17"))
    t.keys("Up")  # already at the top: stays
    time.sleep(0.3)
    assert t.screen()[-1].rstrip().endswith("1-10/17")
    t.keys("q")
    t.wait_for(lambda s: not any(line.startswith("q: Quit") for line in s))


def test_monitor_without_a_topic_is_an_error():
    r = subprocess.run([str(MQTTOOLS), "monitor", "--port", "1"], capture_output=True, timeout=20)
    assert (r.returncode, r.stderr.decode()) == (1, "error: the following argument is required: topic\n")
