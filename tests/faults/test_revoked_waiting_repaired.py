"""A waiting task revoked while the exporter could not hear it, repaired once: a real worker
acknowledges the revoke of a task waiting in a queue it does not consume yet, and Celery 5.7
stores REVOKED in the result backend at once (before any ``task-revoked``). After an event gap
the repairer takes that REVOKED (no worker runs the task), the cancel request's outcome is
``honoured``; when the worker later takes the message, discards it and sends ``task-revoked``,
nothing is counted twice.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from celery import Celery
from sqlalchemy import select

from exporter.history import create_history_engine
from exporter.history.orm import ACTION_AUDIT
from tests.faults.test_lost_events_repaired import ADD, HELD, REPAIR, TOKEN, _rows
from tests.support.api import Api
from tests.support.exporter import Exporter
from tests.support.waiting import assert_stays, wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration


def _audit(history_url: str, task_id: str) -> list[tuple[str, dict]]:
    engine = create_history_engine(history_url)
    try:
        with engine.connect() as connection:
            return [(action, detail) for action, detail in connection.execute(
                select(ACTION_AUDIT.c.action, ACTION_AUDIT.c.detail)
                .where(ACTION_AUDIT.c.task_id == task_id).order_by(ACTION_AUDIT.c.id))]
    finally:
        engine.dispose()


def test_a_waiting_task_revoked_during_a_gap_is_repaired_once_and_its_late_event_not_counted(
        private_redis, producer: Callable[[str], Celery], start_exporter, start_worker):
    server = private_redis()
    url, backend = server.url(0), server.url(1)
    exporter: Exporter = start_exporter(url, "--result-backend", backend, "--api-token", TOKEN,
                                        *REPAIR)
    worker: Worker = start_worker(url, "a", env={"CELERY_RESULT_BACKEND": backend})
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(url)
    task_id = app.send_task(ADD, (1, 2), queue=HELD).id
    held = {"name": ADD, "queue_name": HELD}
    wait_for(lambda: exporter.metrics().value("celery_task_sent_total", **held) == 1, 30,
             message="the waiting task seen sent")
    api = Api(exporter.url, TOKEN)
    answer = api.post(f"/tasks/{task_id}/cancel")
    assert answer.status_code == 202, answer.text
    assert answer.json()["acknowledged_by"] == [worker.hostname]
    reader = Celery("reader", backend=backend, set_as_current=False)
    try:  # stored by the acknowledging worker, before any task-revoked
        assert reader.AsyncResult(task_id).state == "REVOKED"
    finally:
        reader.close()

    # A gap: everything the exporter holds in progress is checked with the sources.
    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        server.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_jobmon_repairs_total", state="REVOKED", source="result_backend") == 1 and m, 30,
        message=lambda: f"the revoke repaired\n{exporter.output()[-3000:]}")
    assert metrics.value("celery_task_revoked_total", **held) == 1
    assert metrics.value("celery_task_received_total", **held) is None  # never received
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
    row = wait_for(lambda: (r := _rows(exporter.history_url)[task_id])["state"] == "REVOKED"
                   and r, 15, message="the row REVOKED")
    assert row["state_source"] == "result_backend"
    outcome = wait_for(lambda: len(rows := _audit(exporter.history_url, task_id)) == 2
                       and rows[1], 15, message="the cancel outcome recorded")
    assert (outcome[0], outcome[1]["outcome"], outcome[1]["state"]) == (
        "cancel-outcome", "honoured", "REVOKED")

    # The worker takes the queue, discards the message and says so: not counted again.
    wait_for(lambda: app.control.add_consumer(HELD, destination=[worker.hostname], reply=True,
                                              timeout=1), 30, message="add_consumer answered")
    wait_for(lambda: "Discarding revoked task" in worker.output(), 30,
             message="the worker discarding the revoked task")
    wait_for(lambda: exporter.metrics().value("celery_jobmon_events_malformed_total",
                                              reason="repaired") == 1, 15,
             message="the late task-revoked taken as repaired")
    metrics = exporter.metrics()
    assert metrics.value("celery_task_revoked_total", **held) == 1
    assert metrics.value("celery_jobmon_repairs_total", state="REVOKED",
                         source="result_backend") == 1
    wait_for(lambda: _rows(exporter.history_url)[task_id]["state_source"] == "events", 15,
             message="the row taking the worker's task-revoked")
    assert_stays(lambda: len(_audit(exporter.history_url, task_id)) == 2, 1.0,
                 message="one cancel outcome")
