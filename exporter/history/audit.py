"""Record actions (retry, cancel, …) in the history: the audit trail and the task rows' action
columns. Used by the action API and the ``retry``/``cancel`` commands; the writer never touches
these columns.

Each function takes ``bind``: an :class:`~sqlalchemy.Engine` (its own transaction, committed) or
a :class:`~sqlalchemy.Connection`/:class:`~sqlalchemy.orm.Session` (the caller's transaction,
which the caller commits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Engine, Table, insert, select, update
from sqlalchemy.orm import Session

from exporter.history.orm import ACTION_AUDIT, TASK_EXECUTION

Bind = Engine | Connection | Session
_TASKS: Table = TASK_EXECUTION  # type: ignore[assignment]
_AUDIT: Table = ACTION_AUDIT  # type: ignore[assignment]
#: Columns a manual retry copies from the original execution to the new one.
RETRY_COPIED = ("name", "queue", "routing_key", "exchange", "args", "args_truncated", "kwargs",
                "kwargs_truncated", "priority")
_T = TypeVar("_T")


def _in_transaction(bind: Bind, work: Callable[[Connection | Session], _T]) -> _T:
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            return work(connection)
    return work(bind)


def _audit(db: Connection | Session, at: float, actor: str, action: str, task_id: str | None,
           detail: Mapping[str, Any] | None) -> int:
    result = db.execute(insert(_AUDIT).values(at=at, actor=actor[:255], action=action[:64],
                                              task_id=task_id,
                                              detail=dict(detail) if detail else None))
    # Session.execute is typed as Result; for DML it is the CursorResult of the connection.
    key = cast("CursorResult[Any]", result).inserted_primary_key
    assert key is not None
    return int(key[0])


def record_action(bind: Bind, *, actor: str, action: str, task_id: str | None = None,
                  detail: Mapping[str, Any] | None = None, at: float | None = None) -> int:
    """Append an audit row and, when ``task_id`` has a row, set its ``updated_by_action``.

    Args:
        bind: engine, connection or session (see the module docs).
        actor: who (token name / user), never a secret.
        action: ``cancel``, ``retry``, ….
        task_id: the task acted on, or ``None``.
        detail: JSON-serialisable facts (signal, outcome, error message).
        at: epoch seconds (default ``time.time()``).

    Returns:
        The audit row's id.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed (nothing recorded).

    """
    when = time.time() if at is None else at

    def work(db: Connection | Session) -> int:
        if task_id is not None:
            db.execute(update(_TASKS).where(_TASKS.c.task_id == task_id)
                       .values(updated_by_action=action[:255], updated_at=when))
        return _audit(db, when, actor, action, task_id, detail)

    return _in_transaction(bind, work)


def record_retry(bind: Bind, *, original_id: str, new_id: str, actor: str,
                 detail: Mapping[str, Any] | None = None, at: float | None = None) -> int:
    """Record a manual retry that re-sent ``original_id`` as the new task ``new_id``.

    The original row gets ``manual_retry_count + 1`` and ``updated_by_action = "retry"``; the
    new row (created as PENDING at ``at`` with the original's name, queue, routing and
    arguments, unless the writer stored its ``task-sent`` already) gets ``retry_of`` and
    ``created_by_action = "retry"``; an audit row says who. One transaction.

    Returns:
        The audit row's id.

    Raises:
        LookupError: ``original_id`` has no row.
        sqlalchemy.exc.SQLAlchemyError: the database failed; an ``IntegrityError`` when the
            writer inserted ``new_id`` at the same instant (calling again succeeds).

    """
    when = time.time() if at is None else at

    def work(db: Connection | Session) -> int:
        columns = [_TASKS.c[c] for c in RETRY_COPIED]
        original = db.execute(select(*columns).where(_TASKS.c.task_id == original_id)).first()
        if original is None:
            raise LookupError(f"no execution {original_id!r} in the history")
        db.execute(update(_TASKS).where(_TASKS.c.task_id == original_id).values(
            manual_retry_count=_TASKS.c.manual_retry_count + 1, updated_by_action="retry",
            updated_at=when))
        linked = db.execute(update(_TASKS).where(_TASKS.c.task_id == new_id).values(
            retry_of=original_id, created_by_action="retry", updated_at=when))
        if not cast("CursorResult[Any]", linked).rowcount:
            db.execute(insert(_TASKS).values(
                task_id=new_id, state="PENDING", state_ts=when, retry_of=original_id,
                created_by_action="retry", updated_at=when, **original._asdict()))
        return _audit(db, when, actor, "retry", original_id,
                      {"new_task_id": new_id, **(detail or {})})

    return _in_transaction(bind, work)
