"""The runs of a periodic entry, read from the execution history (``task_execution``).

Task events carry no mark of beat (its ``celery_beat_task`` header stays in the message), so a
run of an entry is an execution of its task — with the entry's argument reprs when several
entries send the same task (:func:`runs`). A run was *sent* at its ``task-sent`` time, or,
when the producer sends no ``task-sent`` (``task_send_sent_event`` off in beat's app), when a
worker received it. Reads only; times are float seconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, Table, case, func, select

from exporter.history.orm import TASK_EXECUTION

_TABLE: Table = TASK_EXECUTION  # type: ignore[assignment]
_C = _TABLE.c
#: When a run was sent: ``task-sent``, else ``task-received`` (no sent event).
SENT_AT = func.coalesce(_C.sent_at, _C.received_at)


@dataclass(frozen=True)
class Runs:
    """What the history says of an entry's runs (``None``: no such run in the history).

    Attributes:
        last_sent: the newest run's send time (:data:`SENT_AT`).
        last_started: the newest ``started_at`` (``task-started``).
        last_succeeded: ``finished_at`` of the newest run that ended in SUCCESS.
        last_outcome: the state of the newest finished run (SUCCESS, FAILURE, REVOKED,
            REJECTED, LOST).
        sent: send times after ``since`` (the argument of :func:`runs`), oldest first.

    """

    last_sent: float | None
    last_started: float | None
    last_succeeded: float | None
    last_outcome: str | None
    sent: tuple[float, ...]


def _matching(task: str, arguments: tuple[str, str] | None) -> list[ColumnElement[bool]]:
    """The rows of ``task``, with these ``(args, kwargs)`` reprs when given."""
    where = [_C.name == task]
    if arguments is not None:
        where += [_C.args == arguments[0], _C.kwargs == arguments[1]]
    return where


def runs(engine: Engine, task: str, since: float,
         arguments: tuple[str, str] | None = None) -> Runs:
    """The runs of ``task`` in the history (three indexed reads on ``name``).

    Args:
        engine: the history database.
        task: the task name.
        since: :attr:`Runs.sent` holds the send times after this.
        arguments: ``(args repr, kwargs repr)`` the rows must have (the entry's
            :meth:`~exporter.periodic.schedules.Entry.argument_reprs`), or ``None``: any.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read.

    """
    where = _matching(task, arguments)
    latest = select(
        func.max(SENT_AT), func.max(_C.started_at),
        func.max(case((_C.state == "SUCCESS", _C.finished_at))),
    ).where(*where)
    outcome = (select(_C.state).where(*where, _C.finished_at.is_not(None))
               .order_by(_C.finished_at.desc()).limit(1))
    sent = select(SENT_AT).where(*where, SENT_AT > since).order_by(SENT_AT)
    with engine.connect() as connection:
        last_sent, last_started, last_succeeded = connection.execute(latest).one()
        state = connection.execute(outcome).scalar()
        sends = tuple(float(value) for value in connection.execute(sent).scalars())
    return Runs(_float(last_sent), _float(last_started), _float(last_succeeded), state, sends)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
