"""MQTT over WebSocket with third-party clients: MQTT.js in Node over ws and
wss (MQTT 5 and 3.1.1), and a real browser — Debian's chromium, headless,
driven by playwright-core — loading the mqtt package's browser bundle from a
loopback page. mqttoolsd runs with a ws and a wss listener (certificates
from a CA made for the test) next to its plain port."""
import json
import shutil
import subprocess

import pytest

from .conftest import BUILD, MQTTOOLSD, NODE_MODULES, WAIT, free_port, run_node, stop_process, wait_for_port

pytestmark = pytest.mark.mqttoolsd_only


def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("wscerts")
    openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=mqttools test CA")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    return d


class WsBroker:
    def __init__(self, tmp_path, certs):
        self.port, self.ws, self.wss = free_port(), free_port(), free_port()
        conf = tmp_path / "ws.toml"
        conf.write_text(
            "allow_anonymous = true\n"
            f"[[listener]]\nport = {self.ws}\nprotocol = \"websockets\"\n"
            f"[[listener]]\nport = {self.wss}\nprotocol = \"websockets\"\n"
            f"certfile = \"{certs / 'server.crt'}\"\nkeyfile = \"{certs / 'server.key'}\"\n")
        self.log_path = tmp_path / "mqttoolsd-ws.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(MQTTOOLSD), "-p", str(self.port), "-c", str(conf)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for p in (self.port, self.ws, self.wss):
            wait_for_port(p, proc=self.proc)

    def output(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def wsbroker(tmp_path, certs):
    b = WsBroker(tmp_path, certs)
    yield b
    code = stop_process(b.proc)
    b.log.close()
    assert code == 0, b.output()[-4000:]


@pytest.mark.parametrize("version", [5, 4], ids=["mqtt5", "mqtt311"])
def test_mqttjs_over_ws_and_wss(wsbroker, certs, version):
    out = run_node("websocket.js", wsbroker, wsbroker.ws, wsbroker.wss, certs / "ca.crt", version)
    prefix = f"mqttjs/ws{version}/all/"
    expected = [{"topic": prefix + "tcp", "size": 8, "head": b"from tcp".hex()},
                {"topic": prefix + "ws", "size": 7, "head": b"from ws".hex()},
                {"topic": prefix + "wss", "size": 100 * 1024, "head": "07" * 8}]
    for name in ("ws", "wss", "tcp"):
        assert out["got"][name] == expected, name
    assert out["kept"] == {"topic": f"mqttjs/ws{version}/kept", "payload": "retained over ws", "retain": True}
    log = wsbroker.output()
    assert f"as mqttjs-ws-{version} (" in log and ", ws)." in log
    assert f"as mqttjs-wss-{version} (" in log and ", wss)." in log


def publish_retained(port, topic, payload):
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", payload,
                    "-r", "-q", "1", "-V", "mqttv5"], check=True, timeout=WAIT)


def test_chromium_over_ws_and_wss(wsbroker):
    if not shutil.which("chromium"):
        pytest.skip("chromium not installed (scripts/dev installs it)")
    if not (NODE_MODULES / "playwright-core").is_dir():
        pytest.skip("playwright-core not installed (npm ci in tests/interop)")
    if shutil.which("mosquitto_pub") is None:
        pytest.skip("mosquitto_pub not installed")
    for tag in ("ws", "wss"):
        publish_retained(wsbroker.port, f"browser/{tag}/retained", f"kept for the browser over {tag}")
    # A TCP subscriber sees what the browser publishes.
    watcher = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(wsbroker.port), "-t", "browser/+/live",
                                "-C", "2", "-W", str(int(WAIT) + 50), "-F", "%t %p"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        shots = BUILD / "test-screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "websocket-chromium.png"
        if shot.exists():
            shot.unlink()
        out = run_node("browser_ws.js", wsbroker, wsbroker.ws, wsbroker.wss, shot, timeout=60)
        results = out["results"]
        for tag in ("ws", "wss"):
            r = results[tag]
            assert r["error"] is None and r["connected"], (tag, r, out["logs"])
            assert r["messages"] == [
                {"topic": f"browser/{tag}/retained", "payload": f"kept for the browser over {tag}", "retain": True},
                {"topic": f"browser/{tag}/live", "payload": f"hello from the browser over {tag}", "retain": False},
            ], tag
        assert shot.exists() and shot.stat().st_size > 1000
        got, _ = watcher.communicate(timeout=WAIT)
        assert sorted(got.decode().splitlines()) == [
            "browser/ws/live hello from the browser over ws", "browser/wss/live hello from the browser over wss"]
        log = wsbroker.output()
        assert "as browser-ws (" in log and "as browser-wss (" in log
        print(json.dumps({"chromium": out["version"], "screenshot": str(shot)}))
    finally:
        stop_process(watcher)
        for f in (watcher.stdout, watcher.stderr):
            f.close()
