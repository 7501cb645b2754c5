"""Conformance probe, transport and abuse (MQTT 5.0 section 4.2 and
[MQTT-7.1.1-1]: an ordered, lossless byte stream with no packet boundaries):
a whole session one byte at a time, many packets in one send(), packets split
at every offset, maximum packet size towards the client, and hostile clients
(garbage, half-open connections, disconnects mid-packet, huge length claims)
after which the broker still serves a fresh client correctly."""
import os
import random
import socket
import struct
import time

from cluster_mode import cluster_limit
from conformance_probe import (CONNACK, PINGRESP, PUBACK, PUBLISH, P_MAXIMUM_PACKET_SIZE, SUBACK, Conn, client,
                               connect, h, opts, probe, probe_factory, prop, props, publish, subscribe,
                               unsubscribe)

__all__ = ["probe", "probe_factory"]


def assert_still_serves(port, cid="fresh"):
    """A fresh client connects, subscribes, publishes QoS 1 and gets both its
    PUBACK and its own message, all within normal time."""
    start = time.monotonic()
    c = client(port, cid)
    c.sub([("health/#", opts(qos=1))], pid=9)
    c.send(publish("health/x", b"ok", qos=1, pid=3))
    got = sorted((p.type, getattr(p, "payload", None)) for p in (c.recv(), c.recv()))
    assert got == [(PUBLISH, b"ok"), (PUBACK, None)], got
    assert time.monotonic() - start < 1.5
    c.close()


def session_bytes(cid):
    return (connect(cid, keepalive=30) + subscribe(1, [("bb/#", opts(qos=1))])
            + publish("bb/t", b"byte-by-byte", qos=1, pid=2) + h("c0 00"))


def check_session_replies(c):
    assert c.expect(CONNACK).reason == 0
    assert c.expect(SUBACK).codes == [1]
    pair = sorted([c.recv(), c.recv()], key=lambda p: p.type)
    assert pair[0].type == PUBLISH and pair[0].payload == b"byte-by-byte"
    assert pair[1].type == PUBACK and pair[1].pid == 2
    c.send(h("40 02") + pair[0].pid.to_bytes(2, "big"))
    assert c.expect(PINGRESP).raw == h("d0 00")


def test_whole_session_one_byte_at_a_time(probe):
    """[MQTT-7.1.1-1] packet boundaries are not TCP segment boundaries: CONNECT,
    SUBSCRIBE, QoS 1 PUBLISH, PINGREQ and DISCONNECT each sent one byte per
    send() (TCP_NODELAY) are all processed, then the broker closes."""
    c = Conn(probe.port)
    c.send_bytewise(session_bytes("bytewise"), pause=0.001)
    check_session_replies(c)
    c.send_bytewise(h("e0 00"))
    assert c.until_closed() == []


def test_many_packets_coalesced_in_one_send(probe):
    """[MQTT-7.1.1-1] [MQTT-4.6.0-6]: CONNECT + SUBSCRIBE + 30 QoS 1 PUBLISH +
    PINGREQ in one send(): every reply arrives, PUBACKs and deliveries in
    order, PINGRESP last."""
    c = Conn(probe.port)
    data = connect("coalesced") + subscribe(1, [("co/#", opts(qos=1))])
    data += b"".join(publish("co/t", b"%d" % i, qos=1, pid=100 + i) for i in range(30)) + h("c0 00")
    c.send(data)
    assert c.expect(CONNACK).reason == 0
    assert c.expect(SUBACK).codes == [1]
    acks, msgs = [], []
    while True:
        p = c.recv()
        if p.type == PINGRESP:
            break
        if p.type == PUBACK:
            acks.append(p.pid)
        else:
            assert p.type == PUBLISH
            msgs.append(p.payload)
            c.send(h("40 02") + p.pid.to_bytes(2, "big"))
    msgs += [p.payload for p in c.publishes(0.2)]
    assert acks == list(range(100, 130))
    assert msgs == [b"%d" % i for i in range(30)]


def test_packet_split_at_every_offset(probe):
    """[MQTT-7.1.1-1]: a 300-byte PUBLISH (two-byte Remaining Length) split into
    two send()s at every offset, including inside the Remaining Length, is
    received intact every time."""
    sub = client(probe.port, "splitsub")
    sub.sub("sp/t")
    pub = client(probe.port, "splitpub")
    packet = publish("sp/t", bytes(range(256)) + b"x" * 36)
    assert packet[1] & 0x80  # a multi-byte Remaining Length
    offsets = list(range(1, 8)) + list(range(8, len(packet), 37))
    for i in offsets:
        pub.send(packet[:i])
        time.sleep(0.005)
        pub.send(packet[i:])
    got = sub.publishes(0.4)
    assert len(got) == len(offsets)
    assert all(p.payload == bytes(range(256)) + b"x" * 36 for p in got)


def test_outbound_packet_over_client_maximum_is_dropped(probe):
    """[MQTT-3.1.2-24] the Server MUST NOT send a packet larger than the client's
    Maximum Packet Size (200); [MQTT-3.1.2-25] it discards it and carries on
    as if sent: the next, smaller message arrives."""
    c = Conn(probe.port)
    c.send(connect("smallmax", properties=props(prop(P_MAXIMUM_PACKET_SIZE, 200))))
    c.expect(CONNACK)
    c.sub([("mx/t", opts(qos=1))])
    pub = client(probe.port, "mxpub")
    pub.send(publish("mx/t", b"L" * 400, qos=1, pid=1))
    pub.send(publish("mx/t", b"small", qos=1, pid=2))
    got = c.publishes(0.4)
    assert [p.payload for p in got] == [b"small"]
    assert all(len(p.raw) <= 200 for p in got)


def test_outbound_maximum_packet_size_boundary(probe):
    """[MQTT-3.1.2-24] [MQTT-3.1.2-25] Maximum Packet Size counts the whole
    packet: with the client's limit at 100, a 100-byte PUBLISH is delivered and
    a 101-byte one is not."""
    c = Conn(probe.port)
    c.send(connect("mpedge", properties=props(prop(P_MAXIMUM_PACKET_SIZE, 100))))
    c.expect(CONNACK)
    c.sub("me/t")
    pub = client(probe.port, "mpedgepub")
    # QoS 0 to a v5 subscriber: 2-byte fixed header + 6 topic + 1 property length.
    pub.send(publish("me/t", b"a" * (101 - 9)))
    pub.send(publish("me/t", b"b" * (100 - 9)))
    got = c.publishes(0.3)
    assert [len(p.raw) for p in got] == [100] and got[0].payload[:1] == b"b"


def test_garbage_from_several_clients(probe):
    """Issue 3 "no crash under abuse" / [MQTT-4.13.1-1]: 8 clients send 4 KiB of
    random bytes (4 before CONNECT, 4 after) and 4 more send garbage that is
    malformed at its first byte (reserved packet type 0 after CONNECT). The
    broker only ever answers with a refusal (CONNACK or DISCONNECT >= 0x80);
    the malformed ones are closed with DISCONNECT 0x81 or 0x82 (random bytes
    may legitimately look like the start of a long packet, so those may stay
    open); a bystander subscriber keeps receiving and a fresh client is
    served."""
    rnd = random.Random(20261125)
    bystander = client(probe.port, "bystander")
    bystander.sub("by/#")
    conns = []
    for i in range(12):
        c = Conn(probe.port)
        if i % 2 or i >= 8:
            c.handshake(f"garbage{i}")
        junk = bytes(rnd.getrandbits(8) for _ in range(4096))
        if i >= 8:
            junk = b"\x00\x00" + junk
        elif not i % 2:
            junk = b"\x20" + junk  # never a CONNECT first
        try:
            c.send(junk)
        except OSError:
            pass  # closed by the broker while we were still sending
        conns.append(c)
    time.sleep(0.3)
    for i, c in enumerate(conns):
        try:
            got = c.until_closed(timeout=1.0 if i >= 8 else 0.05)
        except (ConnectionResetError, OSError):
            continue
        except AssertionError:
            assert i < 8, f"connection {i} sent a reserved packet type and was not closed"
            got = []
            while True:
                try:
                    got.append(c.recv(0.01))
                except (TimeoutError, Exception):
                    break
        assert all(p.type in (14, 2) and p.reason >= 0x80 for p in got), got
        if i >= 8:
            assert len(got) == 1 and got[0].type == 14 and got[0].reason in (0x81, 0x82), got
    pub = client(probe.port, "bypub")
    pub.send(publish("by/t", b"alive"))
    assert [p.payload for p in bystander.publishes(0.3)] == [b"alive"]
    for c in conns:
        c.close()
    assert_still_serves(probe.port)


def test_half_open_connections_do_not_block_others(probe):
    """Issue 3: 50 connections that stop in the middle of a CONNECT (and 10 that
    stop inside a PUBLISH after connecting) do not delay anyone else."""
    idle = []
    for i in range(50):
        sk = socket.create_connection(("127.0.0.1", probe.port))
        sk.sendall(connect(f"half{i}")[:7])
        idle.append(sk)
    for i in range(10):
        c = client(probe.port, f"halfpub{i}")
        c.send(publish("hp/t", b"z" * 100)[:20])
        idle.append(c.sock)
    assert_still_serves(probe.port)
    for sk in idle:
        sk.close()
    assert_still_serves(probe.port, "fresh2")


def test_disconnect_in_the_middle_of_a_packet(probe):
    """[MQTT-3.1.2-8]: a client that closes halfway through a PUBLISH: the
    partial message is never delivered, its Will is published, and the broker
    serves the next client."""
    sub = client(probe.port, "midsub")
    sub.sub("mid/#")
    c = client(probe.port, "midpacket", will=("mid/will", b"w", 0, False, b"\x00"))
    c.send(publish("mid/t", b"p" * 500)[:250])
    c.close()
    assert [(p.topic, p.payload) for p in sub.publishes(0.4)] == [("mid/will", b"w")]
    assert_still_serves(probe.port)


def test_huge_remaining_length_claims(probe):
    """Section 2.1.4 / issue 3: clients that announce 256 MB packets (the
    maximum Remaining Length, ff ff ff 7f) and then send little or close do
    not exhaust the broker, which keeps serving."""
    socks = []
    for i in range(5):
        c = client(probe.port, f"huge{i}")
        c.send(h("30 ff ff ff 7f 00 03 61 2f 62 00") + b"x" * 1000)
        socks.append(c)
    socks[0].close()
    assert_still_serves(probe.port)
    for c in socks[1:]:
        c.close()
    assert_still_serves(probe.port, "fresh2")


def test_connection_churn_and_resets(probe):
    """Issue 3: 100 short connections, half ended with a TCP RST (SO_LINGER 0)
    right after CONNECT, leave the broker serving normally."""
    for i in range(100):
        sk = socket.create_connection(("127.0.0.1", probe.port))
        sk.sendall(connect(f"churn{i}"))
        if i % 2:
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sk.close()
    assert_still_serves(probe.port)


def test_large_packets_across_read_buffers(probe):
    """[MQTT-7.1.1-1]: three 100 KiB PUBLISHes in one send() and a 1 MiB one
    (each larger than any sensible read buffer) arrive intact and in order."""
    sub = client(probe.port, "bigsub")
    sub.sub("big/#")
    pub = client(probe.port, "bigpub")
    payloads = [bytes([i]) * 100_000 + b"end%d" % i for i in range(3)] + [bytes(range(256)) * 4096]
    pub.send(b"".join(publish("big/t", p) for p in payloads[:3]))
    pub.send(publish("big/t", payloads[3]))
    got = []
    for _ in payloads:
        got.append(sub.expect(PUBLISH, timeout=3).payload)
    assert got == payloads


def test_mutated_sessions_from_many_clients(probe):
    """Issue 3 "no crash under abuse": 4 rounds of 40 concurrent connections,
    each sending a valid session (CONNECT with will and properties, SUBSCRIBE,
    PUBLISH QoS 0-2 with properties, PUBREL, UNSUBSCRIBE, PINGREQ) with 1-4
    random bytes changed, truncated at a random point or not. Whatever each
    connection gets, the broker stays up, serves a fresh client, and exits
    cleanly (checked by the fixture; under ASan this catches memory errors)."""
    rnd = random.Random(int(os.environ.get("MQTTOOLS_CONFORMANCE_SEED", "4242")))
    wp = props(prop(0x18, 0), prop(0x26, ("k", "v")))
    rest = [
        subscribe(1, [("mut/#", opts(qos=2)), ("$share/g/mut/+", opts(qos=1))], props(prop(0x0B, 7))),
        publish("mut/a", b"zero", properties=props(prop(0x23, 1), prop(0x02, 9))),
        publish("", b"alias", properties=props(prop(0x23, 1))),
        publish("mut/b", b"one", qos=1, pid=2, properties=props(prop(0x08, "r/t"), prop(0x09, b"c"))),
        publish("mut/c", b"two", qos=2, pid=3, retain=True),
        h("62 02 00 03"),
        unsubscribe(4, ["mut/#"]),
        h("c0 00"),
    ]
    for rnd_round in range(4):
        conns = []
        for i in range(40):
            first = connect(f"mut{rnd_round * 40 + i}", keepalive=10, will=("mut/will", b"w", 1, True, wp),
                            properties=props(prop(0x11, 5), prop(0x21, 10), prop(0x22, 5)), username="u",
                            password=b"p")
            data = bytearray(first + b"".join(rest))
            for _ in range(rnd.randint(1, 4)):
                data[rnd.randrange(len(data))] = rnd.getrandbits(8)
            if rnd.random() < 0.3:
                data = data[:rnd.randrange(1, len(data))]
            sk = socket.create_connection(("127.0.0.1", probe.port))
            try:
                sk.sendall(bytes(data))
            except OSError:
                pass
            conns.append(sk)
        time.sleep(0.15)
        for sk in conns:
            if rnd.random() < 0.5:
                sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sk.close()
    assert_still_serves(probe.port)


@cluster_limit("a topic whose NATS subject would pass nats-server's 4 KiB protocol line cannot cross nodes: "
               "0x90 at QoS 1/2, dropped at QoS 0, its filter refused with 0x8F (docs/cluster.md, Limits)")
def test_very_deep_topics_and_filters(probe):
    """[MQTT-4.7.3-3] Topic Names and Filters may be up to 65,535 bytes: a
    32,000-level filter of `+`, a 32,000-level filter of `a` and a 32,000-level
    topic must not crash the broker (no unbounded recursion on the client's
    say-so). A broker may refuse a filter that deep (SUBACK >= 0x80,
    section 3.9.3); what it grants matches, and each message is delivered
    once."""
    n = 32000
    c = client(probe.port, "deep")
    sa = c.sub([("/".join(["+"] * n), 0), ("#", 0), ("/".join(["a"] * n), 0)])
    assert sa.codes[1] == 0 and all(code == 0 or code >= 0x80 for code in sa.codes), sa.codes
    pub = client(probe.port, "deeppub")
    pub.send(publish("/" * (n - 1), b"empty-levels"))
    pub.send(publish("/".join(["a"] * n), b"a-levels"))
    assert [p.payload for p in c.publishes(0.5)] == [b"empty-levels", b"a-levels"]
    assert_still_serves(probe.port)


def test_deepest_retained_topic_and_a_hash_subscriber(probe):
    """[MQTT-4.7.3-3] a retained message on the deepest legal topic (65,534 `/`,
    65,535 empty levels) is stored, and an ordinary `#` or `+/#` subscriber
    then gets it without crashing the broker (the depth is chosen by the
    publisher, not by the subscriber). A broker may refuse a topic that deep
    with a PUBACK >= 0x80 (section 3.4.2.1, e.g. 0x90 or 0x97); then nothing
    is retained."""
    pub = client(probe.port, "deepret")
    pub.send(publish("/" * 65534, b"deep", qos=1, pid=1, retain=True))
    reason = pub.expect(PUBACK).reason
    assert reason in (0x00, 0x10) or reason >= 0x80
    for i, f in enumerate(["#", "+/#"]):
        c = client(probe.port, f"deepretsub{i}")
        c.sub(f)
        got = c.publishes(0.4)
        expected = [(65534, b"deep", True)] if reason < 0x80 else []
        assert [(len(p.topic), p.payload, p.retain) for p in got] == expected
    assert_still_serves(probe.port)


def test_slow_consumer_does_not_stall_anyone(probe):
    """Issue 3 (bounded per-connection output): a subscriber that never reads
    while 32 MiB of QoS 0 messages are published does not block the publisher
    or a second, reading subscriber, and the broker keeps serving."""
    stuck = client(probe.port, "stuck")
    stuck.sub("flood/#")
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader = client(probe.port, "reader")
    reader.sub("flood/last")
    pub = client(probe.port, "flooder")
    chunk = b"".join(publish("flood/t", b"f" * 8000) for _ in range(128))  # ~1 MiB
    start = time.monotonic()
    for _ in range(32):
        pub.send(chunk)
    pub.send(publish("flood/last", b"done", qos=1, pid=1))
    assert pub.expect(PUBACK, timeout=10).pid == 1
    assert reader.expect(PUBLISH, timeout=5).payload == b"done"
    assert time.monotonic() - start < 10
    assert_still_serves(probe.port)
