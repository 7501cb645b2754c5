"""[auth_jwt]: tokens made with python3-jwt / python3-cryptography against
the real mqttoolsd: valid HS256 and RS256 tokens get in; expired, not yet
valid, forged, alg none, HS256 keyed with the RSA public key, malformed are
refused; the ACL claim is enforced; the connection ends at expiry."""
import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import MQTTOOLSD, refused_config_output
from test_security_mqtt import Closed, RawClient

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")

BAD_CREDENTIALS, NOT_AUTHORIZED, MAX_CONNECT_TIME = 0x86, 0x87, 0xA0
SECRET = "a-long-shared-secret"


@pytest.fixture(scope="module")
def rsa_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, pem


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def connect(port, token, username="alice", client_id="dev1", version=5):
    c = RawClient(port, version=version)
    _, code = c.connect(client_id=client_id, username=username, password=token)
    return c, code


def refused(c, code, expected=BAD_CREDENTIALS):
    assert code == expected
    with pytest.raises((Closed, ConnectionError)):
        c.recv(timeout=3)
    c.close()


def test_hs256_tokens(start_broker):
    b = start_broker(config=f'allow_anonymous = false\n[auth_jwt]\nsecret = "{SECRET}"\nleeway = 0\n'
                            '[auth_jwt.verify_claims]\nsub = "${username}"\n')
    now = int(time.time())
    good = jwt.encode({"sub": "alice", "exp": now + 600}, SECRET, algorithm="HS256")
    c, code = connect(b.port, good)
    assert code == 0
    c.ping()
    c.disconnect()
    for token in (
        jwt.encode({"sub": "alice", "exp": now - 60}, SECRET, algorithm="HS256"),          # expired
        jwt.encode({"sub": "alice", "nbf": now + 600}, SECRET, algorithm="HS256"),         # not yet valid
        jwt.encode({"sub": "alice"}, "another-secret", algorithm="HS256"),                 # forged
        jwt.encode({"sub": "mallory"}, SECRET, algorithm="HS256"),                          # claim mismatch
        b64u(b'{"alg":"none","typ":"JWT"}') + "." + b64u(b'{"sub":"alice"}') + ".",       # alg none
        "eyJhbGciOiJIUzI1NiJ9.%%%.abc",                                                     # malformed
    ):
        c, code = connect(b.port, token)
        refused(c, code)
    # Not a JWT at all: nobody else knows the user -> 0x86 too.
    c, code = connect(b.port, "plain-password")
    refused(c, code)
    assert "token expired" in b.output() and "bad signature" in b.output()


def test_rs256_and_algorithm_confusion(start_broker, tmp_path, rsa_key):
    key, pem = rsa_key
    keyfile = tmp_path / "pub.pem"
    keyfile.write_bytes(pem)
    b = start_broker(config=f'allow_anonymous = false\n[auth_jwt]\npublic_key_file = "{keyfile}"\n')
    c, code = connect(b.port, jwt.encode({"sub": "alice"}, key, algorithm="RS256"))
    assert code == 0
    c.disconnect()
    # HS256 whose HMAC key is the public key's PEM (known to everybody).
    header = b64u(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64u(json.dumps({"sub": "alice"}).encode())
    sig = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    c, code = connect(b.port, f"{header}.{payload}.{b64u(sig)}")
    refused(c, code)
    assert "HS256 refused" in b.output()


def test_acl_claim_enforced(start_broker):
    b = start_broker(config=f'allow_anonymous = false\n[auth_jwt]\nsecret = "{SECRET}"\nacl_claim = "acl"\n')
    acl = {"pub": ["devices/${clientid}/out"], "sub": ["devices/${clientid}/in/#"], "all": ["users/${username}/#"]}
    token = jwt.encode({"sub": "alice", "acl": acl}, SECRET, algorithm="HS256")
    c, code = connect(b.port, token, client_id="d7")
    assert code == 0
    assert c.subscribe(["devices/d7/in/#", "devices/d8/in/#", "users/alice/#"], packet_id=1, qos=1) == \
        [1, NOT_AUTHORIZED, 1]
    assert c.publish("devices/d7/out", "x", qos=1, packet_id=2) in (0, 0x10)  # 0x10: no subscribers
    assert c.publish("devices/d8/out", "x", qos=1, packet_id=3) == NOT_AUTHORIZED
    assert c.publish("users/alice/note", "hi", qos=1, packet_id=4) == 0
    assert c.next_publish()[0] == "users/alice/note"
    c.disconnect()


@pytest.mark.parametrize("version", [5, 4])
def test_disconnect_at_expiry(start_broker, version):
    b = start_broker(config=f'allow_anonymous = false\n[auth_jwt]\nsecret = "{SECRET}"\nleeway = 0\n')
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 3}, SECRET, algorithm="HS256")
    c, code = connect(b.port, token, version=version)
    assert code == 0
    c.ping()
    deadline = time.monotonic() + 15
    while True:
        assert time.monotonic() < deadline, "still connected after the token expired"
        try:
            ptype, _, body = c.recv(timeout=1)
        except TimeoutError:
            continue
        except (Closed, ConnectionError):
            assert version == 4  # 3.1.1: just closed
            break
        if ptype == 14:  # DISCONNECT
            assert body[0] == MAX_CONNECT_TIME
            break
    assert "credentials expired" in b.output()


def test_config_errors(tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text('[auth_jwt]\nfrom = "cookie"\nleeway = "x"\n')
    out = refused_config_output(conf, "[auth_jwt] with bad values")
    assert f"{conf}:2" in out and "auth_jwt.from" in out and "auth_jwt.leeway" in out
    assert "exactly one of secret, public_key_file, jwks_file" in out
    conf.write_text(f'[auth_jwt]\npublic_key_file = "{tmp_path}/missing.pem"\n')
    out = refused_config_output(conf, "[auth_jwt] with a missing key file")
    assert "auth_jwt.public_key_file" in out and "missing.pem" in out
