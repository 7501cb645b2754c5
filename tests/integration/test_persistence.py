"""Persistence (issue 12) with the real mqttoolsd on a real SQLite file:
restarts keep sessions, subscriptions, queued and in-flight QoS 1/2
messages, retained messages and wills; files that are not ours make it
refuse to start and stay untouched; a full disk refuses new QoS 1/2
instead of acknowledging what it cannot keep, and recovers."""
import hashlib
import os
import sqlite3
import subprocess
import time

import pytest

from mqttwire import (MESSAGE_EXPIRY_INTERVAL, PUBACK, PUBCOMP, PUBLISH, PUBREC,
                      PUBREL, RECEIVE_MAXIMUM, SESSION_EXPIRY_INTERVAL, SUBSCRIPTION_IDENTIFIER,
                      WILL_DELAY_INTERVAL, Client, Closed, ack_packet, publish_packet, sub_options)
from persist_helpers import DurableBroker, persistence_config, run_refused, wait_until

KEEP = {SESSION_EXPIRY_INTERVAL: 3600}


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_restart_keeps_sessions_queues_inflight_and_retained(tmp_path):
    d = DurableBroker(tmp_path)
    d.start()
    sub = Client(d.port)
    assert not sub.connect("sub", properties=KEEP).session_present
    sub.subscribe([("a/#", sub_options(qos=2))], properties={SUBSCRIPTION_IDENTIFIER: 7})
    sub.disconnect()

    pub = Client(d.port)
    pub.connect("pub")
    assert pub.publish("r/x", b"kept", qos=1, retain=True).reason == 0x10  # kept, no subscriber yet
    for i in range(1, 7):
        ack = pub.publish(f"a/{i}", f"m{i}".encode(), qos=1 if i % 2 else 2, packet_id=i)
        assert ack.reason == 0
    pub.publish("a/long", b"long", qos=1, packet_id=20, properties={MESSAGE_EXPIRY_INTERVAL: 3600})
    pub.publish("a/short", b"short", qos=1, packet_id=21, properties={MESSAGE_EXPIRY_INTERVAL: 1})
    published_short = time.monotonic()
    pub.disconnect()

    # Two messages go in flight and stay there: m1 unacknowledged, m2
    # PUBREC'd (the broker now owes only the PUBREL).
    sub = Client(d.port)
    assert sub.connect("sub", clean_start=False,
                       properties={**KEEP, RECEIVE_MAXIMUM: 2}).session_present
    m1 = sub.expect(PUBLISH)
    m2 = sub.expect(PUBLISH)
    assert (m1.payload, m1.qos, m2.payload, m2.qos) == (b"m1", 1, b"m2", 2)
    sub.send(ack_packet(PUBREC, m2.packet_id))
    assert sub.expect(PUBREL).packet_id == m2.packet_id
    sub.close()
    time.sleep(0.2)
    d.stop()
    assert "cannot write" not in d.output()

    while time.monotonic() - published_short < 1.2:
        time.sleep(0.05)
    d.start()
    assert wait_until(lambda: "1 sessions, 8 queued messages, 1 retained messages" in d.output()), d.output()
    sub = Client(d.port)
    ack = sub.connect("sub", clean_start=False, properties=KEEP)
    assert ack.session_present  # [MQTT-3.2.2-2] after the restart
    # Redelivery first, in the original order with the original ids
    # ([MQTT-4.4.0-1]): m1 again with DUP, the PUBREL for m2.
    again = sub.expect(PUBLISH)
    assert (again.payload, again.packet_id, again.dup) == (b"m1", m1.packet_id, True)
    rel = sub.expect(PUBREL)
    assert rel.packet_id == m2.packet_id
    sub.send(ack_packet(PUBACK, again.packet_id))
    sub.send(ack_packet(PUBCOMP, rel.packet_id))
    got = []
    while len(got) < 5:
        p = sub.recv()
        if p.type == PUBLISH:
            got.append(p)
            sub.send(ack_packet(PUBACK if p.qos == 1 else PUBREC, p.packet_id))
        elif p.type == PUBREL:
            sub.send(ack_packet(PUBCOMP, p.packet_id))
    assert [p.payload for p in got] == [b"m3", b"m4", b"m5", b"m6", b"long"]
    assert [p.qos for p in got] == [1, 2, 1, 2, 1]
    assert all(p.prop_all(SUBSCRIPTION_IDENTIFIER) == [7] for p in got)
    left = got[-1].prop(MESSAGE_EXPIRY_INTERVAL)
    assert left is not None and 3500 < left <= 3600
    for p in got:  # the PUBRELs of the QoS 2 ones, nothing else
        if p.qos == 2:
            rel = sub.expect(PUBREL)
            sub.send(ack_packet(PUBCOMP, rel.packet_id))
    sub.nothing(0.5)  # "short" expired while the broker was down

    # The subscription itself came back: new messages reach it.
    pub = Client(d.port)
    pub.connect("pub2")
    assert pub.publish("a/new", b"new", qos=1, packet_id=3).reason == 0
    p = sub.expect(PUBLISH)
    assert p.payload == b"new"
    sub.ack(p)
    # Retained came back.
    fresh = Client(d.port)
    fresh.connect("fresh")
    fresh.subscribe([("r/#", sub_options(qos=1))])
    r = fresh.expect(PUBLISH)
    assert (r.topic, r.payload, r.retain) == ("r/x", b"kept", True)
    fresh.ack(r)
    for c in (sub, pub, fresh):
        c.disconnect()
    d.stop()


def test_restart_keeps_qos2_exactly_once_for_publishers(tmp_path):
    """An inbound QoS 2 packet id awaiting PUBREL survives a restart: the
    publisher's resend is not routed a second time."""
    d = DurableBroker(tmp_path)
    d.start()
    sub = Client(d.port)
    sub.connect("sub", properties=KEEP)
    sub.subscribe([("q/#", sub_options(qos=2))])
    pub = Client(d.port)
    pub.connect("pub", properties=KEEP)
    rec = pub.publish("q/1", b"once", qos=2, packet_id=9, complete=False)
    assert rec.reason == 0
    p = sub.expect(PUBLISH)
    sub.ack(p)
    sub.close()
    pub.close()
    d.stop()
    d.start()
    pub = Client(d.port)
    assert pub.connect("pub", clean_start=False, properties=KEEP).session_present
    # The resend with DUP: acknowledged, not routed again (spec 4.3.3,
    # method B), then the release.
    pub.send(publish_packet("q/1", b"once", qos=2, dup=True, packet_id=9))
    assert pub.expect(PUBREC).packet_id == 9
    pub.send(ack_packet(PUBREL, 9))
    assert pub.expect(PUBCOMP).reason == 0
    sub = Client(d.port)
    assert sub.connect("sub", clean_start=False, properties=KEEP).session_present
    sub.nothing(0.7)  # not delivered twice
    for c in (sub, pub):
        c.disconnect()
    d.stop()


def test_crash_treats_connected_clients_as_gone(tmp_path):
    """kill -9 with clients connected: at start-up their sessions are
    disconnected ones; a will without delay goes out, a delayed one waits
    for its delay, and a client back in time gets Session Present = 1."""
    d = DurableBroker(tmp_path)
    d.start()
    watcher = Client(d.port)
    watcher.connect("watcher", properties=KEEP)
    watcher.subscribe([("will/#", sub_options(qos=1))])
    watcher.disconnect()
    now_will = Client(d.port)
    now_will.connect("w0", properties=KEEP, will_topic="will/now", will_payload=b"w0 gone", will_qos=1)
    later = Client(d.port)
    later.connect("w1", properties=KEEP, will_topic="will/later", will_payload=b"w1 gone", will_qos=1,
                  will_properties={WILL_DELAY_INTERVAL: 2})
    d.crash()
    started = time.monotonic()
    d.start()
    watcher = Client(d.port)
    assert watcher.connect("watcher", clean_start=False, properties=KEEP).session_present
    first = watcher.expect(PUBLISH, timeout=5)
    watcher.ack(first)
    assert (first.topic, first.payload) == ("will/now", b"w0 gone")
    second = watcher.expect(PUBLISH, timeout=10)
    watcher.ack(second)
    assert (second.topic, second.payload) == ("will/later", b"w1 gone")
    assert time.monotonic() - started >= 1.5  # its Will Delay Interval counted
    back = Client(d.port)
    assert back.connect("w0", clean_start=False, properties=KEEP).session_present
    for c in (watcher, back):
        c.disconnect()
    d.stop()


def test_crash_publishes_the_will_of_a_client_without_session_expiry(tmp_path):
    """A client with Session Expiry 0 connected at a kill -9: its session
    ended with the crash, so its will goes out at start-up. A client that
    disconnected cleanly before leaves no will, and nothing of either is
    left in the file afterwards."""
    d = DurableBroker(tmp_path)
    d.start()
    watcher = Client(d.port)
    watcher.connect("watcher", properties=KEEP)
    watcher.subscribe([("will/#", sub_options(qos=1))])
    watcher.disconnect()
    gone = Client(d.port)
    gone.connect("zero", will_topic="will/zero", will_payload=b"zero gone", will_qos=1,
                 will_properties={WILL_DELAY_INTERVAL: 30})  # the session's end comes first
    polite = Client(d.port)
    polite.connect("polite", will_topic="will/polite", will_payload=b"never", will_qos=1)
    polite.disconnect()
    assert wait_until(lambda: "Client polite disconnected" in d.output()), d.output()
    d.committed()  # the DISCONNECT erased the will in a transaction of its own
    d.crash()
    d.start()
    watcher = Client(d.port)
    assert watcher.connect("watcher", clean_start=False, properties=KEEP).session_present
    p = watcher.expect(PUBLISH, timeout=5)
    watcher.ack(p)
    assert (p.topic, p.payload) == ("will/zero", b"zero gone")
    watcher.nothing(0.5)
    again = Client(d.port)
    assert not again.connect("zero", clean_start=False).session_present
    again.disconnect()
    watcher.disconnect()
    d.stop()
    db = sqlite3.connect(d.db)
    rows = [r[0] for r in db.execute("SELECT client_id FROM sessions")]
    db.close()
    assert rows == ["watcher"]


def test_a_second_broker_on_the_same_file_is_refused(tmp_path):
    d = DurableBroker(tmp_path)
    d.start()
    c = Client(d.port)
    c.connect("kept", properties=KEEP)
    c.disconnect()
    code, out = run_refused(tmp_path, persistence_config(tmp_path))
    assert code != 0, out
    assert str(d.db) in out and "in use by another process" in out, out
    c = Client(d.port)  # the first one is unaffected
    assert c.connect("kept", clean_start=False, properties=KEEP).session_present
    c.disconnect()
    d.stop()


def test_session_expiry_counts_while_the_broker_is_down(tmp_path):
    d = DurableBroker(tmp_path)
    d.start()
    c = Client(d.port)
    c.connect("short", properties={SESSION_EXPIRY_INTERVAL: 1})
    c.subscribe([("x", sub_options(qos=1))])
    c.disconnect()
    k = Client(d.port)
    k.connect("long", properties=KEEP)
    k.disconnect()
    d.stop()
    time.sleep(1.3)
    d.start()
    c = Client(d.port)
    assert not c.connect("short", clean_start=False, properties=KEEP).session_present
    k = Client(d.port)
    assert k.connect("long", clean_start=False, properties=KEEP).session_present
    for x in (c, k):
        x.disconnect()
    d.stop()


def test_clean_sessions_leave_nothing_in_the_file(tmp_path):
    """Sessions that end with their connection, and acknowledged messages,
    leave no rows behind: the file does not grow without bound."""
    d = DurableBroker(tmp_path)
    d.start()
    sub = Client(d.port)
    sub.connect("sub", properties=KEEP)
    sub.subscribe([("t", sub_options(qos=1))])
    pub = Client(d.port)
    pub.connect("")
    for i in range(200):
        assert pub.publish("t", b"x" * 1000, qos=1, packet_id=i + 1).reason == 0
        sub.ack(sub.expect(PUBLISH))
    sub.disconnect(properties={SESSION_EXPIRY_INTERVAL: 0})
    pub.disconnect()
    time.sleep(0.3)
    d.stop()
    db = sqlite3.connect(d.db)
    counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("sessions", "subscriptions", "queue", "messages", "inbound_qos2", "retained")}
    db.close()
    assert counts == dict.fromkeys(counts, 0)


# ---------------------------------------------------------------- hostile files


def make_store(tmp_path):
    """A valid file with a few retained messages, made by the broker."""
    d = DurableBroker(tmp_path)
    d.start()
    c = Client(d.port)
    c.connect("maker")
    for i in range(300):
        c.publish(f"r/{i}", os.urandom(1500), qos=1, retain=True, packet_id=i % 60000 + 1)
    c.disconnect()
    d.stop()
    return d


def assert_refused(tmp_path, db, what):
    before = sha(db)
    code, out = run_refused(tmp_path, persistence_config(db.parent))
    assert code != 0, out
    assert str(db) in out, out
    assert what in out, out
    assert sha(db) == before  # left for the operator


def test_random_bytes_are_refused(tmp_path):
    db = tmp_path / "mqttoolsd.db"
    db.write_bytes(os.urandom(20000))
    assert_refused(tmp_path, db, "not an SQLite database")


def test_empty_file_is_refused(tmp_path):
    db = tmp_path / "mqttoolsd.db"
    db.write_bytes(b"")
    assert_refused(tmp_path, db, "empty")


def test_another_programs_sqlite_file_is_refused(tmp_path):
    db = tmp_path / "mqttoolsd.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE contacts(name TEXT)")
    con.execute("INSERT INTO contacts VALUES('bob')")
    con.commit()
    con.close()
    assert_refused(tmp_path, db, "not an mqttoolsd database")


def test_wrong_schema_version_is_refused(tmp_path):
    d = make_store(tmp_path)
    con = sqlite3.connect(d.db)
    con.execute("PRAGMA user_version=7")
    con.commit()
    con.close()
    assert_refused(tmp_path, d.db, "schema version 7")


def test_truncated_file_is_refused(tmp_path):
    d = make_store(tmp_path)
    size = d.db.stat().st_size
    assert size > 200_000
    with open(d.db, "r+b") as f:
        f.truncate(size // 2)
    assert_refused(tmp_path, d.db, "")


def test_corrupted_pages_are_refused(tmp_path):
    d = make_store(tmp_path)
    data = bytearray(d.db.read_bytes())
    for off in range(8192, len(data), 4096):  # every page past the first two
        data[off:off + 64] = os.urandom(64)
    d.db.write_bytes(bytes(data))
    assert_refused(tmp_path, d.db, "")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs of a few MB (mount needs root; skipped without it)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: " + r.stdout.decode(errors="replace"))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_directory_is_refused(tmp_path, small_tmpfs):
    d = make_store(tmp_path)
    (small_tmpfs / "mqttoolsd.db").write_bytes(d.db.read_bytes())
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    db = small_tmpfs / "mqttoolsd.db"
    before = sha(db)
    code, out = run_refused(tmp_path, persistence_config(small_tmpfs))
    assert code != 0, out
    assert str(db) in out, out
    assert sha(db) == before


def test_missing_file_in_read_only_directory_is_refused(tmp_path, small_tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    code, out = run_refused(tmp_path, persistence_config(small_tmpfs))
    assert code != 0, out
    assert str(small_tmpfs / "mqttoolsd.db") in out, out


def test_disk_full_refuses_instead_of_acknowledging_and_recovers(tmp_path, small_tmpfs):
    d = DurableBroker(tmp_path, location=small_tmpfs)
    d.start()
    sub = Client(d.port)
    sub.connect("sub", properties=KEEP)
    sub.subscribe([("fill/#", sub_options(qos=1))])
    sub.disconnect()  # everything queues for it, on disk
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (4 * 1024 * 1024))

    acked, refused, closed = [], [], 0
    payload = os.urandom(16 * 1024)
    pub = Client(d.port)
    pub.connect("pub")
    n = 0

    def publish_one():
        nonlocal pub, n, closed
        n += 1
        try:
            ack = pub.publish("fill/x", str(n).encode() + b":" + payload, qos=1, packet_id=n % 60000 + 1)
        except (Closed, ConnectionError):
            # Held acknowledgements of a failed commit are never sent.
            closed += 1
            pub = Client(d.port)
            pub.connect("pub")
            return None
        (acked if ack.reason == 0 else refused).append(n)
        return ack.reason

    deadline = time.monotonic() + 60
    while not refused and time.monotonic() < deadline:
        publish_one()
    assert refused, "the disk never filled"
    reason_seen = publish_one()
    assert reason_seen in (0x97, None)
    # Still serving: other clients and QoS 0 work.
    other = Client(d.port)
    assert other.connect("other").reason == 0
    other.ping()
    other.disconnect()

    filler.unlink()  # space comes back: writes work again
    assert wait_until(lambda: publish_one() == 0, timeout=20, step=0.2)
    after_recovery = acked[-1]
    pub.disconnect()
    d.stop()
    out = d.output()
    assert "cannot write" in out and "written again" in out, out

    d.start()
    sub = Client(d.port)
    try:
        assert sub.connect("sub", clean_start=False, properties=KEEP).session_present
    except Closed:
        raise AssertionError(d.output()) from None
    got = set()
    while True:
        try:
            p = sub.recv(3.0)
        except TimeoutError:
            break
        if p.type == PUBLISH:
            got.add(int(p.payload.split(b":")[0]))
            sub.ack(p)
    missing = sorted(set(acked) - got)
    print(f"disk full: {len(acked)} acknowledged, {len(refused)} refused with 0x97, "
          f"{closed} connections closed unacknowledged, {len(got)} delivered after restart")
    assert not missing, f"acknowledged but lost: {missing[:20]}"
    assert after_recovery in got
    sub.disconnect()
    d.stop()


def test_cli_subscriber_resumes_its_session_across_a_restart(tmp_path):
    """mqttools subscribe -c (Clean Start 0, as mosquitto_sub -c) picks up
    what was queued for its session while it and the broker were down."""
    from conftest import MQTTOOLS
    d = DurableBroker(tmp_path)
    d.start()
    cmd = [str(MQTTOOLS), "subscribe", "-p", str(d.port), "--id", "cli", "-x", "3600", "-q", "1", "-C", "1"]
    first = subprocess.Popen(cmd + ["cli/t"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pub = Client(d.port)
    pub.connect("pub")
    # Until the subscription exists, the broker answers "no matching subscribers".
    assert wait_until(lambda: pub.publish("cli/t", b"one", qos=1).reason == 0, timeout=10, step=0.1)
    assert b"one" in first.communicate(timeout=20)[0]
    assert pub.publish("cli/t", b"queued while away", qos=1).reason == 0
    pub.disconnect()
    d.stop()
    d.start()
    cmd[3] = str(d.port)
    # No -C: "one" may come again first (it went out just as the first run
    # ended, unacknowledged); read until the queued message shows up.
    out_path = tmp_path / "cli.out"
    with open(out_path, "wb") as out:
        second = subprocess.Popen(cmd[:-2] + ["-c", "cli/t"], stdout=out, stderr=subprocess.STDOUT)
        try:
            assert wait_until(lambda: b"queued while away" in out_path.read_bytes(), timeout=20), \
                out_path.read_bytes()
        finally:
            second.terminate()
            second.wait(timeout=10)
    d.stop()


def test_loaded_counts_in_metrics_and_log(tmp_path):
    import urllib.request
    from conftest import free_port
    mport = free_port()
    d = DurableBroker(tmp_path, extra=f'[metrics]\nport = {mport}\nbind = "127.0.0.1"\n')
    d.start()
    c = Client(d.port)
    c.connect("kept", properties=KEEP)
    c.subscribe([("m/#", sub_options(qos=1))])
    c.disconnect()
    p = Client(d.port)
    p.connect("p")
    for i in range(3):
        assert p.publish(f"m/{i}", b"x", qos=1, retain=i == 0, packet_id=i + 1).reason == 0
    p.disconnect()
    d.stop()
    d.start()
    assert wait_until(lambda: "1 sessions, 3 queued messages, 1 retained messages" in d.output()), d.output()

    def metrics():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return ""
    text = wait_until(lambda: "mqttools_persistence_loaded_sessions" in metrics() and metrics())
    assert "mqttools_persistence_loaded_sessions 1\n" in text, text
    assert "mqttools_persistence_loaded_messages 3\n" in text, text
    assert "mqttools_persistence_loaded_retained 1\n" in text, text
    assert "mqttools_persistence_healthy 1\n" in text, text
    d.stop()
