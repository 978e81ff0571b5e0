"""An exporter restarted (SIGTERM) while a task runs: the task comes back from the history with
its series born at 0, so its failure is an ``increase()`` of 1 rather than a series that
appears at 1 (before: ``celery_task_failed_total`` had no sample until the failure, and
``increase()`` and CeleryTaskFirstFailure missed it). Real worker, real broker (a private
redis-server, a RabbitMQ vhost of its own), a real ``serve`` stopped and started again. The
task (:mod:`tests.support.gate_app`) fails when the test opens its gate, so that it runs across
the restart however slowly the exporters stop and start (``slow_fail(15)`` did not always).
"""

from __future__ import annotations

import pytest

from exporter.history import create_history_engine, get_execution
from tests.support.exporter import QUIET_POLLER
from tests.support.gate_app import GATED_FAIL
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TASK = {"name": GATED_FAIL, "queue_name": "b"}


def test_first_failure_after_a_restart_is_visible_to_increase(any_broker_url, tmp_path,
                                                              producer, start_exporter,
                                                              start_worker):
    history_url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    first = start_exporter(any_broker_url, *QUIET_POLLER, history_url=history_url)
    worker = start_worker(any_broker_url, "b", app="tests.support.gate_app")
    wait_for(lambda: first.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    gate = tmp_path / "gate"
    doomed = producer(any_broker_url).send_task(GATED_FAIL, (str(gate), "upstream gone"),
                                                queue="b")
    engine = create_history_engine(history_url)
    wait_for(lambda: (row := get_execution(engine, doomed.id)) and row.state == "STARTED", 30,
             message="started row written")
    first.stop()  # SIGTERM: the writer flushes before exit
    assert first.proc.returncode == 0, first.output()[-2000:]

    second = start_exporter(any_broker_url, *QUIET_POLLER, history_url=history_url)
    metrics = second.metrics()
    assert metrics.value("celery_task_running", **TASK) == 1
    for counter in ("succeeded", "failed", "retried", "lost"):
        assert metrics.value(f"celery_task_{counter}_total", **TASK) == 0, counter
    for state in ("SUCCESS", "FAILURE"):
        assert metrics.value("celery_task_runtime_seconds_count", **TASK, state=state) == 0
    assert metrics.value("celery_task_queue_wait_seconds_count", **TASK) == 0
    # The worker is rendered once it speaks again (its next heartbeat), never before.
    assert metrics.value("celery_worker_up", hostname=worker.hostname) in (None, 1)
    wait_for(lambda: second.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             30, message="worker up after the restart")
    assert second.metrics().value("celery_worker_missed_task_events_total",
                                  hostname=worker.hostname) == 0

    gate.touch()  # the task fails now
    metrics = wait_for(lambda: (m := second.metrics()).value(
        "celery_task_failed_total", **TASK) == 1 and m, 30,
        message=lambda: f"failure counted after restart\n{second.output()[-3000:]}")
    assert metrics.value("celery_task_succeeded_total", **TASK) == 0
    assert metrics.value("celery_task_running", **TASK) == 0
    assert metrics.value("celery_task_runtime_seconds_count", **TASK, state="FAILURE") == 1
    assert metrics.value("celery_task_runtime_seconds_count", **TASK, state="SUCCESS") == 0
    assert metrics.value("celery_task_queue_wait_seconds_count", **TASK) == 0  # started before
    assert metrics.value("celery_task_exceptions_total", name=GATED_FAIL,
                         exception="RuntimeError") == 1
    # Joined by the warmed index: only the task's own labels, no "unknown".
    assert metrics.series("celery_task_failed_total") == [TASK]
    engine.dispose()
