"""Dynamic security, bans and the management API across a cluster (issue
27): two mqttoolsd nodes and a real nats-server with JetStream. Changes
made with Debian's mosquitto_ctrl on one node apply on the other; the API
of any node lists and kicks the clients of every node; a ban made on one
node refuses on the other."""
import base64
import http.client
import json
import os
import shutil
import subprocess

import pytest

from conftest import Broker, MQTTOOLS, free_port, wait_or_fail, wait_until
from mqttwire import DISCONNECT, Client
from test_cluster import NATS_SERVER, Nats

MOSQUITTO_CTRL = shutil.which("mosquitto_ctrl")
pytestmark = [pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed"),
              pytest.mark.skipif(MOSQUITTO_CTRL is None, reason="mosquitto_ctrl (package mosquitto) missing")]
KEY, SECRET = "ops", "cluster-key"


class Api:
    def __init__(self, port):
        self.port = port
        self.auth = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()

    def request(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": self.auth}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        r = conn.getresponse()
        raw = r.read()
        conn.close()
        return r.status, (json.loads(raw) if raw and "json" in (r.getheader("Content-Type") or "") else raw)


@pytest.fixture
def cluster(tmp_path):
    nats = Nats(tmp_path)
    keys = tmp_path / "api_keys"
    subprocess.run([str(MQTTOOLS), "passwd", "-c", "-b", str(keys), KEY, SECRET], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = []
    for i in (1, 2):
        # Each node has its own file (made separately): the first in the
        # cluster's bucket wins, the other adopts it.
        ds = tmp_path / f"dynsec-{i}.json"
        subprocess.run([MOSQUITTO_CTRL, "dynsec", "init", str(ds), "admin", "adminpw"], check=True,
                       capture_output=True, timeout=30)
        api_port = free_port()
        config = (f'allow_anonymous = false\ndynamic_security_file = "{ds}"\n'
                  f'[[listener]]\nport = {api_port}\nprotocol = "http_api"\napi_key_file = "{keys}"\n'
                  f'[cluster]\nnats_url = "{nats.url}"\nnode_id = "node{i}"\n')
        b = Broker(tmp_path, config=config)
        b.api = Api(api_port)
        b.dynsec_path = ds
        nodes.append(b)
    # Each node's API knows the other.
    for b in nodes:
        wait_or_fail(lambda: len(b.api.request("GET", "/api/v5/nodes")[1]) == 2, "both nodes in /api/v5/nodes",
                     timeout=30)
    yield nodes
    for b in nodes:
        code = b.stop()
        if code != 0:
            pytest.fail(f"node exited with {code}:\n{b.log_path.read_text(errors='replace')[-3000:]}")
    nats.stop()


def ctrl(port, *args):
    r = subprocess.run([MOSQUITTO_CTRL, "-h", "127.0.0.1", "-p", str(port), "-u", "admin", "-P", "adminpw",
                        "dynsec", *args], capture_output=True, text=True, timeout=30)
    assert "Error" not in r.stderr, (args, r.stderr)
    return r.stdout


def try_connect(port, cid, user, password):
    c = Client(port)
    ack = c.connect(cid, username=user, password=password.encode())
    if ack.reason != 0:
        c.close()
        return None
    return c


def test_dynsec_changes_apply_on_every_node(cluster):
    n1, n2 = cluster
    ctrl(n1.port, "createClient", "dave", "-p", "davepw")
    ctrl(n1.port, "createRole", "r")
    ctrl(n1.port, "addRoleACL", "r", "publishClientSend", "d/#", "allow")
    ctrl(n1.port, "addClientRole", "dave", "r")
    # Made on node 1, the changes reach node 2 one by one: a login there
    # between createClient and addClientRole is (rightly) kicked with 0x98
    # when the role arrives, so the login waits for the last change.
    wait_or_fail(lambda: "Roles:    r" in ctrl(n2.port, "getClient", "dave"), "node 2 to have dave's role",
                 timeout=30)
    dave2 = wait_or_fail(lambda: try_connect(n2.port, "dave-2", "dave", "davepw"), "dave to log in on node 2",
                         timeout=30)
    assert wait_until(lambda: dave2.publish("d/x", b"1", qos=1).reason == 0x10, timeout=15)
    assert dave2.publish("e/x", b"1", qos=1, packet_id=2).reason == 0x87
    # Both nodes answer the same.
    assert "Roles:    r" in ctrl(n2.port, "getClient", "dave")
    assert ctrl(n2.port, "listClients").split() == ctrl(n1.port, "listClients").split() == ["admin", "dave"]
    # Disabled on node 2: kicked on node 1 (0x98) and refused on both.
    dave2.close()
    dave1 = try_connect(n1.port, "dave-1", "dave", "davepw")
    assert dave1 is not None
    ctrl(n2.port, "disableClient", "dave")
    got = dave1.expect_closed(timeout=30)
    assert [p.reason for p in got if p.type == DISCONNECT] == [0x98]
    for port in (n1.port, n2.port):
        c = Client(port)
        assert c.connect("dave-x", username="dave", password=b"davepw").reason == 0x87
        c.close()
    # Each node's file holds the change (written atomically there).
    for b in cluster:
        doc = json.loads(b.dynsec_path.read_text())
        assert [c.get("disabled") for c in doc["clients"] if c["username"] == "dave"] == [True]


def test_api_and_bans_across_nodes(cluster):
    n1, n2 = cluster
    ctrl(n1.port, "setDefaultACLAccess", "subscribe", "allow")
    ctrl(n1.port, "createClient", "erin", "-p", "erinpw")
    erin = wait_or_fail(lambda: try_connect(n1.port, "erin-on-1", "erin", "erinpw"), "erin to log in", timeout=30)
    # Node 2's API lists node 1's client, with its node.
    def listed():
        status, body = n2.api.request("GET", "/api/v5/clients?like_clientid=erin")
        return status == 200 and [(c["clientid"], c["node"]) for c in body["data"]] == [("erin-on-1", "node1")]
    wait_or_fail(listed, "node 2 to list erin-on-1 of node 1", timeout=30)
    status, body = n2.api.request("GET", "/api/v5/clients?limit=1&page=2")
    assert status == 200 and body["meta"]["count"] >= 1
    status, body = n2.api.request("GET", "/api/v5/clients/erin-on-1")
    assert status == 200 and body["node"] == "node1" and body["username"] == "erin"
    status, body = n1.api.request("GET", "/api/v5/stats?aggregate=true")
    assert status == 200 and body["live_connections.count"] >= 1
    _, nodes = n1.api.request("GET", "/api/v5/nodes")
    assert sorted(n["node"] for n in nodes) == ["node1", "node2"]
    # Kicked through node 2: DISCONNECT 0x98 from node 1.
    status, _ = n2.api.request("DELETE", "/api/v5/clients/erin-on-1")
    assert status == 204
    got = erin.expect_closed(timeout=30)
    assert [p.reason for p in got if p.type == DISCONNECT] == [0x98]
    assert n2.api.request("DELETE", "/api/v5/clients/nobody")[0] == 404
    # A ban made on node 1 refuses on node 2, and is listed there.
    status, _ = n1.api.request("POST", "/api/v5/banned", {"as": "username", "who": "erin"})
    assert status == 200

    def refused_on_2():
        c = Client(n2.port)
        reason = c.connect("erin-on-2", username="erin", password=b"erinpw").reason
        c.close()
        return reason == 0x8A
    wait_or_fail(refused_on_2, "the ban to refuse erin on node 2", timeout=30)
    _, body = n2.api.request("GET", "/api/v5/banned")
    assert [(b["as"], b["who"]) for b in body["data"]] == [("username", "erin")]
    # Lifted on node 2: erin gets in on node 1 again.
    assert n2.api.request("DELETE", "/api/v5/banned/username/erin")[0] == 204
    back = wait_or_fail(lambda: try_connect(n1.port, "erin-again", "erin", "erinpw"), "the ban to be lifted on node 1",
                        timeout=30)
    back.close()
