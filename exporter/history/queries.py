"""Read the execution history: the Python API behind the action API's read endpoints.

Every function takes ``bind``: an :class:`~sqlalchemy.Engine` (a connection is opened and closed
per call), a :class:`~sqlalchemy.Connection` or an ORM :class:`~sqlalchemy.orm.Session` (used
as is, inside the caller's transaction). Results are plain frozen dataclasses; times are float
seconds since the epoch, UTC. Nothing here writes.

Order and cursors: lists are newest first by ``(state_ts, task_id)`` — ``state_ts`` is the time
of the event that set the current state, which for a finished execution is its ``finished_at``.
A cursor is an opaque URL-safe string encoding the last row's ``(state_ts, task_id)``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Table,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session

from exporter.config import DEFAULT_SLOW_THRESHOLD
from exporter.events.table import UNFINISHED_STATES
from exporter.history.orm import TASK_EXECUTION
from exporter.history.rollup import P95_RELATIVE_ERROR, window_figures

Bind = Engine | Connection | Session
_TABLE: Table = TASK_EXECUTION  # type: ignore[assignment]
_C = _TABLE.c
#: Largest page :func:`list_executions` returns.
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
#: The state ``exception_type`` filters select: the execution failed with that exception.
FAILED = "FAILURE"
#: ``TaskStats.slow`` is set when the average runtime exceeds this many seconds.


class InvalidCursor(ValueError):
    """A pagination cursor that this module did not produce (HTTP 400 at the API)."""


@dataclass(frozen=True)
class Execution:
    """One ``task_execution`` row; field meanings and sources as in
    :class:`exporter.history.orm.TaskExecution` (times: epoch seconds; ``runtime`` seconds;
    ``None`` where no event said).
    """

    task_id: str
    name: str | None
    state: str
    state_ts: float
    queue: str | None
    routing_key: str | None
    exchange: str | None
    hostname: str | None
    worker_seen_at: float | None
    args: str | None
    args_truncated: bool
    kwargs: str | None
    kwargs_truncated: bool
    eta: float | None
    expires: float | None
    retries: int
    priority: int | None
    parent_id: str | None
    root_id: str | None
    sent_at: float | None
    received_at: float | None
    started_at: float | None
    finished_at: float | None
    runtime: float | None
    result: str | None
    result_truncated: bool
    exception_type: str | None
    exception_message: str | None
    exception_message_truncated: bool
    traceback: str | None
    traceback_truncated: bool
    exception_at: float | None
    revoke_reason: str | None
    revoke_signal: int | None
    manual_retry_count: int
    retry_of: str | None
    created_by_action: str | None
    updated_by_action: str | None
    updated_at: float
    #: ``events``, ``result_backend`` or ``workers`` (see :class:`~exporter.history.orm.
    #: TaskExecution`).
    state_source: str = "events"


_EXECUTION_COLUMNS = [_C[f.name] for f in fields(Execution)]


@dataclass(frozen=True)
class Page:
    """A page of executions, newest first; ``next_cursor`` is ``None`` on the last page."""

    items: list[Execution]
    next_cursor: str | None


@dataclass(frozen=True)
class TaskStats:
    """Statistics of one task name over the finished executions of a window.

    ``count``: finished executions (any terminal state); ``succeeded``/``failed``/``revoked``/
    ``rejected``/``lost``: SUCCESS / FAILURE / REVOKED / REJECTED / LOST among them (they add
    up to ``count``); ``success_ratio``/``failure_ratio``: the first two over ``count`` (0..1).
    Runtimes (seconds) are over the executions with a known runtime (succeeded: the event's
    ``runtime``; failed: finished − started); ``p95_runtime`` is the nearest-rank 95th
    percentile: the ``ceil(0.95 × n)``-th smallest of the ``n`` runtimes — exact when
    ``p95_relative_error`` is 0, else read from the hourly histograms and within that
    relative error of the true value either way (0.044; :mod:`exporter.history.rollup`).
    ``slow``: the average runtime exceeds the threshold. Runtime fields are ``None`` when no
    runtime is known.
    """

    name: str | None
    count: int
    succeeded: int
    failed: int
    revoked: int
    rejected: int
    lost: int
    success_ratio: float
    failure_ratio: float
    avg_runtime: float | None
    min_runtime: float | None
    max_runtime: float | None
    p95_runtime: float | None
    slow: bool
    p95_relative_error: float = 0.0


@dataclass(frozen=True)
class FailureGroup:
    """FAILURE executions of a window sharing an exception class (``unknown`` when the event
    gave none): how many, the newest ``finished_at`` (``last_seen``) and that newest failure's
    message, task id and task name as a sample.
    """

    exception_type: str
    count: int
    last_seen: float
    sample_message: str | None
    sample_task_id: str
    sample_name: str | None


class UnfinishedTask(NamedTuple):
    """An execution not in a terminal state, for warming the in-memory task index."""

    task_id: str
    name: str | None
    queue: str | None
    routing_key: str | None
    hostname: str | None
    state: str
    sent_at: float | None
    received_at: float | None
    started_at: float | None
    eta: float | None
    retries: int


def _rows(bind: Bind, statement: Executable) -> Sequence[Any]:
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return connection.execute(statement).all()
    return bind.execute(statement).all()


def encode_cursor(state_ts: float, task_id: str) -> str:
    """The opaque cursor after the row ``(state_ts, task_id)``."""
    raw = json.dumps([state_ts, task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """``(state_ts, task_id)`` from a cursor of :func:`encode_cursor`.

    Raises:
        InvalidCursor: anything else.

    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidCursor("invalid cursor") from None
    if (not isinstance(value, list) or len(value) != 2
            or not isinstance(value[0], (int, float)) or isinstance(value[0], bool)
            or not math.isfinite(value[0]) or not isinstance(value[1], str)):
        raise InvalidCursor("invalid cursor")
    return float(value[0]), value[1]


def get_execution(bind: Bind, task_id: str) -> Execution | None:
    """The execution of ``task_id``, or ``None`` when the history has no such task."""
    rows = _rows(bind, select(*_EXECUTION_COLUMNS).where(_C.task_id == task_id))
    return Execution(**rows[0]._mapping) if rows else None


def list_executions(
    bind: Bind,
    *,
    states: Sequence[str] | None = None,
    name: str | None = None,
    queue: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
    exception_type: str | None = None,
) -> Page:
    """One page of executions, newest first, filtered by every argument given.

    Args:
        bind: engine, connection or session (see the module docs).
        states: Celery states to include (e.g. ``["FAILURE"]``); ``None``: all.
        name: exact task name.
        queue: exact queue name.
        since: ``since <= state_ts`` (epoch seconds).
        until: ``state_ts < until`` (epoch seconds).
        limit: page size, 1..:data:`MAX_PAGE_SIZE`.
        cursor: ``next_cursor`` of the previous page; ``None`` for the first page.
        exception_type: executions that *failed* with this exception class: state
            FAILURE and ``exception_type`` equal to it (``ValueError``, as ``task-failed``
            named it). A row that raised it, retried (``task-retried`` stores the exception
            too) and then succeeded or is retrying still is not selected.

    Raises:
        InvalidCursor: ``cursor`` was not produced by this module.
        ValueError: ``limit`` out of range.

    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    query = select(*_EXECUTION_COLUMNS)
    if states is not None:
        query = query.where(_C.state.in_(list(states)))
    if name is not None:
        query = query.where(_C.name == name)
    if queue is not None:
        query = query.where(_C.queue == queue)
    if exception_type is not None:
        query = query.where(_C.state == FAILED, _C.exception_type == exception_type)
    if since is not None:
        query = query.where(_C.state_ts >= since)
    if until is not None:
        query = query.where(_C.state_ts < until)
    if cursor is not None:
        ts, task_id = decode_cursor(cursor)
        query = query.where(or_(_C.state_ts < ts, and_(_C.state_ts == ts, _C.task_id < task_id)))
    query = query.order_by(_C.state_ts.desc(), _C.task_id.desc()).limit(limit + 1)
    items = [Execution(**row._mapping) for row in _rows(bind, query)]
    if len(items) <= limit:
        return Page(items, None)
    items = items[:limit]
    return Page(items, encode_cursor(items[-1].state_ts, items[-1].task_id))


def _ended_in(states: Sequence[str], since: float | None, until: float | None,
              name: str | None, columns: Any = _C) -> list[Any]:
    """Conditions of the executions in one of the terminal ``states`` that finished in the
    window (and of task ``name``): a finished execution's ``finished_at`` is its ``state_ts``
    (:func:`~exporter.history.merge.finalize`), so they are ranges of the ``(state, state_ts,
    task_id)`` or ``(name, state, state_ts, task_id)`` index.
    """
    conditions: list[Any] = [columns.state.in_(states)]
    if since is not None:
        conditions.append(columns.state_ts >= since)
    if until is not None:
        conditions.append(columns.state_ts < until)
    if name is not None:
        conditions.append(columns.name == name)
    return conditions


#: The terminal states besides SUCCESS and FAILURE, counted from the rows (rare, read off the
#: ``(state, state_ts, task_id)`` index) rather than kept in the hourly figures.
OTHER_TERMINAL_STATES = ("REVOKED", "REJECTED", "LOST")


def _other_terminal(connection: Connection, since: float | None, until: float | None,
                    name: str | None) -> dict[str | None, dict[str, int]]:
    """``{name: {state: n}}`` of the :data:`OTHER_TERMINAL_STATES` executions finished in the
    window (only the states with executions).
    """
    query = (select(_C.name, _C.state, func.count())
             .where(*_ended_in(OTHER_TERMINAL_STATES, since, until, name))
             .group_by(_C.name, _C.state))
    counts: dict[str | None, dict[str, int]] = {}
    for task_name, state, n in connection.execute(query):
        counts.setdefault(task_name, {})[state] = int(n)
    return counts


def task_stats(
    bind: Bind,
    *,
    since: float | None = None,
    until: float | None = None,
    name: str | None = None,
    slow_threshold: float = DEFAULT_SLOW_THRESHOLD,
) -> list[TaskStats]:
    """Per task name statistics over executions with ``since <= finished_at < until``.

    Whole hours of the window come from the hourly figures of :mod:`exporter.history.rollup`
    where they are built, the rest from the rows, all in one snapshot (an engine's connection
    reads at REPEATABLE READ on PostgreSQL; a connection or session given is used as it is).
    Counts, ratios, min and max are exact, the average to the last bits of a double; the p95
    is exact or within ``p95_relative_error`` (see :class:`TaskStats`).
    Returns one :class:`TaskStats` per name (``None`` for rows without a name), sorted by name.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database did not answer.

    """
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                by_name = window_figures(connection, since, until, name)
                others = _other_terminal(connection, since, until, name)
    else:
        connection = bind.connection() if isinstance(bind, Session) else bind
        by_name = window_figures(connection, since, until, name)
        others = _other_terminal(connection, since, until, name)
    result = []
    for task_name, figures in by_name.items():
        count = figures.count
        avg = figures.average()
        p95, exact = figures.p95()
        other = others.get(task_name, {})
        result.append(TaskStats(
            name=task_name, count=count, succeeded=figures.succeeded, failed=figures.failed,
            revoked=other.get("REVOKED", 0), rejected=other.get("REJECTED", 0),
            lost=other.get("LOST", 0), success_ratio=figures.succeeded / count,
            failure_ratio=figures.failed / count,
            avg_runtime=avg, min_runtime=figures.minimum, max_runtime=figures.maximum,
            p95_runtime=p95, p95_relative_error=0.0 if exact else P95_RELATIVE_ERROR,
            slow=avg is not None and avg > slow_threshold,
        ))
    return sorted(result, key=lambda s: (s.name is not None, s.name or ""))


def failure_groups(
    bind: Bind,
    *,
    since: float | None = None,
    until: float | None = None,
    name: str | None = None,
    limit: int = 20,
    queue: str | None = None,
) -> list[FailureGroup]:
    """FAILURE executions with ``since <= finished_at < until`` (of task ``name`` and on
    ``queue``, when given) grouped by exception class.

    Returns at most ``limit`` groups, the most frequent first (then the most recent). Two
    reads of the FAILURE range of the ``(state, state_ts, task_id)`` index (a failure's
    ``state_ts`` is its ``finished_at``): the groups (count and newest finish per class), then
    for each group shown its newest failure (the greatest task id among those that finished at
    that time) joined for its message and name — the long columns are read for those rows
    only.
    """
    exception = func.coalesce(_C.exception_type, "unknown")
    on_queue = [] if queue is None else [_C.queue == queue]
    where = [*_ended_in((FAILED,), since, until, name), *on_queue]
    groups = (
        select(exception.label("exception_type"), func.count().label("total"),
               func.max(_C.state_ts).label("last_seen"))
        .where(*where)
        .group_by(exception)
        .order_by(func.count().desc(), func.max(_C.state_ts).desc())
        .limit(limit)
        .subquery()
    )
    sample = _TABLE.alias("sample")
    newest = (
        select(sample.c.task_id)
        .where(*_ended_in((FAILED,), since, until, name, sample.c),
               *([] if queue is None else [sample.c.queue == queue]),
               sample.c.state_ts == groups.c.last_seen,
               func.coalesce(sample.c.exception_type, "unknown") == groups.c.exception_type)
        .order_by(sample.c.task_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    query = (
        select(groups, _C.exception_message, _C.task_id, _C.name)
        .join_from(groups, _TABLE, _C.task_id == newest)
        .order_by(groups.c.total.desc(), groups.c.last_seen.desc())
    )
    return [
        FailureGroup(exception_type=row.exception_type, count=int(row.total),
                     last_seen=row.last_seen, sample_message=row.exception_message,
                     sample_task_id=row.task_id, sample_name=row.name)
        for row in _rows(bind, query)
    ]


def unfinished(bind: Bind, since_seconds: float, limit: int, *, now: float | None = None,
               ) -> list[UnfinishedTask]:
    """Executions not in a terminal state whose state changed in the last ``since_seconds``,
    newest first, at most ``limit`` — to warm the in-memory task index at start.

    ``now``: reference time, epoch seconds (default ``time.time()``).
    """
    reference = time.time() if now is None else now
    query = (
        select(_C.task_id, _C.name, _C.queue, _C.routing_key, _C.hostname, _C.state,
               _C.sent_at, _C.received_at, _C.started_at, _C.eta, _C.retries)
        .where(_C.state.in_(UNFINISHED_STATES), _C.state_ts >= reference - since_seconds)
        .order_by(_C.state_ts.desc(), _C.task_id.desc())
        .limit(limit)
    )
    return [UnfinishedTask(*row) for row in _rows(bind, query)]
