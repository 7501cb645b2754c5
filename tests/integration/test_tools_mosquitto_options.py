"""mosquitto_pub / mosquitto_sub options of `mqttools publish` and
`subscribe` (issue 15's parity list), each against the real mqttoolsd. The
same command lines run with mosquitto_pub/sub in
tests/interop/test_interop_mqttools_cli.py."""
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import MQTTOOLS, MQTTOOLSD, SANITIZED, free_port, wait_or_fail
from test_tools_subscribe_publish import mqttools
from test_tools_subscribe_publish import subscribers  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not (MQTTOOLS.exists() and MQTTOOLSD.exists()),
                                reason="mqttools or mqttoolsd not built")

WAIT = 20.0 if SANITIZED else 10.0


def pub(port, *args, input=None):
    r = mqttools("publish", "-p", port, "--quiet", *args, input=input)
    assert r.returncode == 0, r.stderr
    return r


# ---------------------------------------------------------------- subscribe output

def test_v_prints_topic_and_payload_and_null_for_empty(broker, subscribers):
    s = subscribers(broker.port, "-v", "-C", "2", "-t", "v/#")
    s.wait_connected()
    pub(broker.port, "-t", "v/a", "-m", "hello world")
    pub(broker.port, "-t", "v/b", "-n")
    code, out, err = s.finish()
    assert (code, out) == (0, "v/a hello world\nv/b (null)\n"), err


def test_F_format_conversions_widths_escapes_and_N(broker, subscribers):
    fmt = "%t|%p|%q|%r|%l|%m|%x|%X|%P|%R|%C|%D|%E|%F|%5l|%-4q|%03l|%.2p|@@|%%\\t."
    s = subscribers(broker.port, "-q", "1", "-F", fmt, "-C", "1", "-t", "f/#")
    n = subscribers(broker.port, "-N", "-C", "2", "-t", "n/#")
    s.wait_connected()
    n.wait_connected()
    pub(broker.port, "-q", "1", "-t", "f/a", "-m", "Hi\u00e9",
        "-D", "publish", "user-property", "k", "v", "-D", "publish", "user-property", "k2", "v2",
        "-D", "publish", "response-topic", "f/reply", "-D", "publish", "content-type", "text/plain",
        "-D", "publish", "correlation-data", "c-1", "-D", "publish", "message-expiry-interval", "600",
        "-D", "publish", "payload-format-indicator", "1")
    pub(broker.port, "-t", "n/a", "-m", "one")
    pub(broker.port, "-t", "n/a", "-m", "two")
    code, out, err = s.finish()
    assert code == 0, err
    fields = out.rstrip("\n").split("|")
    assert fields[:4] == ["f/a", "Hi\u00e9", "1", "0"]
    assert fields[4] == "4"                       # bytes, not characters
    assert int(fields[5]) > 0                     # the packet id of a QoS 1 delivery
    assert fields[6:8] == ["4869c3a9", "4869C3A9"]
    assert fields[8:11] == ["k:v k2:v2", "f/reply", "text/plain"]
    assert fields[11] == "c-1"
    assert 590 <= int(fields[12]) <= 600          # the remaining expiry
    assert fields[13:] == ["1", "    4", "1   ", "004", "Hi", "@", "%\t."]
    code, out, err = n.finish()
    assert (code, out) == (0, "onetwo"), err


def test_F_time_conversions(broker, subscribers):
    s = subscribers(broker.port, "-F", "%I %U @Y", "-C", "1", "-t", "tm/t")
    s.wait_connected()
    pub(broker.port, "-t", "tm/t", "-m", "x")
    code, out, err = s.finish()
    assert code == 0, err
    iso, unix, year = out.split()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", iso), iso
    assert abs(float(unix) - time.time()) < 60 and re.fullmatch(r"\d+\.\d{9}", unix)
    assert year == time.strftime("%Y")


def test_F_json(broker, subscribers):
    import json
    s = subscribers(broker.port, "-F", "%j", "-C", "2", "-t", "js/#")
    j = subscribers(broker.port, "-F", "%J", "-C", "1", "-t", "js/#")
    s.wait_connected()
    j.wait_connected()
    pub(broker.port, "-t", "js/a", "-m", '{"a": [1, 2.5, "x"]}')
    pub(broker.port, "-t", "js/b", "0a00ff", "--message-format", "binary")
    code, out, err = s.finish()
    assert code == 0, err
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["topic"] == "js/a" and first["payload"] == '{"a": [1, 2.5, "x"]}' and first["payloadlen"] == 20
    assert first["qos"] == 0 and first["retain"] == 0 and "tst" in first
    assert second["payload_hex"] == "0a00ff"
    code, out, err = j.finish()
    assert code == 0, err
    assert json.loads(out)["payload"] == {"a": [1, 2.5, "x"]}


def test_R_skips_stale_retained_and_retained_only_stops_at_the_first_live(broker, subscribers):
    pub(broker.port, "-r", "-t", "ret/a", "-m", "old-a")
    pub(broker.port, "-r", "-t", "ret/b", "-m", "old-b")
    fresh = subscribers(broker.port, "-R", "-v", "-C", "1", "-t", "ret/#")
    fresh.wait_connected()
    only = subscribers(broker.port, "--retained-only", "-v", "-t", "ret/#")
    only.read_until(b"ret/b old-b\n")
    pub(broker.port, "-t", "ret/a", "-m", "live")
    code, out, err = fresh.finish()
    assert (code, out) == (0, "ret/a live\n"), err
    code, out, err = only.finish()
    assert (code, sorted(out.splitlines())) == (0, ["ret/a old-a", "ret/b old-b"]), err


def test_remove_retained_clears_what_it_receives_except_filtered_out(broker, subscribers):
    for t in ("rr/a", "rr/b", "rr/keep"):
        pub(broker.port, "-r", "-t", t, "-m", "x")
    s = subscribers(broker.port, "--remove-retained", "-T", "rr/keep", "-v", "-t", "rr/#", "-W", "2")
    code, out, err = s.finish(timeout=WAIT)
    assert code == 27, err
    # The clearing messages come back live (as with mosquitto_sub; --nl
    # avoids that).
    assert sorted(out.splitlines()) == ["rr/a (null)", "rr/a x", "rr/b (null)", "rr/b x"]
    check = subscribers(broker.port, "-v", "-t", "rr/#", "-W", "2")
    code, out, err = check.finish(timeout=WAIT)
    assert (code, out) == (27, "rr/keep x\n"), err


def test_E_exits_after_the_subscription_and_U_unsubscribes(broker, subscribers):
    started = time.monotonic()
    s = subscribers(broker.port, "-i", "eu", "-c", "-q", "1", "-t", "eu/a", "-t", "eu/b", "-E")
    code, out, err = s.finish()
    assert (code, out) == (0, ""), err
    assert time.monotonic() - started < 5
    s = subscribers(broker.port, "-i", "eu", "-c", "-U", "eu/a", "-E")
    code, out, err = s.finish()
    assert code == 0, err
    pub(broker.port, "-q", "1", "-t", "eu/a", "-m", "a")
    pub(broker.port, "-q", "1", "-t", "eu/b", "-m", "b")
    # The kept session still has eu/b only: just "b" was queued.
    s = subscribers(broker.port, "-i", "eu", "-c", "-q", "1", "-v", "-t", "eu/b", "-W", "2")
    code, out, err = s.finish(timeout=WAIT)
    assert (code, out) == (27, "eu/b b\n"), err


def test_T_filters_out_topics(broker, subscribers):
    s = subscribers(broker.port, "-T", "tf/secret/#", "-T", "tf/+/hidden", "-v", "-C", "1", "-t", "tf/#")
    s.wait_connected()
    for t in ("tf/secret/x", "tf/a/hidden", "tf/shown"):
        pub(broker.port, "-t", t, "-m", "m")
    code, out, err = s.finish()
    assert (code, out) == (0, "tf/shown m\n"), err


def test_nl_rap_and_rh(broker, subscribers):
    # --nl: our own --remove-retained message does not come back.
    pub(broker.port, "-r", "-t", "nl/t", "-m", "r")
    s = subscribers(broker.port, "--nl", "--remove-retained", "-v", "-t", "nl/t", "-W", "2")
    code, out, err = s.finish(timeout=WAIT)
    assert (code, out) == (27, "nl/t r\n"), err
    pub(broker.port, "-r", "-t", "nl/t", "-m", "r")
    s = subscribers(broker.port, "--remove-retained", "-v", "-t", "nl/t", "-W", "2")
    code, out, err = s.finish(timeout=WAIT)
    assert (code, out) == (27, "nl/t r\nnl/t (null)\n"), err
    # --rap: a live retained message keeps its flag; --rh never: no
    # retained message at subscribe time.
    pub(broker.port, "-r", "-t", "rap/t", "-m", "old")
    rap = subscribers(broker.port, "--rap", "-F", "%p %r", "-C", "2", "-t", "rap/t")
    plain = subscribers(broker.port, "-F", "%p %r", "-C", "2", "-t", "rap/t")
    never = subscribers(broker.port, "--rh", "never", "-F", "%p %r", "-C", "1", "-t", "rap/t")
    for s in (rap, plain, never):
        s.wait_connected()
    pub(broker.port, "-r", "-t", "rap/t", "-m", "new")
    assert rap.finish()[1] == "old 1\nnew 1\n"
    assert plain.finish()[1] == "old 1\nnew 0\n"
    assert never.finish()[1] == "new 0\n"


# ---------------------------------------------------------------- publish sources

def test_l_s_f_n_and_repeat(broker, subscribers, tmp_path):
    s = subscribers(broker.port, "-F", "%l:%x", "-C", "9", "-t", "src/t")
    s.wait_connected()
    pub(broker.port, "-t", "src/t", "-l", input=b"line one\r\n\nlast")
    pub(broker.port, "-t", "src/t", "-s", input=b"all\nof it\x00\xff")
    f = tmp_path / "payload.bin"
    f.write_bytes(bytes(range(5)))
    pub(broker.port, "-t", "src/t", "-f", f)
    pub(broker.port, "-t", "src/t", "-n")
    started = time.monotonic()
    pub(broker.port, "-t", "src/t", "-m", "r", "--repeat", "3", "--repeat-delay", "0.2")
    assert time.monotonic() - started >= 0.4
    code, out, err = s.finish()
    assert code == 0, err
    assert out.splitlines() == ["8:" + b"line one".hex(), "0:", "4:" + b"last".hex(),
                                "11:" + b"all\nof it\x00\xff".hex(), "5:0001020304", "0:", "1:72", "1:72", "1:72"]


def test_f_with_a_missing_file_is_an_error():
    r = mqttools("publish", "-t", "t", "-f", "/nonexistent/file")
    assert r.returncode == 1
    assert r.stderr.decode() == "error: cannot open '/nonexistent/file': No such file or directory\n"


# ---------------------------------------------------------------- connection options

def test_d_prints_the_packets_on_stdout(broker):
    # On stdout, as mosquitto_pub -d prints them.
    r = mqttools("publish", "-p", broker.port, "-d", "-i", "dbg", "-q", "1", "-t", "d/t", "-m", "xyz")
    assert r.returncode == 0, r.stderr
    assert b"Client dbg" not in r.stderr
    err = r.stdout.decode()
    for line in ("Client dbg sending CONNECT (p5, c1, k0, 'dbg')",
                 "Client dbg received CONNACK (0 Success, session present 0)",
                 "Client dbg sending PUBLISH (d0, q1, r0, m1, 'd/t', ... (3 bytes))",
                 "Client dbg received PUBACK (Mid: 1, RC: 16 No matching subscribers)",
                 "Client dbg sending DISCONNECT"):
        assert line + "\n" in err, err
    assert "xyz" not in err


def test_k_I_and_connect_properties(broker):
    r = mqttools("publish", "-p", broker.port, "-I", "pfx-", "-k", "7", "-t", "k/t", "-m", "x", "-d",
                 "-D", "connect", "user-property", "who", "me", "-D", "connect", "session-expiry-interval", "60")
    assert r.returncode == 0, r.stderr
    wait_or_fail(lambda: re.search(r"as pfx-\d+ \(p5, c1, k7\)", broker.output()), "the connect line")
    assert re.search(r"sending CONNECT \(p5, c1, k7, 'pfx-\d+', session expiry 60\)", r.stdout.decode())


def test_V_311(broker, subscribers):
    s = subscribers(broker.port, "-V", "mqttv311", "-q", "2", "-v", "-C", "2", "-t", "v3/#")
    s.wait_connected()
    pub(broker.port, "-V", "311", "-q", "1", "-t", "v3/a", "-m", "one")
    pub(broker.port, "-V", "311", "-q", "2", "-t", "v3/b", "-m", "two")
    code, out, err = s.finish()
    assert (code, out) == (0, "v3/a one\nv3/b two\n"), err
    wait_or_fail(lambda: "(p4, c1, k0)" in broker.output(), "a 3.1.1 connection")


def test_A_binds_the_local_address(broker):
    pub(broker.port, "-h", "127.0.0.1", "-A", "127.0.0.1", "-t", "a/t", "-m", "x")
    r = mqttools("publish", "-h", "127.0.0.1", "-p", broker.port, "-A", "192.0.2.1", "-t", "a/t", "-m", "x")
    assert r.returncode == 1
    assert r.stderr.decode().endswith(f"error: cannot connect to '127.0.0.1:{broker.port}': "
                                      "Cannot assign requested address\n")


def test_L_url(start_broker, subscribers, tmp_path):
    pw = tmp_path / "passwd"
    assert mqttools("passwd", "-c", "-b", pw, "alice", "secret").returncode == 0
    b = start_broker(config=f'password_file = "{pw}"\nallow_anonymous = false\n')
    s = subscribers(b.port, "-L", f"mqtt://alice:secret@127.0.0.1:{b.port}/url/t", "-v", "-C", "1")
    s.wait_connected()
    r = mqttools("publish", "-L", f"mqtt://alice:secret@127.0.0.1:{b.port}/url/t", "-m", "via url")
    assert r.returncode == 0, r.stderr
    code, out, err = s.finish()
    assert (code, out) == (0, "url/t via url\n"), err
    r = mqttools("publish", "-L", f"mqtt://alice:wrong@127.0.0.1:{b.port}/url/t", "-m", "x")
    # mosquitto_pub's exit status: the CONNACK reason code (0x86).
    assert (r.returncode, r.stderr.decode().splitlines()[-1]) == (134, "error: Bad User Name or Password")


def test_will_options(broker, subscribers):
    watch = subscribers(broker.port, "-F", "%t %p %q %r %P", "-q", "2", "-C", "1", "-t", "w/#")
    watch.wait_connected()
    s = subscribers(broker.port, "-i", "dies", "-k", "5", "--will-topic", "w/dies", "--will-payload", "bye",
                    "--will-qos", "1", "--will-retain", "-D", "will", "user-property", "why", "killed", "-t", "x")
    s.wait_connected()
    s.proc.kill()  # no DISCONNECT: the broker publishes the will
    s.proc.wait()
    code, out, err = watch.finish(timeout=WAIT)
    assert (code, out) == (0, "w/dies bye 1 0 why:killed\n"), err
    # Retained too.
    late = subscribers(broker.port, "-F", "%t %p %r", "-C", "1", "-t", "w/#")
    assert late.finish()[1] == "w/dies bye 1\n"


def test_ws_url(start_broker, subscribers):
    """-L ws://HOST:PORT/PATH: MQTT over WebSocket (Mosquitto's listener key
    `protocol = "websockets"`)."""
    port = free_port()
    try:
        b = start_broker(config=f'allow_anonymous = true\n[[listener]]\nport = {port}\nprotocol = "websockets"\n')
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"mqttoolsd has no WebSocket listener yet ({e})")
    del b
    s = subscribers(port, "-L", f"ws://127.0.0.1:{port}/mqtt", "-t", "ws/t", "-v", "-C", "1")
    s.wait_connected()
    r = mqttools("publish", "-L", f"ws://127.0.0.1:{port}/mqtt", "-t", "ws/t", "-m", "over ws")
    assert r.returncode == 0, r.stderr
    code, out, err = s.finish()
    assert (code, out) == (0, "ws/t over ws\n"), err


# ---------------------------------------------------------------- TLS

def openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for localhost and a client certificate."""
    d = tmp_path_factory.mktemp("cli-certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=cli-ca")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
    (d / "client.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "localhost"), ("client", "cli-client")):
        openssl(d, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    (d / "capath").mkdir()
    (d / "capath" / "ca.pem").write_bytes((d / "ca.crt").read_bytes())
    openssl(d, "rehash", str(d / "capath"))
    return d


@pytest.fixture
def tls_broker(start_broker, certs):
    tls_port = free_port()
    b = start_broker(config=(f"allow_anonymous = true\n[[listener]]\nport = {tls_port}\ncertfile = \"{certs / 'server.crt'}\"\n"
                             f"keyfile = \"{certs / 'server.key'}\"\ncafile = \"{certs / 'ca.crt'}\"\n"
                             "require_certificate = true\n"))
    from conftest import wait_for_port
    wait_for_port(tls_port, proc=b.proc)
    b.tls_port = tls_port
    return b


def test_client_certificates_tls_version_and_capath(tls_broker, certs, subscribers):
    b = tls_broker
    s = subscribers(b.port, "-v", "-C", "3", "-t", "tls/#")
    s.wait_connected()
    base = ["publish", "-p", b.tls_port, "--cafile", certs / "ca.crt", "-t", "tls/t"]
    # require_certificate: no client certificate, no connection.
    r = mqttools(*base, "-m", "none")
    assert r.returncode == 1
    assert "TLS" in r.stderr.decode(), r.stderr
    r = mqttools(*base, "--cert", certs / "client.crt", "--key", certs / "client.key", "-m", "with cert")
    assert r.returncode == 0, r.stderr
    r = mqttools(*base, "--cert", certs / "client.crt", "--key", certs / "client.key", "--tls-version", "tlsv1.2",
                 "-m", "tls 1.2")
    assert r.returncode == 0, r.stderr
    r = mqttools("publish", "-p", b.tls_port, "--capath", certs / "capath", "--cert", certs / "client.crt",
                 "--key", certs / "client.key", "--tls-version", "tlsv1.3", "-t", "tls/t", "-m", "capath 1.3")
    assert r.returncode == 0, r.stderr
    code, out, err = s.finish()
    assert (code, out) == (0, "tls/t with cert\ntls/t tls 1.2\ntls/t capath 1.3\n"), err


def test_broker_logs_a_failed_tls_handshake_with_the_peer_address(tls_broker, certs):
    b = tls_broker
    # A plain MQTT client on the TLS port, and a TLS client without a
    # certificate: neither becomes a client, both are logged at info.
    r = mqttools("publish", "-p", b.tls_port, "-t", "t", "-m", "plain")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "port expects TLS, use --cafile, --capath or an mqtts:// URL" in err, err
    wait_or_fail(lambda: re.search(r"info: TLS handshake with 127\.0\.0\.1:\d+ failed: .+", b.output()),
               "the broker's handshake line")
    before = b.output().count("TLS handshake with")
    mqttools("publish", "-p", b.tls_port, "--cafile", certs / "ca.crt", "-t", "t", "-m", "no cert")
    wait_or_fail(lambda: b.output().count("TLS handshake with") > before, "a second handshake line")
