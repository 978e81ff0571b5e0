"""`serve` writes the execution history: exact rows on SQLite and PostgreSQL, joins that
survive an exporter restart, and no loss across a database outage."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from exporter.history import create_history_engine, get_execution, list_executions
from exporter.history.orm import TASK_EXECUTION
from tests.support.gate_app import GATED_FAIL
from tests.support.network import TcpProxy
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
SLEEP = "examples.tasks.sleep"


def _rows(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(TASK_EXECUTION)).scalar_one()


def test_scenario_rows_are_exact(redis_url, history_url, producer, start_exporter,
                                 start_worker):
    exporter = start_exporter(redis_url, history_url=history_url)
    worker = start_worker(redis_url)
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(redis_url)
    ok = app.send_task(SLEEP, kwargs={"seconds": 0.3}, queue="a")
    bad = app.send_task("examples.tasks.fail_value", ("naïve amount ☃",), queue="b")
    key = app.send_task("examples.tasks.fail_key", ("customer",), queue="b")
    flaky = app.send_task("examples.tasks.flaky", (2,), queue="a")
    ids = [ok.id, bad.id, key.id, flaky.id]
    engine = create_history_engine(history_url)

    def finished():
        rows = [get_execution(engine, task_id) for task_id in ids]
        done = all(r is not None and r.state in ("SUCCESS", "FAILURE") for r in rows)
        return rows if done else None

    row_ok, row_bad, row_key, row_flaky = wait_for(finished, 60, message="rows written")
    assert (row_ok.name, row_ok.state, row_ok.queue, row_ok.hostname) == (
        SLEEP, "SUCCESS", "a", worker.hostname)
    assert row_ok.kwargs == "{'seconds': 0.3}" and row_ok.args == "()"
    assert 0.3 <= row_ok.runtime < 1.0
    # The producer stamps task-sent after publishing the message: the worker may be quicker.
    assert abs(row_ok.received_at - row_ok.sent_at) < 1.0
    assert row_ok.received_at <= row_ok.started_at <= row_ok.finished_at
    assert row_ok.result == "0.3"

    assert (row_bad.state, row_bad.queue, row_bad.exception_type) == ("FAILURE", "b",
                                                                      "ValueError")
    assert row_bad.exception_message == "naïve amount ☃"
    assert row_bad.args == "('naïve amount ☃',)"
    assert row_bad.traceback.startswith("Traceback (most recent call last):")
    assert row_bad.traceback.rstrip().endswith("ValueError: naïve amount ☃")
    assert 'raise ValueError(message)' in row_bad.traceback
    assert row_bad.runtime is not None and 0 <= row_bad.runtime < 1.0

    assert (row_key.state, row_key.exception_type) == ("FAILURE", "KeyError")
    assert row_key.exception_message == "customer"

    assert (row_flaky.state, row_flaky.retries, row_flaky.queue) == ("SUCCESS", 2, "a")
    assert row_flaky.result == "3"

    failed = list_executions(engine, states=["FAILURE"], limit=10)
    assert {row.task_id for row in failed.items} == {bad.id, key.id}
    metrics = exporter.metrics()
    assert metrics.value("celery_jobmon_history_enabled") == 1
    assert metrics.value("celery_jobmon_history_write_errors_total") == 0
    assert metrics.value("celery_jobmon_history_dropped_total", reason="queue_full_failure") == 0
    engine.dispose()


@pytest.fixture
def own_redis_url() -> Iterator[str]:
    """A broker URL on a private ``redis-server`` of this test (removed afterwards)."""
    server = PrivateRedis()
    server.start()
    yield server.url(0)
    server.remove()


def test_failure_after_an_exporter_restart_keeps_name_and_queue(own_redis_url, tmp_path,
                                                                producer, start_exporter,
                                                                start_worker):
    history_url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    first = start_exporter(own_redis_url, history_url=history_url)
    worker = start_worker(own_redis_url, app="tests.support.gate_app")
    wait_for(lambda: first.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(own_redis_url)
    # It fails when the gate opens, after the restart: slow_fail(8), then slow_fail(15), ended
    # while no exporter listened on a loaded machine (load 11).
    gate = tmp_path / "gate"
    sent_at = time.monotonic()
    doomed = app.send_task(GATED_FAIL, (str(gate), "upstream gone"), queue="b")
    engine = create_history_engine(history_url)
    wait_for(lambda: (row := get_execution(engine, doomed.id)) and row.state == "STARTED", 30,
             message="started row written")
    started_by = time.monotonic()
    first.stop()  # SIGTERM: the writer flushes before exit
    assert first.proc.returncode == 0, first.output()[-2000:]
    assert "logger=exporter.app stopped" in first.output()

    second = start_exporter(own_redis_url, history_url=history_url)
    assert second.metrics().value("celery_jobmon_tasks_in_memory") == 1  # warmed
    opened_at = time.monotonic()
    gate.touch()  # the task fails now
    wait_for(lambda: second.metrics().value("celery_task_failed_total", name=GATED_FAIL,
                                            queue_name="b") == 1, 30,
             message=lambda: f"failure counted after restart\n{second.output()}")
    metrics = second.metrics()
    assert metrics.value("celery_task_exceptions_total", name=GATED_FAIL,
                         exception="RuntimeError") == 1
    assert metrics.series("celery_task_failed_total") == [
        {"name": GATED_FAIL, "queue_name": "b"}]
    row = wait_for(lambda: (r := get_execution(engine, doomed.id)) and r.state == "FAILURE"
                   and r, 10, message="failure row")
    finished_by = time.monotonic()
    assert (row.name, row.queue, row.exception_type, row.exception_message) == (
        GATED_FAIL, "b", "RuntimeError", "upstream gone")
    # The worker's runtime across the restart: started before the STARTED row was seen, ended
    # after the gate opened, within what this test watched.
    assert opened_at - started_by <= row.runtime <= finished_by - sent_at
    engine.dispose()


def test_database_outage_loses_no_row(redis_url, empty_pg_url, producer, start_exporter,
                                      start_worker):
    proxy = TcpProxy()
    proxy.start()
    via_proxy = make_url(empty_pg_url).set(port=proxy.port).render_as_string(
        hide_password=False)
    engine = create_history_engine(empty_pg_url)
    try:
        exporter = start_exporter(redis_url, history_url=via_proxy)
        worker = start_worker(redis_url, "a")
        wait_for(lambda: exporter.metrics().value("celery_worker_up",
                                                  hostname=worker.hostname) == 1, 60,
                 message="worker up")
        # The worker's queue known (inspect active_queues): a task-received that overtakes its
        # task-sent (producer and worker events race through the broker) still names queue a.
        wait_for(lambda: exporter.metrics().value("celery_queue_consumers", queue_name="a")
                 == 1, 30, message="the worker's queues polled")
        app = producer(redis_url)
        for i in range(3):
            app.send_task("examples.tasks.add", (i, i), queue="a")
        wait_for(lambda: _rows(engine) == 3, 30, message="first rows")

        proxy.close()  # the database is gone for the exporter
        for i in range(4):
            app.send_task("examples.tasks.add", (i, i), queue="a")
        try:
            wait_for(lambda: exporter.metrics().value(
                "celery_task_succeeded_total", name="examples.tasks.add", queue_name="a") == 7,
                30, message="metrics keep counting")
        except AssertionError as exc:  # say what was counted, and what both processes said
            succeeded = exporter.metrics().value("celery_task_succeeded_total",
                                                 name="examples.tasks.add", queue_name="a")
            raise AssertionError(f"{exc}; succeeded={succeeded}\nexporter:\n"
                                 f"{exporter.output()[-3000:]}\nworker:\n"
                                 f"{worker.output()[-3000:]}") from None
        wait_for(lambda: exporter.metrics().value(
            "celery_jobmon_history_write_errors_total") >= 1, 30, message="write errors counted")
        metrics = exporter.metrics()
        assert metrics.value("celery_jobmon_history_consecutive_write_failures") >= 1
        assert _rows(engine) == 3

        proxy.start()
        wait_for(lambda: _rows(engine) == 7, 60, message=lambda: f"rows written after the outage\n"
                                                      f"{exporter.output()[-3000:]}")
        wait_for(lambda: exporter.metrics().value(
            "celery_jobmon_history_consecutive_write_failures") == 0, 30, message="healthy again")
        metrics = exporter.metrics()
        assert sum(metrics.value("celery_jobmon_history_dropped_total", **labels)
                   for labels in metrics.series("celery_jobmon_history_dropped_total")) == 0
        with engine.connect() as connection:
            states = connection.execute(select(TASK_EXECUTION.c.state)).scalars().all()
        assert states == ["SUCCESS"] * 7
    finally:
        proxy.close()
        engine.dispose()


def test_a_long_traceback_keeps_the_line_naming_the_error(redis_url, tmp_path, producer,
                                                         start_exporter, start_worker):
    # Before: the stored traceback was its first 4,096 bytes, without "RecursionError: ...";
    # and a cut message was stored as the exception's repr ("ValueError('xxx...").
    history_url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    exporter = start_exporter(redis_url, history_url=history_url)
    worker = start_worker(redis_url)
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(redis_url)
    deep = app.send_task("examples.tasks.recurse", queue="a")
    long = app.send_task("examples.tasks.fail_value", ("x" * 70_000 + "END",), queue="b")
    engine = create_history_engine(history_url)
    rows = wait_for(lambda: (found := [get_execution(engine, t.id) for t in (deep, long)])
                    and all(r is not None and r.state == "FAILURE" for r in found) and found,
                    60, message="failed rows")
    engine.dispose()
    recursion, message = rows
    assert (recursion.exception_type, recursion.exception_message) == (
        "RecursionError", "maximum recursion depth exceeded while calling a Python object")
    assert recursion.traceback_truncated is True
    assert len(recursion.traceback.encode()) <= 4096
    assert recursion.traceback.startswith("Traceback (most recent call last):")
    assert recursion.traceback.rstrip().endswith(
        "RecursionError: maximum recursion depth exceeded while calling a Python object")
    assert " characters cut] ...\n" in recursion.traceback
    assert (message.exception_type, message.exception_message_truncated) == ("ValueError", True)
    assert message.exception_message == "x" * 4096


def test_excluded_builtin_tasks_are_counted_but_stay_out_of_the_history(
        redis_url, tmp_path, producer, start_exporter, start_worker):
    history_url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    exporter = start_exporter(redis_url, "--history-exclude-task", "celery.*",
                              history_url=history_url)
    worker = start_worker(redis_url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(redis_url)
    builtin = app.send_task("celery.backend_cleanup", queue="a")
    mine = app.send_task("examples.tasks.add", (1, 2), queue="a")
    engine = create_history_engine(history_url)
    wait_for(lambda: (row := get_execution(engine, mine.id)) is not None
             and row.state == "SUCCESS", 30, message="add row")
    wait_for(lambda: exporter.metrics().value("celery_task_succeeded_total",
                                              name="celery.backend_cleanup", queue_name="a") == 1,
             30, message="built-in task counted")
    assert get_execution(engine, builtin.id) is None
    assert _rows(engine) == 1
    engine.dispose()
