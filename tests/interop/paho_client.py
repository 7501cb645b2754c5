"""A synchronous wrapper around Debian's paho-mqtt 1.6.1 for the interop
tests: every call waits for its acknowledgement, and received messages are
queued as plain tuples so that tests compare them exactly."""
import queue
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCodes
from paho.mqtt.subscribeoptions import SubscribeOptions

from .conftest import WAIT

# Every property a PUBLISH can carry to a subscriber, as paho names them.
PUBLISH_PROPS = ("PayloadFormatIndicator", "MessageExpiryInterval", "TopicAlias",
                 "ResponseTopic", "CorrelationData", "UserProperty", "SubscriptionIdentifier",
                 "ContentType")


def props(packet_type, **values):
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def publish_props(**values):
    return props(PacketTypes.PUBLISH, **values)


def prop_dict(p):
    """The properties that are set, as {name: value}."""
    if p is None:
        return {}
    return {n: getattr(p, n) for n in PUBLISH_PROPS if hasattr(p, n)}


class Msg:
    __slots__ = ("topic", "payload", "qos", "retain", "dup", "props")

    def __init__(self, m):
        self.topic = m.topic
        self.payload = bytes(m.payload)
        self.qos = m.qos
        self.retain = int(m.retain)
        self.dup = int(m.dup)
        self.props = prop_dict(getattr(m, "properties", None))

    def key(self):
        """What a test compares: everything but the properties."""
        return (self.topic, self.payload, self.qos, self.retain)

    def __repr__(self):
        return f"Msg({self.topic!r}, {self.payload!r}, qos={self.qos}, retain={self.retain}, " \
               f"dup={self.dup}, props={self.props!r})"


class Paho:
    def __init__(self, broker, client_id="", version=mqtt.MQTTv5, clean_session=None):
        self.port = broker.port
        self.version = version
        if version == mqtt.MQTTv5:
            self.c = mqtt.Client(client_id=client_id, protocol=version)
        else:
            self.c = mqtt.Client(client_id=client_id, protocol=version,
                                 clean_session=True if clean_session is None else clean_session)
        self.messages = queue.Queue()
        self.cond = threading.Condition()
        self.connacks = []
        self.subacks = {}
        self.unsubacks = {}
        self.disconnects = []
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.put(Msg(m))
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_disconnect = self._on_disconnect
        self.thread = None
        self.stopping = False

    def _run(self):
        # Our own network loop rather than loop_start(): that one sleeps up to
        # a second in select() before it notices loop_stop().
        while not self.stopping:
            if self.c.loop(timeout=0.02) != mqtt.MQTT_ERR_SUCCESS:
                time.sleep(0.01)

    # paho callbacks, on its network thread
    def _on_connect(self, c, u, flags, rc, properties=None):
        with self.cond:
            self.connacks.append((flags.get("session present", 0), getattr(rc, "value", rc),
                                  properties))
            self.cond.notify_all()

    def _on_subscribe(self, c, u, mid, codes, properties=None):
        with self.cond:
            self.subacks[mid] = [getattr(x, "value", x) for x in codes]
            self.cond.notify_all()

    def _on_unsubscribe(self, c, u, mid, properties=None, codes=None):
        with self.cond:
            self.unsubacks[mid] = codes
            self.cond.notify_all()

    def _on_disconnect(self, c, u, rc, properties=None):
        with self.cond:
            self.disconnects.append((getattr(rc, "value", rc), properties))
            self.cond.notify_all()

    def _wait(self, pred, what):
        deadline = time.monotonic() + WAIT
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"paho: timed out waiting for {what}")
                self.cond.wait(left)

    def connect(self, clean_start=True, properties=None, keepalive=60):
        """Returns (session_present, reason_code, CONNACK properties)."""
        n = len(self.connacks)
        if self.version == mqtt.MQTTv5:
            self.c.connect("127.0.0.1", self.port, keepalive=keepalive, clean_start=clean_start,
                           properties=properties)
        else:
            self.c.connect("127.0.0.1", self.port, keepalive=keepalive)
        if self.thread is None:
            self.stopping = False
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        self._wait(lambda: len(self.connacks) > n, "CONNACK")
        return self.connacks[n]

    def subscribe(self, topics, properties=None):
        """topics: [(filter, qos or SubscribeOptions)]; returns the SUBACK
        reason codes."""
        rc, mid = self.c.subscribe(topics, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        self._wait(lambda: mid in self.subacks, "SUBACK")
        return self.subacks[mid]

    def unsubscribe(self, topics):
        rc, mid = self.c.unsubscribe(topics)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        self._wait(lambda: mid in self.unsubacks, "UNSUBACK")
        return self.unsubacks[mid]

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(WAIT)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def recv(self, n=1, timeout=WAIT):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            try:
                out.append(self.messages.get(timeout=max(left, 0.001)))
            except queue.Empty:
                raise AssertionError(f"paho: got {len(out)} of {n} messages: {out}") from None
        return out

    def pending(self):
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def disconnect(self, reasoncode=None, properties=None):
        n = len(self.disconnects)
        self.c.disconnect(reasoncode=reasoncode, properties=properties)
        self._wait(lambda: len(self.disconnects) > n, "disconnect")
        self.stop()

    def drop(self):
        """Closes the TCP connection without DISCONNECT (as a crash would)."""
        self.stop()
        sock = self.c.socket()
        if sock is not None:
            sock.close()

    def stop(self):
        if self.thread is not None:
            self.stopping = True
            self.thread.join()
            self.thread = None


def disconnect_with_will():
    return ReasonCodes(PacketTypes.DISCONNECT, "Disconnect with will message")


def sub_opts(qos=0, no_local=False, retain_as_published=False, retain_handling=0):
    return SubscribeOptions(qos=qos, noLocal=no_local, retainAsPublished=retain_as_published,
                            retainHandling=retain_handling)
