"""A Celery app for canvas tests (chains, groups, chords): ``celery -A
tests.support.workflow_app worker -Q wf``. Tasks go to queue ``wf`` unless a signature says
otherwise (a chord callback sent to a queue no worker consumes is held back). The result
backend is ``$CELERY_RESULT_BACKEND`` (Redis: native chords; ``db+sqlite://``: chords joined
by ``celery.chord_unlock``). Producers call the tasks by name (:data:`ADD` …).
"""

from __future__ import annotations

import os
import time

from celery import Celery

#: The task names, for producers that build signatures by name.
ADD, NAP, BOOM, TOTAL = (f"tests.support.workflow_app.{name}"
                         for name in ("add", "nap", "boom", "total"))

app = Celery("workflow_app")
app.conf.update(
    broker_url=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/13"),
    result_backend=os.environ.get("CELERY_RESULT_BACKEND") or None,
    task_send_sent_event=True,
    worker_send_task_events=True,
    task_default_queue="wf",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def add(x: int, y: int) -> int:
    """``x + y``."""
    return x + y


@app.task
def nap(seconds: float) -> float:
    """Sleep ``seconds`` and return them."""
    time.sleep(seconds)
    return seconds


@app.task
def boom(message: str = "header failed") -> None:
    """Raise ``ValueError(message)``."""
    raise ValueError(message)


@app.task
def total(values: list[float]) -> float:
    """The chord callback: the sum of the header's results."""
    return sum(values)
