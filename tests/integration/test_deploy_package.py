"""The Debian packages (issue 29): `scripts/dev package` builds mqttoolsd
and mqttools (lintian clean, or the build fails); their contents and
control data are checked; then, as root, a debootstrapped Debian 12 root is
booted with systemd as PID 1 (nspawn.py, a loopback of its own) and the
packages go through what an admin does with apt: install (a running,
hardened service on 1883), reload, an edited config kept across an upgrade
to a rebuilt package of a higher version, remove, purge.

The package is a release build of its own, so the ASan pass skips the file.
Cost (2 cores): the first build is a full release build (ccache makes a
repeated one a few minutes less), the upgrade's rebuild reuses its objects;
the root is debootstrapped once per build folder."""
import email.utils
import os
import pathlib
import re
import shutil
import subprocess
import time

import pytest

import nspawn
from conftest import BUILD, SANITIZED
from test_deploy_util import TOP, wait_until

pytestmark = [
    pytest.mark.skipif(SANITIZED, reason="builds its own release binaries (scripts/dev package); "
                                         "the plain pass covers the packages"),
    pytest.mark.skipif(shutil.which("dpkg-buildpackage") is None,
                       reason="dpkg-dev not installed (scripts/dev installs it)"),
]

OUT = TOP / "build-deb"  # scripts/dev package's default: the path ccache knows
SRC = OUT / "src" / "mqttools"
UPGRADE_SUFFIX = "+upgradetest1"
# systemd itself, and what the maintainer scripts use; the packages'
# Depends are added from the built .debs (the root has no network).
ROOT_BASE = ["systemd", "systemd-sysv", "dbus", "procps", "adduser"]


def meson_version():
    return re.search(r"version\s*:\s*'([^']+)'", (TOP / "meson.build").read_text()).group(1)


def deb_env():
    """nocheck: the unit tests run in their own pass, not inside the package
    build; noddebs: no -dbgsym packages (compressing their debug info costs
    minutes, and nothing here installs them)."""
    env = {**os.environ, "DEB_BUILD_OPTIONS": "nocheck noddebs"}
    if shutil.which("ccache") and "CCACHE_DIR" not in env:
        env["CCACHE_DIR"] = subprocess.run(["ccache", "-k", "cache_dir"], capture_output=True,
                                           text=True).stdout.strip()
    return env


def keep(built, folder):
    """Copies of the two .debs in BUILT, in FOLDER (a later build replaces BUILT's)."""
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for name in ("mqttoolsd", "mqttools"):
        (path,) = sorted(built.glob(f"{name}_*.deb"))
        found[name] = pathlib.Path(shutil.copy2(path, folder / path.name))
    return found


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    """The packages as `scripts/dev package` makes them (it fails on a lintian
    error or warning)."""
    r = subprocess.run([str(TOP / "scripts" / "dev"), "package"], env=deb_env(), capture_output=True,
                       text=True, timeout=3600, cwd=TOP)
    assert r.returncode == 0, r.stderr[-6000:]
    return keep(OUT, tmp_path_factory.mktemp("debs") / "v1")


@pytest.fixture(scope="module")
def upgrade_debs(debs, tmp_path_factory):
    """The same tree with a changelog entry of a higher version, rebuilt by
    dpkg-buildpackage: -nc keeps the compiled objects (nothing of the
    compiled code depends on debian/changelog), every packaging step runs
    again (install, systemd and maintainer scripts, shlibs, control, md5sums)."""
    version = subprocess.run(["dpkg-parsechangelog", "-S", "Version"], cwd=SRC, capture_output=True,
                             text=True, check=True).stdout.strip()
    changelog = SRC / "debian" / "changelog"
    entry = (f"mqttools ({version}{UPGRADE_SUFFIX}) unstable; urgency=medium\n\n"
             "  * Upgrade test build (tests/integration/test_deploy_package.py).\n\n"
             f" -- mqttools developers <dev@mqttools.org>  {email.utils.formatdate()}\n\n")
    changelog.write_text(entry + changelog.read_text())
    for old in (OUT / "src").glob("*.deb"):
        old.unlink()
    r = subprocess.run(["dpkg-buildpackage", "-b", "-us", "-uc", "-nc", "-Jauto"], cwd=SRC, env=deb_env(),
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return keep(OUT / "src", tmp_path_factory.mktemp("debs") / "v2")


def contents(deb):
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    return {line.split()[5].lstrip(".") for line in out.splitlines()}


def field(deb, name):
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def control_file(deb, name, tmp_path):
    folder = tmp_path / f"control-{deb.stem}"
    if not folder.exists():
        subprocess.run(["dpkg-deb", "-e", str(deb), str(folder)], check=True)
    path = folder / name
    return path.read_text() if path.exists() else ""


def installable(name):
    """NAME, or the package installed here that provides it (debootstrap
    cannot resolve a virtual package such as libspdlog1.10-fmt9)."""
    status = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", name], capture_output=True, text=True).stdout
    if status == "install ok installed":
        return name
    listing = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Provides}\n"], capture_output=True,
                             text=True, check=True).stdout
    for line in listing.splitlines():
        package, _, provides = line.partition("\t")
        if name in (re.match(r"\s*([^\s(]+)", p).group(1) for p in provides.split(",") if p.strip()):
            return package
    return name


def depends_names(deb):
    """Package names in Depends (the first of each alternative)."""
    return [re.match(r"\s*([^\s(|]+)", part).group(1) for part in field(deb, "Depends").split(",")]


def build_depends():
    """Package names in debian/control's Build-Depends (versions, profiles dropped)."""
    text = (TOP / "debian" / "control").read_text()
    value = re.search(r"^Build-Depends:(.*?)(?=^\S)", text, re.M | re.S).group(1)
    return {re.match(r"\s*([^\s(<\[|]+)", part).group(1) for part in value.split(",") if part.strip()}


def test_build_depends_cover_meson_dependencies():
    """Every library meson.build asks for comes from a package in Build-Depends
    (a clean build chroot has nothing else): the .pc file pkg-config finds
    here belongs to one of them."""
    wanted = set()
    for build_file in [TOP / "meson.build", *(TOP / "src").rglob("meson.build")]:
        wanted |= set(re.findall(r"\bdependency\(\s*'([^']+)'", build_file.read_text()))
    wanted -= {"threads", "benchmark"}  # the compiler's; -Dbench=false
    declared = build_depends()
    for name in sorted(wanted):
        pcdir = subprocess.run(["pkg-config", "--variable=pcfiledir", name], capture_output=True,
                               text=True).stdout.strip()
        assert pcdir, f"pkg-config does not know {name}"
        owner = subprocess.run(["dpkg", "-S", f"{pcdir}/{name}.pc"], capture_output=True, text=True)
        assert owner.returncode == 0, owner.stderr
        package = owner.stdout.split(":")[0]
        assert package in declared, f"meson dependency {name} comes from {package}: add it to Build-Depends"


def test_package_contents(debs, tmp_path):
    broker, client = debs["mqttoolsd"], debs["mqttools"]
    version = meson_version()
    assert field(broker, "Version") == version and field(client, "Version") == version
    files = contents(broker)
    for path in ("/usr/sbin/mqttoolsd", "/etc/mqttools/mqttoolsd.toml",
                 "/lib/systemd/system/mqttoolsd.service", "/lib/systemd/system/mqttoolsd.socket",
                 "/lib/systemd/system/mqttoolsd@.service", "/usr/share/man/man8/mqttoolsd.8.gz",
                 "/usr/share/man/man5/mqttoolsd.toml.5.gz", "/usr/share/doc/mqttoolsd/copyright"):
        assert path in files, path
    assert "/usr/bin/mqttools" not in files
    files = contents(client)
    for path in ("/usr/bin/mqttools", "/usr/share/man/man1/mqttools.1.gz"):
        assert path in files, path
    assert "/usr/sbin/mqttoolsd" not in files

    assert control_file(broker, "conffiles", tmp_path).split() == ["/etc/mqttools/mqttoolsd.toml"]
    # ${shlibs:Depends}: the libraries the binaries link, plus adduser for the postinst.
    names = depends_names(broker)
    for lib in ("adduser", "libc6", "libstdc++6", "libssl3", "libsystemd0", "libsqlite3-0",
                "libspdlog1.10", "libtomlplusplus3", "libnats3.4"):
        assert any(name == lib or name.startswith(lib + "-") for name in names), (lib, names)
    assert "libc6" in depends_names(client)
    assert "adduser" not in depends_names(client)

    # The unit as packaged: the static user the postinst makes, Debian's paths.
    unit = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(broker)], capture_output=True, check=True).stdout
    extracted = tmp_path / "root"
    extracted.mkdir()
    subprocess.run(["tar", "-x", "-C", str(extracted)], input=unit, check=True)
    service = (extracted / "lib/systemd/system/mqttoolsd.service").read_text()
    for line in ("User=mqttoolsd", "Group=mqttoolsd", "StateDirectory=mqttoolsd", "LogsDirectory=mqttoolsd",
                 "ExecStart=/usr/sbin/mqttoolsd -c /etc/mqttools/mqttoolsd.toml", "ProtectSystem=strict"):
        assert f"\n{line}\n" in service, line
    assert "DynamicUser" not in re.sub(r"#.*", "", service)
    template = (extracted / "lib/systemd/system/mqttoolsd@.service").read_text()
    assert "\nUser=mqttoolsd\n" in template and "\nStateDirectory=mqttoolsd/%i\n" in template
    assert (extracted / "etc/mqttools/mqttoolsd.toml").read_text() == (TOP / "conf/mqttoolsd.toml").read_text()
    # The postinst makes the user before debhelper's part enables and starts
    # the service; the socket is enabled only where an admin had enabled it.
    postinst = control_file(broker, "postinst", tmp_path)
    assert postinst.index("adduser --system") < postinst.index("deb-systemd-helper enable 'mqttoolsd.service'")
    assert "_dh_action=start" in postinst
    socket_part = postinst[postinst.index("debian-installed 'mqttoolsd.socket'"):]
    assert socket_part.index("was-enabled 'mqttoolsd.socket'") < socket_part.index("enable 'mqttoolsd.socket'")
    assert "mqttoolsd@" not in postinst
    # Debug symbols are stripped into the -dbgsym package.
    assert "not stripped" not in subprocess.run(["file", "-L", str(extracted / "usr/sbin/mqttoolsd")],
                                                capture_output=True, text=True).stdout


# --- in a booted Debian 12 -------------------------------------------------

@pytest.fixture(scope="module")
def container(debs, tmp_path_factory):
    why = nspawn.missing_tools()
    if why:
        pytest.skip(why)
    packages = ROOT_BASE + sorted({installable(n) for deb in debs.values() for n in depends_names(deb)} - set(ROOT_BASE))
    base = nspawn.make_root(BUILD / "package-root", packages, hostname="mqttools-pkg")
    # A fresh copy per run: apt works on it, the cached root stays pristine.
    root = tmp_path_factory.mktemp("nspawn") / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)
    (root / "srv" / "debs").mkdir(parents=True, exist_ok=True)
    c = nspawn.Container(root, root.parent / "container.log", machine="mqttools-pkg", private_network=True)
    c.root = root
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def apt(c, *args):
    r = c.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", *args, check=False, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def install(c, debs):
    names = []
    for deb in debs.values():
        shutil.copy2(deb, c.root / "srv" / "debs" / deb.name)
        names.append(f"/srv/debs/{deb.name}")
    apt(c, "install", *names)


def listening(c, port):
    """A socket in LISTEN state on 127.0.0.1:PORT in the container's network."""
    tcp = c.run("cat", "/proc/net/tcp").stdout
    return f"0100007F:{port:04X} 00000000:0000 0A" in tcp


def main_pid(c):
    return int(c.show("mqttoolsd", "MainPID"))


def round_trip(c, topic, text):
    """A retained message then a live one through the broker, with our client,
    inside the container. The retained one arriving shows the subscription is
    in place before the live one is sent."""
    c.run("mqttools", "publish", "-h", "127.0.0.1", "-t", topic, "-m", f"{text}-retained", "-r", "-q", "1")
    sub = subprocess.Popen(c.argv("mqttools", "subscribe", "-h", "127.0.0.1", "-t", topic, "-C", "2", "-W", "60"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sub.stdout.readline().strip() == f"{text}-retained"
        c.run("mqttools", "publish", "-h", "127.0.0.1", "-t", topic, "-m", f"{text}-live", "-q", "1")
        assert sub.stdout.readline().strip() == f"{text}-live"
        assert sub.wait(timeout=30) == 0, sub.stderr.read()
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()


def test_install_runs_a_hardened_service(container, debs, record_property):
    c = container
    install(c, debs)
    assert c.show("mqttoolsd", "ActiveState") == "active", c.journal()
    assert c.run("systemctl", "is-enabled", "mqttoolsd.service").stdout.strip() == "enabled"
    assert c.run("systemctl", "is-enabled", "mqttoolsd.socket", check=False).stdout.strip() == "disabled"
    assert c.show("mqttoolsd.socket", "ActiveState") == "inactive"
    assert wait_until(lambda: listening(c, 1883), 30, step=0.2)

    user = c.run("getent", "passwd", "mqttoolsd").stdout.strip().split(":")
    assert user[5:] == ["/var/lib/mqttoolsd", "/usr/sbin/nologin"], user
    assert int(user[2]) < 1000  # a system user
    assert c.run("getent", "group", "mqttoolsd").returncode == 0
    for folder in ("/var/lib/mqttoolsd", "/var/log/mqttoolsd"):
        assert c.run("stat", "-c", "%U:%G", folder).stdout.strip() == "mqttoolsd:mqttoolsd", folder
    # persistence = true in the shipped config: the store is in the state folder.
    assert wait_until(lambda: c.run("test", "-f", "/var/lib/mqttoolsd/mqttoolsd.db", check=False).returncode == 0,
                      15, step=0.2), c.journal()

    status = c.run("cat", f"/proc/{main_pid(c)}/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[0] == user[2]
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"
    assert fields["CapEff"].strip() == "0000000000000400"  # CAP_NET_BIND_SERVICE only

    # systemd's own rating of the unit's sandbox (0 best, 10 worst).
    out = c.run("systemd-analyze", "security", "--no-pager", "mqttoolsd.service", check=False).stdout
    m = re.search(r"Overall exposure level for mqttoolsd\.service: (\d+\.\d+) (\S+)", out)
    assert m, out[-2000:]
    record_property("systemd_analyze_security", f"{m.group(1)} {m.group(2)}")
    print(f"systemd-analyze security mqttoolsd.service: {m.group(1)} {m.group(2)}")
    assert float(m.group(1)) <= 2.0, out


def test_messages_round_trip_inside(container):
    round_trip(container, "pkg/first", "installed")


def test_reload_keeps_the_process(container):
    c = container
    pid = main_pid(c)
    c.run("systemctl", "reload", "mqttoolsd")
    assert wait_until(lambda: "Configuration reloaded." in c.journal(), 15, step=0.2), c.journal()
    assert main_pid(c) == pid
    assert c.show("mqttoolsd", "ActiveState") == "active"


def test_upgrade_keeps_the_edit_and_restarts(container, upgrade_debs):
    c = container
    conf = c.root / "etc" / "mqttools" / "mqttoolsd.toml"
    edited = conf.read_text() + "\n# a local edit\nmax_keepalive = 600\n"
    conf.write_text(edited)
    pid = main_pid(c)
    install(c, upgrade_debs)
    version = c.run("dpkg-query", "-W", "-f", "${Version}", "mqttoolsd").stdout
    assert version == meson_version() + UPGRADE_SUFFIX
    assert conf.read_text() == edited  # the conffile keeps the admin's edit
    assert not (c.root / "etc" / "mqttools" / "mqttoolsd.toml.dpkg-new").exists()
    assert wait_until(lambda: c.show("mqttoolsd", "ActiveState") == "active", 30, step=0.2), c.journal()
    assert main_pid(c) not in (0, pid)  # restarted by the postinst
    # The retained message survived the restart (persistence in /var/lib/mqttoolsd).
    assert wait_until(lambda: listening(c, 1883), 30, step=0.2)
    out = c.run("mqttools", "subscribe", "-h", "127.0.0.1", "-t", "pkg/first", "-C", "1", "-W", "30").stdout
    assert out.strip() == "installed-retained"
    round_trip(c, "pkg/upgraded", "upgraded")


def test_remove_stops_and_keeps_the_config(container):
    c = container
    assert c.run("pgrep", "-x", "mqttoolsd", check=False).returncode == 0
    apt(c, "remove", "mqttoolsd")
    # Stopped by the prerm (deb-systemd-invoke stop), before the files went.
    assert c.run("pgrep", "-x", "mqttoolsd", check=False).returncode == 1
    assert not listening(c, 1883)
    status = c.run("dpkg-query", "-W", "-f", "${Status}", "mqttoolsd").stdout
    assert status == "deinstall ok config-files"
    assert "max_keepalive = 600" in (c.root / "etc" / "mqttools" / "mqttoolsd.toml").read_text()
    assert c.run("test", "-f", "/var/lib/mqttoolsd/mqttoolsd.db", check=False).returncode == 0
    assert c.run("getent", "passwd", "mqttoolsd").returncode == 0


def test_purge_removes_config_user_and_data(container):
    c = container
    apt(c, "purge", "mqttoolsd")
    assert c.run("dpkg-query", "-W", "mqttoolsd", check=False).returncode != 0 or \
        c.run("dpkg-query", "-W", "-f", "${Status}", "mqttoolsd").stdout.startswith("unknown")
    assert not (c.root / "etc" / "mqttools" / "mqttoolsd.toml").exists()
    for folder in ("/var/lib/mqttoolsd", "/var/log/mqttoolsd"):
        assert c.run("test", "-e", folder, check=False).returncode != 0, folder
    assert c.run("getent", "passwd", "mqttoolsd", check=False).returncode == 2
    assert c.run("getent", "group", "mqttoolsd", check=False).returncode == 2
    # The client package is untouched.
    assert c.run("mqttools", "--version").returncode == 0
