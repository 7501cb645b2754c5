"""MQTT.js (npm `mqtt` v5, locked in tests/interop/package-lock.json) against
the broker: connect, QoS 0/1/2, retained messages, wills, topic aliases both
ways and subscription identifiers. Each scenario is a node script under js/
that prints what it received; the comparisons are here, byte for byte
(payloads travel as hex)."""
import pytest

from .conftest import run_node

ALL_BYTES = bytes(range(256))


def msg(topic, payload, qos, retain=False, props=None, raw_topic=None):
    """The record a script prints for one received message."""
    return {"topic": topic, "rawTopic": topic if raw_topic is None else raw_topic,
            "payload": payload.hex(), "qos": qos, "retain": retain, "dup": False,
            "props": props or {}}


def test_connect(broker):
    out = run_node("connect.js", broker)
    v5 = out["v5"]
    assert (v5["reasonCode"], v5["sessionPresent"]) == (0, False)
    props = v5["properties"]
    # An empty client id is assigned one [MQTT-3.2.2-16].
    assert isinstance(props.pop("assignedClientIdentifier"), str)
    # Both brokers default to 10 inbound aliases (topic_alias_maximum).
    assert props.pop("topicAliasMaximum") == 10
    assert 1 <= props.pop("receiveMaximum", 65535) <= 65535
    # Nothing else unasked-for that MQTT.js would have to honour.
    assert set(props) <= {"retainAvailable", "wildcardSubscriptionAvailable",
                          "subscriptionIdentifiersAvailable", "sharedSubscriptionAvailable",
                          "maximumQoS", "maximumPacketSize", "serverKeepAlive"}
    assert props.get("retainAvailable", True) is True
    assert props.get("maximumQoS", 2) == 2
    assert out["v311"]["returnCode"] == 0 and out["v311"]["sessionPresent"] is False
    assert "properties" not in out["v311"]
    assert (out["first"]["reasonCode"], out["first"]["sessionPresent"]) == (0, False)
    assert (out["resumed"]["reasonCode"], out["resumed"]["sessionPresent"]) == (0, True)


@pytest.mark.parametrize("version", [5, 4])
def test_qos(broker, version):
    out = run_node("qos.js", broker, version)
    assert out["granted"] == [["mqttjs/q/#", 2], ["mqttjs/q1only", 1]]
    got = out["received"]
    text = "text \u00e9\u4e2d".encode()
    # MQTT.js hands a QoS 2 message over on PUBREL, so only the order within
    # one topic (one QoS) is fixed.
    for qos in (0, 1, 2):
        topic = f"mqttjs/q/{qos}"
        assert [m for m in got if m["topic"] == topic] == [
            msg(topic, ALL_BYTES, qos), msg(topic, b"", qos), msg(topic, text, qos)]
    assert [m for m in got if m["topic"] == "mqttjs/q1only"] == [msg("mqttjs/q1only", b"two", 1)]
    assert len(got) == 10


@pytest.mark.parametrize("version", [5, 4])
def test_retained(broker, version):
    out = run_node("retained.js", broker, version)
    assert sorted(out["stored"], key=lambda m: m["topic"]) == [
        msg("mqttjs/r/a", b"\x00\x01\x02\xff", 1, retain=True),
        msg("mqttjs/r/b", b"second", 2, retain=True)]
    assert out["live"] == msg("mqttjs/r/a", b"live", 1)


@pytest.mark.parametrize("version", [5, 4])
def test_will(broker, version):
    out = run_node("will.js", broker, version)

    def will(name):
        props = {}
        if version == 5:
            props = {"contentType": "text/plain", "payloadFormatIndicator": True,
                     "userProperties": {"who": name}}
        return msg(f"mqttjs/will/{name}", f"gone {name} \u00e9".encode(), 1, props=props)

    expected = [will("lost")]
    if version == 5:
        expected.append(will("0x04"))  # DISCONNECT 0x04 keeps the will
    expected.append(msg("mqttjs/will/end", b"end", 1))  # and a normal one drops it
    assert out["received"] == expected


def test_topic_alias_client_to_broker(broker):
    out = run_node("topic_alias_c2b.js", broker)
    assert out["max"] == 10
    # The broker resolves each alias and forwards the full topic, with no
    # Topic Alias property, to a subscriber that allows none.
    assert out["received"] == [
        msg("mqttjs/ta/one", b"one-set", 0),
        msg("mqttjs/ta/one", b"one-alias-q0", 0),
        msg("mqttjs/ta/one", b"one-alias-q1", 1),
        msg("mqttjs/ta/two", b"two-set", 1),
        msg("mqttjs/ta/two", b"two-alias-q2", 1),
        msg("mqttjs/ta/three", b"alias 1 remapped", 1),
        msg("mqttjs/ta/three", b"three-alias", 1),
        msg("mqttjs/ta/two", b"two-again", 0),
        msg("mqttjs/ta/plain", b"no alias", 1),
    ]


@pytest.mark.mqttoolsd_only  # Mosquitto 2.0.11 never sends aliases to clients
def test_topic_alias_broker_to_client(broker):
    out = run_node("topic_alias_b2c.js", broker)
    got = out["received"]
    # Resolved by MQTT.js, every message is what was sent, in order.
    assert [(m["topic"], bytes.fromhex(m["payload"]).decode()) for m in got] == \
        [tuple(s) for s in out["sent"]]
    for m in got:
        alias = m["props"].pop("topicAlias", None)
        assert m["props"] == {}
        # Never above what the client allowed [MQTT-3.3.2-9].
        assert alias is None or 1 <= alias <= 2, m
        if m["rawTopic"] == "":
            assert alias is not None, m
        else:
            assert m["rawTopic"] == m["topic"], m
    assert got[0]["retain"] is True and got[0]["qos"] == 2
    assert all(m["retain"] is False for m in got[1:])
    # The broker does use them: a topic sent five times in a row goes as an
    # alias alone after its first time at the latest.
    repeats = got[-5:]
    assert all(m["rawTopic"] == "" for m in repeats[1:]), repeats


def test_subscription_identifiers(broker):
    out = run_node("subscription_ids.js", broker)
    assert out["connack"]["properties"].get("subscriptionIdentifiersAvailable", True) is True
    got = sorted(out["received"], key=lambda m: m["topic"])
    assert got == [
        msg("mqttjs/si/a", b"a", 1, props={"subscriptionIdentifier": 1}),
        msg("mqttjs/si/b/x", b"b", 2, props={"subscriptionIdentifier": 268435455}),
        msg("mqttjs/si/c", b"c", 1),
        msg("mqttjs/si/d", b"d", 0, props={"subscriptionIdentifier": 8}),
    ]


def test_session_resume(broker):
    out = run_node("session.js", broker)
    assert out["first"]["sessionPresent"] is False
    assert (out["resumed"]["reasonCode"], out["resumed"]["sessionPresent"]) == (0, True)
    queued = out["queued"]
    assert [m for m in queued if m["topic"] == "mqttjs/s/one"] == [
        msg("mqttjs/s/one", f"one-{i}".encode(), 1, props={"userProperties": {"i": str(i)}})
        for i in range(3)]
    assert [m for m in queued if m["topic"] == "mqttjs/s/two"] == [
        msg("mqttjs/s/two", b"\x00\xfe\xff", 2)]
    assert out["after"] == [msg("mqttjs/s/two", b"still subscribed", 1)]


def test_topic_alias_assigned_by_mqttjs(broker):
    out = run_node("topic_alias_auto.js", broker)
    # MQTT.js did send some topics as an alias alone...
    assert any(topic == "" for topic, _ in out["wire"]), out["wire"]
    # ...and the subscriber got every full topic, in order, without aliases.
    assert out["received"] == [msg(t, p.encode(), i // 3 % 2) for i, (t, p) in
                               enumerate(out["sent"])]


# Mosquitto 2.0.11 sends past the client's Receive Maximum (3 new PUBLISHes
# per PUBACK here); MQTT.js then closes the connection for its QoS 2 limit.
@pytest.mark.mqttoolsd_only
def test_burst_with_small_receive_maximum(broker):
    out = run_node("burst.js", broker)
    n = out["n"]
    got = out["received"]
    assert len(got) == n
    for q in (1, 2):
        assert [p for qos, p in got if qos == q] == [f"b{i:04d}" for i in range(n)
                                                     if 1 + i % 2 == q]


def test_redelivery_after_connection_loss(broker):
    out = run_node("redelivery.js", broker)
    for (first_qos, second_qos), r in zip([(2, 1), (1, 2)], out["rounds"]):
        cid = f"mqttjs-rd-{first_qos}{second_qos}"
        [held] = r["before"]
        assert held == {"topic": f"{cid}/first", "messageId": held["messageId"], "qos": first_qos,
                        "dup": False, "payload": bytes([first_qos, 0, 0xFF]).hex()}
        assert r["sessionPresent"] is True
        first, second = r["after"]
        # Resent with DUP and the original packet identifier, in order.
        assert first == {**held, "dup": True}
        assert {k: v for k, v in second.items() if k not in ("messageId", "dup")} == {
            "topic": f"{cid}/second", "qos": second_qos,
            "payload": bytes([second_qos, 0, 0xFF]).hex()}
        assert second["messageId"] != first["messageId"]
    # The publisher did lose its connection twice; each message arrived once.
    assert out["connects"] >= 3
    assert out["once"] == [msg("mqttjs/rd/once/a", b"after publish", 2),
                           msg("mqttjs/rd/once/b", b"after pubrec", 2),
                           msg("mqttjs/rd/once/c", b"sync", 2)]
