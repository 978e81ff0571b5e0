"""Record actions (retry, cancel, …) in the history: the audit trail and the task rows' action
columns. Used by the action API and the ``retry``/``cancel`` commands; the writer never touches
these columns.

A cancel is recorded twice, apart: the *request* when it is broadcast (action ``cancel``:
what was asked — ``requested`` ``revoke`` or ``terminate`` — and which workers acknowledged,
never what it achieved), and its *outcome* once the task's row shows it (action
``cancel-outcome``, :func:`settle_cancels`): ``honoured`` when the row turned REVOKED (the
workers' ``task-revoked`` event), ``not-honoured`` when the task started after the request or
ran to its end, ``unknown`` when it ended otherwise (REJECTED, LOST). Outcomes are judged from
the row alone, never by comparing the exporter's clock with a worker's.

Each function takes ``bind``: an :class:`~sqlalchemy.Engine` (its own transaction, committed) or
a :class:`~sqlalchemy.Connection`/:class:`~sqlalchemy.orm.Session` (the caller's transaction,
which the caller commits).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, CursorResult, Engine, Table, exists, insert, select, update
from sqlalchemy.orm import Session

from exporter.history.orm import ACTION_AUDIT, TASK_EXECUTION

Bind = Engine | Connection | Session
_TASKS: Table = TASK_EXECUTION  # type: ignore[assignment]
_AUDIT: Table = ACTION_AUDIT  # type: ignore[assignment]
#: Columns a manual retry copies from the original execution to the new one.
RETRY_COPIED = ("name", "queue", "routing_key", "exchange", "args", "args_truncated", "kwargs",
                "kwargs_truncated", "priority")
_T = TypeVar("_T")
#: Audit actions of a cancel: the request, and its outcome once known.
CANCEL = "cancel"
CANCEL_OUTCOME = "cancel-outcome"
#: Outcome of a cancel request by the state its task reached; a state not listed settles
#: nothing, except that a task that *started* after a revoke was not honoured.
OUTCOME_BY_STATE = {"REVOKED": "honoured", "SUCCESS": "not-honoured",
                    "FAILURE": "not-honoured", "REJECTED": "unknown", "LOST": "unknown"}
PENDING = "pending"


@dataclass(frozen=True)
class CancelRequest:
    """A cancel request of the audit trail and what came of it.

    ``request_id``: its audit row; ``at``: exporter clock, epoch seconds; ``detail``: what was
    recorded with it (``requested`` ``revoke``/``terminate``, ``signal``, ``previous_state``,
    ``hostname``, ``pool``, ``acknowledged_by``, ``terminated_by``, ``refused_by``,
    ``workers_up``, ``warnings``); ``outcome``: ``pending``, ``honoured``, ``not-honoured`` or
    ``unknown``, with ``outcome_at`` (exporter clock) and ``evidence`` once settled.
    """

    request_id: int
    task_id: str
    at: float
    actor: str
    detail: Mapping[str, Any]
    outcome: str
    outcome_at: float | None
    evidence: str | None


@dataclass(frozen=True)
class SettleResult:
    """What :func:`settle_cancels` did: ``recorded`` ``(task_id, outcome)`` pairs, and how many
    requests are ``still_open`` (their task's row shows no outcome yet).
    """

    recorded: list[tuple[str, str]]
    still_open: int


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


def judge_cancel(request: Mapping[str, Any], row: Mapping[str, Any] | None
                 ) -> tuple[str, str] | None:
    """The outcome of a cancel request from its task's row now: ``(outcome, evidence)``, or
    ``None`` while the row shows none (or there is no row).

    ``request``: the request's audit detail (``previous_state`` and the row's ``started_at``
    when it was made); ``row``: ``state``, ``started_at``, ``revoke_reason``,
    ``revoke_signal`` and ``state_source`` (where the state came from: the evidence names a
    repair's source) of the task's ``task_execution`` row.
    """
    if row is None:
        return None
    state = row["state"]
    outcome = OUTCOME_BY_STATE.get(state)
    if outcome == "honoured":
        how = row.get("revoke_reason") or "revoked"
        signal = row.get("revoke_signal")
        source = row.get("state_source")
        said = ("task-revoked" if source in (None, "events")
                else f"REVOKED in the {source.replace('_', ' ')}")
        return outcome, f"{said} ({how}{f', signal {signal}' if signal else ''})"
    if outcome == "not-honoured":
        return outcome, f"the task ran to its end ({state}) after the request"
    if outcome is not None:
        return outcome, f"the task ended {state}: neither revoked nor run to its end"
    started = row.get("started_at")
    if (request.get("previous_state") != "STARTED" and started is not None
            and started != request.get("started_at")):
        return "not-honoured", f"the task started after the request (now {state})"
    return None


def _open_requests(db: Connection | Session, task_id: str | None, since: float | None
                   ) -> list[Any]:
    """Cancel requests with no outcome row after them (oldest first)."""
    request, later = _AUDIT.alias("request"), _AUDIT.alias("later")
    settled = exists().where(later.c.action == CANCEL_OUTCOME,
                             later.c.task_id == request.c.task_id, later.c.id > request.c.id)
    query = select(request.c.id, request.c.task_id, request.c.detail).where(
        request.c.action == CANCEL, request.c.task_id.is_not(None), ~settled)
    if task_id is not None:
        query = query.where(request.c.task_id == task_id)
    if since is not None:
        query = query.where(request.c.at >= since)
    return list(db.execute(query.order_by(request.c.id)).all())


def settle_cancels(bind: Bind, *, at: float | None = None, task_id: str | None = None,
                   since: float | None = None) -> SettleResult:
    """Record the outcome of every open cancel request (of ``task_id`` only, made at or after
    ``since`` only) whose task's row now shows it (:func:`judge_cancel`): one
    ``cancel-outcome`` audit row per task, ``detail`` ``{outcome, state, evidence,
    request_id}`` (the newest open request; it settles the older ones too). Idempotent.

    Args:
        bind: engine, connection or session (see the module docs).
        at: epoch seconds of the outcome rows (default ``time.time()``).
        task_id: settle this task's requests only (``None``: every task's).
        since: only requests made at or after this (epoch seconds, exporter clock).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed (nothing recorded).

    """
    when = time.time() if at is None else at

    def work(db: Connection | Session) -> SettleResult:
        latest: dict[str, tuple[int, Mapping[str, Any]]] = {}
        for request_id, request_task, detail in _open_requests(db, task_id, since):
            latest[request_task] = (request_id, detail or {})
        rows = _rows_of(db, list(latest))
        recorded: list[tuple[str, str]] = []
        still_open = 0
        for request_task, (request_id, detail) in latest.items():
            row = rows.get(request_task)
            judged = judge_cancel(detail, row)
            if judged is None:
                still_open += 1
                continue
            outcome, evidence = judged
            assert row is not None
            _audit(db, when, "exporter", CANCEL_OUTCOME, request_task, {
                "outcome": outcome, "state": row["state"], "evidence": evidence,
                "request_id": request_id})
            recorded.append((request_task, outcome))
        return SettleResult(recorded, still_open)

    return _in_transaction(bind, work)


def _rows_of(db: Connection | Session, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    columns = (_TASKS.c.task_id, _TASKS.c.state, _TASKS.c.started_at, _TASKS.c.revoke_reason,
               _TASKS.c.revoke_signal, _TASKS.c.state_source)
    if not task_ids:
        return {}
    result = db.execute(select(*columns).where(_TASKS.c.task_id.in_(list(task_ids))))
    return {row.task_id: dict(row._mapping) for row in result}


def cancel_requests(bind: Bind, task_id: str) -> list[CancelRequest]:
    """The cancel requests of ``task_id``, oldest first, each with the first outcome recorded
    after it (``pending`` when none yet).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed.

    """
    query = (select(_AUDIT.c.id, _AUDIT.c.at, _AUDIT.c.actor, _AUDIT.c.action, _AUDIT.c.detail)
             .where(_AUDIT.c.task_id == task_id,
                    _AUDIT.c.action.in_((CANCEL, CANCEL_OUTCOME)))
             .order_by(_AUDIT.c.id))

    def work(db: Connection | Session) -> list[CancelRequest]:
        trail = db.execute(query).all()
        requests = []
        for index, (audit_id, at, actor, action, detail) in enumerate(trail):
            if action != CANCEL:
                continue
            outcome = next((entry for entry in trail[index + 1:]
                            if entry.action == CANCEL_OUTCOME), None)
            settled = outcome.detail if outcome is not None and outcome.detail else {}
            requests.append(CancelRequest(
                request_id=audit_id, task_id=task_id, at=at, actor=actor,
                detail=detail or {}, outcome=settled.get("outcome", PENDING),
                outcome_at=outcome.at if outcome is not None else None,
                evidence=settled.get("evidence")))
        return requests

    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return work(connection)
    return work(bind)
