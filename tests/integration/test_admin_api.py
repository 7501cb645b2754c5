"""The HTTP management API (issue 27): a listener with protocol = "http_api",
EMQX v5 paths and shapes, API keys from a Mosquitto password file made by
`mqttools passwd`, the banned list, kicks, client lifecycle events. Driven
with curl and Python's http.client against the real mqttoolsd."""
import base64
import http.client
import json
import socket
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import MQTTOOLS, Broker, free_port, refused_config_output, wait_or_fail, wait_until
import mqttwire

KEY, SECRET = "ops", "s3cret-key"


def make_key_file(path):
    subprocess.run([str(MQTTOOLS), "passwd", "-c", "-b", str(path), KEY, SECRET], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


class Api:
    def __init__(self, port):
        self.port = port
        self.auth = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()

    def request(self, method, path, body=None, auth=True, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        h = dict(headers or {})
        if auth:
            h["Authorization"] = self.auth
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        raw = r.read()
        conn.close()
        ctype = r.getheader("Content-Type") or ""
        return r.status, (json.loads(raw) if raw and "json" in ctype else raw.decode(errors="replace"))


@pytest.fixture
def admin(tmp_path):
    keys = make_key_file(tmp_path / "api_keys")
    api_port = free_port()
    config = f"""
allow_anonymous = true
client_events = true
[[listener]]
port = {api_port}
protocol = "http_api"
api_key_file = "{keys}"
"""
    b = Broker(tmp_path, config=config)
    b.api = Api(api_port)
    wait_or_fail(lambda: b.api.request("GET", "/api/v5/nodes")[0] == 200, "the API to answer")
    yield b
    code = b.stop()
    assert code == 0, b.output()


def mqtt_client(port, client_id, username=None, events=None, v5=True):
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    c = mqtt.Client(client_id=client_id, protocol=proto)
    if username:
        c.username_pw_set(username, "pw")
    state = {"connected": threading.Event(), "gone": threading.Event(), "rc": None, "connack": None,
             "messages": []}

    def on_connect(client, userdata, flags, rc, properties=None):
        state["connack"] = rc
        if (rc == 0) if not hasattr(rc, "value") else (rc.value == 0):
            state["connected"].set()

    def on_disconnect(client, userdata, rc, properties=None):
        state["rc"] = rc
        state["gone"].set()

    def on_message(client, userdata, msg):
        state["messages"].append(msg)

    c.on_connect, c.on_disconnect, c.on_message = on_connect, on_disconnect, on_message
    c.state = state
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c


def stop(c):
    c.loop_stop()
    try:
        c.disconnect()
    except Exception:
        pass


def test_keys_are_required(admin):
    status, body = admin.api.request("GET", "/api/v5/clients", auth=False)
    assert status == 401 and body["code"] == "BAD_API_KEY_OR_SECRET"
    bad = "Basic " + base64.b64encode(f"{KEY}:wrong".encode()).decode()
    status, _ = admin.api.request("GET", "/api/v5/clients", auth=False, headers={"Authorization": bad})
    assert status == 401
    # curl, as scripts use it.
    out = subprocess.run(["curl", "-s", "-u", f"{KEY}:{SECRET}", f"http://127.0.0.1:{admin.api.port}/api/v5/stats"],
                         capture_output=True, text=True, timeout=30)
    stats = json.loads(out.stdout)
    assert isinstance(stats, list) and "live_connections.count" in stats[0]
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                          f"http://127.0.0.1:{admin.api.port}/api/v5/stats"], capture_output=True, text=True, timeout=30)
    assert out.stdout == "401"
    # /metrics is served there too, behind the key.
    status, text = admin.api.request("GET", "/metrics")
    assert status == 200 and "mqttools_clients_connected" in text


def test_clients_listing_kick_and_subscriptions(admin):
    subs = [mqtt_client(admin.port, f"dev-{i}", username="alice" if i % 2 else "bob") for i in range(5)]
    for c in subs:
        assert c.state["connected"].wait(10)
    subs[0].subscribe("sensors/#", qos=1)
    wait_or_fail(lambda: admin.api.request("GET", "/api/v5/clients/dev-0")[1].get("subscriptions_cnt") == 1,
                 "the subscription to show")
    status, body = admin.api.request("GET", "/api/v5/clients?page=1&limit=2")
    assert status == 200
    assert body["meta"]["count"] == 5 and body["meta"]["limit"] == 2 and body["meta"]["page"] == 1
    assert len(body["data"]) == 2
    one = body["data"][0]
    for field in ("clientid", "username", "ip_address", "port", "connected", "proto_ver", "keepalive",
                  "clean_start", "expiry_interval", "subscriptions_cnt", "inflight", "mqueue_len",
                  "connected_at", "node"):
        assert field in one, field
    assert one["connected"] is True and one["ip_address"] == "127.0.0.1" and one["proto_ver"] == 5
    # Pages cover everything exactly once.
    seen = []
    for page in (1, 2, 3):
        seen += [c["clientid"] for c in admin.api.request("GET", f"/api/v5/clients?page={page}&limit=2")[1]["data"]]
    assert sorted(seen) == [f"dev-{i}" for i in range(5)]
    _, body = admin.api.request("GET", "/api/v5/clients?username=alice")
    assert sorted(c["clientid"] for c in body["data"]) == ["dev-1", "dev-3"]
    _, body = admin.api.request("GET", "/api/v5/clients?like_clientid=v-4")
    assert [c["clientid"] for c in body["data"]] == ["dev-4"]

    status, body = admin.api.request("GET", "/api/v5/clients/dev-0/subscriptions")
    assert status == 200 and body[0]["topic"] == "sensors/#" and body[0]["qos"] == 1
    status, body = admin.api.request("GET", "/api/v5/subscriptions")
    assert status == 200 and body["meta"]["count"] == 1 and body["data"][0]["clientid"] == "dev-0"

    # Kick: MQTT 5 DISCONNECT 0x98 (Administrative action), then 204; the
    # second time 404. The raw client sees the packet itself.
    raw = mqttwire.Client(admin.port)
    assert raw.connect("dev-2", clean_start=False).reason == 0  # takes dev-2 over
    assert subs[2].state["gone"].wait(10)
    subs[2].loop_stop()
    status, _ = admin.api.request("DELETE", "/api/v5/clients/dev-2")
    assert status == 204
    got = raw.expect_closed(10)
    assert [(p.type, p.reason) for p in got] == [(mqttwire.DISCONNECT, 0x98)]
    wait_or_fail(lambda: admin.api.request("GET", "/api/v5/clients/dev-2")[0] == 404, "the kicked client to go")
    status, body = admin.api.request("DELETE", "/api/v5/clients/dev-2")
    assert status == 404 and body["code"] == "CLIENTID_NOT_FOUND"
    for c in subs:
        stop(c)


def test_publish_and_retained(admin):
    sub = mqtt_client(admin.port, "listener")
    assert sub.state["connected"].wait(10)
    sub.subscribe("api/#", qos=1)
    wait_or_fail(lambda: admin.api.request("GET", "/api/v5/subscriptions?clientid=listener")[1]["meta"]["count"] == 1,
                 "the subscription")
    status, body = admin.api.request("POST", "/api/v5/publish", {
        "topic": "api/t1", "payload": base64.b64encode(b"\x00\x01bin").decode(), "payload_encoding": "base64",
        "qos": 1, "retain": True,
        "properties": {"content_type": "application/octet-stream", "user_properties": {"k": "v"},
                       "message_expiry_interval": 300, "response_topic": "api/reply", "correlation_data": "c1"}})
    assert status == 200 and "id" in body
    wait_or_fail(lambda: sub.state["messages"], "the API's message")
    m = sub.state["messages"][0]
    assert m.topic == "api/t1" and m.payload == b"\x00\x01bin" and m.qos == 1
    assert m.properties.ContentType == "application/octet-stream"
    assert ("k", "v") in m.properties.UserProperty
    assert m.properties.ResponseTopic == "api/reply"
    # No subscriber: 202 (EMQX's no_matched_subscribers).
    status, body = admin.api.request("POST", "/api/v5/publish", {"topic": "nobody/here", "payload": "x"})
    assert status == 202 and body["reason_code"] == 16
    admin.api.request("POST", "/api/v5/publish", {"topic": "api/t2/deep", "payload": "plain text", "retain": True})

    status, body = admin.api.request("GET", "/api/v5/mqtt/retainer/messages")
    topics = [m["topic"] for m in body["data"]]
    assert status == 200 and "api/t1" in topics and "api/t2/deep" in topics
    status, body = admin.api.request("GET", "/api/v5/mqtt/retainer/message/api%2Ft2%2Fdeep")
    assert status == 200 and base64.b64decode(body["payload"]) == b"plain text"
    status, body = admin.api.request("GET", "/api/v5/mqtt/retainer/message/api/t1")
    assert status == 200 and base64.b64decode(body["payload"]) == b"\x00\x01bin" and body["qos"] == 1
    status, _ = admin.api.request("DELETE", "/api/v5/mqtt/retainer/message/api/t1")
    assert status == 204
    status, _ = admin.api.request("GET", "/api/v5/mqtt/retainer/message/api/t1")
    assert status == 404
    # A new subscriber gets only the retained message left.
    late = mqtt_client(admin.port, "late")
    assert late.state["connected"].wait(10)
    late.subscribe("api/#")
    wait_or_fail(lambda: late.state["messages"], "the retained message")
    time.sleep(0.3)
    assert [m.topic for m in late.state["messages"]] == ["api/t2/deep"]
    for bad in ({"topic": "a/+", "payload": "x"}, {"payload": "x"}, {"topic": "a", "qos": 3},
                {"topic": "a", "payload": "!!", "payload_encoding": "base64"},
                {"topic": "a", "payload_encoding": "hex"}):
        status, body = admin.api.request("POST", "/api/v5/publish", bad)
        assert status == 400 and body["code"] == "BAD_REQUEST", bad
    stop(sub)
    stop(late)


def test_banned_refused_and_kicked(admin):
    victim = mqtt_client(admin.port, "victim")
    assert victim.state["connected"].wait(10)
    status, body = admin.api.request("POST", "/api/v5/banned",
                                     {"as": "clientid", "who": "victim", "reason": "testing"})
    assert status == 200 and body["who"] == "victim" and body["until"] == "infinity"
    assert victim.state["gone"].wait(10), "a banned client that is connected is kicked"
    victim.loop_stop()
    status, _ = admin.api.request("POST", "/api/v5/banned", {"as": "clientid", "who": "victim"})
    assert status == 409
    assert mqttwire.Client(admin.port).connect("victim").reason == 0x8A  # Banned
    # By username, with an end.
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    status, body = admin.api.request("POST", "/api/v5/banned", {"as": "username", "who": "mallory", "until": until})
    assert status == 200
    assert mqttwire.Client(admin.port).connect("m1", username="mallory").reason == 0x8A
    # 3.1.1 has no "banned": 5, not authorized.
    assert mqttwire.Client(admin.port, version=4).connect("m2", username="mallory").reason == 5
    _, body = admin.api.request("GET", "/api/v5/banned")
    assert {(b["as"], b["who"]) for b in body["data"]} == {("clientid", "victim"), ("username", "mallory")}
    status, _ = admin.api.request("DELETE", "/api/v5/banned/clientid/victim")
    assert status == 204
    status, _ = admin.api.request("DELETE", "/api/v5/banned/clientid/victim")
    assert status == 404
    ok = mqtt_client(admin.port, "victim")
    assert ok.state["connected"].wait(10)
    stop(ok)
    for bad in ({"as": "nobody", "who": "x"}, {"as": "clientid"}, {"as": "clientid", "who": "x", "until": "never"},
                {"as": "clientid", "who": "x", "until": "2001-01-01T00:00:00Z"}):
        status, _ = admin.api.request("POST", "/api/v5/banned", bad)
        assert status == 400, bad


def test_client_events(admin):
    watcher = mqtt_client(admin.port, "watcher")
    assert watcher.state["connected"].wait(10)
    watcher.subscribe("$SYS/brokers/+/clients/#")
    time.sleep(0.3)
    c = mqtt_client(admin.port, "evented", username="eve")
    assert c.state["connected"].wait(10)
    stop(c)

    def events():
        return [m for m in watcher.state["messages"] if "/clients/evented/" in m.topic]

    wait_or_fail(lambda: len(events()) >= 2, "the connected and disconnected events")
    connected, disconnected = events()[0], events()[1]
    assert connected.topic.endswith("/clients/evented/connected")
    assert disconnected.topic.endswith("/clients/evented/disconnected")
    node = connected.topic.split("/")[2]
    _, nodes = admin.api.request("GET", "/api/v5/nodes")
    assert nodes[0]["node"] == node
    j = json.loads(connected.payload)
    assert j["clientid"] == "evented" and j["username"] == "eve" and j["ipaddress"] == "127.0.0.1"
    assert j["proto_ver"] == 5 and j["keepalive"] == 30 and "connected_at" in j and "ts" in j
    d = json.loads(disconnected.payload)
    assert d["reason"] == "normal" and "disconnected_at" in d
    stop(watcher)


def test_errors_and_garbage_never_harm_mqtt(admin):
    api = admin.api
    assert api.request("GET", "/api/v5/nowhere")[0] == 404
    status, body = api.request("PUT", "/api/v5/clients")
    assert status == 405 and body["code"] == "METHOD_NOT_ALLOWED"
    assert api.request("POST", "/api/v5/banned", "{not json")[0] == 400
    assert api.request("GET", "/api/v5/clients?page=0")[0] == 400
    assert api.request("GET", "/api/v5/clients?limit=abc")[0] == 400
    # 413: a body over the limit is refused from its Content-Length.
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
        s.sendall(b"POST /api/v5/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 413")

    # A subscriber and a publisher keep talking while HTTP clients send
    # garbage, stall half-way and flood.
    sub = mqtt_client(admin.port, "steady-sub")
    pub = mqtt_client(admin.port, "steady-pub")
    assert sub.state["connected"].wait(10) and pub.state["connected"].wait(10)
    sub.subscribe("steady/t", qos=1)
    time.sleep(0.3)
    socks = []
    for payload in (b"\x10\x0c\x00\x04MQTT\x05\x02\x00\x3c", b"GET / HTTP/1.1\r\nHost", b"\x16\x03\x01\x02\x00",
                    b"GET /" + b"a" * 20000):
        s = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        s.sendall(payload)
        socks.append(s)
    for i in range(50):
        pub.publish("steady/t", f"m{i}", qos=1)
    wait_or_fail(lambda: len(sub.state["messages"]) >= 50, "every message while HTTP misbehaves")
    # The garbage got a 400 or 431 and was closed; the stalled one is still open.
    assert socks[0].recv(4096).startswith(b"HTTP/1.1 400")
    assert socks[3].recv(4096).startswith(b"HTTP/1.1 431")
    for s in socks:
        s.close()
    assert api.request("GET", "/api/v5/stats?aggregate=true")[0] == 200
    stop(sub)
    stop(pub)


def test_dashboard_assets_and_tls(tmp_path):
    """The dashboard's files are served from the binary; TLS with the
    listener's certfile/keyfile."""
    keys = make_key_file(tmp_path / "api_keys")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    port = free_port()
    b = Broker(tmp_path, config=f"""
allow_anonymous = true
[[listener]]
port = {port}
protocol = "http_api"
api_key_file = "{keys}"
certfile = "{cert}"
keyfile = "{key}"
""")
    try:
        def curl(*args):
            return subprocess.run(["curl", "-sk", *args], capture_output=True, text=True, timeout=30).stdout
        html = wait_until(lambda: curl(f"https://127.0.0.1:{port}/"))
        assert "<title>mqttools dashboard</title>" in html
        assert "function plot" in curl(f"https://127.0.0.1:{port}/app.js")
        assert json.loads(curl("-u", f"{KEY}:{SECRET}", f"https://127.0.0.1:{port}/api/v5/nodes"))[0]["node_status"] \
            == "running"
        # No plain HTTP on the TLS port.
        assert curl("-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/") in ("000", "")
    finally:
        assert b.stop() == 0, b.output()


def test_config_errors(tmp_path):
    """http_api without api_key_file, or api_key_file elsewhere: refused at start with the key named."""
    conf = tmp_path / "bad.toml"
    conf.write_text('[[listener]]\nport = 1\nprotocol = "http_api"\n')
    assert "api_key_file" in refused_config_output(conf, "http_api without api_key_file")
    conf.write_text('[[listener]]\nport = 1\napi_key_file = "/x"\n')
    assert "http_api" in refused_config_output(conf, "api_key_file on an MQTT listener")


def persistent_api_config(tmp_path):
    """(API port, config): persistence on, an http_api listener with keys."""
    keys = make_key_file(tmp_path / "api_keys")
    api_port = free_port()
    return api_port, f"""
allow_anonymous = true
persistence = true
persistence_location = "{tmp_path}"
[[listener]]
port = {api_port}
protocol = "http_api"
api_key_file = "{keys}"
"""


def test_bans_survive_a_restart(tmp_path):
    """With persistence = true the banned list is in the store: after a
    restart the bans hold, until included, and a lifted one stays lifted."""
    api_port, config = persistent_api_config(tmp_path)

    def start():
        b = Broker(tmp_path, config=config)
        b.api = Api(api_port)
        wait_or_fail(lambda: b.api.request("GET", "/api/v5/nodes")[0] == 200, "the API to answer")
        return b

    b = start()
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6))
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    for ban in ({"as": "clientid", "who": "evil", "reason": "kept"}, {"as": "username", "who": "brief", "until": soon},
                {"as": "username", "who": "mallory", "until": later}, {"as": "clientid", "who": "forgiven"}):
        assert b.api.request("POST", "/api/v5/banned", ban)[0] == 200, ban
    assert b.api.request("DELETE", "/api/v5/banned/clientid/forgiven")[0] == 204
    assert b.stop() == 0, b.output()

    b = start()
    try:
        _, body = b.api.request("GET", "/api/v5/banned")
        got = {(x["as"], x["who"]): x for x in body["data"]}
        assert ("clientid", "forgiven") not in got
        assert got[("clientid", "evil")]["reason"] == "kept" and got[("clientid", "evil")]["until"] == "infinity"
        assert ("username", "mallory") in got
        assert mqttwire.Client(b.port).connect("evil").reason == 0x8A
        assert mqttwire.Client(b.port).connect("m1", username="mallory").reason == 0x8A
        assert mqttwire.Client(b.port).connect("forgiven").reason == 0
        # `until` still counts after the restart: the short ban ends.
        wait_or_fail(lambda: mqttwire.Client(b.port).connect("b1", username="brief").reason == 0,
                     "the ban with until to end", timeout=30)
    finally:
        assert b.stop() == 0, b.output()
    # And the next start does not bring it back.
    b = start()
    try:
        _, body = b.api.request("GET", "/api/v5/banned")
        assert {(x["as"], x["who"]) for x in body["data"]} == {("clientid", "evil"), ("username", "mallory")}
    finally:
        assert b.stop() == 0, b.output()


def _store_load(port, stop):
    """Keeps the store thread busy: retained messages of 16 KiB on 500
    topics, each a row to commit. Bounded by `stop` and by 60 s."""
    try:
        c = mqttwire.Client(port)
        c.connect("store-load")
        payload = b"x" * 16384
        packets = [mqttwire.publish_packet(f"load/{i}", payload, retain=True) for i in range(500)]
        deadline = time.monotonic() + 60
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            c.send(packets[i % len(packets)])
            i += 1
    except OSError:
        pass  # the broker was killed


def test_acknowledged_ban_survives_kill9(tmp_path):
    """A ban (and a lifted ban) is answered only once the store committed
    it: kill -9 right after the answer, while the store thread is busy with
    other writes, and the restarted broker still refuses the client."""
    api_port, config = persistent_api_config(tmp_path)
    banned = set()
    lifted = set()
    for round_ in range(5):
        b = Broker(tmp_path, config=config)
        b.api = Api(api_port)
        wait_or_fail(lambda: b.api.request("GET", "/api/v5/nodes")[0] == 200, "the API to answer", timeout=30)
        _, body = b.api.request("GET", "/api/v5/banned?limit=1000")
        have = {x["who"] for x in body["data"]}
        assert banned <= have, f"round {round_}: acknowledged bans lost: {banned - have}"
        assert not (have & lifted), f"round {round_}: acknowledged lifts lost: {have & lifted}"
        for who in banned:
            assert mqttwire.Client(b.port).connect(who).reason == 0x8A, who
        stop = threading.Event()
        loader = threading.Thread(target=_store_load, args=(b.port, stop), daemon=True)
        loader.start()
        time.sleep(0.5)  # the store is writing
        who = f"victim{round_}"
        if round_ % 2 == 1:
            # Lift an earlier ban: the answer (204) too waits for the store.
            gone = sorted(banned)[0]
            status, _ = b.api.request("DELETE", f"/api/v5/banned/clientid/{gone}")
            assert status == 204
            b.proc.kill()
            banned.discard(gone)
            lifted.add(gone)
        else:
            status, _ = b.api.request("POST", "/api/v5/banned", {"as": "clientid", "who": who})
            assert status == 200
            b.proc.kill()
            banned.add(who)
        b.proc.wait()
        b.log.close()
        stop.set()
        loader.join(timeout=10)
    b = Broker(tmp_path, config=config)
    try:
        b.api = Api(api_port)
        wait_or_fail(lambda: b.api.request("GET", "/api/v5/nodes")[0] == 200, "the API to answer", timeout=30)
        _, body = b.api.request("GET", "/api/v5/banned?limit=1000")
        assert {x["who"] for x in body["data"]} == banned
    finally:
        assert b.stop() == 0, b.output()


def test_big_page_on_a_kept_alive_connection(admin):
    """A page of 400 sessions (over 64 KiB: its body goes out from where it
    was built, a slice per turn) arrives whole and as JSON, escapes and all,
    and the next request on the same connection is answered after it."""
    for i in range(400):
        c = mqttwire.Client(admin.port)
        assert c.connect(f'big-"page"\\{i:03d}', properties={mqttwire.SESSION_EXPIRY_INTERVAL: 600}).reason == 0
        c.disconnect()
    wait_or_fail(lambda: admin.api.request("GET", "/api/v5/clients?limit=1")[1]["meta"]["count"] == 400,
                 "400 sessions listed")
    conn = http.client.HTTPConnection("127.0.0.1", admin.api.port, timeout=30)
    try:
        for path in ("/api/v5/clients?limit=1000", "/api/v5/clients?limit=1000&page=1"):
            conn.request("GET", path, headers={"Authorization": admin.api.auth})
            r = conn.getresponse()
            raw = r.read()
            assert r.status == 200 and int(r.getheader("Content-Length")) == len(raw) > 64 * 1024
            body = json.loads(raw)
            assert body["meta"]["count"] == 400
            assert sorted(x["clientid"] for x in body["data"]) == [f'big-"page"\\{i:03d}' for i in range(400)]
            assert all(x["connected"] is False and x["expiry_interval"] == 600 for x in body["data"])
        conn.request("HEAD", "/api/v5/clients?limit=1000", headers={"Authorization": admin.api.auth})
        r = conn.getresponse()
        assert r.status == 200 and int(r.getheader("Content-Length")) > 64 * 1024 and r.read() == b""
        conn.request("GET", "/api/v5/stats", headers={"Authorization": admin.api.auth})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())[0]["sessions.count"] == 400
    finally:
        conn.close()
