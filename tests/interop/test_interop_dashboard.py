"""The web dashboard (issue 27) in Debian's headless chromium, driven by
playwright-core: the page loads without script errors, shows a client that
connects, draws the rate plot while it publishes, and kicking the client
from its row disconnects it (DISCONNECT 0x98). Screenshots are kept under
build/test-screenshots/."""
import shutil
import subprocess

import pytest

from .conftest import BUILD, MQTTOOLSD, NODE_MODULES, WAIT, free_port, run_node, stop_process, wait_for_port

pytestmark = pytest.mark.mqttoolsd_only

KEY, SECRET = "dash", "dash-secret"


class DashboardBroker:
    def __init__(self, tmp_path, name="mqttoolsd", cluster=""):
        keys = tmp_path / "api_keys"
        if not keys.exists():
            subprocess.run([str(BUILD / "src" / "tools" / "mqttools"), "passwd", "-c", "-b", str(keys), KEY, SECRET],
                           check=True, capture_output=True)
        self.port, self.api_port = free_port(), free_port()
        conf = tmp_path / f"{name}.toml"
        conf.write_text(f"""
allow_anonymous = true
[[listener]]
port = {self.port}
[[listener]]
port = {self.api_port}
protocol = "http_api"
api_key_file = "{keys}"
{cluster}""")
        self.log_path = tmp_path / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(MQTTOOLSD), "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, proc=self.proc)
        wait_for_port(self.api_port, proc=self.proc)

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")


def test_dashboard_in_chromium(tmp_path):
    if not shutil.which("chromium"):
        pytest.skip("chromium not installed (scripts/dev installs it)")
    if not (NODE_MODULES / "playwright-core").is_dir():
        pytest.skip("playwright-core not installed (npm ci in tests/interop)")
    b = DashboardBroker(tmp_path)
    try:
        shots = BUILD / "test-screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        for name in ("dashboard-overview.png", "dashboard-clients.png"):
            if (shots / name).exists():
                (shots / name).unlink()
        out = run_node("dashboard.js", b, b.api_port, KEY, SECRET, shots, timeout=WAIT + 100)
        assert out["errors"] == [], out
        assert out["plotMax"] > 10, out
        assert "dashboard-demo" in out["rowText"] and "connected" in out["rowText"], out
        assert out["kickReason"] == 0x98, out
        assert out["rowGone"] and out["retainedListed"], out
        for name in ("dashboard-overview.png", "dashboard-clients.png"):
            assert (shots / name).stat().st_size > 10000, name
        log = b.output()
        assert "Client dashboard-demo kicked by the management API." in log
    finally:
        b.proc.terminate()
        try:
            b.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait()
        b.log.close()
    assert b.proc.returncode == 0, b.output()


def test_dashboard_plots_every_node_of_a_cluster(tmp_path):
    """Two nodes over nats-server: node 1's dashboard draws a line per node
    in each plot (its own clients and node 2's), with a legend naming them."""
    if not shutil.which("chromium"):
        pytest.skip("chromium not installed (scripts/dev installs it)")
    if not (NODE_MODULES / "playwright-core").is_dir():
        pytest.skip("playwright-core not installed (npm ci in tests/interop)")
    nats_server = shutil.which("nats-server")
    if not nats_server:
        pytest.skip("nats-server not installed (scripts/dev installs it)")
    nats_port = free_port()
    nats_log = open(tmp_path / "nats.log", "wb")
    nats = subprocess.Popen([nats_server, "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd",
                             str(tmp_path / "nats-js")], stdout=nats_log, stderr=subprocess.STDOUT)
    nodes = []
    try:
        wait_for_port(nats_port, proc=nats)
        for name in ("node1", "node2"):
            nodes.append(DashboardBroker(tmp_path, name, f'[cluster]\nnats_url = "nats://127.0.0.1:{nats_port}"\n'
                                                        f'node_id = "{name}"\n'))
        shots = BUILD / "test-screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        if (shots / "dashboard-cluster.png").exists():
            (shots / "dashboard-cluster.png").unlink()
        out = run_node("dashboard_cluster.js", nodes[0], nodes[0].api_port, KEY, SECRET, shots, nodes[1].port,
                       timeout=WAIT + 100)
        assert out["errors"] == [], out
        assert out["legendVisible"] and out["legend"] == ["node1", "node2"], out
        for plot in ("plot-rate", "plot-connections", "plot-subscriptions", "plot-retained"):
            assert {p["node"] for p in out["plots"][plot]} == {"node1", "node2"}, (plot, out)
        lines = {(p["node"], p["cls"]): p for p in out["plots"]["plot-rate"]}
        # Each node's own traffic: node 1 publishes about three times as
        # much as node 2, and both deliver to their own subscribers.
        assert lines[("node1", "in")]["max"] > 5 and lines[("node2", "in")]["max"] > 5, out
        assert lines[("node1", "out")]["max"] > 5 and lines[("node2", "out")]["max"] > 5, out
        assert lines[("node1", "in")]["colour"] != lines[("node2", "in")]["colour"], out
        conns = {p["node"]: p["max"] for p in out["plots"]["plot-connections"]}
        assert conns == {"node1": 1, "node2": 1}, out
        subs = {p["node"]: p["max"] for p in out["plots"]["plot-subscriptions"]}
        assert subs["node1"] >= 1 and subs["node2"] >= 1, out
        assert (shots / "dashboard-cluster.png").stat().st_size > 10000
    finally:
        codes = [stop_process(b.proc) for b in nodes]
        for b in nodes:
            b.log.close()
        stop_process(nats)
        nats_log.close()
    assert codes == [0, 0], [b.log_path.read_text(errors="replace")[-3000:] for b in nodes]
