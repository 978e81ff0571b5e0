"""Retention of ``task_execution``: delete rows by age and keep at most N rows.

The age of a row is its ``finished_at`` when it finished, else its ``updated_at`` (a task stuck
in STARTED for longer than the retention goes too). "Newest" for the row limit is the
pagination order, ``(state_ts, task_id)`` descending. ``action_audit`` is never pruned here.

Deletes run in chunks of ``chunk_size`` rows, one transaction each, so a large prune never holds
SQLite's write lock (and the history writer) for long.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, and_, delete, func, or_, select

from exporter.events.table import TERMINAL_STATES, UNFINISHED_STATES
from exporter.history.orm import TASK_EXECUTION

log = logging.getLogger(__name__)

_TABLE: Table = TASK_EXECUTION  # type: ignore[assignment]
_C = _TABLE.c
#: Rows deleted per transaction.
DEFAULT_CHUNK_SIZE = 5000


def _older_than(cutoff: float) -> ColumnElement[bool]:
    # Written as range conditions behind a state IN list, so the finished rows are ranges of
    # the (state, state_ts, task_id) index (a finished row's finished_at is its state_ts)
    # instead of a scan of the table.
    return or_(
        and_(_C.state.in_(sorted(TERMINAL_STATES)), _C.state_ts < cutoff),
        and_(_C.state.in_(UNFINISHED_STATES), _C.updated_at < cutoff),
    )


def _count(engine: Engine, condition: ColumnElement[bool] | None = None) -> int:
    query = select(func.count()).select_from(_TABLE)
    if condition is not None:
        query = query.where(condition)
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _delete_chunked(engine: Engine, condition: ColumnElement[bool], chunk_size: int) -> int:
    deleted = 0
    while True:
        chunk = select(_C.task_id).where(condition).limit(chunk_size).scalar_subquery()
        with engine.begin() as connection:
            count = connection.execute(delete(_TABLE).where(_C.task_id.in_(chunk))).rowcount
        deleted += count
        if count < chunk_size:
            return deleted


def _row_limit_boundary(engine: Engine, max_rows: int) -> Any:
    """The (state_ts, task_id) of the newest row beyond the first ``max_rows``, or ``None``."""
    query = (select(_C.state_ts, _C.task_id)
             .order_by(_C.state_ts.desc(), _C.task_id.desc())
             .offset(max_rows).limit(1))
    with engine.connect() as connection:
        return connection.execute(query).first()


def prune(engine: Engine, older_than_seconds: float | None = None, max_rows: int | None = None,
          dry_run: bool = False, *, now: float | None = None,
          chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Delete rows older than ``older_than_seconds``, then all but the newest ``max_rows``.

    Args:
        engine: the history engine.
        older_than_seconds: age limit in seconds (see the module docs); ``None``: no age limit.
        max_rows: rows to keep at most; ``None``: no row limit; 0 deletes every row.
        dry_run: count what would be deleted, delete nothing.
        now: the reference time, seconds since the epoch (default: ``time.time()``).
        chunk_size: rows per delete transaction.

    Returns:
        The number of rows deleted (or, with ``dry_run``, that would be): each row once, even
        when both limits select it.

    Raises:
        ValueError: a negative limit or a chunk size below 1.
        sqlalchemy.exc.SQLAlchemyError: the database failed (rows deleted in earlier chunks
            stay deleted).

    """
    if older_than_seconds is not None and older_than_seconds < 0:
        raise ValueError("older_than_seconds must be >= 0")
    if max_rows is not None and max_rows < 0:
        raise ValueError("max_rows must be >= 0")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    reference = time.time() if now is None else now
    age_condition = (None if older_than_seconds is None
                     else _older_than(reference - older_than_seconds))
    if dry_run:
        by_age = 0 if age_condition is None else _count(engine, age_condition)
        if max_rows is None:
            return by_age
        survivors = _count(engine) - by_age
        return by_age + max(0, survivors - max_rows)
    deleted = 0
    if age_condition is not None:
        deleted += _delete_chunked(engine, age_condition, chunk_size)
    if max_rows is not None:
        boundary = _row_limit_boundary(engine, max_rows)
        if boundary is not None:
            ts, task_id = boundary
            beyond = or_(_C.state_ts < ts, and_(_C.state_ts == ts, _C.task_id <= task_id))
            deleted += _delete_chunked(engine, beyond, chunk_size)
    if deleted:
        log.info("history pruned rows=%d older_than=%s max_rows=%s", deleted,
                 older_than_seconds, max_rows)
    return deleted
