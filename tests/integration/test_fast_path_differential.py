"""The fast paths decode exactly what kombu decodes for Celery's event receiver.

The same messages — every serializer Celery events can use, compressed bodies, batched lists,
unicode — are published once to the event exchange; Celery's EventReceiver (kombu path) and
the fast path both read them: on Redis a raw subscription on the pattern from `fanout_pattern`,
on RabbitMQ an `AmqpEventStream` on the queue Celery's receiver would declare (a vhost of its
own per test).
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

import pytest
import redis
from celery import Celery
from celery.events.event import Event, get_exchange
from celery.events.receiver import EventReceiver
from kombu import Producer

from exporter.events.amqp_reader import AmqpReaderProcess
from exporter.events.amqp_stream import (
    AmqpEventStream,
    amqp_parameters,
    event_queue,
    queue_arguments,
)
from exporter.events.redis_stream import (
    accept_content,
    decode_body,
    decode_payload,
    fanout_pattern,
)
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


def _read_amqp(stream: AmqpEventStream | AmqpReaderProcess, count: int) -> list:
    """``count`` messages from ``stream`` (``(body, content type, content encoding,
    compression)``), waiting up to 10 s."""
    delivered: list = []
    deadline = time.monotonic() + 10
    while len(delivered) < count and time.monotonic() < deadline:
        delivered.extend(stream.read_batch(timeout=0.5))
    return delivered


#: Every serializer Celery events can use, and compressed bodies.
FORMATS = [("json", None), ("msgpack", None), ("yaml", None), ("pickle", None),
           ("json", "gzip"), ("json", "zlib"), ("json", "bzip2"), ("msgpack", "gzip")]


#: pika in the event thread, and in a child process (``--amqp-reader``).
STREAMS = [AmqpEventStream, AmqpReaderProcess]


@pytest.mark.parametrize("stream_class", STREAMS)
def test_amqp_fast_path_decodes_what_kombu_decodes(amqp_url, stream_class):
    # One connection each for all formats (a RabbitMQ round trip per case would cost seconds).
    app = Celery("diff", broker=amqp_url, set_as_current=False)
    app.conf.accept_content = list(ACCEPT)
    with app.connection_for_read() as conn:
        params = amqp_parameters(conn, amqp_url, {})
    assert params is not None
    stream = stream_class(params, event_queue(app))
    stream.connect()
    published: list = []
    try:
        with app.connection_for_read() as conn:
            capture = _Capture(conn, app=app, accept=set(ACCEPT))
            ready = threading.Event()
            capture.on_consume_ready = lambda *a, **k: ready.set()
            thread = threading.Thread(target=capture.capture,
                                      kwargs={"limit": None, "wakeup": False}, daemon=True)
            thread.start()
            assert ready.wait(10), "kombu path consuming"
            with app.connection_for_write() as pub_conn:
                for serializer, compression in FORMATS:
                    producer = Producer(pub_conn.default_channel,
                                        exchange=get_exchange(pub_conn),
                                        serializer=serializer, compression=compression)
                    events = _events()
                    for event in events:
                        producer.publish(event, routing_key=event["type"].replace("-", "."),
                                         headers={"hostname": event["hostname"]})
                    producer.publish(events, routing_key="task.multi")  # a batched message
                    published += [[dict(e)] for e in events] + [[dict(e) for e in events]]
            wait_for(lambda: len(capture.bodies) == len(published), 10, message="kombu path")
            capture.should_stop = True
            thread.join(5)
        delivered = _read_amqp(stream, len(published))
    finally:
        stream.close()

    accept = accept_content(ACCEPT)
    fast = [decode_body(*message, accept) for message in delivered]
    kombu = [body if isinstance(body, list) else [body] for body in capture.bodies]
    assert [content_type for _, content_type, _, _ in delivered][::4] == [
        "application/json", "application/x-msgpack", "application/x-yaml",
        "application/x-python-serialize", *["application/json"] * 3, "application/x-msgpack"]
    assert fast == kombu
    assert fast == published


def _rabbitmq_queues(vhost: str) -> list[list[str]]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers",
                          "name", "durable", "auto_delete", "exclusive", "arguments"],
                         check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("stream_class", STREAMS)
def test_amqp_event_queue_is_declared_as_celerys_receiver_declares_it(amqp_url, stream_class):
    app = Celery("diff", broker=amqp_url, set_as_current=False)
    app.conf.event_queue_ttl = 7.5
    app.conf.event_queue_expires = 60.0
    queue = event_queue(app, node_id="n1")
    celerys = EventReceiver(None, app=app, node_id="n1").queue
    assert (queue.name, queue.durable, queue.exclusive, queue.auto_delete) == \
        ("celeryev.n1", False, True, True) == \
        (celerys.name, celerys.durable, celerys.exclusive, celerys.auto_delete)
    assert queue_arguments(queue) == {"x-message-ttl": 7500, "x-expires": 60000}
    with app.connection_for_read() as conn:
        params = amqp_parameters(conn, amqp_url, {})
    assert params is not None
    stream = stream_class(params, queue)
    stream.connect()
    try:
        assert _rabbitmq_queues(amqp_url.rsplit("/", 1)[1]) == [
            ["celeryev.n1", "false", "true", "true",
             '[{"x-expires",60000},{"x-message-ttl",7500}]']]
    finally:
        stream.close()


@pytest.mark.parametrize("url,options,transport", [
    ("amqp://guest:guest@127.0.0.1:5672//", {}, "amqp"),
    ("pyamqp://u:p@rabbit:5673/vh", {"max_retries": 3, "confirm_publish": True}, "amqp"),
    ("amqp://a//;amqp://b//", {}, None),
    ("amqps://guest:guest@127.0.0.1:5671//", {}, None),
    ("amqp://guest:guest@127.0.0.1:5672//", {"client_properties": {}}, None),
    ("redis://127.0.0.1:6379/0", {}, None),
])
def test_amqp_parameters_cover_plain_amqp_only(url, options, transport):
    app = Celery("diff", broker=url, set_as_current=False)
    with app.connection_for_read() as conn:
        params = amqp_parameters(conn, url, options)
    assert (params is not None) == (transport is not None)


def test_amqp_parameters_connect_where_kombu_connects():
    url = "pyamqp://u:p%2Fw@rabbit:5673/vh"
    app = Celery("diff", broker=url, set_as_current=False)
    app.conf.broker_connection_timeout = 3.0
    with app.connection_for_read() as conn:
        params = amqp_parameters(conn, url, {})
        heartbeat = conn.heartbeat  # Celery's connection_for_read: none
    assert params is not None
    assert (params.host, params.port, params.virtual_host, params.credentials.username,
            params.credentials.password, params.heartbeat, params.socket_timeout) == \
        ("rabbit", 5673, "vh", "u", "p/w", 0, 3.0)  # pika: 0 is no heartbeat
    assert heartbeat is None


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


@pytest.mark.parametrize("url,options,flags,path", [
    ("amqp://guest:guest@127.0.0.1:5672//", {}, {}, "amqp"),
    ("pyamqp://guest:guest@127.0.0.1:5672/vh", {}, {}, "amqp"),
    ("amqp://guest:guest@127.0.0.1:5672//", {}, {"amqp_fast_path": False}, "kombu"),
    ("amqps://guest:guest@127.0.0.1:5671//", {}, {}, "kombu"),
    ("amqp://a//;amqp://b//", {}, {}, "kombu"),
    ("amqp://guest:guest@127.0.0.1:5672//", {"client_properties": {}}, {}, "kombu"),
    ("redis://127.0.0.1:6379/0", {}, {}, "redis"),
    ("redis://127.0.0.1:6379/0", {}, {"redis_fast_path": False}, "kombu"),
])
def test_the_consumer_takes_the_fast_path_where_it_applies(url, options, flags, path):
    from exporter.events.consumer import EventConsumer
    from exporter.state.health import Health

    app = Celery("diff", broker=url, set_as_current=False)
    app.conf.broker_transport_options = options
    consumer = EventConsumer(app, None, Health(), accept=("json",), reconnect_max_interval=1.0,
                             **flags)
    assert consumer.path == path
