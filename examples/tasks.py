"""A small Celery app to try celery-jobmon with.

Run a worker that sends events::

    CELERY_BROKER_URL=redis://127.0.0.1:6379/0 celery -A examples.tasks worker -E -Q a,b

Queues: ``a`` (quick work) and ``b`` (work that fails). Producers send ``task-sent`` events
(``task_send_sent_event``), so the exporter knows each task's queue.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time

from celery import Celery

app = Celery("examples")
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
    result_backend=os.environ.get("CELERY_RESULT_BACKEND") or None,
    # Store each task's name, arguments and queue with its result, so that
    # `celery-jobmon retry` can re-send the exact arguments (CELERY_RESULT_EXTENDED=1).
    result_extended=os.environ.get("CELERY_RESULT_EXTENDED") == "1",
    # JOBMON_EXAMPLE_TASK_EVENTS=0 (and no -E): a worker whose task events are off.
    worker_send_task_events=os.environ.get("JOBMON_EXAMPLE_TASK_EVENTS", "1") == "1",
    # To try a worker whose events the exporter refuses (pickle is not in --accept-content).
    event_serializer=os.environ.get("JOBMON_EXAMPLE_EVENT_SERIALIZER", "json"),
    task_send_sent_event=True,
    task_routes={
        "examples.tasks.fail_value": {"queue": "b"},
        "examples.tasks.fail_key": {"queue": "b"},
    },
    task_default_queue="a",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


class PaymentDeclined(Exception):
    """A domain error, so dashboards show more than built-in exception names."""


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.task
def fail_value(message: str = "bad value") -> None:
    raise ValueError(message)


@app.task
def fail_key(key: str = "missing") -> None:
    raise KeyError(key)


@app.task
def charge(amount: int) -> None:
    raise PaymentDeclined(f"card declined for {amount}")


@app.task(bind=True, max_retries=5, default_retry_delay=0)
def flaky(self, failures: int = 2) -> int:
    """Retry ``failures`` times (countdown 0), then succeed and return the number of tries."""
    if self.request.retries < failures:
        raise self.retry(exc=ConnectionError("upstream busy"), countdown=0)
    return self.request.retries + 1


@app.task
def slow_fail(seconds: float, message: str = "gave up") -> None:
    """Work for ``seconds``, then fail: long enough to restart an exporter in between."""
    time.sleep(seconds)
    raise RuntimeError(message)


#: Where fail_once remembers the argument lists it has seen fail.
FAIL_ONCE_DIR = os.environ.get("JOBMON_EXAMPLE_STATE_DIR") or os.path.join(
    tempfile.gettempdir(), "jobmon-examples-fail-once")


@app.task
def fail_once(*args, **kwargs) -> dict:
    """Fail the first time it runs with these exact arguments, succeed (returning them) on every
    later run: a task worth retrying by hand. Remembered in a file per argument list.
    """
    os.makedirs(FAIL_ONCE_DIR, exist_ok=True)
    key = hashlib.sha256(json.dumps([args, kwargs], sort_keys=True).encode()).hexdigest()
    try:
        os.close(os.open(os.path.join(FAIL_ONCE_DIR, key), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return {"args": list(args), "kwargs": kwargs}
    raise ConnectionError("first attempt fails; retry me")


@app.task
def recurse(depth: int = 0) -> int:
    """Recurse until Python stops it: a RecursionError with a traceback of ~1,000 frames (the
    line naming the error is its last)."""
    return recurse(depth + 1)
