"""History reads only the pages need (the rest go through :mod:`actions.reads` and
:mod:`exporter.history`, like the API). Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Executable, Table, func, select

from actions.errors import history_errors
from exporter.events.table import STATES
from exporter.history.orm import ACTION_AUDIT, TASK_EXECUTION

_TABLE: Table = TASK_EXECUTION  # type: ignore[assignment]
_AUDIT: Table = ACTION_AUDIT  # type: ignore[assignment]
_C = _TABLE.c


def state_counts(engine: Engine, since: float) -> dict[str, int]:
    """Executions whose current state was set at or after ``since`` (epoch seconds), by
    Celery state (:data:`~exporter.history.STATES`): ``{"SUCCESS": 120, "FAILURE": 3}``
    (states with none are absent). Read from the ``(state, state_ts, task_id)`` index alone.

    Raises:
        HistoryUnavailable: the database did not answer.

    """
    with history_errors(), engine.connect() as connection:
        row = connection.execute(state_counts_query(since)).one()
    return {state: int(count) for state, count in zip(STATES, row, strict=True) if count}


def state_counts_query(since: float) -> Executable:
    """The statement of :func:`state_counts`: one row, the count of each of
    :data:`~exporter.history.STATES` in that order.
    """
    # One count per state, each a range of the (state, state_ts, task_id) index: the index
    # alone is read. Grouping the state_ts range by state looked every row up for its state
    # (28 ms for a day of 33,000 rows among 1,000,000 on SQLite, 9 ms this way); grouping by
    # the bare column made SQLite walk a whole index led by state (8.8 s).
    return select(*(
        select(func.count()).where(_C.state == state, _C.state_ts >= since)
        .scalar_subquery().label(state.lower()) for state in STATES))


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit trail: ``at`` (exporter clock, epoch seconds), ``actor`` (``api``,
    ``cli:<login>``, ``ui:<user>``), ``action`` (``retry``, ``cancel``, ``cancel-outcome``, …)
    and what was recorded with it.
    """

    at: float
    actor: str
    action: str
    detail: dict[str, Any] | None


def audit_trail(engine: Engine, task_id: str, limit: int = 100) -> list[AuditEntry]:
    """The audit rows of ``task_id``, oldest first, at most ``limit`` (indexed by task id).

    Raises:
        HistoryUnavailable: the database did not answer.

    """
    query = (select(_AUDIT.c.at, _AUDIT.c.actor, _AUDIT.c.action, _AUDIT.c.detail)
             .where(_AUDIT.c.task_id == task_id).order_by(_AUDIT.c.at, _AUDIT.c.id)
             .limit(limit))
    with history_errors(), engine.connect() as connection:
        return [AuditEntry(row.at, row.actor, row.action,
                           row.detail if isinstance(row.detail, dict) else None)
                for row in connection.execute(query)]


@dataclass(frozen=True)
class LongRunning:
    """An execution the history has as STARTED since ``started_at`` (worker clock, epoch
    seconds), on ``hostname``.
    """

    task_id: str
    name: str | None
    queue: str | None
    hostname: str | None
    started_at: float


def long_running(engine: Engine, started_before: float, limit: int = 10) -> list[LongRunning]:
    """Executions STARTED before ``started_before`` (epoch seconds) and not finished, the
    longest-running first, at most ``limit``. Served by the ``(state, state_ts, task_id)`` index:
    only the STARTED rows are read.

    Raises:
        HistoryUnavailable: the database did not answer.

    """
    query = (select(_C.task_id, _C.name, _C.queue, _C.hostname, _C.started_at)
             .where(_C.state == "STARTED", _C.started_at < started_before)
             .order_by(_C.started_at, _C.task_id).limit(limit))
    with history_errors(), engine.connect() as connection:
        return [LongRunning(*row) for row in connection.execute(query)]


@dataclass(frozen=True)
class SlowTask:
    """A task name whose executions that ended in the window (those with a ``runtime``:
    SUCCESS, FAILURE) ran
    ``avg_runtime`` seconds on average (``max_runtime`` at most; ``count`` of them with a known
    runtime); ``name`` is ``None`` for rows without one.
    """

    name: str | None
    count: int
    avg_runtime: float
    max_runtime: float


def slow_tasks(engine: Engine, since: float, threshold: float, limit: int = 10
               ) -> list[SlowTask]:
    """Task names whose executions that ended at or after ``since`` averaged more than
    ``threshold`` seconds, the slowest first, at most ``limit``. Reads the ``state_ts`` range
    of the window only (an ended execution's state changed when it ended; only ended ones have
    a ``runtime``).

    Raises:
        HistoryUnavailable: the database did not answer.

    """
    with history_errors(), engine.connect() as connection:
        return [SlowTask(name, int(count), float(avg), float(most)) for name, count, avg, most
                in connection.execute(slow_tasks_query(since, threshold, limit))]


def slow_tasks_query(since: float, threshold: float, limit: int) -> Executable:
    """The statement of :func:`slow_tasks`: ``(name, count, avg, max)`` rows."""
    # Grouped by an expression, for the reason given in state_counts_query; no filter on the
    # state either (SQLite would take a (state, …) index): only ended executions
    # have a runtime.
    group = func.coalesce(_C.name, "")
    average = func.avg(_C.runtime)
    return (select(func.max(_C.name), func.count(_C.runtime), average, func.max(_C.runtime))
            .where(_C.state_ts >= since, _C.runtime.is_not(None))
            .group_by(group).having(average > threshold)
            .order_by(average.desc()).limit(limit))
