"""Sessions and wills in mqttoolsd: Clean Start, Session Expiry Interval
(with a real timer), Session Present, restored subscriptions, DISCONNECT
rules, wills with Will Delay Interval, will properties and retain."""
import time

import pytest

from conftest import MQTTOOLSD
from mqttwire import (Client, DISCONNECT, CONTENT_TYPE, USER_PROPERTY, MESSAGE_EXPIRY_INTERVAL,
                      SESSION_EXPIRY_INTERVAL, WILL_DELAY_INTERVAL)

pytestmark = pytest.mark.skipif(not MQTTOOLSD.exists(), reason="mqttoolsd not built")


def watcher(port, topic="will/#"):
    w = Client(port)
    w.connect("watcher-" + str(time.monotonic_ns()))
    w.subscribe([topic])
    return w


def test_session_present_and_subscriptions_restored(broker):
    c = Client(broker.port)
    assert c.connect("keep", clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 60}).session_present is False
    c.subscribe([("s/#", 1)])
    c.disconnect()
    c = Client(broker.port)
    assert c.connect("keep", clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 60}).session_present is True
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("s/x", b"still subscribed", qos=1)
    assert [m.payload for m in c.messages()] == [b"still subscribed"]
    c.disconnect()
    # Clean Start discards it.
    c = Client(broker.port)
    assert c.connect("keep", clean_start=True).session_present is False
    pub.publish("s/x", b"gone", qos=1)
    assert c.messages() == []
    c.disconnect()


def test_session_expires_on_its_timer(broker):
    c = Client(broker.port)
    c.connect("short", clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 1})
    c.subscribe(["x"])
    c.disconnect()
    time.sleep(0.5)
    c = Client(broker.port)
    assert c.connect("short", clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 1}).session_present
    c.disconnect()
    time.sleep(1.3)
    c = Client(broker.port)
    assert not c.connect("short", clean_start=False).session_present
    c.disconnect()


def test_zero_expiry_ends_with_the_connection(broker):
    c = Client(broker.port)
    c.connect("zero", clean_start=False)
    c.disconnect()
    c = Client(broker.port)
    assert not c.connect("zero", clean_start=False).session_present
    c.disconnect()


def test_disconnect_can_change_expiry(broker):
    c = Client(broker.port)
    c.connect("change", clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 60})
    c.disconnect(properties={SESSION_EXPIRY_INTERVAL: 0})
    c = Client(broker.port)
    assert not c.connect("change", clean_start=False).session_present
    c.disconnect()


def test_disconnect_cannot_set_expiry_after_zero(broker):
    c = Client(broker.port)
    c.connect("nochange")
    c.disconnect(properties={SESSION_EXPIRY_INTERVAL: 30})
    c2 = Client(broker.port)
    c2.connect("observer")
    c = Client(broker.port)
    c.connect("nochange2")
    from mqttwire import disconnect_packet
    c.send(disconnect_packet(0, properties={SESSION_EXPIRY_INTERVAL: 30}))
    got = c.expect_closed()
    assert [(p.type, p.reason) for p in got] == [(DISCONNECT, 0x82)]
    c2.disconnect()


def test_v311_persistent_session(broker):
    c = Client(broker.port, version=4)
    c.connect("old-persistent", clean_start=False)
    c.subscribe([("o/#", 1)])
    c.disconnect()
    pub = Client(broker.port)
    pub.connect("pub")
    pub.publish("o/x", b"queued", qos=1)
    c = Client(broker.port, version=4)
    assert c.connect("old-persistent", clean_start=False).session_present
    assert [m.payload for m in c.messages()] == [b"queued"]
    c.disconnect()


@pytest.mark.parametrize("version", [5, 4])
def test_will_on_abnormal_close_not_on_normal_disconnect(broker, version):
    w = watcher(broker.port)
    c = Client(broker.port, version=version)
    c.connect("w1", will_topic="will/w1", will_payload=b"dead")
    c.close()  # no DISCONNECT
    assert [(m.topic, m.payload) for m in w.messages()] == [("will/w1", b"dead")]
    c = Client(broker.port, version=version)
    c.connect("w2", will_topic="will/w2", will_payload=b"dead")
    c.disconnect()
    assert w.messages() == []


def test_disconnect_with_will_message(broker):
    w = watcher(broker.port)
    c = Client(broker.port)
    c.connect("w4", will_topic="will/w4", will_payload=b"asked")
    c.disconnect(reason=0x04)
    assert [m.payload for m in w.messages()] == [b"asked"]


def test_will_properties_and_retain(broker):
    w = watcher(broker.port)
    props = [(CONTENT_TYPE, "text/plain"), (USER_PROPERTY, ("k", "v")), (MESSAGE_EXPIRY_INTERVAL, 50)]
    c = Client(broker.port)
    c.connect("w5", will_topic="will/w5", will_payload=b"bye", will_retain=True, will_qos=1, will_properties=props)
    c.close()
    got = w.messages()
    assert len(got) == 1
    assert [p for p in got[0].props if p[0] != MESSAGE_EXPIRY_INTERVAL] == props[:2]
    assert got[0].prop(MESSAGE_EXPIRY_INTERVAL) in (49, 50)
    late = Client(broker.port)
    late.connect("late")
    late.subscribe([("will/w5", 1)])
    m = late.messages()[0]
    assert (m.payload, m.retain, m.qos) == (b"bye", True, 1)
    assert m.prop(MESSAGE_EXPIRY_INTERVAL) in (49, 50)


def test_will_delay(broker):
    w = watcher(broker.port)
    c = Client(broker.port)
    c.connect("wd", clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 30},
              will_topic="will/wd", will_payload=b"late", will_properties={WILL_DELAY_INTERVAL: 1})
    c.close()
    start = time.monotonic()
    assert w.messages(quiet=0.5) == []
    m = w.expect(3, timeout=2)
    assert m.payload == b"late"
    assert 0.9 <= time.monotonic() - start <= 1.5


def test_will_delay_cancelled_by_reconnect(broker):
    w = watcher(broker.port)
    c = Client(broker.port)
    c.connect("wc", clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 30},
              will_topic="will/wc", will_payload=b"never", will_properties={WILL_DELAY_INTERVAL: 1})
    c.close()
    time.sleep(0.3)
    c = Client(broker.port)
    assert c.connect("wc", clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 30}).session_present
    assert w.messages(quiet=1.2) == []
    c.disconnect()


def test_will_sent_when_session_expires_first(broker):
    w = watcher(broker.port)
    c = Client(broker.port)
    c.connect("we", clean_start=False, properties={SESSION_EXPIRY_INTERVAL: 1},
              will_topic="will/we", will_payload=b"expired", will_properties={WILL_DELAY_INTERVAL: 100})
    c.close()
    m = w.expect(3, timeout=3)
    assert m.payload == b"expired"


def test_takeover_publishes_the_old_will(broker):
    w = watcher(broker.port)
    old = Client(broker.port)
    old.connect("tw", will_topic="will/tw", will_payload=b"taken")
    new = Client(broker.port)
    new.connect("tw")
    assert [m.payload for m in w.messages()] == [b"taken"]
    new.disconnect()
