"""Two exporters writing the same events into one PostgreSQL history (``replicas: 2``).

Each test creates a PostgreSQL database of its own (``jobmon_ha_<random>``, dropped at the
end). First, the race itself, held still: another writer's transaction inserts a new task's
row and keeps it uncommitted while this writer's batch inserts the same task; once the other
commits, the batch merges into its row, no unique-constraint error, nothing dropped. Then
the whole product: two real ``celery-jobmon serve`` processes and a third one alone (the
reference, its own database) watch one real worker on a private Redis; a few hundred tasks
succeed, fail and retry; one of the two is SIGKILLed mid-run. Every task has exactly one row
in the shared history, and that row is the reference's row, column by column. (Whether the two
replicas race on a new task in a given run depends on timing — some runs log a few raced
batches, some none; the first tests hold the race still.) Last, the writer's retry on a race:
at once, then the backoff.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, select, text

from exporter.history import HistoryWriter, create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION
from exporter.history.store import WRITTEN_FIELDS, InsertRaced, upsert_rows
from exporter.history.writer import MAX_RACE_RETRIES
from tests.support.events import task_event
from tests.support.exporter import QUIET_POLLER, Exporter, log_lines
from tests.support.network import PG_HOST, PG_PORT
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
NOW = T0 + 1000.0
#: Columns compared between two histories: every column events write (not ``updated_at``,
#: each exporter's own clock).
COMPARED = ("task_id", *WRITTEN_FIELDS)


def _admin() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                           autocommit=True, connect_timeout=10)


def _create_database() -> tuple[str, str]:
    """A fresh, migrated database: ``(name, SQLAlchemy URL)``."""
    name = f"jobmon_ha_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
            sql.Identifier(name)))
    url = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    upgrade(url)
    return name, url


def _drop_database(name: str) -> None:
    with _admin() as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture
def databases() -> Iterator[list[str]]:
    """Two fresh PostgreSQL databases of this test's own (URLs), dropped afterwards."""
    created = [_create_database() for _ in range(2)]
    yield [url for _, url in created]
    for name, _ in created:
        _drop_database(name)


def rows(engine: Engine) -> dict[str, tuple[object, ...]]:
    """Every row of ``task_execution``: task id → the :data:`COMPARED` columns."""
    columns = [TASK_EXECUTION.c[name] for name in COMPARED]
    with engine.connect() as connection:
        return {row[0]: tuple(row) for row in connection.execute(select(*columns))}


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(connection.execute(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.datname = current_database()")).scalar_one())


def test_a_task_another_writer_inserts_meanwhile_is_merged_not_refused(databases):
    # Failed before: the batch's INSERT hit the unique constraint once the other writer
    # committed (write_errors 1, the batch retried row by row).
    url, reference_url = databases
    sent = task_event("task-sent", uuid="t1", timestamp=T0, hostname="web-1", name="app.add",
                      args="(1, 2)", kwargs="{}", retries=0, queue="a", exchange="",
                      routing_key="a")
    started = task_event("task-started", uuid="t1", timestamp=T0 + 1)
    succeeded = task_event("task-succeeded", uuid="t1", timestamp=T0 + 3, result="3",
                           runtime=1.75)
    other, engine = create_history_engine(url), create_history_engine(url)
    writer = HistoryWriter(engine, max_delay=0.01, clock=lambda: NOW)
    try:
        with other.connect() as connection, connection.begin():
            # The other exporter's batch: the task's row, inserted and not yet committed.
            upsert_rows(connection, {"t1": {"state": "PENDING", "state_ts": T0,
                                            "name": "app.add", "queue": "a", "sent_at": T0}},
                        NOW)
            writer.start()
            writer.submit(started)
            writer.submit(succeeded)
            wait_for(lambda: _waiting_on_a_lock(other), 10,
                     message="the writer's insert waiting for the other transaction")
        assert writer.flush(10.0)
        stats = writer.stats()
        assert (stats.write_errors, stats.dropped["rejected"], stats.rows_written) == (0, 0, 1)
        # The other writer then sees task-sent too: the row is what one writer makes of all
        # three events.
        with other.begin() as connection:
            upsert_rows(connection, {"t1": {"state": "PENDING", "state_ts": T0,
                                            "name": "app.add", "args": "(1, 2)",
                                            "args_truncated": False, "kwargs": "{}",
                                            "kwargs_truncated": False, "retries": 0,
                                            "queue": "a", "routing_key": "a", "sent_at": T0}},
                        NOW)
        reference = create_history_engine(reference_url)
        alone = HistoryWriter(reference, max_delay=0.01, clock=lambda: NOW)
        alone.start()
        for event in (sent, started, succeeded):
            alone.submit(event)
        assert alone.flush(10.0)
        alone.stop(5.0)
        assert rows(engine) == rows(reference)
        assert rows(engine)["t1"][COMPARED.index("state")] == "SUCCESS"
        reference.dispose()
    finally:
        writer.stop(5.0)
        other.dispose()
        engine.dispose()


def test_two_writers_racing_on_the_same_new_tasks_never_deadlock_nor_refuse(databases):
    # Two writers, the same 400 new tasks in batches of different sizes and orders: the
    # inserts of both meet on every id.
    url, reference_url = databases
    events = []
    for n in range(400):
        task_id = f"t{n:03d}"
        events += [task_event("task-sent", uuid=task_id, timestamp=T0 + n, hostname="web-1",
                              name="app.add", args="(1, 2)", kwargs="{}", retries=0,
                              queue="a", exchange="", routing_key="a"),
                   task_event("task-started", uuid=task_id, timestamp=T0 + n + 0.5)]
        if n % 3:
            events.append(task_event("task-succeeded", uuid=task_id, timestamp=T0 + n + 1,
                                     result="3", runtime=0.5))
        else:
            events.append(task_event("task-failed", uuid=task_id, timestamp=T0 + n + 1,
                                     exception="ValueError('boom')", traceback="tb"))
    engines = [create_history_engine(url) for _ in range(2)]
    writers = [HistoryWriter(engine, batch_size=size, max_delay=0.01, clock=lambda: NOW)
               for engine, size in zip(engines, (37, 53), strict=True)]
    start = threading.Barrier(2)

    def feed(writer: HistoryWriter, ordered: list[dict]) -> None:
        start.wait()
        for event in ordered:
            writer.submit(event)

    feeders = [threading.Thread(target=feed, args=(writers[0], events)),
               threading.Thread(target=feed, args=(writers[1], events[::-1]))]
    for writer in writers:
        writer.start()
    for thread in feeders:
        thread.start()
    for thread in feeders:
        thread.join(10)
    try:
        for writer in writers:
            assert writer.flush(30.0)
            stats = writer.stats()
            assert (stats.write_errors, stats.dropped["rejected"]) == (0, 0), stats
        reference = create_history_engine(reference_url)
        alone = HistoryWriter(reference, clock=lambda: NOW)
        alone.start()
        for event in events:
            alone.submit(event)
        assert alone.flush(10.0)
        alone.stop(5.0)
        shared, expected = rows(engines[0]), rows(reference)
        assert len(expected) == 400
        assert shared == expected
        reference.dispose()
    finally:
        for writer in writers:
            writer.stop(5.0)
        for engine in engines:
            engine.dispose()


T = "examples.tasks."
#: Errors two writers must never meet (in either exporter's log).
RACE_ERRORS = r"IntegrityError|UniqueViolation|duplicate key|deadlock|history write failed"


def test_two_exporters_one_killed_mid_run_write_what_one_exporter_alone_writes(
        databases, redis_server: PrivateRedis, producer: Callable[[str], object],
        start_worker: Callable[..., Worker]):
    # Repairs off: they act on what one exporter missed, at times of their own; this test is
    # about two writers of the same events.
    shared_url, reference_url = databases
    broker = redis_server.url()
    flags = (*QUIET_POLLER, "--no-repair")
    first, second = (Exporter(broker, *flags, history_url=shared_url) for _ in range(2))
    alone = Exporter(broker, *flags, history_url=reference_url)
    exporters = [first, second, alone]
    shared, reference = create_history_engine(shared_url), create_history_engine(reference_url)
    try:
        for exporter in exporters:  # three starting at once on a busy machine: allow 60 s
            exporter.wait_ready(60)
        start_worker(broker, "a")
        app = producer(broker)
        expected: Counter[tuple[str, str]] = Counter()
        for n in range(300):  # sleeps spread the run over about 3 s of the worker's time
            name, args = [(T + "add", (n, 1)), (T + "fail_value", (f"bad {n}",)),
                          (T + "flaky", (2,)), (T + "add", (n, 2)),
                          (T + "sleep", (0.1,))][n % 5]
            app.send_task(name, args, queue="a")
            expected[(name, "FAILURE" if name == T + "fail_value" else "SUCCESS")] += 1

        def states(engine: Engine) -> Counter[tuple[str, str]]:
            with engine.connect() as connection:
                return Counter((name, state) for name, state in connection.execute(
                    select(TASK_EXECUTION.c.name, TASK_EXECUTION.c.state)))

        def finished(engine: Engine) -> int:
            return sum(count for (_, state), count in states(engine).items()
                       if state in ("SUCCESS", "FAILURE"))

        # Mid-run: some tasks written as finished, not all of them.
        wait_for(lambda: 0 < finished(shared) < 300, 30, interval=0.05,
                 message=lambda: f"part of the run finished: {states(shared)}")
        killed_at = finished(shared)
        first.proc.kill()
        first.proc.wait()
        wait_for(lambda: states(reference) == expected, 60,
                 message=lambda: f"the reference finished: {states(reference)}")
        wait_for(lambda: rows(shared) == rows(reference), 30,
                 message=lambda: f"the shared history caught up: {states(shared)}")
        for exporter in (second, alone):
            exporter.stop()
        shared_rows = rows(shared)
        assert 0 < killed_at < 300
        assert len(shared_rows) == 300
        assert shared_rows == rows(reference)
        retries = Counter(row[COMPARED.index("retries")] for row in shared_rows.values()
                          if row[COMPARED.index("name")] == T + "flaky")
        assert retries == {2: 60}
        for exporter in (first, second):
            assert log_lines(exporter.output(), RACE_ERRORS) == []
    finally:
        for exporter in exporters:
            exporter.stop()
        shared.dispose()
        reference.dispose()


def test_a_batch_that_keeps_racing_is_written_again_at_once_then_backs_off(tmp_path):
    # InsertRaced from the upsert: rolled back and run again at once, no error counted, up to
    # MAX_RACE_RETRIES in a row; a batch racing more often than that backs off like a database
    # error (counted), and is written on the next attempt.
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    upgrade(url)
    engine = create_history_engine(url)
    races = [MAX_RACE_RETRIES, MAX_RACE_RETRIES + 1]  # raced calls before each batch succeeds
    calls: list[int] = []

    def racing(connection, batch, now):
        calls.append(len(batch))
        if races[0]:
            races[0] -= 1
            raise InsertRaced(len(batch))
        races.pop(0)
        return upsert_rows(connection, batch, now)

    writer = HistoryWriter(engine, max_delay=0.01, retry_initial=0.05, clock=lambda: NOW,
                           upsert=racing)
    writer.start()
    try:
        writer.submit(task_event("task-started", uuid="t1", timestamp=T0))
        assert writer.flush(10.0)
        stats = writer.stats()
        assert (len(calls), stats.write_errors, stats.rows_written) == (MAX_RACE_RETRIES + 1, 0, 1)
        writer.submit(task_event("task-started", uuid="t2", timestamp=T0))
        assert writer.flush(10.0)
        stats = writer.stats()
        assert (stats.write_errors, stats.consecutive_failures, stats.rows_written) == (1, 0, 2)
        assert len(calls) == 2 * MAX_RACE_RETRIES + 3
        assert sorted(rows(engine)) == ["t1", "t2"]
    finally:
        writer.stop(5.0)
        engine.dispose()
