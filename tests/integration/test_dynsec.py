"""Dynamic security (issue 27, part 1): Mosquitto's dynamic-security.json and
its $CONTROL/dynamic-security/v1 API, driven with Debian's unmodified
mosquitto_ctrl, and what MQTT clients may then do. The file we write is
also loaded by Debian's mosquitto with its own dynamic-security plugin."""
import contextlib
import json
import pathlib
import shutil
import subprocess
import time

import pytest

import mqttwire
from mqttwire import DISCONNECT, PUBLISH
from conftest import MQTTOOLS, free_port, wait_for_port, wait_until

MOSQUITTO_CTRL = shutil.which("mosquitto_ctrl")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PLUGIN = pathlib.Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")

pytestmark = pytest.mark.skipif(MOSQUITTO_CTRL is None, reason="mosquitto_ctrl (package mosquitto) missing")

CONTROL = "$CONTROL/dynamic-security/v1"
RESPONSE = CONTROL + "/response"



@contextlib.contextmanager
def mosquitto_with_dynsec(tmp_path, dynsec_file):
    """Debian's mosquitto with its dynamic-security plugin on `dynsec_file`;
    yields its port, stops it after."""
    mport = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"user root\nlistener {mport} 127.0.0.1\nallow_anonymous false\n"
                    f"plugin {PLUGIN}\nplugin_opt_config_file {dynsec_file}\n")
    with open(tmp_path / "mosquitto.log", "wb") as log:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(mport, proc=proc)
            yield mport
        finally:
            proc.terminate()
            proc.wait(timeout=10)

def ctrl(port, *args, user="admin", password="adminpw"):
    """mosquitto_ctrl ... dynsec ARGS; returns (stdout, stderr)."""
    r = subprocess.run([MOSQUITTO_CTRL, "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", password,
                        "dynsec", *args], capture_output=True, text=True, timeout=30)
    return r.stdout, r.stderr


def ok(port, *args):
    out, err = ctrl(port, *args)
    assert "Error" not in err, (args, err)
    return out


def connect(port, user, password, client_id="", expect=0):
    c = mqttwire.Client(port)
    ack = c.connect(client_id, username=user, password=password.encode() if password is not None else None)
    assert ack.reason == expect, f"CONNECT {user}: {ack.reason:#x}, expected {expect:#x}"
    return c


def kicked(c):
    """The packets before the close include DISCONNECT 0x98."""
    got = c.expect_closed(timeout=10)
    return [p.reason for p in got if p.type == DISCONNECT] == [0x98]


@pytest.fixture
def dynsec_broker(start_broker, tmp_path):
    """A broker on a file made by `mosquitto_ctrl dynsec init` (admin/adminpw)."""
    path = tmp_path / "dynamic-security.json"
    subprocess.run([MOSQUITTO_CTRL, "dynsec", "init", str(path), "admin", "adminpw"], check=True,
                   capture_output=True, timeout=30)
    config = f'dynamic_security_file = "{path}"\nallow_anonymous = false\n'
    b = start_broker(config=config)
    b.dynsec_path = path
    b.dynsec_config = config
    return b


def test_mosquitto_ctrl_manages_clients_live(dynsec_broker, start_broker):
    b = dynsec_broker
    port = b.port
    ok(port, "createClient", "alice", "-p", "alicepw")
    ok(port, "createRole", "sensors")
    ok(port, "addRoleACL", "sensors", "publishClientSend", "sensors/#", "allow")
    ok(port, "addRoleACL", "sensors", "subscribePattern", "sensors/#", "allow")
    ok(port, "addRoleACL", "sensors", "publishClientSend", "sensors/secret", "deny", "5")
    ok(port, "addClientRole", "alice", "sensors")
    _, err = ctrl(port, "createClient", "alice", "-p", "x")
    assert "Client already exists" in err
    assert "Roles:    sensors" in ok(port, "getClient", "alice")
    assert ok(port, "listClients").split() == ["admin", "alice"]
    role = ok(port, "getRole", "sensors")
    assert "publishClientSend    : deny  : sensors/secret (priority: 5)" in role

    # Allowed and denied publish and subscribe.
    alice = connect(port, "alice", "alicepw", "a1")
    assert alice.subscribe([("sensors/#", 1)]).codes == [1]
    assert alice.subscribe([("other/#", 1)], packet_id=2).codes == [0x87]
    assert alice.publish("sensors/t", b"21", qos=1).reason == 0
    assert alice.expect(PUBLISH).payload == b"21"
    assert alice.publish("other/t", b"x", qos=1, packet_id=3).reason == 0x87
    assert alice.publish("sensors/secret", b"x", qos=1, packet_id=4).reason == 0x87  # priority 5 deny first
    # A client that is not the admin cannot use the API.
    assert alice.publish(CONTROL, b'{"commands":[{"command":"listClients"}]}', qos=1, packet_id=5).reason == 0x87
    connect(port, "alice", "wrong", expect=0x86).close()
    connect(port, "nobody", "x", expect=0x86).close()

    # A new ACL applies to the next packet, without a reconnect.
    ok(port, "addRoleACL", "sensors", "publishClientSend", "other/#", "allow")
    assert wait_until(lambda: alice.publish("other/t", b"x", qos=1, packet_id=6).reason == 0x10)

    # Disabled: kicked (0x98) and refused.
    ok(port, "disableClient", "alice")
    assert kicked(alice)
    connect(port, "alice", "alicepw", expect=0x87).close()
    ok(port, "enableClient", "alice")
    alice = connect(port, "alice", "alicepw")

    # New password: kicked; the old one is refused.
    ok(port, "setClientPassword", "alice", "newpw")
    assert kicked(alice)
    connect(port, "alice", "alicepw", expect=0x86).close()

    # Roles changed: kicked.
    alice = connect(port, "alice", "newpw")
    ok(port, "removeClientRole", "alice", "sensors")
    assert kicked(alice)
    ok(port, "addClientRole", "alice", "sensors")

    # Restart: everything kept.
    b.stop()
    b2 = start_broker(config=b.dynsec_config)
    alice = connect(b2.port, "alice", "newpw")
    assert alice.publish("sensors/t", b"1", qos=1).reason == 0x10
    assert alice.publish("nope/t", b"1", qos=1, packet_id=2).reason == 0x87
    assert "Roles:    sensors" in ok(b2.port, "getClient", "alice")

    # Deleted: kicked and refused.
    ok(b2.port, "deleteClient", "alice")
    assert kicked(alice)
    connect(b2.port, "alice", "newpw", expect=0x86).close()
    assert ok(b2.port, "listClients").split() == ["admin"]


def test_json_api_errors_and_correlation_data(dynsec_broker):
    port = dynsec_broker.port
    admin = connect(port, "admin", "adminpw", "admin-raw")
    assert admin.subscribe([(RESPONSE, 0)]).codes == [0]

    def request(payload, packet_id):
        assert admin.publish(CONTROL, payload, qos=1, packet_id=packet_id).reason == 0
        p = admin.expect(PUBLISH, timeout=10)
        assert p.topic == RESPONSE
        return json.loads(p.payload)["responses"]

    assert request(b"not json", 1) == [{"command": "Unknown command", "error": "Payload not valid JSON"}]
    assert request(b'{"x":1}', 2) == [{"command": "Unknown command", "error": "Invalid/missing commands"}]
    r = request(json.dumps({"commands": [
        {"command": "createRole", "rolename": "r", "correlationData": "c1"},
        {"command": "createRole", "rolename": "r", "correlationData": "c2"},
        {"command": "getRole", "rolename": "r", "correlationData": "c3"},
        {"command": "frobnicate", "correlationData": "c4"},
        {"command": "addRoleACL", "rolename": "r", "acltype": "publishClientSend", "topic": "a/#/b"},
        {"command": "createClient", "username": 7},
    ]}).encode(), 3)
    assert r[0] == {"command": "createRole", "correlationData": "c1"}
    assert r[1] == {"command": "createRole", "error": "Role already exists", "correlationData": "c2"}
    assert r[2] == {"command": "getRole", "data": {"role": {"rolename": "r", "acls": []}}, "correlationData": "c3"}
    assert r[3] == {"command": "frobnicate", "error": "Unknown command", "correlationData": "c4"}
    assert r[4]["error"] == "Invalid ACL topic"
    assert r[5]["error"] == "Invalid/missing username"
    # The broker is fine and still answers.
    r = request(b'{"commands":[{"command":"listRoles"}]}', 4)
    assert r[0]["data"] == {"totalCount": 2, "roles": ["admin", "r"]}
    admin.close()


def test_anonymous_group_and_mqttools_init(start_broker, tmp_path):
    path = tmp_path / "ds.json"
    subprocess.run([str(MQTTOOLS), "dynsec", "init", str(path), "boss", "bosspw"], check=True, timeout=30)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    r = subprocess.run([str(MQTTOOLS), "dynsec", "init", str(path), "boss", "x"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "already exists" in r.stderr
    b = start_broker(config=f'dynamic_security_file = "{path}"\nallow_anonymous = true\n')
    port = b.port
    out, err = ctrl(port, "listClients", user="boss", password="bosspw")
    assert out.split() == ["boss"], err
    anon = mqttwire.Client(port)
    assert anon.connect("anon1").reason == 0
    assert anon.publish("public/x", b"1", qos=1).reason == 0x87
    ctrl(port, "createRole", "pub", user="boss", password="bosspw")
    ctrl(port, "addRoleACL", "pub", "publishClientSend", "public/#", "allow", user="boss", password="bosspw")
    ctrl(port, "createGroup", "guests", user="boss", password="bosspw")
    ctrl(port, "addGroupRole", "guests", "pub", user="boss", password="bosspw")
    ctrl(port, "setAnonymousGroup", "guests", user="boss", password="bosspw")
    assert kicked(anon)  # the anonymous group changed
    anon = mqttwire.Client(port)
    assert anon.connect("anon2").reason == 0
    assert anon.publish("public/x", b"1", qos=1).reason == 0x10
    assert anon.publish("private/x", b"1", qos=1, packet_id=2).reason == 0x87
    anon.close()


@pytest.mark.skipif(not PLUGIN.exists(), reason="Debian's mosquitto dynamic-security plugin missing")
def test_our_file_loads_in_mosquitto(dynsec_broker, tmp_path):
    port = dynsec_broker.port
    ok(port, "createClient", "bob", "-p", "bobpw")
    ok(port, "createRole", "rw")
    ok(port, "addRoleACL", "rw", "publishClientSend", "bob/#", "allow")
    ok(port, "createGroup", "g")
    ok(port, "addGroupRole", "g", "rw", "3")
    ok(port, "addGroupClient", "g", "bob")
    copy = tmp_path / "for-mosquitto.json"
    copy.write_text(dynsec_broker.dynsec_path.read_text())
    with mosquitto_with_dynsec(tmp_path, copy) as mport:
        bob = connect(mport, "bob", "bobpw")
        assert bob.publish("bob/x", b"1", qos=1).reason == 0x10
        assert bob.publish("eve/x", b"1", qos=1, packet_id=2).reason == 0x87
        bob.close()
        connect(mport, "bob", "wrong", expect=0x87).close()  # Mosquitto says 0x87
        assert ok(mport, "listClients").split() == ["admin", "bob"]
        assert "g" in ok(mport, "listGroups").split()


def unsubscribe_acls(port):
    """unsubscribeLiteral/unsubscribePattern set with mosquitto_ctrl, then what
    a paho MQTT 5 client's UNSUBSCRIBE gets: a denied filter is answered
    0x87 and its subscription stays (messages keep arriving)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.properties import Properties  # noqa: F401 (paho's v5 support)
    ok(port, "createClient", "carol", "-p", "carolpw")
    ok(port, "createRole", "unsub")
    ok(port, "addRoleACL", "unsub", "subscribePattern", "u/#", "allow")
    ok(port, "addRoleACL", "unsub", "publishClientSend", "u/#", "allow")
    ok(port, "addRoleACL", "unsub", "publishClientReceive", "u/#", "allow")
    ok(port, "addRoleACL", "unsub", "unsubscribeLiteral", "u/locked", "deny")
    ok(port, "addRoleACL", "unsub", "unsubscribePattern", "u/+/keep", "deny")
    ok(port, "addRoleACL", "unsub", "unsubscribeLiteral", "u/b/keep", "allow", "9")
    ok(port, "addClientRole", "carol", "unsub")

    got = {"unsuback": [], "messages": []}
    c = mqtt.Client(client_id="carol-1", protocol=mqtt.MQTTv5)
    c.username_pw_set("carol", "carolpw")
    c.on_unsubscribe = lambda cl, ud, mid, props, codes: got["unsuback"].append(
        [int(getattr(x, "value", x)) for x in (codes if isinstance(codes, list) else [codes])])
    c.on_message = lambda cl, ud, m: got["messages"].append(m.topic)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        assert wait_until(c.is_connected, timeout=15)
        filters = ["u/locked", "u/free", "u/a/keep"]
        r, _ = c.subscribe([(f, 1) for f in filters])
        assert r == mqtt.MQTT_ERR_SUCCESS
        c.unsubscribe(filters)
        assert wait_until(lambda: got["unsuback"], timeout=15)
        assert got["unsuback"][0] == [0x87, 0x00, 0x87]
        # The denied ones still deliver; the allowed one is gone.
        for t in filters:
            c.publish(t, b"x", qos=1)
        assert wait_until(lambda: sorted(got["messages"]) == ["u/a/keep", "u/locked"], timeout=15), got
        # Only an ACL refuses an UNSUBSCRIBE: with defaultACLAccess
        # unsubscribe deny and no matching ACL, Mosquitto 2.0's plugin defers
        # and the broker lets it through (seen with Debian's mosquitto); a
        # matching allow ACL still wins over a later deny.
        ok(port, "setDefaultACLAccess", "unsubscribe", "deny")
        c.subscribe([("u/free", 1), ("u/b/keep", 1)])
        c.unsubscribe(["u/free", "u/b/keep", "u/c/keep"])
        assert wait_until(lambda: len(got["unsuback"]) == 2, timeout=15)
        assert got["unsuback"][1] == [0x00, 0x00, 0x87]
    finally:
        c.loop_stop()
        c.disconnect()


def test_unsubscribe_acls(dynsec_broker):
    unsubscribe_acls(dynsec_broker.port)


@pytest.mark.skipif(not PLUGIN.exists(), reason="Debian's mosquitto dynamic-security plugin missing")
def test_unsubscribe_acls_as_mosquitto_does(tmp_path):
    """The same steps against Debian's mosquitto with its own plugin: the
    anchor answers the same way."""
    path = tmp_path / "mosquitto-ds.json"
    subprocess.run([MOSQUITTO_CTRL, "dynsec", "init", str(path), "admin", "adminpw"], check=True,
                   capture_output=True, timeout=30)
    with mosquitto_with_dynsec(tmp_path, path) as mport:
        unsubscribe_acls(mport)
