"""The event consumer survives bad messages and broker restarts without a process restart."""

from __future__ import annotations

import time

import httpx
import pytest
from celery.events.event import get_exchange
from kombu import Connection, Producer

from tests.support.exporter import Exporter, log_lines
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def _publish(url: str, *messages: tuple[object, dict]) -> None:
    """Publish raw messages to the Celery event exchange, as a broken producer would."""
    with Connection(url) as conn:
        exchange = get_exchange(conn)
        producer = Producer(conn.default_channel, exchange=exchange)
        for body, options in messages:
            producer.publish(body, routing_key="task.bad", declare=[exchange], **options)


def test_malformed_events_are_counted_and_skipped(broker_url, start_exporter):
    exporter = start_exporter(broker_url)
    now = time.time()
    good = {"type": "task-sent", "uuid": "good-1", "timestamp": now, "name": "x.good",
            "queue": "a"}
    _publish(
        broker_url,
        (b"{not json", {"content_type": "application/json", "content_encoding": "utf-8"}),
        ({"type": "task-sent", "uuid": "p1", "timestamp": now}, {"serializer": "pickle"}),
        ("just a string", {"serializer": "json"}),
        ({"type": "task-started", "timestamp": now, "hostname": "w@h"}, {"serializer": "json"}),
        ({"type": "task-succeeded", "uuid": "u1", "timestamp": "yesterday"},
         {"serializer": "json"}),
        ({"type": "task-sent", "uuid": "u2", "timestamp": now, "name": 5},
         {"serializer": "json"}),
        ({"type": "task-exploded", "uuid": "u3", "timestamp": now}, {"serializer": "json"}),
        ({"timestamp": now, "uuid": "u4"}, {"serializer": "json"}),
        ({"type": "worker-heartbeat", "timestamp": now}, {"serializer": "json"}),
        # A batch (list) with a bad event first: the good one after it is still counted.
        ([{"type": "task-received", "timestamp": now}, good], {"serializer": "json"}),
    )
    expected = {
        "decode_error": 1,
        "content_disallowed": 1,
        "not_a_dict": 1,
        "missing_uuid": 2,
        "bad_timestamp": 1,
        "bad_field": 1,
        "unknown_type": 1,
        "missing_type": 1,
        "missing_hostname": 1,
    }

    def counted():
        metrics = exporter.metrics()
        got = {s["reason"]: metrics.value("celery_jobmon_events_malformed_total", **s)
               for s in metrics.series("celery_jobmon_events_malformed_total")}
        return metrics if got == expected else None

    metrics = wait_for(counted, 20, message=lambda: f"malformed counts\n{exporter.output()}")
    assert metrics.value("celery_task_sent_total", name="x.good", queue_name="a") == 1
    assert metrics.value("celery_jobmon_events_received_total", type="task-sent") == 1
    assert len(metrics.series("celery_jobmon_events_received_total")) == 1
    assert exporter.proc.poll() is None
    assert exporter.get("/readyz").status_code == 200


def test_exporter_reconnects_after_broker_restart(redis_server, producer, start_exporter,
                                                   start_worker):
    url = redis_server.url()
    exporter = start_exporter(url, "--reconnect-max-interval", "1s", "--inspect-interval", "1s")
    worker = start_worker(url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message=lambda: f"worker up\n{worker.output()}")
    # The poller has the worker's queues: a task-received that overtakes its task-sent (the
    # producer's event) still knows its queue (else it counts under queue_name="unknown").
    wait_for(lambda: exporter.metrics().value("celery_worker_pool_size",
                                              hostname=worker.hostname) == 2, 30,
             message="the poller knows the worker")
    app = producer(url)
    for i in range(3):
        app.send_task("examples.tasks.add", (i, i), queue="a")

    def succeeded(n):
        return lambda: exporter.metrics().value(
            "celery_task_succeeded_total", name="examples.tasks.add", queue_name="a") == n

    wait_for(succeeded(3), 30, message="first three tasks")
    assert exporter.metrics().value("celery_jobmon_broker_reconnects_total") == 0

    failed_before = len(log_lines(exporter.output(), "broker unreachable"))
    redis_server.kill()
    wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_connected") == 0, 30,
             message="disconnect noticed")
    assert exporter.get("/readyz").status_code == 503
    # The broker stays down until the exporter has failed to reconnect twice (1 s apart).
    wait_for(lambda: len(log_lines(exporter.output(), "broker unreachable"))
             >= failed_before + 2, 10,
             message=lambda: f"two failed reconnect attempts\n{exporter.output()}")
    # The line says what failed (before: the class name alone, "error=ConnectionError").
    assert log_lines(exporter.output(), "broker unreachable error=ConnectionError: Error 111 "
                                        f"connecting to 127.0.0.1:{redis_server.port}. "
                                        "Connection refused. retry_in=")
    redis_server.start()
    wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_connected") == 1, 30,
             message=lambda: f"reconnect\n{exporter.output()}")
    assert exporter.metrics().value("celery_jobmon_broker_reconnects_total") == 1
    # The worker reconnects by itself (Celery's own backoff): send once it answers a ping
    # again, not while its own connection may still be down.
    app = producer(url)
    wait_for(lambda: app.control.ping(destination=[worker.hostname], timeout=1.0), 60,
             message=lambda: f"worker answers again\n{worker.output()[-3000:]}")

    for i in range(3):
        app.send_task("examples.tasks.add", (i, i), queue="a")
    wait_for(succeeded(6), 90, message=lambda: (
        f"counting resumed: {exporter.metrics().samples}\n{worker.output()[-3000:]}\n"
        f"{exporter.output()[-6000:]}"))
    metrics = exporter.metrics()
    assert metrics.value("celery_task_sent_total", name="examples.tasks.add", queue_name="a") == 6
    assert metrics.value("celery_jobmon_broker_reconnects_total") == 1
    assert exporter.proc.poll() is None


def test_exporter_started_before_the_broker_serves_and_then_connects(redis_server):
    redis_server.kill()
    exporter = Exporter(redis_server.url(), "--reconnect-max-interval", "1s")
    try:
        wait_for(lambda: exporter.get("/healthz").status_code == 200, 30, message="serving")
        assert exporter.get("/readyz").status_code == 503
        assert exporter.metrics().value("celery_jobmon_broker_connected") == 0
        redis_server.start()
        wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_connected") == 1, 30,
                 message=lambda: f"connected\n{exporter.output()}")
        assert exporter.metrics().value("celery_jobmon_broker_reconnects_total") == 0
        assert exporter.proc.poll() is None
    finally:
        exporter.stop()


def test_a_worker_sending_pickled_events_is_one_warning_that_names_the_fix(
        redis_url, monkeypatch, start_exporter, start_worker):
    # Before: one WARNING per event ("event skipped reason=content_disallowed
    # error=ContentDisallowed"), never mentioning --accept-content, nothing in /readyz.
    exporter = start_exporter(redis_url)
    monkeypatch.setenv("JOBMON_EXAMPLE_EVENT_SERIALIZER", "pickle")
    worker = start_worker(redis_url, "a")
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_jobmon_events_malformed_total", reason="content_disallowed") >= 4 and m, 60,
        message=lambda: f"refused events\n{worker.output()[-2000:]}")
    assert metrics.value("celery_worker_up", hostname=worker.hostname) is None
    lines = log_lines(exporter.output(), "event skipped reason=content_disallowed")
    assert len(lines) == 1, lines
    assert "--accept-content (JOBMON_ACCEPT_CONTENT, now json)" in lines[0]
    assert "application/x-python-serialize" in lines[0]
    ready = httpx.get(f"{exporter.url}/readyz", timeout=5)
    assert ready.status_code == 200
    problems = ready.json()["problems"]
    assert [p["condition"] for p in problems] == ["content_disallowed"]
    assert "event_serializer to json" in problems[0]["detail"]
