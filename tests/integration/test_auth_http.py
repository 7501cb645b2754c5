"""[auth_http]: mosquitto-go-auth's HTTP backend contract against a real
HTTP service on a loopback port (auth_service.py): every params and
response mode, the fields sent, publish/subscribe/receive ACLs, superusers,
caching, and a hanging service that must not stall anybody else."""
import http.client
import re
import signal
import socket
import struct
import statistics
import time

import pytest

from auth_service import AuthService
from conftest import MQTTOOLSD, free_port, refused_config_output, wait_or_fail, wait_until
from mqttwire import CONNACK, CONNECT, PUBACK, PUBLISH, packet, utf8
from test_security_mqtt import Closed, RawClient

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

BAD_CREDENTIALS, NOT_AUTHORIZED, SERVER_UNAVAILABLE, NO_SUBSCRIBERS = 0x86, 0x87, 0x88, 0x10
USERS = {"alice": "wonderland", "admin": "root-pw"}


def alice_rule(user, clientid, topic, acc):
    """alice: read/publish/subscribe under alice/ (not alice/secret); others nothing."""
    if user != "alice":
        return False
    if topic.startswith("alice/secret"):
        return False
    return topic.startswith("alice/") or (acc in (1, 4) and topic == "shared/news")


@pytest.fixture
def service():
    s = AuthService(users=USERS, superusers={"admin"}, acl=alice_rule)
    yield s
    s.close()


def start(start_broker, service, anonymous=False, **keys):
    conf = f"allow_anonymous = {'true' if anonymous else 'false'}\n" + service.config(**keys)
    return start_broker(config=conf)


def connect(port, version=5, **kw):
    c = RawClient(port, version=version)
    _, code = c.connect(**kw)
    return c, code


@pytest.mark.parametrize("params_mode,response_mode,method", [
    ("json", "status", "POST"), ("form", "json", "POST"), ("json", "text", "PUT"), ("form", "text", "GET"),
    # go-auth sends its JSON body with GET as well.
    ("json", "status", "GET"),
])
def test_modes_credentials_and_fields(start_broker, service, params_mode, response_mode, method):
    service.response_mode = response_mode
    b = start(start_broker, service, params_mode=params_mode, method=method,
              headers={"X-Api-Key": "k1"})
    c, code = connect(b.port, client_id="dev-1", username="alice", password="wonderland")
    assert code == 0
    c.ping()
    path, meth, headers, params = service.taken("/auth/user")[-1]
    assert meth == method
    assert params == {"username": "alice", "password": "wonderland", "clientid": "dev-1"}
    if params_mode == "json":
        assert headers.get("Content-Type") == "application/json"
    assert headers.get("X-Api-Key") == "k1"
    for version in (5, 4):
        bad, code = connect(b.port, version=version, client_id="dev-2", username="alice", password="nope")
        assert code == (BAD_CREDENTIALS if version == 5 else 4)
        with pytest.raises((Closed, ConnectionError)):
            bad.recv(timeout=3)
        bad.close()
    # A superuser is asked about once, after the user check.
    adm, code = connect(b.port, client_id="adm", username="admin", password="root-pw")
    assert code == 0
    assert service.taken("/auth/superuser")[-1][3] == {"username": "admin"}
    # The ACL fields, with go-auth's acc values.
    assert c.subscribe(["alice/#"], packet_id=1, qos=1) == [1]
    _, _, _, p = service.taken("/auth/acl")[-1]
    assert p == {"username": "alice", "clientid": "dev-1", "topic": "alice/#",
                 "acc": 4 if params_mode == "json" else "4"} or (params_mode == "form" and p["acc"] == "4")
    c.disconnect()
    adm.disconnect()
    # Without a username: the anonymous rule (refused here), the service is not asked.
    before = len(service.taken())
    anon, code = connect(b.port, client_id="anon")
    assert code == NOT_AUTHORIZED
    anon.close()
    assert len(service.taken()) == before


def test_acls_publish_subscribe_receive_superuser(start_broker, service):
    b = start(start_broker, service)
    alice, code = connect(b.port, client_id="a1", username="alice", password="wonderland")
    assert code == 0
    adm, code = connect(b.port, client_id="root", username="admin", password="root-pw")
    assert code == 0
    assert alice.subscribe(["alice/#", "bob/#", "shared/news"], packet_id=2, qos=1) == [1, NOT_AUTHORIZED, 1]
    acl = service.taken("/auth/acl")
    assert {(r[3]["topic"], int(r[3]["acc"])) for r in acl} >= {("alice/#", 4), ("bob/#", 4), ("shared/news", 4)}
    # Publish: acc 2. Allowed is routed, refused gets 0x87 and goes nowhere.
    assert alice.publish("alice/out", "x", qos=1, packet_id=3) == 0
    assert alice.publish("bob/out", "x", qos=1, packet_id=4) == NOT_AUTHORIZED
    assert ("bob/out", 2) in {(r[3]["topic"], int(r[3]["acc"])) for r in service.taken("/auth/acl")}
    assert alice.next_publish()[0] == "alice/out"
    # Receive: acc 1 per delivered topic. alice/secret matches her
    # subscription but she may not read it; the superuser publishes it.
    assert adm.publish("alice/secret/x", "no", qos=1, packet_id=5) == 0
    assert adm.publish("alice/open", "yes", qos=1, packet_id=6) == 0
    assert adm.publish("bob/anything", "free", qos=0) is None  # superuser: no ACL check
    got = [t for t, *_ in alice.publishes_until_quiet(1.0)]
    assert got == ["alice/open"]
    reads = {r[3]["topic"] for r in service.taken("/auth/acl") if int(r[3]["acc"]) == 1}
    assert {"alice/secret/x", "alice/open"} <= reads
    assert not [r for r in service.taken("/auth/acl") if r[3]["username"] == "admin"]
    alice.disconnect()
    adm.disconnect()


def test_cache_and_invalidation_on_disconnect(start_broker, service):
    b = start(start_broker, service, cache_seconds=60)
    c, code = connect(b.port, client_id="c1", username="alice", password="wonderland")
    assert code == 0
    for i in range(5):
        assert c.publish("alice/t", "x", qos=1, packet_id=10 + i) == NO_SUBSCRIBERS
    assert len([r for r in service.taken("/auth/acl") if r[3]["topic"] == "alice/t"]) == 1
    c.disconnect()
    users = len(service.taken("/auth/user"))
    c, code = connect(b.port, client_id="c1", username="alice", password="wonderland")
    assert code == 0
    assert len(service.taken("/auth/user")) == users + 1  # forgotten at disconnect
    assert c.publish("alice/t", "x", qos=1, packet_id=20) == NO_SUBSCRIBERS
    assert len([r for r in service.taken("/auth/acl") if r[3]["topic"] == "alice/t"]) == 2
    c.disconnect()


def test_hanging_service_stalls_nobody(start_broker, service):
    timeout = 1.5
    b = start(start_broker, service, anonymous=True, timeout=timeout)
    # Connected before the service hangs: an anonymous client (never asked)
    # and alice (her ACL answer for alice/p is warm... not cached: asked).
    idle, code = connect(b.port, client_id="idle")
    assert code == 0
    alice, code = connect(b.port, client_id="a", username="alice", password="wonderland")
    assert code == 0
    watcher, code = connect(b.port, client_id="w", username="admin", password="root-pw")
    assert code == 0
    assert watcher.subscribe(["alice/#"], packet_id=1) == [0]
    service.set_delay(timeout * 4)
    sent = []
    socks = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        body = utf8("MQTT") + bytes([5, 0xC2]) + b"\x00\x3c" + b"\x00" + utf8(f"wait-{i}") + utf8("alice") + utf8("wonderland")
        s.sendall(packet(CONNECT, 0, body))
        sent.append(time.monotonic())
        socks.append(s)
    # A PUBLISH whose ACL check cannot be answered (sent now, answered below).
    t_pub = time.monotonic()
    alice.send(packet(PUBLISH, 2, utf8("alice/p") + struct.pack("!H", 7) + b"\x00" + b"lost"))
    # Meanwhile a connected client is served at once.
    times = []
    for _ in range(7):
        t = time.monotonic()
        idle.ping(timeout=5)
        times.append(time.monotonic() - t)
    # Refused (0x87) within the timeout, never delivered.
    _, body = alice.recv_type(PUBACK, timeout=timeout + 5)
    assert struct.unpack("!H", body[:2])[0] == 7 and body[2] == NOT_AUTHORIZED
    assert time.monotonic() - t_pub < timeout + 3.0
    # Every waiting CONNECT gets its CONNACK (0x88) within the timeout.
    for s, t in zip(socks, sent):
        s.settimeout(timeout + 3.0)
        data = b""
        while len(data) < 4:
            chunk = s.recv(64)
            assert chunk, "closed without CONNACK"
            data += chunk
        assert data[0] >> 4 == CONNACK
        assert data[3] == SERVER_UNAVAILABLE
        assert time.monotonic() - t < timeout + 3.0
        s.close()
    assert statistics.median(times) < 0.1, times
    assert watcher.publishes_until_quiet(0.5) == []
    # The service back: clients get in again, the PUBLISH goes through.
    service.set_delay(0)
    c, code = connect(b.port, client_id="back", username="alice", password="wonderland")
    assert code == 0
    assert c.publish("alice/p", "ok", qos=1, packet_id=8) == 0
    assert watcher.next_publish()[0] == "alice/p"
    for x in (c, idle, alice, watcher):
        x.disconnect()


def connack_codes(socks, deadline):
    """Each socket's CONNACK reason code; None: closed without one."""
    import selectors
    sel = selectors.DefaultSelector()
    got = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, b"")
    codes = {}
    while len(codes) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                chunk = s.recv(64)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            got[s] = got.get(s, b"") + chunk
            if len(got[s]) >= 4 or not chunk:
                ok = len(got[s]) >= 4 and got[s][0] >> 4 == CONNACK
                codes[s] = got[s][3] if ok else None
                sel.unregister(s)
    sel.close()
    return [codes.get(s, "no answer") for s in socks]


def test_storm_against_a_service_that_closes_every_connection(start_broker):
    # Every answer closes its connection, so libcurl lets go of sockets
    # while the reactor still holds events for them in the same turn (a
    # watch freed there was called after free: the broker crashed, the
    # HTTP storm benchmark's runs that "ended early").
    service = AuthService(users=USERS, close_each=True)
    try:
        b = start(start_broker, service, timeout=20)
        for storm in range(2):
            socks = []
            for i in range(400):
                s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
                s.sendall(packet(CONNECT, 0, utf8("MQTT") + bytes([5, 0xC2]) + b"\x00\x3c" + b"\x00" +
                                 utf8(f"s{storm}-{i}") + utf8("alice") + utf8("wonderland")))
                socks.append(s)
            codes = connack_codes(socks, time.monotonic() + 60)
            for s in socks:
                s.close()
            assert b.proc.poll() is None, b.output()[-2000:]
            assert codes == [0] * len(socks), {c: codes.count(c) for c in set(codes)}
        assert len(service.taken("/auth/user")) == 800
    finally:
        service.close()


def test_requests_beyond_the_connection_limit_wait_in_order_and_time_out(start_broker, service):
    # libcurl gets at most 64 requests at once (its connections to the
    # service); the rest wait in the broker, in the order they came, and
    # time out like the others (0x88): a hanging service sees 64 at once.
    timeout = 2.0
    b = start(start_broker, service, timeout=timeout)
    service.set_delay(timeout * 4)
    socks, sent = [], time.monotonic()
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        s.sendall(packet(CONNECT, 0, utf8("MQTT") + bytes([5, 0xC2]) + b"\x00\x3c" + b"\x00" + utf8(f"q-{i}") +
                         utf8("alice") + utf8("wonderland")))
        socks.append(s)
    wait_or_fail(lambda: len(service.taken("/auth/user")) >= 64, "64 requests at the service")
    time.sleep(0.3)
    assert len(service.taken("/auth/user")) == 64
    codes = connack_codes(socks, time.monotonic() + timeout + 10)
    for s in socks:
        s.close()
    assert codes == [SERVER_UNAVAILABLE] * 100, {c: codes.count(c) for c in set(codes)}
    assert time.monotonic() - sent < timeout + 5
    assert len(service.taken("/auth/user")) <= 100
    service.set_delay(0)
    c, code = connect(b.port, client_id="after", username="alice", password="wonderland")
    assert code == 0
    c.disconnect()
    assert "auth service unavailable" in b.output()


def test_service_unreachable_is_server_unavailable(start_broker, service):
    port = service.port
    service.close()
    b = start_broker(config="allow_anonymous = false\n" + service.config(port=port, timeout=1))
    c, code = connect(b.port, client_id="x", username="alice", password="wonderland")
    assert code == SERVER_UNAVAILABLE
    c.close()
    assert "auth service unavailable" in b.output()


def test_config_errors(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text('allow_anonymous = false\n[auth_http]\nhost = "127.0.0.1"\nparams_mode = "xml"\ntimeout = -1\n')
    out = refused_config_output(conf, "[auth_http] with bad values")
    assert f"{conf}:4" in out and "auth_http.params_mode" in out
    assert "auth_http.timeout" in out and "auth_http.getuser_uri" in out


def test_any_2xx_allows_as_in_go_auth(start_broker):
    """go-auth's status mode: 2xx allows (a service answering 204 No Content)."""
    s = AuthService(users=USERS, acl=alice_rule, ok_status=204)
    try:
        b = start(start_broker, s)
        c, code = connect(b.port, client_id="n1", username="alice", password="wonderland")
        assert code == 0
        assert c.publish("alice/x", "y", qos=1, packet_id=1) == NO_SUBSCRIBERS
        assert c.publish("bob/x", "y", qos=1, packet_id=2) == NOT_AUTHORIZED
        c.disconnect()
    finally:
        s.close()


def test_acc_values_are_the_ones_go_auth_forwards(start_broker):
    """Mosquitto asks go-auth read (1), write (2) and subscribe (4) separately
    and go-auth forwards `access` unchanged: 3 ("readwrite") is only ever a
    value of a stored rule (go-auth's SQL backends match `acc = $2 OR acc =
    3`), never a question. A service keeping such rules works unchanged."""
    stored = [("alice", "sub/", 4), ("alice", "sub/rw/", 3)]

    def rule(user, clientid, topic, acc):
        if user == "bob":
            return True
        # The most specific stored rule decides.
        rules = [(len(prefix), kept) for u, prefix, kept in stored if u == user and topic.startswith(prefix)]
        if not rules:
            return False
        kept = max(rules)[1]
        return kept == acc or (kept == 3 and acc in (1, 2))

    s = AuthService(users={**USERS, "bob": "builder"}, acl=rule)
    try:
        b = start(start_broker, s)
        alice, code = connect(b.port, client_id="acc-a", username="alice", password="wonderland")
        assert code == 0
        bob, code = connect(b.port, client_id="acc-b", username="bob", password="builder")
        assert code == 0
        # subscribe (4): a readwrite rule does not grant it, a subscribe rule does.
        assert alice.subscribe(["sub/#", "sub/rw/#"], packet_id=1, qos=1) == [1, NOT_AUTHORIZED]
        # write (2): granted by the readwrite rule only.
        assert alice.publish("sub/rw/a", "x", qos=1, packet_id=2) == 0
        assert alice.publish("sub/a", "x", qos=1, packet_id=3) == NOT_AUTHORIZED
        # read (1): delivered under the readwrite rule, not under subscribe alone.
        assert bob.publish("sub/b", "no", qos=1, packet_id=4) == 0
        assert bob.publish("sub/rw/b", "yes", qos=1, packet_id=5) == 0
        got = [t for t, *_ in alice.publishes_until_quiet(1.0)]
        assert got == ["sub/rw/a", "sub/rw/b"]
        asked = [(r[3]["topic"], int(r[3]["acc"])) for r in s.taken("/auth/acl") if r[3]["username"] == "alice"]
        assert {a for _, a in asked} == {1, 2, 4}, asked
        assert ("sub/rw/b", 1) in asked and ("sub/b", 1) in asked and ("sub/#", 4) in asked
        alice.disconnect()
        bob.disconnect()
    finally:
        s.close()


def metric_samples(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text, {m.group(1): int(m.group(2)) for m in re.finditer(r"^(mqttools_auth_http_\w+) (\d+)$", text, re.M)}


def test_metrics_and_logged_reasons(start_broker, service):
    service.response_mode = "json"
    mport = free_port()
    b = start_broker(config="allow_anonymous = false\nlog_level = \"debug\"\n" + service.config(cache_seconds=60)
                     + f"[metrics]\nport = {mport}\n")
    c, code = connect(b.port, client_id="m1", username="alice", password="wonderland")
    assert code == 0
    bad, code = connect(b.port, client_id="m2", username="alice", password="nope")
    assert code == BAD_CREDENTIALS
    bad.close()
    for i in range(3):  # one request, then two answers from the cache
        assert c.publish("alice/t", "x", qos=1, packet_id=1 + i) == NO_SUBSCRIBERS
    assert c.publish("bob/t", "x", qos=1, packet_id=9) == NOT_AUTHORIZED
    # The refusals name who refused and why (the service's "error").
    wait_or_fail(lambda: "refused by http: refused by the auth service: wrong username or password" in b.output(),
                 "the CONNECT refusal's reason in the log")
    wait_or_fail(lambda: re.search(r"Denied PUBLISH from m1 .*'bob/t'", b.output()), "the denied PUBLISH in the log")
    text, m = metric_samples(mport)
    for name in ("requests_total", "cache_hits_total", "failures_total", "allowed_total", "denied_total",
                 "latency_microseconds_sum", "latency_microseconds_max", "in_flight"):
        assert f"# TYPE mqttools_auth_http_{name} " in text, text
    asked = len(service.taken())
    assert m["mqttools_auth_http_requests_total"] == asked
    assert m["mqttools_auth_http_cache_hits_total"] == 2
    assert m["mqttools_auth_http_failures_total"] == 0
    # Allowed: alice's user and superuser... the superuser check says no.
    assert m["mqttools_auth_http_allowed_total"] + m["mqttools_auth_http_denied_total"] == asked
    assert m["mqttools_auth_http_denied_total"] >= 3  # wrong password, not a superuser, bob/t
    assert m["mqttools_auth_http_latency_microseconds_sum"] >= m["mqttools_auth_http_latency_microseconds_max"] > 0
    c.disconnect()


def test_reload_with_a_bad_source_keeps_the_chain_in_force(start_broker, service, tmp_path):
    b = start(start_broker, service)
    conf = tmp_path / f"mqttoolsd-{b.port}.toml"
    dead = free_port()  # nothing listens there: a chain using it refuses with 0x88
    conf.write_text("allow_anonymous = false\n" + service.config(port=dead, timeout=1)
                    + f'[auth_jwt]\npublic_key_file = "{tmp_path}/missing.pem"\n')
    b.proc.send_signal(signal.SIGHUP)
    wait_or_fail(lambda: "Configuration not reloaded" in b.output() or "reloaded with" in b.output(),
                 "the reload's verdict")
    assert "auth_jwt.public_key_file" in b.output() and "missing.pem" in b.output(), b.output()
    c, code = connect(b.port, client_id="k1", username="alice", password="wonderland")
    assert code == 0  # the old chain: the live service
    c.disconnect()
    # A good configuration is taken: the new (dead) service decides.
    conf.write_text("allow_anonymous = false\n" + service.config(port=dead, timeout=1))
    b.proc.send_signal(signal.SIGHUP)

    def refused():
        c, code = connect(b.port, client_id="k2", username="alice", password="wonderland")
        c.close()
        return code == SERVER_UNAVAILABLE
    assert wait_until(refused, timeout=15, step=0.3)
