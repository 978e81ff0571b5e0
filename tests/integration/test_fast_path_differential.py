"""The Redis fast path decodes exactly what kombu decodes for Celery's event receiver.

The same messages — every serializer Celery events can use, compressed bodies, batched lists,
unicode — are published once to the event exchange; Celery's EventReceiver (kombu path) and
a raw subscription on the pattern from `fanout_pattern` (fast path) both read them.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis
from celery import Celery
from celery.events.event import Event, get_exchange
from celery.events.receiver import EventReceiver
from kombu import Producer

from exporter.events.redis_stream import accept_content, decode_payload, fanout_pattern
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ACCEPT = ("json", "msgpack", "yaml", "pickle")


class _Capture(EventReceiver):
    """Celery's receiver, keeping each decoded body as kombu delivered it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bodies: list = []

    def _receive(self, body, message):
        self.bodies.append(body)


def _pattern_subscribers(url: str) -> int:
    """Clients of this URL's database with a PSUBSCRIBE (PUBSUB NUMPAT counts distinct
    patterns, not clients; CLIENT LIST sees every database, other tests' exporters included).
    """
    client = redis.Redis.from_url(url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return sum(1 for c in client.client_list()
               if int(c.get("psub", 0)) and int(c.get("db", -1)) == db)


def _events() -> list[dict]:
    task_id = str(uuid.uuid4())
    return [
        Event("task-sent", uuid=task_id, name="billing.charge", queue="a", routing_key="a",
              args="('ünïcødé', 3)", kwargs="{'amount': 1.5}", retries=0, eta=None,
              hostname="producer@h", clock=3, pid=12, utcoffset=0),
        Event("task-failed", uuid=task_id, exception="ValueError('naïve ☃')",
              traceback="Traceback (most recent call last):\n  ...\nValueError: naïve ☃\n",
              hostname="w1@h", clock=4, pid=13, utcoffset=-1),
        Event("worker-heartbeat", hostname="w1@h", freq=2.0, active=3, processed=10**6,
              loadavg=[0.5, 0.25, 0.0], sw_ident="py-celery", sw_ver="5.7.0", clock=5),
    ]


@pytest.mark.parametrize("serializer,compression", [
    ("json", None), ("msgpack", None), ("yaml", None), ("pickle", None),
    ("json", "gzip"), ("json", "zlib"), ("json", "bzip2"), ("msgpack", "gzip"),
])
def test_fast_path_decodes_what_kombu_decodes(redis_url, serializer, compression):
    app = Celery("diff", broker=redis_url, set_as_current=False)
    app.conf.accept_content = list(ACCEPT)
    pattern = fanout_pattern(redis_url, {}, app.conf.event_exchange)
    assert pattern is not None
    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(pattern)

    with app.connection_for_read() as conn:
        capture = _Capture(conn, app=app, accept=set(ACCEPT))
        thread = threading.Thread(target=capture.capture,
                                  kwargs={"limit": None, "wakeup": False}, daemon=True)
        thread.start()
        wait_for(lambda: _pattern_subscribers(redis_url) >= 2, 10, message="both subscribers")
        events = _events()
        with app.connection_for_write() as pub_conn:
            exchange = get_exchange(pub_conn)
            producer = Producer(pub_conn.default_channel, exchange=exchange,
                                serializer=serializer, compression=compression)
            for event in events:
                producer.publish(event, routing_key=event["type"].replace("-", "."))
            producer.publish(events, routing_key="task.multi")  # a batched message
        wait_for(lambda: len(capture.bodies) == len(events) + 1, 10, message="kombu path")
        capture.should_stop = True
        thread.join(5)

    raw: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(raw) < len(events) + 1 and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message and message["type"] == "pmessage":
            raw.append(message["data"])
    pubsub.close()

    accept = accept_content(ACCEPT)
    fast = [decode_payload(data, accept) for data in raw]
    kombu = [body if isinstance(body, list) else [body] for body in capture.bodies]
    assert fast == kombu
    assert fast[-1] == [dict(e) for e in events]


def test_content_not_accepted_is_refused_like_kombu(redis_url):
    from kombu.exceptions import ContentDisallowed

    app = Celery("diff", broker=redis_url, set_as_current=False)
    pattern = fanout_pattern(redis_url, {}, app.conf.event_exchange)
    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(pattern)
    pubsub.get_message(timeout=1)
    with app.connection_for_write() as conn:
        Producer(conn.default_channel, exchange=get_exchange(conn), serializer="pickle") \
            .publish(Event("task-sent", uuid="x"), routing_key="task.sent")
    message = wait_for(lambda: pubsub.get_message(timeout=0.5), 10, message="message")
    pubsub.close()
    with pytest.raises(ContentDisallowed):
        decode_payload(message["data"], accept_content(["json"]))


@pytest.mark.parametrize("url,options,expected", [
    ("redis://127.0.0.1:6379/0", {}, "/0.celeryev/*"),
    ("redis://:secret@127.0.0.1:6379/7", {}, "/7.celeryev/*"),
    ("rediss://127.0.0.1:6380", {}, "/0.celeryev/*"),
    ("redis://127.0.0.1/3", {"global_keyprefix": "app1:"}, "app1:/3.celeryev/*"),
    ("redis://127.0.0.1/3", {"fanout_prefix": False}, "celeryev/*"),
    ("redis://127.0.0.1/3", {"fanout_prefix": "pfx."}, "pfx.celeryev/*"),
    ("redis://127.0.0.1/3", {"fanout_patterns": False}, "/3.celeryev"),
    ("redis://127.0.0.1/3", {"master_name": "mymaster"}, None),
    ("sentinel://127.0.0.1:26379", {}, None),
    ("redis://a:6379/0;redis://b:6379/0", {}, None),
    ("amqp://guest@127.0.0.1//", {}, None),
])
def test_fanout_pattern_matches_kombus_topic_layout(url, options, expected):
    assert fanout_pattern(url, options, "celeryev") == expected
