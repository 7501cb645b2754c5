"""Cross-node conformance mode (issue 13): the integration tests' `broker`,
`start_broker` and `probe` fixtures start a 3-node cluster instead of one
mqttoolsd, so that each client's peers are on other nodes.

    MQTTOOLS_CLUSTER=ports       3 nodes on separate ports; successive client
                                 connections to the broker's port go to node
                                 1, 2, 3, 1, ... (socket.create_connection is
                                 rotated in this process: raw sockets and paho
                                 both use it; a subprocess reaches node 1)
    MQTTOOLS_CLUSTER=reuse_port  3 nodes share one port (SO_REUSEPORT): the
                                 kernel spreads the connections

One nats-server with JetStream serves the whole pytest session; each
cluster gets its own [cluster] subject_prefix, so tests never see each
other's messages, retained store or session owners. Without the variable
nothing here is used and the fixtures are exactly the single-node ones.

Tests that cannot hold in a cluster by design (they read one broker's log
or $SYS counters, restart or signal the broker process, use configuration
a cluster does not share) are marked `single_node_only("why")`; cross-node
limits documented in docs/cluster.md are marked `cluster_limit("why")`
(xfail, strict)."""
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

MODE = os.environ.get("MQTTOOLS_CLUSTER", "")
if MODE not in ("", "ports", "reuse_port"):
    raise RuntimeError(f"MQTTOOLS_CLUSTER must be 'ports' or 'reuse_port', not {MODE!r}")
NODES = 3
NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"


def single_node_only(reason):
    """Skips the test in cluster mode: `reason` says why it cannot hold
    across nodes by design."""
    return pytest.mark.skipif(bool(MODE), reason=f"cluster mode: {reason}")


def cluster_limit(reason):
    """A documented cross-node limit (docs/cluster.md): expected to fail
    in cluster mode, strictly (a pass means the limit is gone)."""
    return pytest.mark.xfail(bool(MODE), reason=f"cluster mode: {reason}", strict=True)


# ------------------------------------------------------------------ NATS


class _SharedNats:
    """nats-server -js on a free loopback port, started on first use."""

    def __init__(self):
        self.proc = None
        self.port = None
        self.dir = None

    def url(self):
        if self.proc is None:
            from conftest import free_port, wait_for_port
            self.dir = tempfile.mkdtemp(prefix="mqttools-cluster-nats-")
            self.port = free_port()
            self.log = open(os.path.join(self.dir, "nats.log"), "wb")
            self.proc = subprocess.Popen([NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js",
                                          "-sd", os.path.join(self.dir, "js")],
                                         stdout=self.log, stderr=subprocess.STDOUT)
            wait_for_port(self.port, proc=self.proc)
        return f"nats://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.proc = None


NATS = _SharedNats()
_prefixes = itertools.count(1)


# ------------------------------------------------------------------ rotation

_real_create_connection = socket.create_connection
_rotations = {}  # a cluster's public port -> cycle over its nodes' ports


def _create_connection(address, *args, **kwargs):
    host, port = address[0], address[1]
    rotation = _rotations.get(port)
    if rotation is not None and host in ("127.0.0.1", "localhost"):
        address = (host, next(rotation)) + tuple(address[2:])
    return _real_create_connection(address, *args, **kwargs)


if MODE == "ports":
    socket.create_connection = _create_connection


# ------------------------------------------------------------------ the cluster


class ClusterBroker:
    """Stands in for conftest.Broker: NODES mqttoolsd nodes of one cluster.
    `.port` is where clients connect (node 1's port, rotated; or the shared
    port); `.nodes` are the conftest.Broker of each node."""

    def __init__(self, tmp_path, args=(), config=None, env=None):
        from conftest import Broker, free_port
        self.tmp_path = tmp_path
        prefix = f"c{next(_prefixes)}x{os.getpid()}"
        text = config or ""
        listener = ""
        shared = None
        if MODE == "reuse_port":
            shared = free_port()
            listener = f"[[listener]]\nport = {shared}\nreuse_port = true\n"
            # -p alone allows anonymous clients; a [[listener]] table
            # would turn that default off.
            if "allow_anonymous" not in text:
                text = "allow_anonymous = true\n" + text
        self.nodes = []
        try:
            for i in range(NODES):
                node_config = (f"{text}\n{listener}[cluster]\nnats_url = \"{NATS.url()}\"\n"
                               f"node_id = \"node{i + 1}\"\nsubject_prefix = \"{prefix}\"\n")
                self.nodes.append(Broker(tmp_path, args=args, config=node_config, env=env))
        except Exception:
            self.stop()
            raise
        self.proc = self.nodes[0].proc
        self.log_path = self.nodes[0].log_path
        if shared is not None:
            self.port = shared
        else:
            self.port = self.nodes[0].port
            _rotations[self.port] = itertools.cycle([n.port for n in self.nodes])

    def stop(self):
        _rotations.pop(getattr(self, "port", None), None)
        # SIGTERM to every node first: they shut down in parallel.
        for n in self.nodes:
            if n.proc.poll() is None:
                n.proc.terminate()
        for n in self.nodes:
            try:
                n.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass  # Broker.stop() kills it
        codes = [n.stop() for n in self.nodes]
        bad = [c for c in codes if c != 0]
        return bad[0] if bad else 0

    def output(self):
        return "".join(f"--- node{i + 1}\n{n.output()}" for i, n in enumerate(self.nodes))


def make_broker(tmp_path, **kwargs):
    """A ClusterBroker in cluster mode, else None (the caller starts one
    mqttoolsd)."""
    if not MODE:
        return None
    if not os.path.exists(NATS_SERVER):
        pytest.skip("cluster mode: nats-server is not installed")
    return ClusterBroker(tmp_path, **kwargs)
