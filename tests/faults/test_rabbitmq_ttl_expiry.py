"""Events that expire in the exporter's RabbitMQ event queue, detected and repaired: with a
short ``--event-queue-ttl`` the exporter is frozen past the TTL while a real worker runs tasks
it saw sent. RabbitMQ silently drops what waited longer — no connection is lost, so no gap is
counted — and the worker's next heartbeat (``processed``) says how many task-started events
never arrived; the repairer then takes the outcome of every task left unfinished from Celery's
database result backend, and the counters and history rows are exact.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery

from tests.faults.test_lost_events_repaired import (
    ADD,
    FAIL,
    HELD,
    REPAIR,
    _release,
    _rows,
    _started_seen,
    _wait_repaired_exactly,
)
from tests.support.exporter import Exporter
from tests.support.waiting import wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration
#: Message TTL of the exporter's event queue here (the exporter's default is 5 minutes).
TTL = 1.0
#: Held tasks, run in this order: failures whose task-failed events carry a 100 kB traceback
#: (their message), then adds. RabbitMQ pushes events to the frozen no_ack consumer until the
#: socket buffers (filled by the large ones, ~4 MB) and the queue's credit towards the channel
#: (a few hundred messages) are used up; the rest of the ~1,300 events wait and expire.
FAILS, ADDS = 40, 400
MESSAGE = "x" * 100_000



def test_events_expired_in_the_rabbitmq_event_queue_are_detected_and_repaired(
        amqp_url: str, producer: Callable[[str], Celery], start_exporter, start_worker,
        tmp_path: Path):
    backend = f"db+sqlite:///{tmp_path / 'results.sqlite3'}"
    exporter: Exporter = start_exporter(amqp_url, "--result-backend", backend,
                                        "--event-queue-ttl", f"{TTL:g}s", *REPAIR)
    worker: Worker = start_worker(amqp_url, "a", env={"CELERY_RESULT_BACKEND": backend})
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(amqp_url)
    sent = {app.send_task(FAIL, (MESSAGE,), queue=HELD).id: FAIL for _ in range(FAILS)}
    sent.update({app.send_task(ADD, (i, 1), queue=HELD).id: ADD for i in range(ADDS)})
    wait_for(lambda: exporter.metrics().total("celery_task_sent_total", queue_name=HELD)
             == ADDS + FAILS, 30, message="the held tasks seen sent")

    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        _release(app, worker, ADDS + FAILS)
        time.sleep(TTL + 1.0)  # what still waits in the event queue expires
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)

    held_add, held_fail = {"name": ADD, "queue_name": HELD}, {"name": FAIL, "queue_name": HELD}
    metrics = _wait_repaired_exactly(exporter, worker, ADDS, FAILS)
    missed = metrics.value("celery_worker_missed_task_events_total", hostname=worker.hostname)
    repairs = metrics.total("celery_jobmon_repairs_total", source="result_backend")
    ended_by_events = sum(metrics.value("celery_jobmon_events_received_total", type=t) or 0
                          for t in ("task-succeeded", "task-failed"))
    print(f"\nrabbitmq ttl expiry: {ADDS + FAILS} tasks, task-started seen "
          f"{_started_seen(metrics):.0f}, missed {missed:.0f}, ended by events "
          f"{ended_by_events:.0f}, repaired {repairs:.0f}")
    # Expired messages are no lost connection: detection comes from the heartbeats alone.
    assert metrics.value("celery_jobmon_event_gaps_total") == 0
    assert missed is not None and missed > 0  # the TTL dropped events for real
    assert ended_by_events + repairs == ADDS + FAILS  # each task counted once
    assert repairs >= missed
    for family in ("sent", "received", "started"):
        assert metrics.value(f"celery_task_{family}_total", **held_add) == ADDS, family
        assert metrics.value(f"celery_task_{family}_total", **held_fail) == FAILS, family
    assert metrics.value("celery_task_exceptions_total", name=FAIL, exception="ValueError") == FAILS
    assert metrics.value("celery_jobmon_repair_unresolved_tasks") == 0

    rows = wait_for(lambda: (r := _rows(exporter.history_url)) and sum(
        row["state_source"] == "result_backend" for row in r.values()) == repairs and r, 30,
        message="repaired rows written")
    assert sorted(rows) == sorted(sent)
    assert sorted((row["name"], row["state"]) for row in rows.values()) == sorted(
        [(ADD, "SUCCESS")] * ADDS + [(FAIL, "FAILURE")] * FAILS)
    assert sum(row["state_source"] == "events" for row in rows.values()) == ended_by_events
