"""Bad input through real brokers into a real exporter: what the broker delivers is counted and
skipped, stored capped or clamped, and nothing stops the consumer (Redis fast path and the
kombu path on RabbitMQ)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery.events.event import get_exchange
from kombu import Connection, Producer

from exporter.history import create_history_engine, get_execution
from tests.support.events import WORKER, task_event
from tests.support.exporter import QUIET_POLLER
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
BIG = 10 * 1024 * 1024
UNICODE_NAME = "tâches.envoyer_☃_任务"
UNICODE_MESSAGE = "ünïcödé ☃ 💥"
YEAR_2100 = 4_102_444_800.0


def _publish(url: str, *messages: tuple[object, dict]) -> None:
    with Connection(url) as conn:
        exchange = get_exchange(conn)
        producer = Producer(conn.default_channel, exchange=exchange)
        for body, options in messages:
            producer.publish(body, routing_key="task.bad", declare=[exchange], **options)


def _json(event: dict) -> tuple[dict, dict]:
    return event, {"serializer": "json"}


def _task(type_: str, uuid: str, timestamp: float, hostname: str = WORKER,
          **fields: object) -> tuple[dict, dict]:
    """A task event (:func:`~tests.support.events.task_event`) published as JSON."""
    return _json(task_event(type_, uuid=uuid, timestamp=timestamp, hostname=hostname, **fields))


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines()
                    if line.startswith("VmRSS")).split()[1]) / 1024


def test_bad_messages_are_counted_capped_clamped_and_deduplicated(any_broker_url, start_exporter):
    exporter = start_exporter(any_broker_url, *QUIET_POLLER)
    now = time.time()
    s, r, st, ok = ("task-sent", "task-received", "task-started", "task-succeeded")
    _publish(
        any_broker_url,
        # Wrong content type and invalid UTF-8 in a JSON body.
        (b"hello", {"content_type": "application/x-strange", "content_encoding": "binary"}),
        (b'{"type": "task-sent", "uuid": "bad-utf8", "name": "\xff\xfe"}',
         {"content_type": "application/json", "content_encoding": "utf-8"}),
        # An integer timestamp beyond the float range (valid JSON): it used to crash the batch.
        _task(s, "huge-int", 10**400, "web-1", name="x.huge", queue="a"),
        # A 10 MB argument repr.
        _task(s, "big", now, "web-1", name="x.big", queue="a", args="x" * BIG, kwargs="{}"),
        # Unicode task name and exception message.
        _task(s, "uni", now, "web-1", name=UNICODE_NAME, queue="a"),
        _task(st, "uni", now + 0.01),
        _task("task-failed", "uni", now + 0.02, exception=f"ValueError({UNICODE_MESSAGE!r})",
              traceback=f"Traceback (most recent call last):\nValueError: {UNICODE_MESSAGE}"),
        # The producer's clock says 1970, the worker's 2100.
        _task(s, "clock", 0.0, "web-1", name="x.clock", queue="a"),
        _task(r, "clock", YEAR_2100, name="x.clock"),
        _task(st, "clock", YEAR_2100 + 1),
        _task("task-failed", "clock", YEAR_2100 + 30, exception="ValueError('late')"),
        # Reordered and duplicated: each step once, whatever the order and repeats.
        _task(s, "dup", now, "web-1", name="x.dup", queue="a"),
        _task(ok, "dup", now + 0.3, runtime=0.2, result="1"),
        _task(st, "dup", now + 0.1),
        _task(r, "dup", now + 0.05, name="x.dup"),
        _task(ok, "dup", now + 0.3, runtime=0.2, result="1"),
        _task(st, "dup", now + 0.1),
        _task(s, "dup", now, "web-1", name="x.dup", queue="a"),
    )
    expected = {"content_disallowed": 1, "decode_error": 1, "duplicate": 3,
                "bad_timestamp": 1}

    def counted():
        metrics = exporter.metrics()
        got = {s["reason"]: metrics.value("celery_jobmon_events_malformed_total", **s)
               for s in metrics.series("celery_jobmon_events_malformed_total")}
        done = metrics.value("celery_task_succeeded_total", name="x.dup", queue_name="a") == 1
        return metrics if got == expected and done else None

    metrics = wait_for(counted, 30,
                       message=lambda: f"bad input counted\n{exporter.output()[-3000:]}")
    value = metrics.value
    assert value("celery_task_sent_total", name="x.big", queue_name="a") == 1
    assert value("celery_task_failed_total", name=UNICODE_NAME, queue_name="a") == 1
    assert value("celery_task_exceptions_total", name=UNICODE_NAME, exception="ValueError") == 1
    for step in ("sent", "received", "started", "failed"):
        assert value(f"celery_task_{step}_total", name="x.clock", queue_name="a") == 1
    # Clamped to the receipt times: no 130-year queue wait, no negative run time.
    wait = value("celery_task_queue_wait_seconds_sum", name="x.clock", queue_name="a")
    runtime = value("celery_task_runtime_seconds_sum", name="x.clock", queue_name="a",
                    state="FAILURE")
    assert 0 <= wait < 5 and 0 <= runtime < 5
    assert value("celery_task_runtime_seconds_count", name="x.clock", queue_name="a",
                 state="FAILURE") == 1
    for step in ("sent", "received", "started", "succeeded"):
        assert value(f"celery_task_{step}_total", name="x.dup", queue_name="a") == 1
    assert value("celery_task_running", name="x.dup", queue_name="a") in (None, 0)
    assert value("celery_jobmon_event_lag_seconds") < 60
    assert value("celery_jobmon_event_gaps_total") == 0  # no message made it reconnect
    assert exporter.proc.poll() is None and exporter.get("/readyz").status_code == 200
    assert _rss_mb(exporter.proc.pid) < 400

    engine = create_history_engine(exporter.history_url)
    rows = wait_for(lambda: (rows := {t: get_execution(engine, t)
                                      for t in ("big", "uni", "clock", "dup")})
                    and rows["big"] is not None and rows["uni"] is not None
                    and rows["dup"] is not None and rows["dup"].state == "SUCCESS"
                    and rows["clock"] is not None and rows["clock"].state == "FAILURE" and rows,
                    15, message="rows")
    assert (len(rows["big"].args), rows["big"].args_truncated) == (4096, True)
    assert (rows["uni"].name, rows["uni"].exception_message) == (UNICODE_NAME, UNICODE_MESSAGE)
    assert abs(rows["clock"].sent_at - now) < 60 and 0 <= rows["clock"].runtime < 5
    assert (rows["dup"].state, rows["dup"].runtime) == ("SUCCESS", 0.2)
    assert get_execution(engine, "bad-utf8") is None
    engine.dispose()
