"""The web dashboard (issue 27) in Debian's headless chromium, driven by
playwright-core: the page loads without script errors, shows a client that
connects, draws the rate plot while it publishes, and kicking the client
from its row disconnects it (DISCONNECT 0x98). Screenshots are kept under
build/test-screenshots/."""
import shutil
import subprocess

import pytest

from .conftest import BUILD, MQTTOOLSD, NODE_MODULES, WAIT, free_port, run_node, wait_for_port

pytestmark = pytest.mark.mqttoolsd_only

KEY, SECRET = "dash", "dash-secret"


class DashboardBroker:
    def __init__(self, tmp_path):
        keys = tmp_path / "api_keys"
        subprocess.run([str(BUILD / "src" / "tools" / "mqttools"), "passwd", "-c", "-b", str(keys), KEY, SECRET],
                       check=True, capture_output=True)
        self.port, self.api_port = free_port(), free_port()
        conf = tmp_path / "dashboard.toml"
        conf.write_text(f"""
allow_anonymous = true
[[listener]]
port = {self.port}
[[listener]]
port = {self.api_port}
protocol = "http_api"
api_key_file = "{keys}"
""")
        self.log_path = tmp_path / "mqttoolsd.log"
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
