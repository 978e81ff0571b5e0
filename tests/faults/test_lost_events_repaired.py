"""Events lost for real are repaired from the sources of truth: a real worker runs tasks the
exporter saw sent while the exporter cannot hear it (its Redis subscription cut while it is
frozen; the exporter stopped and started again), and afterwards the counters and the history
rows are exact, taken from the result backend (Redis, then Celery's database backend)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select

from exporter.history import create_history_engine
from exporter.history.orm import TASK_EXECUTION
from tests.support.api import Api
from tests.support.exporter import QUIET_POLLER, Exporter, Metrics
from tests.support.waiting import wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration
ADD = "examples.tasks.add"
FAIL = "examples.tasks.fail_value"
#: Sent to a queue the worker does not consume yet: the exporter sees them sent, then the
#: worker is told to consume it (add_consumer) while the exporter cannot hear it.
HELD = "held"
REPAIR = ("--repair-interval", "1s", "--reconnect-max-interval", "1s", *QUIET_POLLER)
TOKEN = "lost-events-repair-token-0123456789"


def _worker_total(app: Celery, worker: Worker) -> int:
    stats = app.control.inspect(timeout=1.0, destination=[worker.hostname]).stats() or {}
    return sum((stats.get(worker.hostname) or {}).get("total", {}).values())


def _send_held(app: Celery, adds: int, failures: int) -> dict[str, str]:
    """Send ``adds`` adds and ``failures`` failing tasks to the held queue; ``{id: name}``."""
    sent = {app.send_task(ADD, (i, 1), queue=HELD).id: ADD for i in range(adds)}
    sent.update({app.send_task(FAIL, ("lost in a gap",), queue=HELD).id: FAIL
                 for _ in range(failures)})
    return sent


def _worker_idle(app: Celery, worker: Worker) -> bool:
    """The worker answers and runs nothing: every task it took has sent its last event (a
    request leaves ``active`` in the handler that publishes its task-succeeded/-failed)."""
    active = app.control.inspect(timeout=1.0, destination=[worker.hostname]).active() or {}
    return active.get(worker.hostname) == []


def _release(app: Celery, worker: Worker, total: int) -> None:
    """Let the worker take the held queue and wait until it ran ``total`` tasks in all and
    finished them (the broadcast is repeated until the worker answers: a cut pub/sub
    connection makes it miss broadcasts until it has reconnected). ``stats()["total"]``
    counts a task once a pool process took it, so it alone let the last outcome be published
    after the exporter was let go again.
    """
    wait_for(lambda: app.control.add_consumer(HELD, destination=[worker.hostname], reply=True,
                                              timeout=1), 30, message="add_consumer answered")
    wait_for(lambda: _worker_total(app, worker) == total and _worker_idle(app, worker), 60,
             message=lambda: f"the worker ran {total} tasks\n{worker.output()[-2000:]}")


def _started_seen(metrics: Metrics) -> float:
    return metrics.value("celery_jobmon_events_received_total", type="task-started") or 0.0


def _wait_repaired_exactly(exporter: Exporter, worker: Worker, adds: int,
                           fails: int) -> Metrics:
    """Wait until the held adds succeeded and failures failed by the counters, no repair is
    pending, and the worker's missed task-started events are exactly those not seen."""
    def repaired() -> Metrics | None:
        m = exporter.metrics()
        done = (m.value("celery_task_succeeded_total", name=ADD, queue_name=HELD) == adds
                and m.value("celery_task_failed_total", name=FAIL, queue_name=HELD) == fails
                and m.value("celery_jobmon_repair_pending_tasks") == 0
                and m.value("celery_worker_missed_task_events_total", hostname=worker.hostname)
                == adds + fails - _started_seen(m))
        return m if done else None

    return wait_for(repaired, 60, message=lambda: f"repaired\n{exporter.output()[-4000:]}")


def _rows(history_url: str) -> dict[str, dict]:
    engine = create_history_engine(history_url)
    try:
        with engine.connect() as connection:
            return {row.task_id: row._asdict()
                    for row in connection.execute(select(TASK_EXECUTION))}
    finally:
        engine.dispose()


def _repairs(metrics: Metrics, state: str) -> float | None:
    return metrics.value("celery_jobmon_repairs_total", state=state, source="result_backend")


def _assert_held_rows_repaired(rows: dict[str, dict], sent: dict[str, str],
                               hostname: str | None) -> None:
    """Rows of the held tasks: their outcome from the result backend, which says so;
    ``hostname``: the worker (stored with result_extended), else ``None`` (no event said).
    """
    for task_id, name in sent.items():
        row = rows[task_id]
        expected = ("SUCCESS", None) if name == ADD else ("FAILURE", "ValueError")
        assert (row["state"], row["exception_type"]) == expected, row
        assert (row["name"], row["queue"], row["hostname"]) == (name, HELD, hostname), row
        assert row["state_source"] == "result_backend", row
        assert row["finished_at"] == row["state_ts"] and row["sent_at"] is not None, row
        if name == FAIL:
            assert row["exception_message"] == "lost in a gap", row
            assert row["traceback"].rstrip().endswith("ValueError: lost in a gap"), row


def test_a_cut_subscription_is_repaired_from_a_redis_result_backend(
        private_redis, producer: Callable[[str], Celery], start_exporter, start_worker):
    server = private_redis()
    url, backend = server.url(0), server.url(1)
    exporter: Exporter = start_exporter(url, "--result-backend", backend, "--api-token", TOKEN,
                                        *REPAIR)
    worker: Worker = start_worker(url, "a", env={"CELERY_RESULT_BACKEND": backend,
                                                 "CELERY_RESULT_EXTENDED": "1"})
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(url)
    seen = [app.send_task(ADD, (i, i), queue="a").id for i in range(5)]
    sent = _send_held(app, adds=30, failures=10)
    wait_for(lambda: (m := exporter.metrics()).value(
        "celery_task_succeeded_total", name=ADD, queue_name="a") == 5 and m.value(
        "celery_task_sent_total", name=ADD, queue_name=HELD) == 30 and m.value(
        "celery_task_sent_total", name=FAIL, queue_name=HELD) == 10, 30,
        message="5 run and 40 held tasks seen")

    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        server.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        _release(app, worker, 45)
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)

    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_worker_missed_task_events_total", hostname=worker.hostname) == 40
        and _repairs(m, "SUCCESS") == 30 and _repairs(m, "FAILURE") == 10 and m, 60,
        message=lambda: f"40 missed, 40 repaired\n{exporter.output()[-4000:]}")
    held_add, held_fail = {"name": ADD, "queue_name": HELD}, {"name": FAIL, "queue_name": HELD}
    for family, add, fail in (("sent", 30, 10), ("received", 30, 10), ("started", 30, 10),
                              ("succeeded", 30, 0), ("failed", 0, 10)):
        assert metrics.value(f"celery_task_{family}_total", **held_add) == add, family
        assert metrics.value(f"celery_task_{family}_total", **held_fail) == fail, family
    assert metrics.value("celery_task_succeeded_total", name=ADD, queue_name="a") == 5
    assert metrics.value("celery_task_running", **held_add) is None  # never seen running
    assert metrics.value("celery_task_exceptions_total", name=FAIL, exception="ValueError") == 10
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
    assert metrics.value("celery_jobmon_repair_unresolved_tasks") == 0
    assert metrics.value("celery_jobmon_repair_pending_tasks") == 0
    assert metrics.total("celery_jobmon_repairs_total", source="workers") == 0
    assert metrics.value("celery_jobmon_repair_source_errors_total",
                         source="result_backend") == 0

    rows = wait_for(lambda: (r := _rows(exporter.history_url)) and sum(
        row["state_source"] == "result_backend" for row in r.values()) == 40 and r, 30,
        message="40 repaired rows written")
    assert len(rows) == 45
    _assert_held_rows_repaired(rows, sent, worker.hostname)
    for task_id in seen:
        assert (rows[task_id]["state"], rows[task_id]["state_source"]) == ("SUCCESS", "events")
    api = Api(exporter.url, TOKEN)
    detail = api.get(f"/tasks/{next(iter(sent))}").json()
    assert (detail["state"], detail["state_source"]) == ("SUCCESS", "result_backend")
    assert api.get(f"/tasks/{seen[0]}").json()["state_source"] == "events"


def test_a_restarted_exporter_repairs_what_finished_meanwhile_from_a_database_backend(
        own_redis_url: str, producer: Callable[[str], Celery], start_exporter, start_worker,
        tmp_path: Path):
    backend = f"db+sqlite:///{tmp_path / 'results.sqlite3'}"
    history_url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    options = ("--result-backend", backend, *REPAIR)
    first: Exporter = start_exporter(own_redis_url, *options, history_url=history_url)
    worker: Worker = start_worker(own_redis_url, "a", env={"CELERY_RESULT_BACKEND": backend})
    app = producer(own_redis_url)
    sent = _send_held(app, adds=20, failures=5)
    wait_for(lambda: (r := _rows(history_url)) and len(r) == 25 and all(
        row["state"] == "PENDING" for row in r.values()), 30, message="25 PENDING rows")
    wait_for(lambda: first.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    first.stop()
    assert first.proc.returncode == 0

    _release(app, worker, 25)
    second: Exporter = start_exporter(own_redis_url, *options, history_url=history_url)
    metrics = wait_for(lambda: (m := second.metrics()) and _repairs(m, "SUCCESS") == 20
                       and _repairs(m, "FAILURE") == 5 and m, 60,
                       message=lambda: f"25 repaired\n{second.output()[-4000:]}")
    held_add, held_fail = {"name": ADD, "queue_name": HELD}, {"name": FAIL, "queue_name": HELD}
    # Counters start again at the restart; the repair counts what finished meanwhile, once.
    for family, add, fail in (("received", 20, 5), ("started", 20, 5), ("succeeded", 20, 0),
                              ("failed", 0, 5)):
        assert metrics.value(f"celery_task_{family}_total", **held_add) == add, family
        assert metrics.value(f"celery_task_{family}_total", **held_fail) == fail, family
    assert metrics.value("celery_task_sent_total", **held_add) is None
    assert metrics.value("celery_task_exceptions_total", name=FAIL, exception="ValueError") == 5
    assert metrics.value("celery_jobmon_repair_unresolved_tasks") == 0
    assert metrics.value("celery_jobmon_tasks_in_memory") == 25

    rows = wait_for(lambda: (r := _rows(history_url)) and all(
        row["state_source"] == "result_backend" for row in r.values()) and r, 30,
        message="25 repaired rows written")
    assert len(rows) == 25
    _assert_held_rows_repaired(rows, sent, None)


def test_without_a_result_backend_the_lost_outcomes_are_counted_as_unresolved(
        private_redis, producer: Callable[[str], Celery], start_exporter, start_worker):
    server = private_redis()
    url = server.url(0)
    exporter: Exporter = start_exporter(url, *REPAIR)
    worker: Worker = start_worker(url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(url)
    _send_held(app, adds=15, failures=5)
    wait_for(lambda: exporter.metrics().total("celery_task_sent_total", queue_name=HELD) == 20,
             30, message="20 held tasks seen")

    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        server.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        _release(app, worker, 20)
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)

    # Detection still works; nothing knows the outcomes: every one is counted as unresolved.
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_worker_missed_task_events_total", hostname=worker.hostname) == 20
        and m.value("celery_jobmon_repair_unresolved_tasks") == 20 and m, 60,
        message=lambda: f"20 missed, 20 unresolved\n{exporter.output()[-4000:]}")
    assert metrics.total("celery_task_sent_total", queue_name=HELD) == 20
    for family in ("received", "started", "succeeded", "failed"):
        assert metrics.total(f"celery_task_{family}_total", queue_name=HELD) == 0, family
    assert metrics.total("celery_jobmon_repairs_total") == 0
    assert metrics.series("celery_jobmon_repairs_total") == [
        {"state": "RECEIVED", "source": "workers"}, {"state": "STARTED", "source": "workers"}]
    rows = _rows(exporter.history_url)
    assert sorted(row["state"] for row in rows.values()) == ["PENDING"] * 20
