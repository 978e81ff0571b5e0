"""Crash and restart: SIGKILL keeps what was committed and the restarted exporter still joins
late events by name and queue (index warmed from the history); SIGTERM writes everything
queued before exit.

Counters are per process: after a restart every counter starts from 0 (Prometheus' `rate()`
and `increase()` handle the reset); the history is the record that survives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from exporter.history import create_history_engine, get_execution
from exporter.history.orm import TASK_EXECUTION
from tests.support.exporter import QUIET_POLLER, log_lines
from tests.support.gate_app import GATED_SLEEP
from tests.support.paths import ROOT
from tests.support.waiting import wait_for

sys.path.insert(0, str(ROOT / "benchmarks"))
from eventload import pattern_subscribers, render, with_new_ids  # noqa: E402

pytestmark = pytest.mark.integration
ADD, SLEEP = "examples.tasks.add", "examples.tasks.sleep"
GATED = {"name": GATED_SLEEP, "queue_name": "a"}


def _states(engine) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(connection.execute(select(TASK_EXECUTION.c.task_id,
                                              TASK_EXECUTION.c.state)).all())


def test_sigkill_keeps_committed_rows_and_restart_joins_late_events(own_redis_url, tmp_path,
                                                                    producer, start_exporter,
                                                                    start_worker):
    history_url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    first = start_exporter(own_redis_url, *QUIET_POLLER, history_url=history_url)
    worker = start_worker(own_redis_url, "a", app="tests.support.gate_app")
    wait_for(lambda: first.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(own_redis_url)
    done = [app.send_task(ADD, (i, i), queue="a").id for i in range(2)]
    engine = create_history_engine(history_url)
    wait_for(lambda: all(_states(engine).get(t) == "SUCCESS" for t in done), 30,
             message="finished rows")
    # They run until the gate opens, after the restart: a fixed sleep (6 s, then 12 s) ended
    # while no exporter listened on a loaded machine, and nothing could repair it.
    gate = tmp_path / "gate"
    sent_at = time.monotonic()
    running = [app.send_task(GATED_SLEEP, (str(gate),), queue="a").id for _ in range(2)]
    wait_for(lambda: all(_states(engine).get(t) == "STARTED" for t in running), 30,
             message="started rows committed")
    started_by = time.monotonic()
    before = {t: get_execution(engine, t) for t in done}

    first.proc.kill()  # SIGKILL: no drain, no goodbye
    first.proc.wait()
    second = start_exporter(own_redis_url, *QUIET_POLLER, history_url=history_url)
    metrics = second.metrics()
    assert metrics.value("celery_jobmon_tasks_in_memory") == 2  # the two running, warmed
    # Counters start from 0, born by the warm-up so that the ends are increase()s of 2.
    assert metrics.value("celery_task_succeeded_total", **GATED) == 0
    # Warmed as running: "Running now" does not read 0 while they run (it did before).
    assert metrics.value("celery_task_running", **GATED) == 2

    opened_at = time.monotonic()
    gate.touch()  # both succeed now
    wait_for(lambda: second.metrics().value("celery_task_succeeded_total", **GATED) == 2, 30,
             message=lambda: f"late successes joined\n{second.output()[-3000:]}")
    wait_for(lambda: all(_states(engine).get(t) == "SUCCESS" for t in running), 10,
             message="rows finished after the restart")
    finished_by = time.monotonic()
    metrics = second.metrics()
    # Joined by the warmed index: no "unknown" labels anywhere.
    assert metrics.series("celery_task_succeeded_total") == [GATED]
    assert metrics.value("celery_task_runtime_seconds_count", **GATED, state="SUCCESS") == 2
    assert metrics.value("celery_task_running", **GATED) == 0
    for task_id in running:
        row = get_execution(engine, task_id)
        assert (row.name, row.queue, row.state, row.hostname) == (GATED_SLEEP, "a", "SUCCESS",
                                                                  worker.hostname)
        # The worker's runtime, across the kill and the restart: it started before the rows
        # were seen STARTED and ended after the gate opened, within what this test watched.
        assert opened_at - started_by <= row.runtime <= finished_by - sent_at
    # Rows committed before the kill are kept as they were; one row per task id.
    assert {t: get_execution(engine, t) for t in done} == before
    with engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(TASK_EXECUTION))
        assert count.scalar_one() == 4
    engine.dispose()


LOCKER = r"""
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("COMMIT")
"""



def test_a_worker_that_died_while_the_exporter_was_down_loses_its_warmed_tasks(
        own_redis_url, tmp_path, producer, start_exporter, start_worker):
    history_url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    fast = ("--worker-timeout", "2s", "--task-lost-grace", "1s", *QUIET_POLLER)
    first = start_exporter(own_redis_url, *fast, history_url=history_url)
    worker = start_worker(own_redis_url, "a")
    wait_for(lambda: first.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    task_id = producer(own_redis_url).send_task(SLEEP, (60,), queue="a").id
    engine = create_history_engine(history_url)
    wait_for(lambda: _states(engine).get(task_id) == "STARTED", 30, message="started row")
    first.stop()
    worker.kill()  # dies while no exporter watches: no event will ever end its task
    second = start_exporter(own_redis_url, *fast, history_url=history_url)
    assert second.metrics().value("celery_task_running", name=SLEEP, queue_name="a") == 1
    metrics = wait_for(lambda: (m := second.metrics()).value(
        "celery_task_lost_total", name=SLEEP, queue_name="a") == 1 and m, 30,
        message=lambda: f"warmed task lost\n{second.output()[-3000:]}")
    assert metrics.value("celery_task_running", name=SLEEP, queue_name="a") == 0
    # The worker was never heard from by this exporter: no worker_up series for it.
    assert metrics.value("celery_worker_up", hostname=worker.hostname) is None
    wait_for(lambda: _states(engine).get(task_id) == "LOST", 10, message="row LOST")

def test_sigterm_writes_every_queued_row_before_exit(private_redis, tmp_path, start_exporter):
    server = private_redis()
    template = render(server, tasks=1000)
    path = tmp_path / "history.sqlite3"
    exporter = start_exporter(server.url(0), "--no-enable-events", *QUIET_POLLER,
                              history_url=f"sqlite:///{path}")
    wait_for(lambda: pattern_subscribers(server) == 1, 10, message="exporter subscribed")
    # The database is locked while the flood arrives: every row is still in the writer's
    # memory (queued or merged) when SIGTERM comes.
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
    try:
        pipe = server.client().pipeline(transaction=False)
        for copy in (1, 2):
            for suffix, data in with_new_ids(template, copy):
                pipe.publish(f"/0.{suffix}", data)
            pipe.execute()
        events = 2 * len(template.messages)
        wait_for(lambda: sum(
            exporter.metrics().value("celery_jobmon_events_received_total", **s)
            for s in exporter.metrics().series("celery_jobmon_events_received_total"))
            == events, 30, message="every event received")
        metrics = exporter.metrics()
        assert metrics.value("celery_jobmon_history_rows_written_total") == 0
        held = (metrics.value("celery_jobmon_history_pending_rows")
                + metrics.value("celery_jobmon_history_queue_depth"))
        assert held > 0
    finally:
        locker.communicate("release\n", timeout=10)
    os.kill(exporter.proc.pid, signal.SIGTERM)
    assert exporter.proc.wait(30) == 0
    output = exporter.output()
    assert log_lines(output, "history writer stopped drained=True")
    assert not log_lines(output, "history records lost at stop")
    engine = create_history_engine(f"sqlite:///{path}")
    states = _states(engine)
    assert len(states) == 2 * template.tasks
    assert set(states.values()) == {"SUCCESS", "FAILURE"}
    engine.dispose()
