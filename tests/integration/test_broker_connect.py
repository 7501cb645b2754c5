"""The connect phase and connection-level rules of mqttoolsd, byte by byte:
first packet, timeouts, protocol level/name, malformed CONNECT, CONNACK
properties, keep alive, takeover, maximum packet size."""
import time

import pytest

from conftest import MQTTOOLSD, SANITIZED, SLOW
from mqttwire import (Client, Closed, CONNACK, DISCONNECT, PUBLISH, MAXIMUM_PACKET_SIZE, SERVER_KEEP_ALIVE,
                      SESSION_EXPIRY_INTERVAL, RECEIVE_MAXIMUM, TOPIC_ALIAS_MAXIMUM, connect_packet, packet,
                      publish_packet, utf8, vbi, CONNECT)

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def test_no_connect_within_the_timeout_closes(start_broker):
    b = start_broker(config="connect_timeout = 1\n")
    c = Client(b.port)
    start = time.monotonic()
    assert c.expect_closed(timeout=5) == []
    assert 0.9 <= time.monotonic() - start < 2.5


def test_default_connect_timeout_is_ten_seconds(broker):
    c = Client(broker.port)
    c.nothing(timeout=1.0)  # still open after a second
    ack = c.connect("late-but-fine")
    assert ack.reason == 0
    c.disconnect()


def test_unsupported_protocol_level_gets_0x84(broker):
    c = Client(broker.port)
    c.send(connect_packet("x", version=6))
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(CONNACK, 0x84)]


def test_mqisdp_at_another_level_gets_the_31_return_code(broker):
    # MQTT 3.1 (MQIsdp, level 3) is accepted (test_migration_defects.py);
    # MQIsdp at another level gets 3.1's CONNACK with return code 1.
    c = Client(broker.port, version=3)
    body = utf8("MQIsdp") + bytes([4, 2]) + b"\x00\x3c" + utf8("old")
    c.send(packet(CONNECT, 0, body))
    got = c.expect_closed()
    assert len(got) == 1 and got[0].type == CONNACK
    assert c.raw_last == b"\x20\x02\x00\x01"


def test_bad_protocol_name_closes_without_connack(broker):
    c = Client(broker.port)
    c.send(connect_packet("x", protocol_name="MQTX"))
    assert c.expect_closed() == []


def test_reserved_connect_flag_is_malformed(broker):
    c = Client(broker.port)
    c.send(connect_packet("x", flags_extra=0x01))
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(CONNACK, 0x81)]


def test_reserved_connect_flag_v311_just_closes(broker):
    c = Client(broker.port, version=4)
    c.send(connect_packet("x", version=4, flags_extra=0x01))
    assert c.expect_closed() == []


def test_duplicated_property_is_a_protocol_error(broker):
    c = Client(broker.port)
    c.send(connect_packet("x", properties=[(SESSION_EXPIRY_INTERVAL, 1), (SESSION_EXPIRY_INTERVAL, 2)]))
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(CONNACK, 0x82)]


def test_malformed_remaining_length_closes(broker):
    c = Client(broker.port)
    c.send(b"\x10\xff\xff\xff\xff\x01")
    assert c.expect_closed() == []


def test_second_connect_is_a_protocol_error(broker):
    c = Client(broker.port)
    assert c.connect("twice").reason == 0
    c.send(connect_packet("twice"))
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x82)]


def test_v311_empty_id_needs_clean_session(broker):
    c = Client(broker.port, version=4)
    c.send(connect_packet("", version=4, clean_start=False))
    got = c.expect_closed()
    assert len(got) == 1 and c.raw_last == b"\x20\x02\x00\x02"


def test_connack_limits_from_config(start_broker):
    b = start_broker(config="max_keepalive = 10\nmax_packet_size = 1000\nreceive_maximum = 7\n"
                            "topic_alias_maximum = 3\n")
    c = Client(b.port)
    ack = c.connect("limits", keepalive=60)
    assert ack.reason == 0
    assert ack.prop(SERVER_KEEP_ALIVE) == 10
    assert ack.prop(MAXIMUM_PACKET_SIZE) == 1000
    assert ack.prop(RECEIVE_MAXIMUM) == 7
    assert ack.prop(TOPIC_ALIAS_MAXIMUM) == 3
    # Inbound over the limit: DISCONNECT 0x95.
    c.send(publish_packet("big", b"x" * 1200))
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x95)]
    # Within the client's asked keep alive no Server Keep Alive is sent.
    d = Client(b.port)
    assert d.connect("short", keepalive=5).prop(SERVER_KEEP_ALIVE) is None
    d.disconnect()
    # Keep alive 0 ("never") is more than the maximum too.
    e = Client(b.port)
    assert e.connect("forever", keepalive=0).prop(SERVER_KEEP_ALIVE) == 10
    e.disconnect()


@pytest.mark.parametrize("version", [5, 4])
def test_keep_alive_enforced_at_one_and_a_half(broker, version):
    c = Client(broker.port, version=version)
    c.connect("sleepy", keepalive=1)
    start = time.monotonic()
    got = c.expect_closed(timeout=5)
    elapsed = time.monotonic() - start
    slack = 0.5 if SANITIZED else 0.25
    assert 1.45 <= elapsed <= 1.5 + slack, elapsed
    if version == 5:
        assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x8D)]
    else:
        assert got == []


def test_keep_alive_is_reset_by_any_packet(broker):
    c = Client(broker.port)
    c.connect("busy", keepalive=1)
    for _ in range(4):
        time.sleep(0.6)
        c.ping()
    c.disconnect()


def test_keep_alive_not_delayed_by_another_clients_later_deadline(broker):
    """Keep-alive deadlines share one timing wheel and one reactor timer.
    When a deadline comes for a client that is still active (x, pinged at
    1.9 s) it moves 3 s on; another client's earlier deadline (y, Keep Alive
    1, due 1.5 s after its CONNECT at ~2 s) must still fire on time, not
    when x's moved deadline does."""
    x = Client(broker.port)
    x.connect("wheel-x", keepalive=2)
    time.sleep(1.9)
    x.ping()
    y = Client(broker.port)
    y.connect("wheel-y", keepalive=1)
    start = time.monotonic()
    got = y.expect_closed(timeout=5)
    elapsed = time.monotonic() - start
    slack = 0.5 if SANITIZED else 0.25
    assert 1.45 <= elapsed <= 1.5 + slack, elapsed
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x8D)]
    x.ping()  # x is still connected: its deadline moved, it did not fire
    x.disconnect()


def test_takeover_disconnects_the_old_connection(broker):
    old = Client(broker.port)
    assert old.connect("same").reason == 0
    new = Client(broker.port)
    assert new.connect("same").reason == 0
    got = old.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x8E)]
    new.ping()
    new.disconnect()


def test_outbound_larger_than_client_maximum_is_not_sent(broker):
    sub = Client(broker.port)
    sub.connect("small", properties={MAXIMUM_PACKET_SIZE: 64})
    sub.subscribe(["s/#"])
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("s/big", b"x" * 100)
    pub.publish("s/small", b"y")
    got = sub.messages()
    assert [(m.topic, m.payload) for m in got] == [("s/small", b"y")]
    pub.disconnect()
    sub.disconnect()


def test_byte_by_byte_and_coalesced(broker):
    c = Client(broker.port)
    data = connect_packet("trickle") + packet(8, 2, b"\x00\x01\x00" + utf8("t") + b"\x00")
    for i in range(len(data)):
        c.send(data[i:i + 1])
        time.sleep(0.002)
    assert c.expect(CONNACK).reason == 0
    assert c.expect(9).codes == [0]
    # Many packets in one write.
    c.send(publish_packet("t", b"1") + publish_packet("t", b"2") + publish_packet("t", b"3"))
    assert [m.payload for m in c.messages()] == [b"1", b"2", b"3"]
    c.disconnect()


def test_garbage_after_connect_gets_disconnect(broker):
    c = Client(broker.port)
    c.connect("garbage")
    c.send(b"\x00\x00")  # packet type 0 is reserved
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x81)]
    other = Client(broker.port)
    assert other.connect("fine").reason == 0
    other.disconnect()


def test_a_connect_storm_waits_behind_connected_clients_and_every_client_is_answered(broker):
    """Connection set-up (CONNECT and its CONNACK, like TLS handshakes)
    shares a budget of reactor time per turn; the rest waits in a FIFO queue
    with EPOLLIN off (Broker::setup_readable). 2,000 sockets send CONNECT
    at once, then a connected client publishes: its message reaches the
    subscriber while part of the storm still waits for CONNACK (without the
    queue, its event sits behind all 2,000 in epoll's ready list and comes
    after every CONNACK). Then every storm client is answered, and after
    DISCONNECT every one sees the broker close its socket (closes, too, are
    spread over turns: Broker::destroy_closed)."""
    import os
    import select
    import signal
    import socket
    from mqttwire import SUBACK, Wire, disconnect_packet, subscribe_packet
    sub = Client(broker.port)
    assert sub.connect("bg-sub").reason == 0
    sub.subscribe([("bg/#", 0)])
    pub = Client(broker.port)
    assert pub.connect("bg-pub").reason == 0
    count = 2000
    storm = [socket.create_connection(("127.0.0.1", broker.port), timeout=30) for _ in range(count)]
    subscribe = subscribe_packet([(f"storm/{n}/+/level", 1) for n in range(30)])
    poller = select.poll()
    for s in storm:
        poller.register(s.fileno(), select.POLLIN)
    # All at once, as after an outage: the broker is stopped while every
    # CONNECT and then the publish are written, so none is read early.
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        for i, s in enumerate(storm):
            # A SUBSCRIBE of 30 filters in the same write makes each
            # client's set-up step long enough (some 40 us) that the budget
            # covers a fraction of one turn's 256 events on any machine.
            s.sendall(connect_packet(f"storm-{i}") + subscribe)
        pub.send(publish_packet("bg/1", b"x"))
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    got = sub.recv(timeout=30 * SLOW)
    answered = len(poller.poll(0))
    assert (got.type, got.topic) == (PUBLISH, "bg/1")
    assert answered < count, "the connected client's message came after every CONNACK of the storm"
    wires = [Wire(s) for s in storm]
    for i, w in enumerate(wires):
        first, body = w.read_packet(timeout=30 * SLOW)
        assert first >> 4 == CONNACK and body[1] == 0, (i, first, body)
        first, body = w.read_packet(timeout=30 * SLOW)
        assert first >> 4 == SUBACK and list(body[3:]) == [1] * 30, (i, first, body)
    for w in wires:
        w.send(disconnect_packet())
    for i, w in enumerate(wires):
        with pytest.raises(Closed):
            w.read_packet(timeout=30 * SLOW)
        w.close()
    # The broker serves on: a fresh client with a storm client's id.
    again = Client(broker.port)
    ack = again.connect("storm-7")
    assert ack.reason == 0 and not ack.session_present
    pub.publish("bg/2", b"y")
    got = sub.recv()
    assert (got.type, got.topic) == (PUBLISH, "bg/2")
    again.disconnect()
    pub.disconnect()
    sub.disconnect()
