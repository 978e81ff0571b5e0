"""The SQL history against real databases: SQLite (a file per test) and PostgreSQL.

PostgreSQL at 127.0.0.1:5432 (trust auth, user ``postgres``) is required: this module creates
a uniquely named database for the session (through the ``postgres`` database) and drops it at
the end. A missing server fails the tests, it never skips them.

Events go through a real :class:`HistoryWriter` (thread, queue, batches, upserts); assertions
read the rows back through :mod:`exporter.history.queries` and compare exact values.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select, text
from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError

from exporter.history import (
    Execution,
    FailureGroup,
    HistoryWriter,
    InvalidCursor,
    TaskStats,
    UnfinishedTask,
    create_history_engine,
    current_revision,
    failure_groups,
    get_execution,
    head_revision,
    list_executions,
    needs_upgrade,
    prune,
    record_action,
    record_retry,
    task_stats,
    unfinished,
    upgrade,
)
from exporter.history.db import (
    MIGRATIONS_DIR,
    SQLITE_WAL_AUTOCHECKPOINT,
    SQLITE_WRITE_CACHE_KIB,
    VERSION_TABLE,
    WRITE_INTENT,
)
from exporter.history.orm import ACTION_AUDIT, TASK_EXECUTION, HistoryBase
from exporter.history.store import upsert_rows
from tests.support.events import PRODUCER, WORKER, task_event
from tests.support.network import TcpProxy
from tests.support.waiting import assert_stays, wait_for

T0 = 1_700_000_000.0
NOW = T0 + 1000.0
TB = 'Traceback (most recent call last):\n  File "tasks.py", line 9, in add\nValueError: boom\n'


# -- databases -------------------------------------------------------------------------------


@dataclass
class Db:
    """One backend under test: its URL, an engine for assertions, and how to simulate an
    outage (``outage()`` → a URL that fails now, and a function that makes it work).
    """

    kind: str
    url: str
    engine: Engine
    outage: Callable[[], tuple[str, Callable[[], None]]]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    proxies: list[TcpProxy] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
        upgrade(url)

        def outage() -> tuple[str, Callable[[], None]]:
            later = tmp_path / "not-yet" / "history.sqlite3"  # its directory does not exist
            staging = tmp_path / "staging"

            def restore() -> None:
                # The schema is made aside and its directory renamed into place at once: a
                # writer retrying meanwhile must not lock a half-made file ("database is
                # locked" in the upgrade, once in a full run).
                staging.mkdir()
                upgrade(f"sqlite:///{staging / later.name}")
                staging.rename(later.parent)

            return f"sqlite:///{later}", restore
    else:
        url = request.getfixturevalue("pg_url")

        def outage() -> tuple[str, Callable[[], None]]:
            proxy = TcpProxy()
            proxies.append(proxy)
            down = make_url(url).set(port=proxy.port).render_as_string(hide_password=False)
            return down, proxy.start

    engine = create_history_engine(url)
    with engine.begin() as connection:
        connection.execute(TASK_EXECUTION.delete())
        connection.execute(ACTION_AUDIT.delete())
    yield Db(request.param, url, engine, outage)
    engine.dispose()
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def make_writer() -> Iterator[Callable[..., HistoryWriter]]:
    writers: list[HistoryWriter] = []

    def make(engine: Engine, *, start: bool = True, **kwargs: Any) -> HistoryWriter:
        kwargs.setdefault("max_delay", 0.05)
        kwargs.setdefault("clock", lambda: NOW)
        writer = HistoryWriter(engine, **kwargs)
        writers.append(writer)
        if start:
            writer.start()
        return writer

    yield make
    for writer in writers:
        writer.stop(2.0)


# -- events as Celery sends them ---------------------------------------------------------------


def sent(task_id: str, ts: float, name: str = "app.add", args: str = "(1, 2)",
         retries: int = 0, queue: str = "default") -> dict:
    return task_event("task-sent", uuid=task_id, timestamp=ts, hostname=PRODUCER, name=name,
                      args=args, kwargs="{'mode': 'x'}", retries=retries, eta=None,
                      expires=None, queue=queue, exchange="celery", routing_key=queue,
                      root_id="root-1", parent_id="parent-1")


def received(task_id: str, ts: float, name: str = "app.add", retries: int = 0,
             hostname: str = WORKER) -> dict:
    return task_event("task-received", uuid=task_id, timestamp=ts, hostname=hostname,
                      name=name, args="(1, 2)", kwargs="{'mode': 'x'}", retries=retries,
                      eta=None, expires=None, root_id="root-1", parent_id="parent-1")


def started(task_id: str, ts: float, hostname: str = WORKER) -> dict:
    return task_event("task-started", uuid=task_id, timestamp=ts, hostname=hostname)


def succeeded(task_id: str, ts: float, runtime: float, hostname: str = WORKER) -> dict:
    return task_event("task-succeeded", uuid=task_id, timestamp=ts, hostname=hostname,
                      result="3", runtime=runtime)


def failed(task_id: str, ts: float, exception: str = "ValueError('boom')",
           traceback: str = TB) -> dict:
    return task_event("task-failed", uuid=task_id, timestamp=ts, exception=exception,
                      traceback=traceback)


def retried(task_id: str, ts: float, exception: str) -> dict:
    return task_event("task-retried", uuid=task_id, timestamp=ts, exception=exception,
                      traceback=TB)


def revoked(task_id: str, ts: float) -> dict:
    return task_event("task-revoked", uuid=task_id, timestamp=ts, terminated=False,
                      signum=None, expired=False)


def success(task_id: str, t: float, runtime: float, name: str = "app.add") -> list[dict]:
    return [sent(task_id, t, name), received(task_id, t + 0.0625, name),
            started(task_id, t + 0.125), succeeded(task_id, t + 0.125 + runtime, runtime)]


def failure(task_id: str, t: float, runtime: float, name: str = "app.add",
            exception: str = "ValueError('boom')") -> list[dict]:
    return [sent(task_id, t, name), received(task_id, t + 0.0625, name),
            started(task_id, t + 0.125), failed(task_id, t + 0.125 + runtime, exception)]


def write(writer: HistoryWriter, events: list[dict]) -> None:
    for event in events:
        writer.submit(event)
    assert writer.flush(10.0), writer.stats()


def count_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(TASK_EXECUTION))
                   .scalar_one())


EXPECTED_SUCCESS = Execution(
    task_id="s1", name="app.add", state="SUCCESS", state_ts=T0 + 0.375, queue="default",
    routing_key="default", exchange="celery", hostname="celery@w1", worker_seen_at=T0 + 0.375,
    args="(1, 2)", args_truncated=False, kwargs="{'mode': 'x'}", kwargs_truncated=False,
    eta=None, expires=None, retries=0, priority=None, parent_id="parent-1", root_id="root-1",
    sent_at=T0, received_at=T0 + 0.0625, started_at=T0 + 0.125, finished_at=T0 + 0.375,
    runtime=0.25, result="3", result_truncated=False, exception_type=None,
    exception_message=None, exception_message_truncated=False, traceback=None,
    traceback_truncated=False, exception_at=None, revoke_reason=None, revoke_signal=None,
    manual_retry_count=0, retry_of=None, created_by_action=None, updated_by_action=None,
    updated_at=NOW,
)


# -- writing rows ------------------------------------------------------------------------------


def test_lifecycles_become_exact_rows(db, make_writer):
    writer = make_writer(db.engine)
    write(writer, success("s1", T0, 0.25) + failure("f1", T0 + 1, 3.0))
    assert get_execution(db.engine, "s1") == EXPECTED_SUCCESS
    assert get_execution(db.engine, "f1") == dataclasses.replace(
        EXPECTED_SUCCESS, task_id="f1", state="FAILURE", state_ts=T0 + 4.125,
        worker_seen_at=T0 + 4.125, sent_at=T0 + 1, received_at=T0 + 1.0625,
        started_at=T0 + 1.125, finished_at=T0 + 4.125, runtime=3.0, result=None,
        exception_type="ValueError", exception_message="boom", traceback=TB,
        exception_at=T0 + 4.125,
    )
    assert get_execution(db.engine, "nope") is None
    stats = writer.stats()
    assert (stats.events_accepted, stats.write_errors, stats.queue_depth,
            stats.pending_rows, stats.last_write_ts) == (8, 0, 0, 0, NOW)


def test_late_task_received_in_a_later_batch_keeps_failure(db, make_writer):
    writer = make_writer(db.engine)
    write(writer, [sent("t1", T0), started("t1", T0 + 0.125), failed("t1", T0 + 2.125)])
    write(writer, [received("t1", T0 + 0.0625, hostname="celery@w9")])
    row = get_execution(db.engine, "t1")
    assert (row.state, row.state_ts, row.finished_at, row.runtime) == (
        "FAILURE", T0 + 2.125, T0 + 2.125, 2.0)
    assert (row.received_at, row.hostname) == (T0 + 0.0625, "celery@w1")


def test_retried_task_row_shows_retry_count_and_last_exception(db, make_writer):
    writer = make_writer(db.engine)
    write(writer, [sent("r1", T0, retries=0), received("r1", T0 + 1), started("r1", T0 + 2),
                   retried("r1", T0 + 3, "ConnectionError('refused')")])
    row = get_execution(db.engine, "r1")
    assert (row.state, row.retries, row.exception_type, row.finished_at) == (
        "RETRY", 0, "ConnectionError", None)
    write(writer, [sent("r1", T0 + 4, retries=1), received("r1", T0 + 5, retries=1),
                   started("r1", T0 + 6), retried("r1", T0 + 7, "TimeoutError('slow')"),
                   sent("r1", T0 + 8, retries=2), received("r1", T0 + 9, retries=2),
                   started("r1", T0 + 10), failed("r1", T0 + 12, "KeyError('gone')")])
    row = get_execution(db.engine, "r1")
    assert (row.state, row.retries, row.sent_at, row.started_at, row.runtime) == (
        "FAILURE", 2, T0, T0 + 10, 2.0)
    assert (row.exception_type, row.exception_message, row.exception_at) == (
        "KeyError", "gone", T0 + 12)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_events_over_several_batches_give_exact_rows(db, make_writer, seed):
    rng = random.Random(seed)
    events = (success("a", T0, 0.25) + failure("b", T0 + 1, 3.0)
              + [sent("c", T0 + 2), received("c", T0 + 2.0625), started("c", T0 + 2.125),
                 retried("c", T0 + 2.25, "OSError('io')"), sent("c", T0 + 2.5, retries=1),
                 received("c", T0 + 2.5625, retries=1, hostname="celery@w2"),
                 started("c", T0 + 2.625, hostname="celery@w2"),
                 succeeded("c", T0 + 3, 0.375, hostname="celery@w2")]
              + [sent("d", T0 + 3), revoked("d", T0 + 3.5)]
              + [sent("e", T0 + 4), received("e", T0 + 4.0625)])
    rng.shuffle(events)
    writer = make_writer(db.engine, batch_size=3)
    cuts = sorted(rng.sample(range(1, len(events)), 4))
    for begin, end in zip([0, *cuts], [*cuts, len(events)], strict=True):
        write(writer, events[begin:end])
    assert get_execution(db.engine, "a") == dataclasses.replace(
        EXPECTED_SUCCESS, task_id="a")
    rows = {t: get_execution(db.engine, t) for t in "bcde"}
    assert {t: (r.state, r.state_ts, r.finished_at, r.runtime) for t, r in rows.items()} == {
        "b": ("FAILURE", T0 + 4.125, T0 + 4.125, 3.0),
        "c": ("SUCCESS", T0 + 3, T0 + 3, 0.375),
        "d": ("REVOKED", T0 + 3.5, T0 + 3.5, None),
        "e": ("RECEIVED", T0 + 4.0625, None, None),
    }
    assert (rows["c"].retries, rows["c"].hostname, rows["c"].exception_type,
            rows["c"].sent_at, rows["c"].started_at) == (
        1, "celery@w2", "OSError", T0 + 2, T0 + 2.625)
    assert (rows["d"].revoke_reason, rows["d"].hostname) == ("revoked", "celery@w1")


def test_big_unicode_args_and_traceback_are_capped_with_flags(db, make_writer):
    big = "('" + "日本語テキスト😀ü" * 400 + "',)"  # 10,005 bytes of UTF-8
    assert len(big.encode()) > 10_000
    long_tb = "Traceback (most recent call last):\n" + '  File "ünï.py", line 1\n' * 500
    writer = make_writer(db.engine)
    write(writer, [sent("u1", T0, args=big), started("u1", T0 + 1),
                   failed("u1", T0 + 2, "ValueError('" + "é" * 3000 + "')", long_tb)])
    row = get_execution(db.engine, "u1")
    expected_args = big.encode()[:4096].decode("utf-8", "ignore")
    assert row.args == expected_args and big.startswith(row.args)
    assert 4093 <= len(row.args.encode()) <= 4096
    assert (row.args_truncated, row.kwargs, row.kwargs_truncated) == (
        True, "{'mode': 'x'}", False)
    assert (row.exception_message, row.exception_message_truncated) == ("é" * 2048, True)
    # A cut traceback keeps its start and its end around a marker of how much was cut.
    head, rest = row.traceback.split("\n... [", 1)
    count, tail = rest.split(" characters cut] ...\n", 1)
    assert long_tb.startswith(head) and long_tb.endswith(tail) and head and tail
    assert len(head) + int(count.replace(",", "")) + len(tail) == len(long_tb)
    assert len(row.traceback.encode()) <= 4096
    assert row.traceback_truncated is True


def test_small_field_cap_applies_to_result_and_the_full_traceback_fits(db, make_writer):
    writer = make_writer(db.engine, max_field_bytes=8)
    write(writer, [sent("c1", T0), task_event("task-succeeded", uuid="c1", timestamp=T0 + 1,
                                              result="'€€€€'", runtime=1.0)])
    row = get_execution(db.engine, "c1")
    assert (row.result, row.result_truncated, row.args, row.args_truncated) == (
        "'€€", True, "(1, 2)", False)


def test_database_down_errors_counted_records_kept_then_written(db, make_writer):
    down_url, restore = db.outage()
    engine = create_history_engine(down_url)
    writer = make_writer(engine, retry_initial=0.02, retry_max=0.1)
    for event in success("d1", T0, 0.25) + failure("d2", T0 + 1, 3.0):
        writer.submit(event)
    wait_for(lambda: writer.stats().write_errors >= 3, 10, interval=0.01)
    stats = writer.stats()
    assert stats.write_errors >= 3 and stats.consecutive_failures >= 3
    assert (stats.rows_written, stats.pending_rows, stats.last_write_ts) == (0, 2, None)
    assert not any(stats.dropped.values())
    assert writer.flush(0.2) is False
    restore()
    assert writer.flush(10.0)
    stats = writer.stats()
    assert (stats.rows_written, stats.pending_rows, stats.consecutive_failures) == (2, 0, 0)
    assert get_execution(engine, "d1") == dataclasses.replace(EXPECTED_SUCCESS, task_id="d1")
    assert get_execution(engine, "d2").state == "FAILURE"
    engine.dispose()


def test_database_down_with_full_buffers_drops_successes_first(db, make_writer):
    down_url, restore = db.outage()
    engine = create_history_engine(down_url)
    writer = make_writer(engine, capacity=4, batch_size=2, max_pending=2, retry_initial=0.02,
                         retry_max=0.05)
    writer.submit(sent("a", T0))
    writer.submit(sent("b", T0))
    wait_for(lambda: writer.stats().pending_rows == 2 and writer.stats().write_errors > 0,
             10, interval=0.01)
    for event in [succeeded("a", T0 + 1, 1.0), succeeded("b", T0 + 1, 1.0), failed("c", T0 + 2),
                  failed("d", T0 + 2), failed("e", T0 + 2)]:
        writer.submit(event)
    stats = writer.stats()
    assert (stats.pending_rows, stats.queue_depth) == (2, 4)
    assert {k: v for k, v in stats.dropped.items() if v} == {"queue_full_success": 1}
    restore()
    assert writer.flush(10.0)
    states = {r.task_id: r.state for r in list_executions(engine, limit=10).items}
    assert states == {"a": "PENDING", "b": "SUCCESS", "c": "FAILURE", "d": "FAILURE",
                      "e": "FAILURE"}
    engine.dispose()


def test_database_down_pending_rows_never_pass_max_pending(db, make_writer):
    # Before: the writer took the whole queue whenever a row fitted, so 7 events of new tasks
    # made 7 pending rows with max_pending 3 (the bound overshot by up to a whole queue).
    down_url, restore = db.outage()
    engine = create_history_engine(down_url)
    writer = make_writer(engine, start=False, capacity=10, batch_size=2, max_pending=3,
                         retry_initial=0.02, retry_max=0.05)
    for task_id in "abcdef":
        writer.submit(sent(task_id, T0))
    writer.submit(failed("g", T0 + 1))
    writer.start()
    wait_for(lambda: writer.stats().write_errors >= 2, 10, interval=0.01)
    stats = writer.stats()
    assert (stats.pending_rows, stats.queue_depth) == (3, 4)  # g (a failure), a, b; c-f wait
    assert writer.flush(0.2) is False
    restore()
    assert writer.flush(10.0)
    states = {r.task_id: r.state for r in list_executions(engine, limit=10).items}
    assert states == {**dict.fromkeys("abcdef", "PENDING"), "g": "FAILURE"}
    assert not any(writer.stats().dropped.values())
    engine.dispose()


def test_stop_while_database_down_counts_what_is_lost(db, make_writer):
    down_url, _ = db.outage()
    engine = create_history_engine(down_url)
    writer = make_writer(engine, retry_initial=0.02, retry_max=0.05)
    for event in success("x1", T0, 0.25) + success("x2", T0 + 1, 0.25):
        writer.submit(event)
    assert writer.stop(0.3) is False
    assert writer.stats().dropped["stop_timeout"] == 2
    writer.submit(sent("x3", T0))
    assert writer.stats().dropped["stopped"] == 1
    engine.dispose()


def test_stop_writes_everything_queued(db, make_writer):
    writer = make_writer(db.engine, max_delay=60.0)
    for event in success("q1", T0, 0.25):
        writer.submit(event)
    assert writer.stop(5.0) is True
    assert get_execution(db.engine, "q1").state == "SUCCESS"


def test_full_queue_drops_successes_first_and_counts_them(db, make_writer):
    writer = make_writer(db.engine, start=False, capacity=6)
    for event in [sent("a", T0), succeeded("a", T0 + 1, 1.0), sent("b", T0 + 2),
                  succeeded("b", T0 + 3, 1.0), sent("c", T0 + 4), failed("c", T0 + 5)]:
        writer.submit(event)
    writer.submit(failed("d", T0 + 6))  # drops a's success
    writer.submit(failed("e", T0 + 7))  # drops b's success
    writer.submit(started("f", T0 + 8))  # no success left: drops the oldest progress (a sent)
    writer.start()
    assert writer.flush(10.0)
    stats = writer.stats()
    assert {k: v for k, v in stats.dropped.items() if v} == {
        "queue_full_success": 2, "queue_full_progress": 1}
    states = {r.task_id: r.state for r in list_executions(db.engine, limit=100).items}
    assert states == {"b": "PENDING", "c": "FAILURE", "d": "FAILURE", "e": "FAILURE",
                      "f": "STARTED"}


def test_a_row_the_database_refuses_is_dropped_alone(db, make_writer):
    def refusing(connection, rows, now):
        if "bad" in rows:
            raise DataError("INSERT ...", {}, Exception("value out of range"))
        return upsert_rows(connection, rows, now)

    writer = make_writer(db.engine, upsert=refusing)
    write(writer, success("good", T0, 0.25) + success("bad", T0, 0.25))
    stats = writer.stats()
    assert (stats.dropped["rejected"], stats.rows_written, stats.write_errors) == (1, 1, 1)
    assert get_execution(db.engine, "good").state == "SUCCESS"
    assert get_execution(db.engine, "bad") is None


@pytest.mark.parametrize("task_id", ["it's 100%s %(x)s \\' ü\"; DROP TABLE task_execution; --",
                                     "x" * 255])
def test_any_task_id_round_trips_through_insert_and_update(db, make_writer, task_id):
    writer = make_writer(db.engine)
    write(writer, [sent(task_id, T0), started(task_id, T0 + 1)])
    write(writer, [failed(task_id, T0 + 2)])  # the second batch finds and updates the row
    row = get_execution(db.engine, task_id)
    assert (row.task_id, row.state, row.runtime) == (task_id, "FAILURE", 1.0)
    assert count_rows(db.engine) == 1


def test_sqlite_writer_waits_for_another_writer_instead_of_failing(tmp_path, make_writer):
    url = f"sqlite:///{tmp_path / 'busy.sqlite3'}"
    upgrade(url)
    engine, other = create_history_engine(url), create_history_engine(url)
    statements: list[str] = []  # what the writer's connections send, in order

    def before_execute(connection, cursor, statement, *args):
        statements.append(statement)

    sa_event.listen(engine, "before_cursor_execute", before_execute)
    writer = make_writer(engine)
    write(writer, [sent("b1", T0)])
    written = writer.stats().rows_written
    with other.begin() as connection:  # holds the write lock while the writer wants it
        connection.execute(TASK_EXECUTION.update().values(updated_by_action="x"))
        sent_before = len(statements)
        for event in [started("b1", T0 + 1), *success("b2", T0, 0.25)]:
            writer.submit(event)
        # The writer sends BEGIN IMMEDIATE and waits there for the lock: no error, no row
        # written meanwhile.
        wait_for(lambda: "BEGIN IMMEDIATE" in statements[sent_before:], 10, interval=0.01,
                 message="the writer beginning its write transaction")
        assert_stays(lambda: (stats := writer.stats()).write_errors == 0
                     and stats.rows_written == written, 0.3, interval=0.01,
                     message=lambda: f"a writer waiting on the lock ({writer.stats()})")
    assert writer.flush(10.0)
    assert (writer.stats().write_errors, get_execution(engine, "b1").state) == (0, "STARTED")
    assert get_execution(engine, "b1").updated_by_action == "x"
    engine.dispose()
    other.dispose()


# -- reading rows ------------------------------------------------------------------------------


def test_cursor_pagination_pages_10_10_5_without_duplicates(db, make_writer):
    writer = make_writer(db.engine)
    # Two tasks per timestamp: the task id breaks ties.
    write(writer, [failed(f"p{i:02d}", T0 + i // 2) for i in range(25)]
          + [sent("other", T0 + 3)])
    pages, cursor = [], None
    while True:
        page = list_executions(db.engine, states=["FAILURE"], limit=10, cursor=cursor)
        pages.append([r.task_id for r in page.items])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    ids = [task_id for page in pages for task_id in page]
    assert ids == sorted((f"p{i:02d}" for i in range(25)),
                         key=lambda t: (int(t[1:]) // 2, t), reverse=True)
    assert len(set(ids)) == 25


def test_list_filters_by_name_queue_and_window(db, make_writer):
    writer = make_writer(db.engine)
    write(writer, success("n1", T0, 1.0, name="app.a") + success("n2", T0 + 10, 1.0, "app.b")
          + [sent("n3", T0 + 20, name="app.a", queue="slow")])
    assert [r.task_id for r in list_executions(db.engine, name="app.a").items] == ["n3", "n1"]
    assert [r.task_id for r in list_executions(db.engine, queue="slow").items] == ["n3"]
    window = list_executions(db.engine, since=T0 + 5, until=T0 + 20)
    assert [r.task_id for r in window.items] == ["n2"]


@pytest.mark.parametrize("cursor", ["garbage!!", "", "W10", "WzEsMl0", "bnVsbA", "WyJ4IiwieSJd"])
def test_a_bad_cursor_raises_invalid_cursor(db, cursor):
    with pytest.raises(InvalidCursor) as info:
        list_executions(db.engine, cursor=cursor)
    assert isinstance(info.value, ValueError)


def test_task_stats_are_exact(db, make_writer):
    writer = make_writer(db.engine)
    events = []
    for i in range(16):  # runtimes 1..16 s, succeeded
        events += success(f"a{i}", T0 + 100 * i, float(i + 1), name="app.a")
    for i in range(16, 20):  # runtimes 17..20 s, failed (finished − started)
        events += failure(f"a{i}", T0 + 100 * i, float(i + 1), name="app.a")
    events += success("b0", T0, 0.5, name="app.b") + [sent("b1", T0, "app.b"),
                                                      revoked("b1", T0 + 1)]
    events += success("old", T0 - 5000, 999.0, name="app.a")  # outside the window
    events += [sent("running", T0, "app.a"), started("running", T0 + 1)]  # not finished
    write(writer, events)
    stats = task_stats(db.engine, since=T0 - 10, until=T0 + 10_000)
    assert stats == [
        TaskStats(name="app.a", count=20, succeeded=16, failed=4, revoked=0, rejected=0,
                  lost=0, success_ratio=0.8,
                  failure_ratio=0.2, avg_runtime=10.5, min_runtime=1.0, max_runtime=20.0,
                  p95_runtime=19.0, slow=False),
        TaskStats(name="app.b", count=2, succeeded=1, failed=0, revoked=1, rejected=0,
                  lost=0, success_ratio=0.5,
                  failure_ratio=0.0, avg_runtime=0.5, min_runtime=0.5, max_runtime=0.5,
                  p95_runtime=0.5, slow=False),
    ]
    slow = task_stats(db.engine, since=T0 - 10, name="app.a", slow_threshold=10.0)
    assert [(s.name, s.slow, s.count) for s in slow] == [("app.a", True, 20)]


def test_failure_groups_by_exception_type(db, make_writer):
    writer = make_writer(db.engine)
    write(writer, failure("v1", T0, 1.0, exception="ValueError('first')")
          + failure("v2", T0 + 10, 1.0, exception="ValueError('second')")
          + failure("v3", T0 + 20, 1.0, "app.b", exception="ValueError('third')")
          + failure("k1", T0 + 30, 1.0, exception="KeyError('k')")
          + failure("old", T0 - 100, 1.0, exception="KeyError('old')"))
    assert failure_groups(db.engine, since=T0) == [
        FailureGroup("ValueError", 3, T0 + 21.125, "third", "v3", "app.b"),
        FailureGroup("KeyError", 1, T0 + 31.125, "k", "k1", "app.add"),
    ]
    assert failure_groups(db.engine, since=T0, name="app.b", limit=1) == [
        FailureGroup("ValueError", 1, T0 + 21.125, "third", "v3", "app.b")]


def test_unfinished_returns_unfinished_rows_newest_first(db, make_writer):
    writer = make_writer(db.engine)
    write(writer, [sent("pending", T0 + 50, queue="q1"),
                   sent("running", T0 + 40), received("running", T0 + 41, hostname="w@h"),
                   started("running", T0 + 42, hostname="w@h"),
                   received("received", T0 + 30, retries=2),
                   sent("retrying", T0 + 20), retried("retrying", T0 + 21, "IOError('x')"),
                   sent("ancient", T0 - 5000)]
          + success("done", T0 + 60, 1.0) + failure("broken", T0 + 70, 1.0)
          + [sent("gone", T0 + 80), revoked("gone", T0 + 81)])
    assert unfinished(db.engine, since_seconds=1000, limit=100, now=NOW) == [
        UnfinishedTask("pending", "app.add", "q1", "q1", None, "PENDING", T0 + 50, None, None,
                       None, 0),
        UnfinishedTask("running", "app.add", "default", "default", "w@h", "STARTED", T0 + 40,
                       T0 + 41, T0 + 42, None, 0),
        UnfinishedTask("received", "app.add", None, None, "celery@w1", "RECEIVED", None,
                       T0 + 30, None, None, 2),
        UnfinishedTask("retrying", "app.add", "default", "default", "celery@w1", "RETRY",
                       T0 + 20, None, None, None, 0),
    ]
    assert [t.task_id for t in unfinished(db.engine, 1000, limit=2, now=NOW)] == [
        "pending", "running"]


# -- retention ---------------------------------------------------------------------------------


def test_prune_by_age_by_rows_and_dry_run(db, make_writer):
    clock = {"now": NOW - 1000}
    writer = make_writer(db.engine, clock=lambda: clock["now"])
    write(writer, [sent("stale", T0 + 0.5), started("stale", T0 + 0.75)])  # updated long ago
    clock["now"] = NOW
    write(writer, [failed(f"f{i}", T0 + i) for i in range(10)]
          + [sent("live", T0 + 50), started("live", T0 + 51)])
    cutoff_age = NOW - (T0 + 5)  # finished before T0 + 5 → f0..f4, plus "stale"
    assert prune(db.engine, older_than_seconds=cutoff_age, dry_run=True, now=NOW) == 6
    assert prune(db.engine, older_than_seconds=cutoff_age, max_rows=4, dry_run=True,
                 now=NOW) == 8
    assert prune(db.engine, max_rows=20, dry_run=True) == 0
    assert count_rows(db.engine) == 12
    assert prune(db.engine, older_than_seconds=cutoff_age, max_rows=4, now=NOW,
                 chunk_size=3) == 8
    remaining = [r.task_id for r in list_executions(db.engine, limit=100).items]
    assert remaining == ["live", "f9", "f8", "f7"]
    assert prune(db.engine, max_rows=0) == 4
    assert count_rows(db.engine) == 0


def test_the_writer_prunes_periodically(db, make_writer):
    first = make_writer(db.engine)
    write(first, [failed(f"old{i}", T0 + i) for i in range(3)] + [failed("new", NOW - 10)])
    writer = make_writer(db.engine, retention=100.0, prune_interval=3600.0)
    assert writer.flush(10.0)
    wait_for(lambda: writer.stats().rows_pruned >= 3, 10, interval=0.01)
    assert writer.stats().rows_pruned == 3
    assert [r.task_id for r in list_executions(db.engine).items] == ["new"]


# -- schema and actions ------------------------------------------------------------------------


def test_migrations_match_the_models_and_upgrade_is_idempotent(db):
    upgrade(db.engine)
    assert current_revision(db.engine) == head_revision() == "0006"
    assert needs_upgrade(db.engine) is False
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(context, HistoryBase.metadata) == []


def _downgrade(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_the_state_source_migration_keeps_rows_and_says_they_came_from_events(
        db, make_writer):
    _downgrade(db.engine, "0001")
    try:
        with db.engine.connect() as connection:
            assert "state_source" not in {c["name"] for c in sa_inspect(connection).get_columns(
                "task_execution")}
        with db.engine.begin() as connection:  # a row written before the column existed
            connection.execute(text(
                "INSERT INTO task_execution (task_id, name, state, state_ts, updated_at) "
                "VALUES ('old', 'app.add', 'SUCCESS', :ts, :ts)"), {"ts": T0})
        upgrade(db.engine)
        assert current_revision(db.engine) == head_revision()
        assert get_execution(db.engine, "old").state_source == "events"
        write(make_writer(db.engine), [
            *success("s1", T0, 0.25),
            {"type": "task-failed", "uuid": "old", "timestamp": T0 + 9,
             "state_source": "result_backend", "exception": "KeyError('k')"}])
        assert get_execution(db.engine, "s1").state_source == "events"
        old = get_execution(db.engine, "old")
        assert (old.state, old.state_source, old.exception_type) == (
            "FAILURE", "result_backend", "KeyError")
    finally:
        upgrade(db.engine)


def test_a_fresh_database_needs_an_upgrade(tmp_path):
    engine = create_history_engine(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    assert current_revision(engine) is None and needs_upgrade(engine) is True
    upgrade(engine)
    assert needs_upgrade(engine) is False
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert connection.execute(text("PRAGMA wal_autocheckpoint")).scalar() == \
            SQLITE_WAL_AUTOCHECKPOINT
        assert connection.execute(text("PRAGMA cache_size")).scalar() == -2000  # a reader's
    engine.dispose()


def test_a_transaction_that_writes_gets_the_larger_page_cache(tmp_path):
    engine = create_history_engine(f"sqlite:///{tmp_path / 'cache.sqlite3'}")
    upgrade(engine)
    with engine.connect() as connection:
        connection = connection.execution_options(**{WRITE_INTENT: True})
        with connection.begin():
            assert connection.execute(text("PRAGMA cache_size")).scalar() == \
                -SQLITE_WRITE_CACHE_KIB
    engine.dispose()


def test_manual_retry_links_rows_and_events_keep_the_links(db, make_writer):
    writer = make_writer(db.engine)
    write(writer, failure("orig", T0, 1.0))
    audit_id = record_retry(db.engine, original_id="orig", new_id="copy", actor="ops",
                            detail={"source": "result_backend"}, at=NOW)
    new = get_execution(db.engine, "copy")
    assert (new.state, new.state_ts, new.name, new.queue, new.args, new.retry_of,
            new.created_by_action) == ("PENDING", NOW, "app.add", "default", "(1, 2)", "orig",
                                       "retry")
    write(writer, [sent("copy", NOW + 0.5), started("copy", NOW + 1)])
    new = get_execution(db.engine, "copy")
    assert (new.state, new.sent_at, new.retry_of, new.created_by_action) == (
        "STARTED", NOW + 0.5, "orig", "retry")
    original = get_execution(db.engine, "orig")
    assert (original.manual_retry_count, original.updated_by_action, original.state) == (
        1, "retry", "FAILURE")
    write(writer, [received("orig", T0 + 0.0625)])  # a late event leaves the action columns
    assert get_execution(db.engine, "orig").manual_retry_count == 1
    cancel_id = record_action(db.engine, actor="ops", action="cancel", task_id="copy",
                              detail={"terminate": False}, at=NOW + 2)
    assert get_execution(db.engine, "copy").updated_by_action == "cancel"
    with db.engine.connect() as connection:
        audit = connection.execute(select(ACTION_AUDIT).order_by(ACTION_AUDIT.c.id)).all()
    assert [tuple(r) for r in audit] == [
        (audit_id, NOW, "ops", "retry", "orig",
         {"new_task_id": "copy", "source": "result_backend"}),
        (cancel_id, NOW + 2, "ops", "cancel", "copy", {"terminate": False}),
    ]
    with pytest.raises(LookupError):
        record_retry(db.engine, original_id="missing", new_id="x", actor="ops")
