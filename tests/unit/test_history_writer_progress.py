"""The writer's counters never show work in hand as done: ``queue_depth`` and ``pending_rows``
are both 0 only when everything accepted is written (``benchmarks/ingest.py`` ends a run with
the history there, and a dashboard reads them the same way).
"""

from __future__ import annotations

from sqlalchemy import create_engine

from exporter.history.writer import HistoryWriter
from tests.support.clock import T0
from tests.support.events import task_event


def test_events_the_writer_took_count_as_queued_until_they_are_merged(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'unused.sqlite3'}")
    writer = HistoryWriter(engine, capacity=100, batch_size=10)  # not started
    for i in range(7):
        writer.submit(task_event("task-sent", uuid=f"t{i}", timestamp=T0, name="a.b"))
    with writer._cond:
        taken, oldest, _, emptied = writer._take_locked()
    assert (writer.stats().queue_depth, writer.stats().pending_rows) == (7, 0)
    assert taken is not None and emptied
    writer._merge(taken, oldest)
    assert (writer.stats().queue_depth, writer.stats().pending_rows) == (0, 7)
    engine.dispose()


def test_rows_being_written_count_as_pending(tmp_path):
    seen: list[tuple[int, int]] = []

    def upsert(connection, rows, now):
        stats = writer.stats()
        seen.append((stats.queue_depth, stats.pending_rows))
        return len(rows), 0

    engine = create_engine(f"sqlite:///{tmp_path / 'unused.sqlite3'}")  # upsert: no SQL
    writer = HistoryWriter(engine, capacity=1000, batch_size=100, max_delay=0.05, upsert=upsert)
    for i in range(300):  # queued before the thread starts: one take of 300 events
        writer.submit(task_event("task-sent", uuid=f"t{i}", timestamp=T0, name="a.b"))
    writer.start()
    try:
        assert writer.flush(10)
    finally:
        assert writer.stop(5)
        engine.dispose()
    assert seen == [(0, 300), (0, 200), (0, 100)]
    stats = writer.stats()
    assert (stats.queue_depth, stats.pending_rows, stats.rows_written) == (0, 0, 300)
