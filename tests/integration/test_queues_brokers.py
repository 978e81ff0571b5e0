"""Queue readers against real Redis (db 13, private servers) and RabbitMQ (private vhosts).

Tasks are sent with priorities 0, 3, 5 and 9 to a queue nobody consumes; the readers must give
exact totals, exact Redis per-priority lengths, and the same totals kombu itself counts.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue

from exporter.poll.amqp_queues import AmqpQueueReader
from exporter.poll.redis_queues import RedisQueueReader
from exporter.poll.snapshot import QueueState
from tests.support.network import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REDIS_DB = 13
PRIORITIES = (0, 3, 5, 9)


@pytest.fixture
def redis_url() -> Iterator[str]:
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()


@pytest.fixture
def amqp_url() -> Iterator[str]:
    vhost = f"jobmon-queues-{uuid.uuid4().hex[:8]}"
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run([*ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True, timeout=60)
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    subprocess.run([*ctl, "delete_vhost", vhost], check=True, capture_output=True, timeout=60)


def send(url: str, queue: str, priorities: tuple[int, ...] = PRIORITIES,
         options: dict[str, Any] | None = None, **task_options: Any) -> list[str]:
    """Send one examples.tasks.add per priority to ``queue`` (x-max-priority 10); task ids.

    On RabbitMQ publishes wait for the broker's confirm, so the messages are counted at once.
    """
    app = Celery(f"producer-{uuid.uuid4().hex[:6]}", broker=url, set_as_current=False)
    if url.startswith("amqp"):
        options = {**(options or {}), "confirm_publish": True}
    app.conf.update(
        broker_transport_options=options or {},
        task_queues=[Queue(queue, Exchange(queue), routing_key=queue,
                           queue_arguments={"x-max-priority": 10})],
    )
    try:
        return [app.send_task("examples.tasks.add", args=(i, p), queue=queue, priority=p,
                              **task_options).id
                for i, p in enumerate(priorities)]
    finally:
        app.close()


def kombu_size(url: str, queue: str, options: dict[str, Any] | None = None) -> int:
    """What kombu itself counts: ``Channel._size`` on Redis, a passive declare on RabbitMQ."""
    with Connection(url, transport_options=options or {}) as conn:
        channel: Any = conn.default_channel
        if conn.transport.driver_type == "redis":
            return int(channel._size(queue))
        return int(channel.queue_declare(queue=queue, passive=True).message_count)


def read(url: str, queues: list[str], options: dict[str, Any] | None = None
         ) -> dict[str, QueueState]:
    conn = Connection(url, transport_options=options or {})
    reader: RedisQueueReader | AmqpQueueReader
    if conn.transport.driver_type == "redis":  # redis://, rediss://, sentinel://
        reader = RedisQueueReader(conn)
    else:
        reader = AmqpQueueReader(conn)
    try:
        return reader.read(queues)
    finally:
        reader.close()


def test_redis_lengths_per_priority_step_and_total_equal_kombus_count(redis_url):
    queue = f"q-{uuid.uuid4().hex[:6]}"
    send(redis_url, queue)
    state = read(redis_url, [queue])[queue]
    assert state.lengths == {"0": 1, "3": 2, "6": 0, "9": 1}
    assert sum(state.lengths.values()) == 4 == kombu_size(redis_url, queue)


def test_rabbitmq_priority_queue_total_and_consumers_equal_kombus_count(amqp_url):
    queue = f"q-{uuid.uuid4().hex[:6]}"
    send(amqp_url, queue)
    state = read(amqp_url, [queue])[queue]
    assert state == QueueState(queue, {"": 4}, consumers=0)
    assert kombu_size(amqp_url, queue) == 4


def test_global_keyprefix_gives_the_same_totals(redis_url):
    options = {"global_keyprefix": "jobmon-test:"}
    queue = f"q-{uuid.uuid4().hex[:6]}"
    send(redis_url, queue, options=options)
    state = read(redis_url, [queue], options)[queue]
    assert state.lengths == {"0": 1, "3": 2, "6": 0, "9": 1}
    assert kombu_size(redis_url, queue, options) == 4
    raw = redis.Redis(db=REDIS_DB)
    assert raw.llen(f"jobmon-test:{queue}") == 1 and raw.llen(queue) == 0
    # Without the prefix the queue looks empty: the option matters.
    assert sum(read(redis_url, [queue])[queue].lengths.values()) == 0


def test_custom_sep_and_priority_steps_are_honoured(redis_url):
    options = {"sep": ":", "priority_steps": [0, 5]}
    queue = f"q-{uuid.uuid4().hex[:6]}"
    send(redis_url, queue, options=options)
    assert read(redis_url, [queue], options)[queue].lengths == {"0": 2, "5": 2}
    assert kombu_size(redis_url, queue, options) == 4
    assert redis.Redis(db=REDIS_DB).llen(f"{queue}:5") == 2


def test_absent_rabbitmq_queue_is_absent_and_the_channel_keeps_working(amqp_url):
    queue = f"q-{uuid.uuid4().hex[:6]}"
    send(amqp_url, queue, priorities=(1,))
    conn = Connection(amqp_url)
    reader = AmqpQueueReader(conn)
    try:
        for _ in range(2):  # the second round reuses (or reopens) the channel
            states = reader.read(["nope-1", queue, "nope-2"])
            assert states == {queue: QueueState(queue, {"": 1}, consumers=0)}
    finally:
        reader.close()


def test_peek_reads_oldest_messages_without_consuming_and_gives_their_age(redis_url):
    queue = f"q-{uuid.uuid4().hex[:6]}"
    ids = send(redis_url, queue, priorities=(0, 0, 5, 9))
    conn = Connection(redis_url)
    reader = RedisQueueReader(conn)
    try:
        reading = reader.read_raw([queue])[queue]
        assert {step: m.task_id for step, m in reading.oldest.items()} == {
            0: ids[0], 3: ids[2], 9: ids[3]}
        assert reading.oldest[3].priority == 5 and reading.oldest[3].name == "examples.tasks.add"
        sent = {ids[0]: 1000.0, ids[2]: 900.0}
        assert reader.read([queue], sent.get)[queue].waiting_since == 900.0
        assert reader.read([queue])[queue].waiting_since is None
        page = reader.pending_messages(queue, offset=0, limit=10)
        assert [m.task_id for m in page] == ids
        assert [m.args_repr for m in page] == ["(0, 0)", "(1, 0)", "(2, 5)", "(3, 9)"]
        assert [m.task_id for m in reader.pending_messages(queue, 1, 2)] == ids[1:3]
        assert kombu_size(redis_url, queue) == 4  # nothing consumed
    finally:
        reader.close()


def test_eta_is_read_from_the_message_headers(redis_url):
    queue = f"q-{uuid.uuid4().hex[:6]}"
    before = time.time()
    (task_id,) = send(redis_url, queue, priorities=(0,), countdown=60)
    reader = RedisQueueReader(Connection(redis_url))
    try:
        (message,) = reader.pending_messages(queue)
    finally:
        reader.close()
    assert message.task_id == task_id
    assert message.eta is not None and before + 59 < message.eta < time.time() + 61


@pytest.fixture
def sentinel_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server and a Sentinel watching it (master name ``jobmon``)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    redis_port, sentinel_port = free_port(), free_port()
    procs = [subprocess.Popen(
        [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_for(lambda: redis.Redis(port=redis_port).ping(), 10, interval=0.1,
                 message="private redis")
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                        f"sentinel monitor jobmon 127.0.0.1 {redis_port} 1\n")
        procs.append(subprocess.Popen([binary, str(conf), "--sentinel"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: redis.Redis(port=sentinel_port).sentinel_master("jobmon"), 10,
                 interval=0.1, message="sentinel")
        yield f"sentinel://127.0.0.1:{sentinel_port}/0"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_sentinel_urls_read_the_master_found_by_sentinel(sentinel_url):
    options = {"master_name": "jobmon"}
    queue = f"q-{uuid.uuid4().hex[:6]}"
    send(sentinel_url, queue, options=options)
    state = read(sentinel_url, [queue], options)[queue]
    assert state.lengths == {"0": 1, "3": 2, "6": 0, "9": 1}
    assert kombu_size(sentinel_url, queue, options) == 4
