"""A Debian 12 root made with debootstrap (from the machine's own apt
source) and booted with systemd-nspawn, systemd as PID 1: shared by the
tests of the installed units (test_deploy_systemd_boot.py) and of the Debian
packages (test_deploy_package.py). Root only."""
import fcntl
import os
import pathlib
import re
import shutil
import signal
import subprocess

import pytest

from test_deploy_util import wait_until


def apt_mirror():
    """The Debian mirror this machine's apt uses (deb822 or one-line form)."""
    for path in sorted(pathlib.Path("/etc/apt/sources.list.d").glob("*.sources")):
        text = path.read_text()
        for block in text.split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", block, re.M) and "security" not in block:
                m = re.search(r"^URIs:\s*(\S+)", block, re.M)
                if m:
                    return m.group(1)
    legacy = pathlib.Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if m:
                return m.group(1)
    pytest.fail("no bookworm source in /etc/apt to debootstrap from")


def runtime_packages(*binaries):
    """The Debian packages holding the shared libraries BINARIES load (as
    `ldd` resolves them here): the root gets exactly what the build links, so
    a library added to meson.build cannot be forgotten in a hand-kept list
    (libcurl4 was, and every unit test in the root failed on a missing .so)."""
    paths = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            m = re.search(r"=>\s*(/\S+)", line)
            if m:
                paths.add(m.group(1))
    packages = set()
    for path in sorted(paths):
        # dpkg knows a library by the path its package shipped (/lib or /usr/lib on a merged /usr).
        real = os.path.realpath(path)
        candidates = {path, real}
        for p in (path, real):
            if p.startswith("/usr/"):
                candidates.add(p[len("/usr"):])
            else:
                candidates.add("/usr" + p)
        for candidate in sorted(candidates):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                packages.add(r.stdout.split(":")[0].split(",")[0].strip())
                break
        else:
            pytest.fail(f"no Debian package holds {path} (needed by {binaries})")
    return sorted(packages)


def missing_tools():
    """Why a root cannot be booted here, or None."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/dev installs debootstrap and systemd-container)"
    return None


def make_root(root, packages, hostname="mqttools-test"):
    """The debootstrapped root at ROOT with PACKAGES, made once (about a
    minute) and again only when the package list changes. A lock keeps two
    test processes from making the same root at once."""
    root = pathlib.Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    done = root / ".mqttools-root-ready"
    # The stamp holds the package list: a root made before mqttoolsd needed
    # another library is made again.
    wanted = ",".join(packages)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and done.read_text() == wanted:
            return root
        why = missing_tools()
        if why:
            pytest.fail(why)
        shutil.rmtree(root, ignore_errors=True)
        r = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + wanted,
                            "bookworm", str(root), apt_mirror()], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        (root / "etc" / "hostname").write_text(hostname + "\n")
        done.write_text(wanted)
    return root


class Container:
    """ROOT booted by systemd-nspawn; run() executes a command inside it.
    private_network: only a loopback of its own (ports inside cannot clash
    with the host's), else the host's network."""

    def __init__(self, root, log_path, machine="mqttools-test", private_network=False):
        self.log = open(log_path, "wb")
        argv = ["systemd-nspawn", "-D", str(root), "-b", "--register=no", "--keep-unit",
                "-M", machine, "--console=pipe"]
        if private_network:
            argv.append("--private-network")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid1 = None
        assert wait_until(self._find_init, 30), "systemd did not start in the container"
        # Boot finished (or degraded: an unrelated unit of the minimal root may fail).
        assert wait_until(lambda: self.run("systemctl", "is-system-running", check=False).stdout.strip()
                          in ("running", "degraded"), 90, step=0.2), self.run("systemctl", "--failed", check=False).stdout

    def _find_init(self):
        try:
            children = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return False
        for pid in children:
            if pathlib.Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                self.pid1 = int(pid)
                return True
        return False

    def argv(self, *argv):
        """ARGV run inside the container (for Popen)."""
        return ["nsenter", "-t", str(self.pid1), "-a", *argv]

    def run(self, *argv, check=True, timeout=60):
        r = subprocess.run(self.argv(*argv), capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, f"{argv}: {r.stdout}{r.stderr}"
        return r

    def show(self, unit, prop):
        return self.run("systemctl", "show", unit, "-p", prop, "--value").stdout.strip()

    def journal(self, unit="mqttoolsd"):
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat").stdout

    def stop(self):
        if self.proc.poll() is None:
            self.run("systemctl", "poweroff", "--no-block", check=False)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
