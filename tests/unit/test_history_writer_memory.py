"""What the history writer keeps in memory while it writes (benchmarks/memory.py, target 4).

The writer thread runs with an injected ``upsert`` (no table): it records, for each batch, how
many of the submitted events are still alive at that moment.
"""

from __future__ import annotations

import weakref

from sqlalchemy import create_engine

from exporter.history.writer import HistoryWriter
from tests.support.clock import T0
from tests.support.events import task_event


class _Marker:
    """Rides along in an event (a field the merge ignores): alive while the event is."""


def test_events_merged_into_rows_are_freed_before_the_rows_are_written(tmp_path):
    # While the writer writes a backlog, a new queue fills up to capacity: events it took and
    # merged into pending rows already must not stay alive meanwhile (twice the queue).
    alive: weakref.WeakSet[_Marker] = weakref.WeakSet()
    seen: list[tuple[int, int]] = []

    def upsert(connection, rows, now):
        seen.append((len(rows), len(alive)))
        return len(rows), 0

    engine = create_engine(f"sqlite:///{tmp_path / 'unused.sqlite3'}")  # upsert: no SQL
    writer = HistoryWriter(engine, capacity=1000, batch_size=100, max_delay=0.05, upsert=upsert)
    for i in range(300):  # queued before the thread starts: one take of 300 events
        marker = _Marker()
        alive.add(marker)
        writer.submit(task_event("task-sent", uuid=f"t{i}", timestamp=T0, name="a.b",
                                 marker=marker))
    del marker
    assert len(alive) == 300
    writer.start()
    try:
        assert writer.flush(10)
    finally:
        assert writer.stop(5)
        engine.dispose()
    assert seen == [(100, 0), (100, 0), (100, 0)]
    assert writer.stats().rows_written == 300
