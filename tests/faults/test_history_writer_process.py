"""The history writer in its child process (exporter.history.process and .child), with a real
SQLite file and real processes: what it writes, what it counts when the child dies, and that the
child writes what it holds when the exporter is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from exporter.history import create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION
from exporter.history.process import EXIT_GRACE, WriterProcess
from exporter.history.writer import HistoryWriter
from tests.support.events import task_event
from tests.support.waiting import wait_for

T0 = 1_700_000_000.0


def lifecycle(task_id: str) -> list[dict]:
    return [task_event("task-sent", uuid=task_id, timestamp=T0, name="app.add"),
            task_event("task-started", uuid=task_id, timestamp=T0 + 1),
            task_event("task-succeeded", uuid=task_id, timestamp=T0 + 2, runtime=1.0)]


def rows(url: str) -> dict[str, str]:
    engine = create_history_engine(url)
    try:
        with engine.connect() as connection:
            return dict(connection.execute(
                select(TASK_EXECUTION.c.task_id, TASK_EXECUTION.c.state)).all())
    finally:
        engine.dispose()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def writers() -> Iterator[list[WriterProcess]]:
    made: list[WriterProcess] = []
    yield made
    for writer in made:
        writer.stop(2.0)


def test_the_child_writes_every_event_and_stop_drains_it(url, writers):
    writer = WriterProcess(url, capacity=1000)
    writers.append(writer)
    writer.start()
    for i in range(100):
        for event in lifecycle(f"t{i}"):
            writer.submit(event)
    writer.submit({"type": "worker-heartbeat", "hostname": "w", "timestamp": T0})  # not counted
    writer.submit({"type": "task-sent"})  # no uuid
    # A value pickle cannot send (a pickled event may carry any object): left out, counted.
    writer.submit({**lifecycle("odd")[0], "kwargs": lambda: None})
    wait_for(lambda: writer.stats().rows_written >= 100, 30)
    stats = writer.stats()
    assert (stats.events_accepted, stats.queue_depth, stats.pending_rows) == (301, 0, 0)
    assert {k: v for k, v in stats.dropped.items() if v} == {"invalid": 2}
    # A session of its own: a terminal's Ctrl-C and a kill of the exporter's process group
    # do not reach it, the exporter alone decides when it stops.
    assert writer.pid is not None
    assert os.getsid(writer.pid) == writer.pid != os.getsid(0)
    for event in lifecycle("last"):
        writer.submit(event)
    assert writer.stop(10.0) is True
    assert rows(url) == {**{f"t{i}": "SUCCESS" for i in range(100)}, "last": "SUCCESS"}
    stats = writer.stats()
    assert (stats.events_accepted, stats.queue_depth, stats.pending_rows) == (304, 0, 0)
    assert stats.rows_written >= 101 and stats.last_write_ts is not None
    wait_for(lambda: not alive(writer.pid), 10)
    writer.submit(lifecycle("late")[0])
    assert writer.stats().dropped["stopped"] == 1


def test_a_child_that_dies_is_counted_and_replaced(tmp_path, writers, caplog):
    caplog.set_level(logging.INFO, logger="exporter.history.process")
    later = tmp_path / "not-yet" / "history.sqlite3"  # its directory does not exist yet
    url = f"sqlite:///{later}"
    writer = WriterProcess(url, retry_initial=0.2, retry_max=5.0)
    writers.append(writer)
    writer.start()
    for i in range(5):
        writer.submit(lifecycle(f"a{i}")[0])
    # The database is down: the child holds the five rows and retries.
    wait_for(lambda: writer.stats().pending_rows == 5 and writer.stats().write_errors >= 1, 30)
    first = writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)  # the kernel's OOM killer, say
    wait_for(lambda: writer.stats().dropped["writer_exited"] == 5, 30)
    stats = writer.stats()
    assert (stats.queue_depth, stats.pending_rows, stats.events_accepted) == (0, 0, 5)
    later.parent.mkdir()
    upgrade(url)
    for event in lifecycle("b"):
        writer.submit(event)
    wait_for(lambda: writer.pid != first and writer.stats().rows_written >= 1, 30)
    second = writer.pid
    assert second is not None
    os.kill(second, signal.SIGKILL)  # a child that reported: the backoff starts again
    # Until the third child reports, consecutive_failures counts the exit.
    wait_for(lambda: writer.stats().consecutive_failures == 1, 30)
    wait_for(lambda: writer.pid != second and writer.stats().consecutive_failures == 0, 30)
    for event in lifecycle("c"):
        writer.submit(event)
    wait_for(lambda: writer.stats().rows_written >= 2, 30)
    assert writer.stop(10.0) is True
    assert rows(url) == {"b": "SUCCESS", "c": "SUCCESS"}
    stats = writer.stats()
    assert stats.dropped["writer_exited"] == 5
    assert stats.write_errors >= 1  # the first child's failed attempts are kept
    assert [r.getMessage() for r in caplog.records if "starting another" in r.getMessage()] \
        == ["history writer process exited code=-9; starting another in 0.2s"] * 2


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_rows_stuck_behind_a_lock_at_stop_are_counted_and_logged(url, writers, kind, caplog):
    # Another process holds SQLite's write lock past the stop: the writer is stuck in its busy
    # wait (10 s). Before, the thread writer's stop gave up silently: nothing counted or logged.
    path = url.removeprefix("sqlite:///")
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        if kind == "process":
            writer: WriterProcess | HistoryWriter = WriterProcess(url)
            writers.append(writer)
        else:
            writer = HistoryWriter(create_history_engine(url))
        writer.start()
        for i in range(5):
            writer.submit(lifecycle(f"s{i}")[0])
        wait_for(lambda: writer.stats().pending_rows == 5, 30)
        time.sleep(0.2)  # the batch is in SQLite's busy wait now
        assert writer.stop(0.5) is False
        assert writer.stats().dropped["stop_timeout"] == 5
        assert any("history records lost at stop records=5" in r.getMessage()
                   for r in caplog.records) or kind == "process"  # the child logs its own
    finally:
        lock.execute("ROLLBACK")
        lock.close()


SCRIPT = textwrap.dedent("""
    import sys, time
    from exporter.history.process import WriterProcess
    from tests.support.events import task_event

    writer = WriterProcess(sys.argv[1])
    writer.start()
    for i in range(50):
        writer.submit(task_event("task-sent", uuid=f"k{i}", timestamp=1.7e9, name="app.add"))
    deadline = time.monotonic() + 60
    while writer.stats().pending_rows < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    print(writer.pid, writer.stats().pending_rows, flush=True)
    time.sleep(600)
""")


def test_the_child_writes_what_it_holds_when_the_exporter_is_killed(url, tmp_path):
    # The test holds SQLite's write lock, so the child can only keep the rows pending.
    path = url.removeprefix("sqlite:///")
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    script = subprocess.Popen([sys.executable, "-c", SCRIPT, url], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parents[2])
    try:
        assert script.stdout is not None
        pid, pending = map(int, script.stdout.readline().split())
        assert pending == 50
        script.kill()  # SIGKILL: no stop() is called
        script.wait(10)
        time.sleep(0.5)
        assert alive(pid)  # still holding the rows
    finally:
        lock.execute("ROLLBACK")
        lock.close()
        if script.poll() is None:
            script.kill()
    wait_for(lambda: not alive(pid), 60)
    engine = create_history_engine(url)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(TASK_EXECUTION)).scalar() == 50
    engine.dispose()


def test_a_child_that_cannot_start_shows_as_failures_and_keeps_its_backoff(writers):
    # The child exits at once (no such database dialect): every start fails. Events arriving
    # meanwhile must not cut the backoff short (before: a new child per event), and the
    # failures show in consecutive_failures (/readyz's history_writes problem).
    writer = WriterProcess("nosuchdialect://nowhere/db", retry_initial=1.0, retry_max=30.0)
    writers.append(writer)
    writer.start()
    writer.submit(lifecycle("x")[0])
    wait_for(lambda: writer.stats().consecutive_failures >= 1, 30)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # an event every 0.1 s during a 1 s, then 2 s backoff
        writer.submit(lifecycle("y")[1])
        time.sleep(0.1)
    stats = writer.stats()
    assert 1 <= stats.consecutive_failures <= 3
    assert stats.dropped["writer_exited"] >= 1  # what the children were sent before they died
    assert stats.rows_written == 0
    started = time.monotonic()
    writer.stop(0.5)
    assert time.monotonic() - started < 0.5 + 3 * EXIT_GRACE
