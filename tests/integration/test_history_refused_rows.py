"""A batch the database refuses is written again in halves: the refused rows alone are dropped,
in a number of transactions that grows with the log of the batch, not with its rows.

Real SQLite history (a file in WAL mode, migrated); the refusal is injected through the
writer's ``upsert`` (a row a real database would refuse: a value out of range on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import DataError

from exporter.history import HistoryWriter, create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION
from exporter.history.store import upsert_rows
from tests.support.clock import T0
from tests.support.events import task_event

ROWS = 64
REFUSED = {"t13", "t50"}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_history_engine(f"sqlite:///{tmp_path / 'history.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def lifecycle(task_id: str, t: float) -> list[dict[str, Any]]:
    return [task_event("task-sent", uuid=task_id, timestamp=t, hostname="web-1",
                       name="app.add", args="(1, 2)", kwargs="{}", retries=0, queue="a",
                       exchange="", routing_key="a"),
            task_event("task-started", uuid=task_id, timestamp=t + 0.125),
            task_event("task-succeeded", uuid=task_id, timestamp=t + 0.5, result="3",
                       runtime=0.375)]


def test_a_refused_batch_is_split_in_halves_down_to_the_refused_rows(engine):
    calls: list[int] = []

    def refusing(connection: Connection, rows: Mapping[str, Any], now: float
                 ) -> tuple[int, int]:
        calls.append(len(rows))
        if REFUSED & rows.keys():
            raise DataError("INSERT ...", {}, Exception("value out of range"))
        return upsert_rows(connection, rows, now)

    writer = HistoryWriter(engine, max_delay=0.05, clock=lambda: T0 + 1000, upsert=refusing)
    for k in range(ROWS):
        for event in lifecycle(f"t{k}", T0 + k):
            writer.submit(event)
    writer.start()
    try:
        assert writer.flush(30.0)
    finally:
        writer.stop(10.0)
    stats = writer.stats()
    assert (stats.rows_written, stats.dropped["rejected"], stats.write_errors) == (62, 2, 1)
    with engine.connect() as connection:
        stored = set(connection.execute(select(TASK_EXECUTION.c.task_id)).scalars())
        assert connection.execute(select(func.count()).select_from(TASK_EXECUTION).where(
            TASK_EXECUTION.c.state == "SUCCESS")).scalar_one() == 62
    assert stored == {f"t{k}" for k in range(ROWS)} - REFUSED
    # The 64 rows once, then per half: t0-31 -> t0-15 -> t8-15 -> t12-15 -> t12-13 -> t13
    # refused (and t0-7, t8-11, t12, t14-15, t16-31 written), the same around t50: 23
    # transactions. Row by row after the first refusal it took 65.
    assert len(calls) == 23
    assert calls[:5] == [64, 32, 16, 8, 8]
