"""mqttoolsd -c FILE: bad files exit 1 with one message per problem
(FILE:LINE:COLUMN, the key, a "did you mean"), good files are served."""
import subprocess

import pytest

from conftest import MQTTOOLSD, free_port
from test_deploy_util import TOP, Client, Daemon, port_accepts, wait_until

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def run_config(tmp_path, text, *args):
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    proc = subprocess.run([str(MQTTOOLSD), "-c", str(conf), *args], capture_output=True,
                          text=True, timeout=10)
    return proc, str(conf)


CASES = [
    ("unknown key",
     "max_conections = 10\n",
     ["{f}:1:1: unknown key 'max_conections' (did you mean 'max_connections'?)"]),
    ("unknown key in a listener",
     "[[listener]]\nport = {port}\nprot = 1\n",
     ["{f}:3:1: unknown key 'prot' in [[listener]] (did you mean 'port'?)"]),
    ("wrong type",
     "allow_anonymous = \"yes\"\n",
     ["{f}:1:19: allow_anonymous: expected a boolean (true or false), got a string"]),
    ("out of range",
     "max_keepalive = 70000\n",
     ["{f}:1:17: max_keepalive: 70000 is out of range (0 to 65535)"]),
    ("listener port out of range",
     "[[listener]]\nport = 70000\n",
     ["{f}:2:8: listener[0].port: 70000 is out of range (1 to 65535)"]),
    ("bad enum with suggestion",
     "log_level = \"warn\"\n",
     ["{f}:1:13: log_level: 'warn' is not one of trace, debug, info, warning, error "
      "(did you mean 'warning'?)"]),
    ("syntax error",
     "sys_interval = = 3\n",
     ["{f}:1:"]),
    ("every problem at once, in file order",
     "max_conections = 10\nmax_keepalive = 70000\nallow_anonymous = \"yes\"\n"
     "[[listener]]\nport = {port}\nbnd = \"127.0.0.1\"\n",
     ["{f}:1:1: unknown key 'max_conections' (did you mean 'max_connections'?)",
      "{f}:2:17: max_keepalive: 70000 is out of range (0 to 65535)",
      "{f}:3:19: allow_anonymous: expected a boolean (true or false), got a string",
      "{f}:6:1: unknown key 'bnd' in [[listener]] (did you mean 'bind'?)"]),
]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_config_exits_1_with_every_problem(tmp_path, name, text, expected):
    port = free_port()
    proc, f = run_config(tmp_path, text.format(port=port))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    for want in expected:
        want = want.format(f=f)
        assert any(line.startswith(want) for line in lines), (want, proc.stderr)
    problem_lines = [line for line in lines if line.startswith(f + ":")]
    assert len(problem_lines) == len(expected), proc.stderr
    # It never half-started: the listener of the file was not opened.
    assert not port_accepts(port)


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.toml"
    proc = subprocess.run([str(MQTTOOLSD), "-c", str(missing)], capture_output=True, text=True,
                          timeout=10)
    assert proc.returncode == 1
    assert f"cannot read config file '{missing}': No such file or directory" in proc.stderr


def test_listener_from_config_is_served(tmp_path):
    port = free_port()
    d = Daemon(tmp_path, [], config=f"allow_anonymous = true\n[[listener]]\nport = {port}\n")
    try:
        assert wait_until(lambda: port_accepts(port) or d.proc.poll() is not None, 10)
        assert d.proc.poll() is None, d.output()
        c = Client(port, "deploy-config-1")
        assert c.connack_reason == 0
        assert c.ping()
        c.close()
    finally:
        assert d.stop() == 0, d.output()


def test_shipped_config_starts(tmp_path):
    """scripts/dev run uses conf/mqttoolsd.toml; with -p it serves that port
    (and -p replaces the implicit 127.0.0.1:1883)."""
    port = free_port()
    # The shipped config turns persistence on in the working directory.
    d = Daemon(tmp_path, ["-c", str(TOP / "conf" / "mqttoolsd.toml"), "-p", str(port)], cwd=tmp_path)
    try:
        assert wait_until(lambda: port_accepts(port) or d.proc.poll() is not None, 10)
        assert d.proc.poll() is None, d.output()
        c = Client(port, "deploy-config-2")
        assert c.connack_reason == 0
        c.close()
    finally:
        assert d.stop() == 0, d.output()
