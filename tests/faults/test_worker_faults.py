"""Worker faults: a worker SIGKILLed mid-task (its tasks become LOST, and a bulk retry sends
them again when asked; also when it is started again under its name at once, but not when it
only reconnects after a broker outage), a worker shut down cold mid-task (its tasks are
CANCELLED), a hard time limit and a pool process killed during a task (both reported by Celery
as failures)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import Engine

from exporter.history import create_history_engine, get_execution
from tests.support.api import Api
from tests.support.exporter import QUIET_POLLER, Exporter, log_lines
from tests.support.waiting import assert_stays, wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration
SLEEP = "examples.tasks.sleep"
TIMEOUT = 3.0  # --worker-timeout; the lost grace defaults to it
TOKEN = "worker-faults-token-0123456789"


def _worker_up(exporter, worker) -> bool:
    return exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1


def _two_running(url: str, producer, start_exporter, start_worker, seconds: int = 60,
                 timeout: float = TIMEOUT) -> tuple[Exporter, Worker, list[str], Engine]:
    """An exporter (``--worker-timeout`` ``timeout``) and a prefork worker on queue a running
    two sleeps of ``seconds``: ``(exporter, worker, their task ids, the history engine)``."""
    exporter = start_exporter(url, "--worker-timeout", f"{timeout:g}s", "--api-token", TOKEN,
                              *QUIET_POLLER)
    worker = start_worker(url, "a")
    wait_for(lambda: _worker_up(exporter, worker), 60,
             message=lambda: f"worker up\n{worker.output()}")
    app = producer(url)
    doomed = [app.send_task(SLEEP, (seconds,), queue="a").id for _ in range(2)]
    engine = create_history_engine(exporter.history_url)
    wait_for(lambda: exporter.metrics().value("celery_task_running", name=SLEEP,
                                              queue_name="a") == 2, 30, message="both running")
    return exporter, worker, doomed, engine


def test_sigkilled_worker_takes_its_running_tasks_to_lost(own_redis_url, producer, start_exporter,
                                                          start_worker):
    exporter, worker, doomed, engine = _two_running(own_redis_url, producer, start_exporter,
                                                    start_worker)
    wait_for(lambda: all((row := get_execution(engine, t)) and row.state == "STARTED"
                         for t in doomed), 10, message="started rows")

    worker.kill()  # SIGKILL to the worker and its pool: no task or worker event any more
    killed = time.monotonic()
    wait_for(lambda: exporter.metrics().value("celery_worker_up",
                                              hostname=worker.hostname) == 0,
             TIMEOUT + 5, interval=0.1, message="worker down")
    metrics = exporter.metrics()
    # Down, but not yet past the grace period: still running, nothing lost.
    assert metrics.value("celery_task_running", name=SLEEP, queue_name="a") == 2
    assert metrics.value("celery_task_lost_total", name=SLEEP, queue_name="a") == 0

    wait_for(lambda: exporter.metrics().value("celery_task_lost_total", name=SLEEP,
                                              queue_name="a") == 2, TIMEOUT + 5,
             interval=0.1, message=lambda: f"tasks lost\n{exporter.output()[-2000:]}")
    assert time.monotonic() - killed >= TIMEOUT  # never before the worker timed out
    metrics = exporter.metrics()
    assert metrics.value("celery_task_running", name=SLEEP, queue_name="a") == 0
    assert metrics.value("celery_task_failed_total", name=SLEEP, queue_name="a") == 0
    assert metrics.value("celery_task_succeeded_total", name=SLEEP, queue_name="a") == 0
    assert len(log_lines(exporter.output(), f"worker gone with running tasks "
                                            f"hostname={worker.hostname} lost=2")) == 1

    def lost_rows():
        rows = [get_execution(engine, t) for t in doomed]
        return rows if all(r.state == "LOST" for r in rows) else None

    for row in wait_for(lost_rows, 10, message="LOST rows"):
        assert (row.name, row.queue, row.hostname) == (SLEEP, "a", worker.hostname)
        assert row.finished_at is not None and row.finished_at >= row.started_at
        assert row.runtime is None  # not measured: the worker died
    # Reported once: no second count on later checks.
    assert_stays(lambda: exporter.metrics().value("celery_task_lost_total", name=SLEEP,
                                                  queue_name="a") == 2, 1.5,
                 message="2 lost tasks, counted once")

    # The runbook's "retry the ones safe to run again", all at once (before: a bulk retry
    # selected FAILURE only; each LOST execution had to be retried by hand).
    api = Api(exporter.url, TOKEN)
    assert api.post("/tasks/retry", json={"name": SLEEP}).json()["matched"] == 0
    sent = api.post("/tasks/retry", json={"name": SLEEP, "include_no_outcome": True,
                                          "dry_run": False})
    assert sent.status_code == 202, sent.text
    items = sent.json()["items"]
    assert sorted(i["task_id"] for i in items) == sorted(doomed)
    assert [(i["outcome"], i["warnings"][0].startswith("the task is LOST: it ended with no "
                                                       "outcome")) for i in items] == [
        ("retried", True)] * 2
    for item in items:  # sent to queue a: a task-sent event, a row linked to the lost one
        row = wait_for(lambda new=item["new_task_id"]: get_execution(engine, new), 10,
                       message="the retry's row")
        assert (row.name, row.queue, row.retry_of, row.args) == (SLEEP, "a", item["task_id"],
                                                                 "(60,)")
    engine.dispose()


def test_a_worker_killed_and_started_again_under_its_name_loses_its_running_tasks(
        own_redis_url, producer, start_exporter, start_worker):
    # Before: back within the timeout (systemd Restart=, a pod with a fixed -n), the worker
    # never looked down: both tasks stayed STARTED and running for ever, lost 0.
    exporter, worker, doomed, engine = _two_running(own_redis_url, producer, start_exporter,
                                                    start_worker)
    worker.kill()
    again = start_worker(own_redis_url, "a", name=worker.hostname)
    labels = {"name": SLEEP, "queue_name": "a"}
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_task_lost_total", **labels) == 2 and m, 60,
        message=lambda: f"2 lost\n{exporter.output()[-3000:]}\n{again.output()[-2000:]}")
    assert metrics.value("celery_task_running", **labels) == 0
    assert metrics.value("celery_worker_up", hostname=worker.hostname) == 1  # never down
    assert len(log_lines(exporter.output(), f"worker restarted with running tasks "
                                            f"hostname={worker.hostname} lost=2")) == 1
    rows = wait_for(lambda: (found := [get_execution(engine, t) for t in doomed])
                    and all(r.state == "LOST" for r in found) and found, 10,
                    message="LOST rows")
    assert [r.hostname for r in rows] == [worker.hostname] * 2
    engine.dispose()


def test_a_worker_back_from_a_broker_outage_says_online_again_and_loses_nothing(
        redis_server, producer, start_exporter, start_worker):
    # The other side of the restart rule: after a broker outage Celery's worker sends
    # worker-online again from the same process, its running tasks still running
    # (worker_cancel_long_running_tasks_on_connection_loss is off by default) and counted in
    # its processed (2): they must not be taken for lost.
    exporter, worker, sleeping, engine = _two_running(
        redis_server.url(), producer, start_exporter, start_worker, seconds=10, timeout=20)
    labels = {"name": SLEEP, "queue_name": "a"}

    def online() -> float:
        return exporter.metrics().value("celery_jobmon_events_received_total",
                                        type="worker-online") or 0

    assert online() == 1
    redis_server.kill()
    time.sleep(1.0)
    redis_server.start()
    wait_for(lambda: online() == 2, 30, message=lambda: f"worker-online again\n"
             f"{exporter.output()[-2000:]}\n{worker.output()[-2000:]}")
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_task_succeeded_total", **labels) == 2 and m, 30,
        message=lambda: f"both succeeded\n{exporter.output()[-2000:]}")
    assert metrics.value("celery_task_lost_total", **labels) == 0
    assert log_lines(exporter.output(), "worker restarted") == []
    wait_for(lambda: [get_execution(engine, t).state for t in sleeping] == ["SUCCESS"] * 2,
             10, message="SUCCESS rows")
    engine.dispose()


def test_a_cold_shutdown_cancels_the_running_tasks_and_they_are_counted(
        own_redis_url, producer, start_exporter, start_worker):
    # Before: task-cancelled had no counter: the two executions left celery_task_running and
    # were counted nowhere (started 2, ended 0), so nothing could alert on them.
    exporter, worker, doomed, engine = _two_running(own_redis_url, producer, start_exporter,
                                                    start_worker)

    worker.quit()  # SIGQUIT: Celery kills the running tasks and sends task-cancelled for each
    labels = {"name": SLEEP, "queue_name": "a"}
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_task_cancelled_total", **labels) == 2 and m, 30,
        message=lambda: f"2 cancelled\n{exporter.output()[-2000:]}\n{worker.output()[-2000:]}")
    assert metrics.value("celery_task_running", **labels) == 0
    assert metrics.value("celery_task_started_total", **labels) == 2
    for ended in ("succeeded", "failed", "retried", "revoked", "rejected", "lost"):
        assert (metrics.value(f"celery_task_{ended}_total", **labels) or 0) == 0, ended

    def cancelled_rows():
        rows = [get_execution(engine, t) for t in doomed]
        return rows if all(r is not None and r.state == "CANCELLED" for r in rows) else None

    for row in wait_for(cancelled_rows, 10, message="CANCELLED rows"):
        assert (row.name, row.queue, row.hostname) == (SLEEP, "a", worker.hostname)
    # Not running any more when the worker times out: not lost as well.
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname)
             == 0, 2 * TIMEOUT + 5, message="worker down")
    assert_stays(lambda: exporter.metrics().value("celery_task_lost_total", **labels) == 0,
                 TIMEOUT + 1, message="nothing lost")
    engine.dispose()


def test_time_limit_and_killed_pool_process_are_failures_with_their_exception(
        own_redis_url, producer, start_exporter, start_worker):
    exporter = start_exporter(own_redis_url, *QUIET_POLLER)
    worker = start_worker(own_redis_url, "a")
    wait_for(lambda: _worker_up(exporter, worker), 60,
             message=lambda: f"worker up\n{worker.output()}")
    app = producer(own_redis_url)
    engine = create_history_engine(exporter.history_url)

    limited = app.send_task(SLEEP, (30,), queue="a", time_limit=1).id
    row = wait_for(lambda: (r := get_execution(engine, limited)) and r.state == "FAILURE" and r,
                   30, message=lambda: f"time limit failure\n{worker.output()[-2000:]}")
    assert (row.exception_type, row.name, row.queue) == ("TimeLimitExceeded", SLEEP, "a")
    assert 1.0 <= row.runtime < 3.0

    victim = app.send_task(SLEEP, (30,), queue="a").id
    wait_for(lambda: (r := get_execution(engine, victim)) and r.state == "STARTED", 30,
             message="victim started")
    active = wait_for(lambda: app.control.inspect([worker.hostname], timeout=2).active(), 10,
                      message="inspect active")
    pid = next(task["worker_pid"] for task in active[worker.hostname] if task["id"] == victim)
    os.kill(pid, signal.SIGKILL)  # the pool process, not the worker
    row = wait_for(lambda: (r := get_execution(engine, victim)) and r.state == "FAILURE" and r,
                   30, message=lambda: f"WorkerLostError\n{worker.output()[-2000:]}")
    assert (row.exception_type, row.name, row.queue) == ("WorkerLostError", SLEEP, "a")
    assert row.exception_message.startswith("Worker exited prematurely: signal 9 (SIGKILL)")

    metrics = exporter.metrics()
    assert metrics.value("celery_task_failed_total", name=SLEEP, queue_name="a") == 2
    # Celery reports a hard time limit twice (timeout handler, then the pool): counted once.
    assert metrics.value("celery_jobmon_events_received_total", type="task-failed") == 2
    assert metrics.value("celery_jobmon_events_malformed_total", reason="duplicate") == 1
    assert metrics.value("celery_task_exceptions_total", name=SLEEP,
                         exception="TimeLimitExceeded") == 1
    assert metrics.value("celery_task_exceptions_total", name=SLEEP,
                         exception="WorkerLostError") == 1
    assert metrics.value("celery_task_runtime_seconds_count", name=SLEEP, queue_name="a",
                         state="FAILURE") == 2
    assert metrics.value("celery_task_running", name=SLEEP, queue_name="a") == 0
    # The worker itself stayed up: nothing lost.
    assert metrics.value("celery_task_lost_total", name=SLEEP, queue_name="a") == 0
    assert _worker_up(exporter, worker)
    engine.dispose()
