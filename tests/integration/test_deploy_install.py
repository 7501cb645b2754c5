"""`meson install --destdir` puts both binaries, the unit files, the config
and the man pages where they belong, and `systemd-analyze verify` accepts
the installed unit files."""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import BUILD
from test_deploy_util import MQTTOOLSD, TOP

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def build_option(name):
    out = subprocess.run(["meson", "introspect", str(BUILD), "--buildoptions"],
                         capture_output=True, text=True, check=True).stdout
    for opt in json.loads(out):
        if opt["name"] == name:
            return opt["value"]
    raise KeyError(name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    destdir = tmp_path_factory.mktemp("destdir")
    proc = subprocess.run(["meson", "install", "-C", str(BUILD), "--no-rebuild", "--destdir",
                           str(destdir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prefix = build_option("prefix")
    sysconfdir = build_option("sysconfdir")
    if not os.path.isabs(sysconfdir):
        sysconfdir = os.path.join(prefix, sysconfdir)
    unitdir = subprocess.run(["pkg-config", f"--define-variable=rootprefix={prefix}",
                              "--variable=systemdsystemunitdir", "systemd"],
                             capture_output=True, text=True, check=True).stdout.strip()
    root = lambda p: destdir / p.lstrip("/")  # noqa: E731
    return {
        "destdir": destdir,
        "prefix": prefix,
        "bindir": root(os.path.join(prefix, build_option("bindir"))),
        "sbindir": root(os.path.join(prefix, build_option("sbindir"))),
        "mandir": root(os.path.join(prefix, build_option("mandir"))),
        "config": root(os.path.join(sysconfdir, "mqttools", "mqttoolsd.toml")),
        "config_path": os.path.join(sysconfdir, "mqttools", "mqttoolsd.toml"),
        "unitdir": root(unitdir),
    }


def test_binaries_installed(installed):
    # The daemon goes to sbin (as Mosquitto's), the client to bin.
    for path in (installed["sbindir"] / "mqttoolsd", installed["bindir"] / "mqttools"):
        assert path.is_file() and os.access(path, os.X_OK), path


def test_config_installed_to_sysconfdir(installed):
    assert installed["config"].read_text() == (TOP / "conf" / "mqttoolsd.toml").read_text()


def test_man_pages_installed(installed):
    for section, page in (("8", "mqttoolsd.8"), ("1", "mqttools.1"), ("5", "mqttoolsd.toml.5")):
        path = installed["mandir"] / f"man{section}" / page
        assert path.is_file(), path
        # Renders without groff warnings.
        proc = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True,
                              text=True, env={**os.environ, "MANWIDTH": "80"})
        assert proc.returncode == 0
        assert proc.stderr == "", proc.stderr


def test_units_installed_with_real_paths(installed):
    service = (installed["unitdir"] / "mqttoolsd.service").read_text()
    assert (installed["unitdir"] / "mqttoolsd.socket").is_file()
    sbindir = os.path.join(installed["prefix"], build_option("sbindir"))
    assert f"ExecStart={sbindir}/mqttoolsd -c {installed['config_path']}\n" in service
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=",
                 "DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "LimitNOFILE="):
        assert line in service, line
    assert "@" not in re.sub(r"(?m)^#.*$", "", service).replace("@system-service", "").replace(
        "~@privileged", "")


def test_systemd_analyze_verify(installed, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (scripts/dev installs the systemd package)")
    # Verify the installed units as they are, except that ExecStart points
    # into the destdir (systemd-analyze checks the binary exists) and man
    # pages are looked up in the destdir (it checks Documentation=man:...).
    units = tmp_path / "units"
    units.mkdir()
    sbindir = os.path.join(installed["prefix"], build_option("sbindir"))
    service = (installed["unitdir"] / "mqttoolsd.service").read_text()
    service = service.replace(f"ExecStart={sbindir}/mqttoolsd",
                              f"ExecStart={installed['sbindir']}/mqttoolsd")
    (units / "mqttoolsd.service").write_text(service)
    shutil.copy(installed["unitdir"] / "mqttoolsd.socket", units / "mqttoolsd.socket")
    env = {**os.environ, "MANPATH": str(installed["mandir"]),
           "SYSTEMD_LOG_LEVEL": "notice"}
    proc = subprocess.run([analyze, "verify", str(units / "mqttoolsd.service"),
                           str(units / "mqttoolsd.socket")], capture_output=True, text=True,
                          env=env, timeout=60)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 and ("Failed to initialize manager" in out
                                 or "Failed to setup working directory" in out):
        pytest.skip(f"systemd-analyze cannot run in this container: {out.strip()}")
    assert proc.returncode == 0, out
    assert out.strip() == "", out  # no warnings either (unknown keys are only warnings)
