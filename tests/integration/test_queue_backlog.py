"""A backlog nobody consumes stays visible: real workers stop, real brokers keep the messages,
a real `celery-jobmon serve` reads them.

Before queues were found from the broker and kept while they hold messages, a queue's length
was shown only while a worker consumed it and for ``--queue-forget-after`` after: then the
series vanished while its messages waited, an exporter started during the outage never showed
the queue, and ``CeleryQueueNoConsumers`` resolved itself while the backlog grew.

Redis: database 12 (no other test uses it). RabbitMQ: a private vhost per test; the management
API (``rabbitmq_management``) is enabled on the shared broker when a test needs it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
from celery import Celery

from tests.support.binaries import unavailable
from tests.support.exporter import Exporter, Metrics
from tests.support.waiting import assert_stays, wait_for

pytestmark = pytest.mark.integration

REDIS_DB = 12
MANAGEMENT_URL = "http://127.0.0.1:15672"
#: Short enough to see a queue forgotten within a test; the exporter polls every second.
FORGET = "3s"
FORGET_SECONDS = 3.0


@pytest.fixture
def redis12_url() -> Iterator[str]:
    """A broker URL on Redis database 12, emptied before and after."""
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()


@pytest.fixture(params=["redis", "amqp"])
def any_broker(request: pytest.FixtureRequest) -> str:
    """Redis database 12, then a private RabbitMQ vhost."""
    return str(request.getfixturevalue("redis12_url" if request.param == "redis"
                                       else "amqp_url"))


@pytest.fixture(scope="session")
def management_url() -> str:
    """The RabbitMQ management API of the shared broker, enabled if it is not yet."""

    def answers() -> bool:
        try:
            return httpx.get(f"{MANAGEMENT_URL}/api/overview", auth=("guest", "guest"),
                             timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    if not answers():
        try:
            subprocess.run(["rabbitmq-plugins", "enable", "rabbitmq_management"], check=True,
                           capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            unavailable(f"cannot enable rabbitmq_management: {exc}")
        wait_for(answers, 60, interval=0.5, message="RabbitMQ management API")
    return MANAGEMENT_URL


def sender(url: str, sent_events: bool = True) -> Celery:
    """A producer app; with ``sent_events`` off the exporter never hears of its tasks (only
    the broker knows the queue). RabbitMQ publishes are confirmed, so they count at once."""
    app = Celery("backlog-producer", broker=url, set_as_current=False)
    app.conf.update(task_send_sent_event=sent_events, broker_connection_retry_on_startup=True)
    if url.startswith("amqp"):
        app.conf.broker_transport_options = {"confirm_publish": True}
    return app


def send(app: Celery, queue: str, count: int, priority: int | None = None) -> None:
    for i in range(count):
        app.send_task("examples.tasks.add", (i, 1), queue=queue, priority=priority)


def lengths(metrics: Metrics, queue: str) -> dict[str, float | None]:
    """``{priority: celery_queue_length}`` of ``queue`` (empty: no series)."""
    return {s["priority"]: metrics.value("celery_queue_length", **s)
            for s in metrics.series("celery_queue_length") if s["queue_name"] == queue}


def waiting(url: str, count: int) -> dict[str, float]:
    """The length series of ``count`` messages of priority 0 on this broker."""
    return {"0": count, "3": 0, "6": 0, "9": 0} if url.startswith("redis") else {"": count}


def shown(exporter: Exporter, queue: str, expected: dict[str, float], consumers: float
          ) -> Callable[[], Metrics | None]:
    def check() -> Metrics | None:
        metrics = exporter.metrics()
        ok = (lengths(metrics, queue) == expected
              and metrics.value("celery_queue_consumers", queue_name=queue) == consumers)
        return metrics if ok else None
    return check


def test_a_backlog_stays_visible_after_every_worker_of_its_queue_stopped(
        any_broker, start_exporter, start_worker):
    exporter = start_exporter(any_broker, "--queue-forget-after", FORGET)
    worker = start_worker(any_broker, "backlog")
    wait_for(shown(exporter, "backlog", waiting(any_broker, 0), 1), 60,
             message=lambda: f"backlog consumed once\n{worker.output()}")
    worker.stop()
    # No task-sent events: the exporter learns of these messages from the queue alone.
    app = sender(any_broker, sent_events=False)
    try:
        send(app, "backlog", 5)
    finally:
        app.close()
    wait_for(shown(exporter, "backlog", waiting(any_broker, 5), 0), 30,
             message=lambda: f"5 waiting, no consumer\n{exporter.output()}")
    # Three times --queue-forget-after: still there, exactly.
    assert_stays(shown(exporter, "backlog", waiting(any_broker, 5), 0), 3 * FORGET_SECONDS,
                 message="the backlog's series")


@pytest.mark.parametrize("prefix", ["", "app1:"], ids=["no-prefix", "global-keyprefix"])
def test_an_exporter_started_during_the_outage_shows_the_backlog_on_redis(
        prefix, redis12_url, start_exporter):
    app = sender(redis12_url, sent_events=False)
    app.conf.broker_transport_options = {"global_keyprefix": prefix} if prefix else {}
    try:
        send(app, "orphan", 2)
        send(app, "orphan", 1, priority=5)
        send(app, "orphan", 1, priority=9)
    finally:
        app.close()
    extra = ("--broker-transport-option", f"global_keyprefix={prefix}") if prefix else ()
    exporter = start_exporter(redis12_url, *extra, "--queue-forget-after", FORGET)
    metrics = wait_for(shown(exporter, "orphan", {"0": 2, "3": 1, "6": 0, "9": 1}, 0), 15,
                       message=lambda: f"orphan found from its binding\n{exporter.output()}")
    # Celery's own queues (events, remote control replies) are not shown.
    assert {s["queue_name"] for s in metrics.series("celery_queue_length")} == {"orphan"}


def test_an_exporter_started_during_the_outage_shows_the_backlog_at_the_next_task_on_rabbitmq(
        amqp_url, start_exporter):
    app = sender(amqp_url)
    try:
        send(app, "orphan", 3)
        exporter = start_exporter(amqp_url, "--queue-forget-after", FORGET)
        # AMQP cannot list queues: the exporter learns the name from the next task-sent.
        assert_stays(lambda: lengths(exporter.metrics(), "orphan") == {}, 2.0,
                     message="no series before any task-sent")
        send(app, "orphan", 1)
    finally:
        app.close()
    wait_for(shown(exporter, "orphan", {"": 4}, 0), 15,
             message=lambda: f"orphan found from task-sent\n{exporter.output()}")


def test_an_exporter_started_during_the_outage_shows_the_backlog_from_the_management_api(
        amqp_url, management_url, start_exporter):
    app = sender(amqp_url, sent_events=False)
    try:
        send(app, "orphan", 3)
    finally:
        app.close()
    exporter = start_exporter(amqp_url, "--rabbitmq-management-url", management_url,
                              "--queue-forget-after", FORGET)
    metrics = wait_for(shown(exporter, "orphan", {"": 3}, 0), 15,
                       message=lambda: f"orphan found from the management API\n"
                                       f"{exporter.output()}")
    assert {s["queue_name"] for s in metrics.series("celery_queue_length")} == {"orphan"}


def test_a_restarted_exporter_shows_the_backlog_its_history_knows_on_rabbitmq(
        amqp_url, start_exporter):
    first = start_exporter(amqp_url, "--queue-forget-after", FORGET)
    app = sender(amqp_url)
    try:
        send(app, "orphan", 3)
    finally:
        app.close()
    wait_for(shown(first, "orphan", {"": 3}, 0), 15,
             message=lambda: f"orphan found from task-sent\n{first.output()}")
    first.stop()
    # The same history: the unfinished executions name their queue.
    second = start_exporter(amqp_url, "--queue-forget-after", FORGET,
                            history_url=first.history_url)
    wait_for(shown(second, "orphan", {"": 3}, 0), 15,
             message=lambda: f"orphan found from the history\n{second.output()}")


@pytest.mark.parametrize("broker", ["redis", "amqp-management"])
def test_an_empty_queue_nobody_consumes_is_still_forgotten(broker, request, start_exporter,
                                                           start_worker):
    if broker == "redis":
        url, extra = request.getfixturevalue("redis12_url"), ()
    else:
        url = request.getfixturevalue("amqp_url")
        extra = ("--rabbitmq-management-url", request.getfixturevalue("management_url"))
    exporter = start_exporter(url, *extra, "--queue-forget-after", FORGET)
    worker = start_worker(url, "idle")
    wait_for(shown(exporter, "idle", waiting(url, 0), 1), 60,
             message=lambda: f"idle consumed\n{worker.output()}")
    worker.stop()
    # Its binding (Redis) or the queue itself (RabbitMQ) is still there, with no message.
    wait_for(lambda: lengths(exporter.metrics(), "idle") == {}, 30,
             message=lambda: f"idle forgotten\n{exporter.output()}")
    assert_stays(lambda: lengths(exporter.metrics(), "idle") == {}, 2 * FORGET_SECONDS,
                 message="idle stays forgotten")
    assert exporter.metrics().value("celery_queue_consumers", queue_name="idle") is None
