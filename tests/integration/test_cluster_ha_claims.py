"""The ownership bucket and the session records when they disagree or are
missing (issue 25). The session records are the sessions' durable home:

- a Clean Start 0 CONNECT whose claim finds no owner still reads the
  record (seen after a NATS server died: the claim found no owner for a
  session written seconds before, and the client got Session Present 0);
- a node that could not make the ownership bucket when it started (a NATS
  cluster still electing its JetStream leader) makes it once it can, with
  no claim to prompt it;
- a claim settled by the wall clock because the bucket was missing is
  made again for its connected client, so the bucket orders it."""
import base64
import os
import time

import pytest

from conftest import SANITIZED, wait_until
from nats_js import ask, record_says_disconnected
from test_cluster import NATS_SERVER, connect, nats  # noqa: F401 (fixture)
from test_cluster_ha import Receiver, check_delivered, ha_nodes, pair, publish_acked, resume  # noqa: F401

pytestmark = pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="nats-server is not installed")
SLOW = 3 if SANITIZED else 1
OWNERS = "KV_MQTT_OWNERS_mqtt"


def owner_of(port, client_id):
    """The node id the ownership bucket names for `client_id` (ids of
    letters and digits are their own keys), or None."""
    r = ask(port, f"$JS.API.STREAM.MSG.GET.{OWNERS}", {"last_by_subj": f"$KV.MQTT_OWNERS_mqtt.{client_id}"}) or {}
    data = (r.get("message") or {}).get("data")
    return base64.b64decode(data).decode() if data else None


def has_entry(port, client_id):
    """The ownership bucket holds an entry for `client_id`. Asked with a
    stream info (not a message get: nats-server 2.9.10 crashed on a get
    that came while the stream was being made)."""
    subject = f"$KV.MQTT_OWNERS_mqtt.{client_id}"
    r = ask(port, f"$JS.API.STREAM.INFO.{OWNERS}", {"subjects_filter": subject}) or {}
    return bool(((r.get("state") or {}).get("subjects") or {}).get(subject))


def stream_exists(port, name):
    r = ask(port, f"$JS.API.STREAM.INFO.{name}")
    return r is not None and "error" not in r


def block_the_owners_bucket(port):
    """A stream over the bucket's subjects: nats-server refuses to make
    the bucket (its subjects overlap), as while JetStream cannot serve."""
    r = ask(port, "$JS.API.STREAM.CREATE.BLOCK_OWNERS", {
        "name": "BLOCK_OWNERS", "subjects": ["$KV.MQTT_OWNERS_mqtt.>"], "storage": "memory",
        "retention": "limits", "max_msgs": 1, "num_replicas": 1})
    assert r is not None and "error" not in r, r


def unblock_the_owners_bucket(port):
    r = ask(port, "$JS.API.STREAM.DELETE.BLOCK_OWNERS")
    assert r and r.get("success"), r


def test_a_resume_whose_claim_finds_no_owner_reads_the_record(ha_nodes, nats):
    a, b = ha_nodes(2)
    sub, pub = pair(a.port, b.port, "noowner", "no", 1)
    sub.disconnect()
    assert wait_until(lambda: record_says_disconnected(nats.port, "noowner"), timeout=30 * SLOW, step=0.2)
    acked = publish_acked(pub, "no/x", [b"%d" % i for i in range(50)], 1)
    assert len(acked) == 50
    assert wait_until(lambda: owner_of(nats.port, "noowner") == "node1", timeout=10 * SLOW)
    # The bucket forgets the owner (as a leader that lost it would), the
    # session's node dies: the record is all that is left of the session.
    r = ask(nats.port, f"$JS.API.STREAM.PURGE.{OWNERS}", {"filter": "$KV.MQTT_OWNERS_mqtt.noowner"})
    assert r and r.get("success"), r
    assert owner_of(nats.port, "noowner") is None
    a.proc.kill()
    a.proc.wait()
    again, ack = resume(b.port, "noowner")
    assert ack.reason == 0 and ack.session_present, \
        f"CONNACK {ack.reason:#x}, Session Present {ack.session_present}: the record was not read"
    r = Receiver()
    r.drain(again, acked, 20)
    check_delivered(r, acked, 1)


def test_the_owners_bucket_is_made_once_jetstream_lets_it_with_no_claim_to_prompt_it(ha_nodes, nats):
    block_the_owners_bucket(nats.port)
    a, = ha_nodes(1)
    # No client: nothing claims. The node cannot make the bucket yet.
    time.sleep(2)
    assert not stream_exists(nats.port, OWNERS)
    unblock_the_owners_bucket(nats.port)
    assert wait_until(lambda: stream_exists(nats.port, OWNERS), timeout=15 * SLOW, step=0.3), \
        "the node never made the ownership bucket"


def test_a_claim_settled_without_the_bucket_is_made_again_once_the_bucket_exists(ha_nodes, nats):
    block_the_owners_bucket(nats.port)
    a, = ha_nodes(1)
    time.sleep(1)
    c = connect(a.port, "laterowned")  # its claim settles by the wall clock
    time.sleep(1.5)
    unblock_the_owners_bucket(nats.port)
    # The client stays connected: its node claims the id again and the
    # bucket orders that claim (before: never, until the client came back).
    assert wait_until(lambda: has_entry(nats.port, "laterowned"), timeout=40 * SLOW, step=0.5), \
        "the client's id was never claimed in the bucket"
    assert owner_of(nats.port, "laterowned") == "node1"
    c.ping()
    c.close()
