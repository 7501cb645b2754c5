"""Issue 15's defects in `mqttools publish` / `subscribe`, each as a user
meets it, against the real mqttoolsd: messages never altered, sessions that
resume (-c), refusals counted, status off stdout, clean Ctrl-C, local usage
errors, sub-second times, client errors that say what happened, and the
broker's packet and TLS handshake log lines."""
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import MQTTOOLS, MQTTOOLSD, SANITIZED, free_port, wait_for_port, wait_or_fail
from test_tools_subscribe_publish import PUBLISHED_RE, block, mqttools, publish
from test_tools_subscribe_publish import subscribers  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not (MQTTOOLS.exists() and MQTTOOLSD.exists()),
                                reason="mqttools or mqttoolsd not built")

WAIT = 20.0 if SANITIZED else 10.0


def pub(port, *args, input=None):
    return mqttools("publish", "-p", port, *args, input=input)


# ---------------------------------------------------------------- 1: -m is literal

def test_m_sends_its_text_literally_and_the_positional_form_keeps_the_seed_meaning(broker, subscribers):
    s = subscribers(broker.port, "-F", "%t %x", "-C", "5", "-t", "num/#")
    s.wait_connected()
    for text in ("42", "1234", "cafe"):
        r = pub(broker.port, "-t", "num/m", "-m", text)
        assert r.returncode == 0, r.stderr
    publish(broker.port, "num/seed", "42")                    # the seed: hex, so one byte 0x42
    publish(broker.port, "--message-format", "text", "num/text", "42")
    code, out, err = s.finish()
    assert code == 0, err
    assert out.splitlines() == ["num/m 3432", "num/m 31323334", "num/m 63616665", "num/seed 42", "num/text 3432"]


def test_auto_format_shows_non_printable_payloads_as_hex(broker, subscribers):
    s = subscribers(broker.port, "--count", "3", "np/#")
    s.wait_connected()
    publish(broker.port, "np/a", "11")  # the byte 0x11 (Ctrl-Q): never raw on the terminal
    publish(broker.port, "--message-format", "text", "np/b", "caf\u00e9 ok")
    publish(broker.port, "--message-format", "binary", "np/c", "1b5b324a")  # ESC [ 2 J: clears a terminal
    code, out, err = s.finish()
    assert code == 0, err
    assert out == block("np/a", "11") + block("np/b", "caf\u00e9 ok") + block("np/c", "1b5b324a")
    assert "\x11" not in out and "\x1b" not in out


# ---------------------------------------------------------------- 2: -c resumes

def test_disable_clean_session_resumes_the_session_and_its_queued_messages(broker, subscribers):
    s = subscribers(broker.port, "-i", "resumer", "-c", "-x", "300", "-q", "1", "-t", "res/t")
    s.wait_connected()
    s.proc.send_signal(signal.SIGINT)
    code, _, err = s.finish()
    assert code == 0, err
    for n in range(3):
        r = pub(broker.port, "-q", "1", "-t", "res/t", "-m", f"queued {n}")
        assert r.returncode == 0, r.stderr
    # Clean Start = 0: the broker kept the session and sends what it queued.
    s = subscribers(broker.port, "-i", "resumer", "-c", "-x", "300", "-q", "1", "-t", "res/t", "-C", "3")
    code, out, err = s.finish(timeout=WAIT)
    assert code == 0, err
    assert out == "queued 0\nqueued 1\nqueued 2\n"
    # Without -c the same id starts clean: nothing queued is delivered.
    r = pub(broker.port, "-q", "1", "-t", "res/t", "-m", "lost")
    assert r.returncode == 0, r.stderr
    s = subscribers(broker.port, "-i", "resumer", "-q", "1", "-t", "res/t", "-W", "1")
    code, out, err = s.finish(timeout=WAIT)
    assert (code, out) == (27, ""), err


def test_c_without_a_client_id_is_refused():
    r = mqttools("subscribe", "-c", "-t", "x")
    assert (r.returncode, r.stderr.decode()) == (1, "error: -c/--disable-clean-session needs a client id (-i ID)\n")


# ---------------------------------------------------------------- 4: refusals

def test_a_refused_publish_is_not_reported_as_success(start_broker, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite allowed/#\n")
    b = start_broker(config=f'acl_file = "{acl}"\nallow_anonymous = true\n')
    r = pub(b.port, "-q", "1", "denied/x", "hi")
    assert r.returncode == 1
    out = r.stdout.decode().splitlines()
    assert re.match(r"^Published 0 message\(s\) in ", out[0]), out
    assert r.stderr.decode().endswith("error: the broker refused 1 of 1 message(s): "
                                      "Not authorized (last on 'denied/x')\n")
    r = pub(b.port, "-q", "2", "--count", "5", "denied/x")
    assert r.returncode == 1
    assert "refused 5 of 5 message(s)" in r.stderr.decode()
    r = pub(b.port, "-q", "1", "--count", "4", "allowed/x")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("Published 4 message(s) in ")


# ---------------------------------------------------------------- 5: pipes

def test_status_goes_to_stderr_and_a_payload_cannot_forge_a_line(broker, subscribers):
    s = subscribers(broker.port, "--count", "1", "pipe/#")
    s.wait_connected()
    r = pub(broker.port, "-t", "pipe/a", "-m", "first\nTopic:         forged\nRetain:        True")
    assert r.returncode == 0, r.stderr
    code, out, err = s.finish()
    assert code == 0, err
    assert err == f"Connecting to 'localhost:{broker.port}'.\nConnected.\n"
    # Continuation lines are indented under the value: no line starts with
    # a forged field name.
    assert out == ("Topic:         pipe/a\n"
                   "Message:       first\n"
                   "               Topic:         forged\n"
                   "               Retain:        True\n"
                   "Retain:        False\n"
                   "ResponseTopic: None\n")
    assert [line for line in out.splitlines() if line.startswith("Topic:")] == ["Topic:         pipe/a"]


def test_subscribe_into_head_gets_only_messages(broker):
    assert pub(broker.port, "-r", "-t", "head/a", "-m", "one").returncode == 0
    sh = subprocess.Popen(f"{MQTTOOLS} subscribe -p {broker.port} -t 'head/#' | head -n 2",
                          shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The retained "one" comes first; "two" until head has its 2 lines.
        deadline = time.monotonic() + WAIT
        while sh.poll() is None and time.monotonic() < deadline:
            pub(broker.port, "-t", "head/a", "-m", "two")
            time.sleep(0.1)
        out, err = sh.communicate(timeout=WAIT)
        assert out.decode() == "one\ntwo\n", err
        assert b"Connecting to" in err
    finally:
        if sh.poll() is None:
            sh.kill()
            sh.wait()


# ---------------------------------------------------------------- 6: Ctrl-C

def test_ctrl_c_on_subscribe_sends_disconnect_and_exits_0(broker, subscribers):
    will_watch = subscribers(broker.port, "-t", "will/#", "-W", "3")
    will_watch.wait_connected()
    s = subscribers(broker.port, "-i", "ctrlc", "--will-topic", "will/ctrlc", "--will-payload", "gone", "-t", "c/t")
    s.wait_connected()
    s.proc.send_signal(signal.SIGINT)
    code, out, err = s.finish()
    assert code == 0, err
    # A normal DISCONNECT: the broker says so, and the will is not sent
    # [MQTT-3.1.2-10].
    wait_or_fail(lambda: "Client ctrlc disconnected." in broker.output(), "the broker's disconnect line")
    code, out, err = will_watch.finish(timeout=WAIT)
    assert (code, out) == (27, ""), err


def test_ctrl_c_on_publish_count_sends_disconnect_and_exits_0(broker):
    p = subprocess.Popen([str(MQTTOOLS), "publish", "-p", str(broker.port), "-i", "counter", "-q", "1",
                          "--count", "100000000", "cc/t"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_or_fail(lambda: "as counter" in broker.output(), "the publisher's connection")
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=WAIT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    m = PUBLISHED_RE.match(out.decode().splitlines()[0])
    assert m and 0 < int(m.group(1)) < 100000000, out
    wait_or_fail(lambda: "Client counter disconnected." in broker.output(), "the broker's disconnect line")


# ---------------------------------------------------------------- 10: usage

@pytest.mark.parametrize("args,error", [
    (["publish", "-t", "a", "-m", "x", "-m", "y"], "argument -m: give one message (-m was repeated)"),
    (["publish", "-t", "", "-m", "x"], "the topic is empty"),
    (["publish", "", "x"], "the topic is empty"),
    (["publish", "-t", "a/#", "-m", "x"], "invalid topic 'a/#' (a topic name: no '+' or '#', valid UTF-8)"),
    (["publish", "-t", "a", "-m", "x", "-n"], "give one message source (MESSAGE, -m, -f, -l, -s or -n)"),
    (["publish", "-t", "a", "-t", "b", "-m", "x"], "argument -t: give one topic to publish to"),
    (["subscribe", "-t", "a/#/b"], "invalid topic filter 'a/#/b'"),
    (["subscribe", "-t", "a", "-F", "%Z"], "argument -F: unknown conversion '%Z'"),
    (["subscribe", "-t", "a", "-V", "31"], "argument -V: MQTT 3.1 is not supported (use 5 or 311)"),
    (["subscribe", "-t", "a", "-V", "311", "-D", "connect", "user-property", "k", "v"],
     "argument -D: properties need MQTT 5 (-V 5)"),
    (["publish", "-t", "a", "-m", "x", "-D", "publish", "session-expiry-interval", "5"],
     "argument -D: invalid property 'session-expiry-interval' for command 'publish'"),
    (["publish", "-t", "a", "-m", "x", "-D", "connnect", "receive-maximum", "5"],
     "argument -D: invalid command 'connnect' (choose from connect, publish, subscribe, unsubscribe, "
     "disconnect, will)"),
    (["publish", "-t", "a", "-m", "x", "--will-payload", "w"], "a will payload, QoS or retain needs --will-topic"),
    (["publish", "-t", "a", "-m", "x", "-L", "http://h/t"],
     "argument -L: unsupported scheme 'http' (use mqtt, mqtts, ws or wss)"),
])
def test_local_usage_errors(args, error):
    r = mqttools(*args)
    assert (r.returncode, r.stdout.decode(), r.stderr.decode()) == (1, "", f"error: {error}\n")


def test_quiet_prints_nothing_but_the_exit_status_tells(broker):
    r = pub(broker.port, "--quiet", "-t", "q/t", "-m", "x")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    port = free_port()
    r = mqttools("publish", "-p", port, "--quiet", "-t", "q/t", "-m", "x")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"")


def test_sub_second_runs_print_enough_digits(broker):
    r = pub(broker.port, "/t", "x")
    m = PUBLISHED_RE.match(r.stdout.decode().splitlines()[0])
    assert m, r.stdout
    seconds = m.group(2)
    assert float(seconds) > 0, seconds  # never "in 0 seconds" next to a rate


def test_broker_command_takes_the_daemons_p_and_c(tmp_path):
    port = free_port()
    conf = tmp_path / "b.toml"
    conf.write_text("max_packet_size = 1000\n")
    p = subprocess.Popen([str(MQTTOOLS), "broker", "-p", str(port), "-c", str(conf)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc=p)
        assert pub(port, "-t", "b/t", "-m", "small").returncode == 0
        # The file's limit applies: a bigger message is refused by the broker.
        r = pub(port, "-q", "1", "-t", "b/t", "-m", "x" * 2000)
        assert r.returncode == 1
    finally:
        p.terminate()
        p.wait(timeout=10)


# ---------------------------------------------------------------- 8: errors

def test_tls_to_a_plain_port_and_mqtt_to_an_http_server_say_what_happened(broker):
    r = mqttools("publish", "-p", broker.port, "--capath", "/etc/ssl/certs", "-t", "t", "-m", "x")
    assert r.returncode == 1
    assert r.stderr.decode().endswith(
        f"error: cannot connect to 'localhost:{broker.port}': TLS handshake failed: the broker closed the "
        "connection (is this a TLS port?)\n")

    # An HTTP server (as nginx does to a request it cannot parse).
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(WAIT)

    def answer():
        for _ in range(3):  # the client's three attempts
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        port = server.getsockname()[1]
        r = mqttools("publish", "-h", "127.0.0.1", "-p", port, "-t", "t", "-m", "x")
        assert r.returncode == 1
        assert r.stderr.decode().endswith(f"error: cannot connect to '127.0.0.1:{port}': the server's answer is "
                                          "not MQTT ('HTTP/1.1 400 Bad Request'): is this an MQTT port?\n")
    finally:
        thread.join(timeout=WAIT)
        server.close()


# ---------------------------------------------------------------- 9: broker log

def test_broker_logs_each_packet_at_debug_without_payloads_or_passwords(start_broker):
    b = start_broker(args=["-v"])
    r = pub(b.port, "-i", "logged", "-u", "someone", "-P", "s3cret-pw", "-q", "1", "-t", "log/t", "-m",
            "payload-text")
    assert r.returncode == 0, r.stderr
    wait_or_fail(lambda: "Received DISCONNECT from logged" in b.output(), "the DISCONNECT line")
    log = b.output()
    assert re.search(r"debug: Received CONNECT from 127\.0\.0\.1:\d+ \(p5, c1, k0, 'logged', u'someone'\)", log), log
    assert "debug: Sending CONNACK to logged (0 Success, session present 0)" in log
    assert "debug: Received PUBLISH from logged (d0, q1, r0, m1, 'log/t', ... (12 bytes))" in log
    assert "debug: Sending PUBACK to logged (Mid: 1, RC: 16 No matching subscribers)" in log
    assert "payload-text" not in log and "s3cret-pw" not in log


def test_broker_logs_nothing_per_packet_at_info(broker):
    r = pub(broker.port, "-i", "quietly", "-t", "log/t", "-m", "x")
    assert r.returncode == 0, r.stderr
    wait_or_fail(lambda: "Client quietly disconnected." in broker.output(), "the disconnect line")
    assert "Received PUBLISH" not in broker.output()


def test_passwd_help_goes_to_stdout_and_a_mistake_to_stderr():
    r = mqttools("passwd", "--help")
    assert r.returncode == 0 and r.stderr == b""
    assert r.stdout.startswith(b"mqttools passwd manages password files")
    r = mqttools("passwd")
    assert r.returncode == 1 and r.stdout == b""
    assert b"Usage: mqttools passwd" in r.stderr
