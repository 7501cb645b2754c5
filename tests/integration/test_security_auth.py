"""Authentication and authorization against the real mqttoolsd: password
files made by Debian's mosquitto_passwd, ACL files in Mosquitto's syntax,
and the reason codes a client sees."""
import getpass
import shutil
import subprocess
import time

import pytest

from conftest import MQTTOOLS, MQTTOOLSD, free_port, wait_for_port
from test_security_mqtt import RawClient, Closed

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

BAD_CREDENTIALS, NOT_AUTHORIZED, BAD_AUTH_METHOD = 0x86, 0x87, 0x8C

ACL = """\
# anonymous clients may only read the public tree
topic read public/#

user alice
topic readwrite alice/#
topic read sensors/#
topic deny sensors/secret/#

user bob
topic write sensors/#
topic write public/#
topic write alice/inbox

pattern readwrite clients/%c/#
"""


def mosquitto_passwd(*args):
    subprocess.run(["mosquitto_passwd", *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def pwfile(tmp_path):
    path = tmp_path / "passwords"
    mosquitto_passwd("-c", "-b", path, "alice", "wonderland")
    mosquitto_passwd("-b", path, "bob", "builder")
    mosquitto_passwd("-H", "sha512", "-b", path, "carol", "old-style")  # $6$
    return path


def secured(start_broker, tmp_path, pwfile, anonymous=False, acl=None):
    conf = f'allow_anonymous = {"true" if anonymous else "false"}\npassword_file = "{pwfile}"\n'
    if acl is not None:
        aclfile = tmp_path / "acl"
        aclfile.write_text(acl)
        conf += f'acl_file = "{aclfile}"\n'
    return start_broker(config=conf)


def connect(port, version=5, **kw):
    c = RawClient(port, version=version)
    present, code = c.connect(**kw)
    return c, code


def test_mosquitto_passwd_file_credentials_v5(start_broker, tmp_path, pwfile):
    b = secured(start_broker, tmp_path, pwfile)
    for user, pw in (("alice", "wonderland"), ("bob", "builder"), ("carol", "old-style")):
        c, code = connect(b.port, client_id=user, username=user, password=pw)
        assert code == 0, user
        c.ping()
        c.disconnect()
    for kw in (dict(username="alice", password="Wonderland"), dict(username="alice"),
               dict(username="mallory", password="wonderland"),
               dict(username="carol", password="builder")):
        c, code = connect(b.port, client_id="x", **kw)
        assert code == BAD_CREDENTIALS, kw
        with pytest.raises((Closed, ConnectionError)):  # the broker closes after a refusal
            c.recv(timeout=2)
        c.close()
    c, code = connect(b.port, client_id="anon")
    assert code == NOT_AUTHORIZED
    c.close()


def test_credentials_v311_return_codes(start_broker, tmp_path, pwfile):
    b = secured(start_broker, tmp_path, pwfile)
    c, code = connect(b.port, version=4, client_id="a", username="alice", password="wonderland")
    assert code == 0
    c.disconnect()
    c, code = connect(b.port, version=4, client_id="a", username="alice", password="nope")
    assert code == 4  # bad user name or password
    c.close()
    c, code = connect(b.port, version=4, client_id="a")
    assert code == 5  # not authorized
    c.close()


def test_authentication_method_is_refused(start_broker, tmp_path, pwfile):
    b = secured(start_broker, tmp_path, pwfile, anonymous=True)
    method = b"SCRAM-SHA-256"
    c, code = connect(b.port, client_id="x", properties=b"\x15" + len(method).to_bytes(2, "big") + method)
    assert code == BAD_AUTH_METHOD
    c.close()


def test_anonymous_allowed_but_named_users_need_their_password(start_broker, tmp_path, pwfile):
    b = secured(start_broker, tmp_path, pwfile, anonymous=True)
    c, code = connect(b.port, client_id="anon")
    assert code == 0
    c.disconnect()
    c, code = connect(b.port, client_id="x", username="alice", password="bad")
    assert code == BAD_CREDENTIALS
    c.close()


def test_mosquitto_clients_authenticate(start_broker, tmp_path, pwfile):
    b = secured(start_broker, tmp_path, pwfile)
    base = ["mosquitto_pub", "-p", str(b.port), "-h", "127.0.0.1", "-t", "x", "-m", "hi"]
    ok = subprocess.run(base + ["-u", "alice", "-P", "wonderland"], capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(base + ["-u", "alice", "-P", "x"], capture_output=True, timeout=10)
    assert bad.returncode != 0
    bad311 = subprocess.run(base + ["-V", "mqttv311", "-u", "alice", "-P", "x"],
                            capture_output=True, timeout=10)
    assert bad311.returncode != 0


def test_acl_subscribe_publish_and_delivery(start_broker, tmp_path, pwfile):
    b = secured(start_broker, tmp_path, pwfile, acl=ACL)
    alice, code = connect(b.port, client_id="alice-1", username="alice", password="wonderland")
    assert code == 0
    codes = alice.subscribe(["alice/#", "sensors/#", "sensors/secret/#", "forbidden/#"])
    assert codes == [0, 0, NOT_AUTHORIZED, NOT_AUTHORIZED]

    bob, code = connect(b.port, client_id="bob-1", username="bob", password="builder")
    assert code == 0
    assert bob.publish("sensors/temp", "21", qos=1, packet_id=1) == 0
    # bob may write here; alice's read of it is denied, so it is filtered.
    assert bob.publish("sensors/secret/key", "k", qos=1, packet_id=2) in (0, 0x10)
    assert bob.publish("alice/private", "no", qos=1, packet_id=3) == NOT_AUTHORIZED
    assert bob.publish("alice/private", "no", qos=2, packet_id=4) == NOT_AUTHORIZED
    bob.publish("alice/private", "dropped", qos=0)  # silently dropped
    assert bob.publish("alice/inbox", "hello", qos=1, packet_id=5) == 0
    bob.ping()

    got = alice.publishes_until_quiet()
    assert [(t, p) for t, p, _, _ in got] == [("sensors/temp", b"21"), ("alice/inbox", b"hello")]
    # bob is still connected: a QoS 0 denial does not disconnect.
    bob.ping()
    bob.disconnect()
    alice.disconnect()


def test_acl_retained_messages(start_broker, tmp_path, pwfile):
    b = secured(start_broker, tmp_path, pwfile, acl=ACL)
    bob, _ = connect(b.port, client_id="bob-2", username="bob", password="builder")
    assert bob.publish("sensors/secret/r", "hidden", qos=1, retain=True, packet_id=1) in (0, 0x10)
    assert bob.publish("sensors/r", "shown", qos=1, retain=True, packet_id=2) in (0, 0x10)
    assert bob.publish("alice/r", "refused", qos=1, retain=True, packet_id=3) == NOT_AUTHORIZED
    bob.disconnect()
    alice, _ = connect(b.port, client_id="alice-2", username="alice", password="wonderland")
    assert alice.subscribe(["sensors/#", "alice/#"]) == [0, 0]
    got = alice.publishes_until_quiet()
    assert [(t, p, r) for t, p, _, r in got] == [("sensors/r", b"shown", True)]
    alice.disconnect()


def test_acl_patterns_and_anonymous_rules(start_broker, tmp_path, pwfile):
    b = secured(start_broker, tmp_path, pwfile, anonymous=True, acl=ACL)
    anon, code = connect(b.port, client_id="dev7")
    assert code == 0
    assert anon.subscribe(["public/#", "clients/dev7/#", "sensors/#"]) == [0, 0, NOT_AUTHORIZED]
    assert anon.publish("public/news", "x", qos=1, packet_id=1) == NOT_AUTHORIZED
    assert anon.publish("clients/dev7/state", "on", qos=1, packet_id=2) in (0, 0x10)
    assert anon.publish("clients/dev8/state", "on", qos=1, packet_id=3) == NOT_AUTHORIZED
    got = anon.publishes_until_quiet()
    assert [(t, p) for t, p, _, _ in got] == [("clients/dev7/state", b"on")]
    anon.disconnect()
    # 3.1.1 has no reason codes in SUBACK: a refusal is 0x80.
    old, code = connect(b.port, version=4, client_id="dev9")
    assert code == 0
    assert old.subscribe(["public/#", "sensors/#"]) == [0, 0x80]
    old.disconnect()


def run_passwd(*args, stdin=None):
    return subprocess.run([str(MQTTOOLS), "passwd", *map(str, args)], input=stdin,
                          capture_output=True, timeout=30)


@pytest.mark.skipif(not MQTTOOLS.exists(), reason="mqttools not built")
def test_mqttools_passwd_file_works_here_and_in_mosquitto(start_broker, tmp_path):
    path = tmp_path / "ours"
    r = run_passwd("-c", path, "dora", stdin=b"expl0rer\nexpl0rer\n")
    assert r.returncode == 0, r.stderr
    r = run_passwd("-b", path, "boots", "monkey")
    assert r.returncode == 0, r.stderr
    r = run_passwd(path, "swiper", stdin=b"one\ntwo\n")
    assert r.returncode != 0 and b"do not match" in r.stderr
    assert "swiper" not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    b = secured(start_broker, tmp_path, path)
    c, code = connect(b.port, client_id="d", username="dora", password="expl0rer")
    assert code == 0
    c.disconnect()

    # Debian's mosquitto accepts the same file.
    mosquitto = shutil.which("mosquitto")
    if mosquitto is None:
        pytest.skip("mosquitto not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    # `user`: mosquitto started as root would drop to "mosquitto", which
    # cannot read a 0600 file owned by us.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {path}\n"
                    f"user {getpass.getuser()}\n")
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        base = ["mosquitto_pub", "-p", str(port), "-h", "127.0.0.1", "-t", "x", "-m", "hi"]
        for user, pw, expected_ok in (("dora", "expl0rer", True), ("boots", "monkey", True),
                                      ("dora", "wrong", False)):
            r = subprocess.run(base + ["-u", user, "-P", pw], capture_output=True, timeout=10)
            assert (r.returncode == 0) == expected_ok, (user, r.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
