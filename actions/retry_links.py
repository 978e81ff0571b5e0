"""The manual retries already made of an execution, with their states now: what a retry reads
so that one job is not sent twice (a ``charge`` charged twice).

Where they come from: the audit trail's ``retry`` rows of the task (``detail.new_task_id``;
indexed by task id, written in the same transaction as the original's ``manual_retry_count``
and the new row's ``retry_of``, never pruned) and the ``state`` of each new task's
``task_execution`` row (``None`` when the row was pruned).

Example (``T`` failed, was retried as ``R1``, which failed and was retried as ``R2``)::

    >>> describe_line(retry_line(engine, "T"))
    'its retry R1 FAILED, and R1's retry R2 SUCCEEDED'
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, Table, select

from exporter.history.orm import ACTION_AUDIT, TASK_EXECUTION

_AUDIT: Table = ACTION_AUDIT  # type: ignore[assignment]
_TASKS: Table = TASK_EXECUTION  # type: ignore[assignment]
#: Ids per ``IN (…)`` list: well under SQLite's and PostgreSQL's parameter limits.
_CHUNK = 500
#: Longest line of retries followed: far above any ``--max-manual-retries`` in use.
MAX_LINE = 50
#: How a state reads after "its retry <id>".
_STATE_WORDS = {"SUCCESS": "SUCCEEDED", "FAILURE": "FAILED", "REVOKED": "was REVOKED"}


@dataclass(frozen=True)
class RetryLink:
    """One manual retry: the new task's id and its Celery ``state`` now (``None``: its row is
    no longer in the history).
    """

    task_id: str
    state: str | None


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def retries_of(engine: Engine, task_ids: Collection[str]) -> dict[str, list[RetryLink]]:
    """The manual retries of each of ``task_ids``, oldest first (tasks never retried are
    absent).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed (callers wrap this in
            :func:`actions.errors.history_errors`).

    """
    new_ids: dict[str, list[str]] = {}
    with engine.connect() as connection:
        for chunk in _chunks(sorted(set(task_ids))):
            rows = connection.execute(
                select(_AUDIT.c.task_id, _AUDIT.c.detail)
                .where(_AUDIT.c.task_id.in_(chunk), _AUDIT.c.action == "retry")
                .order_by(_AUDIT.c.at, _AUDIT.c.id)).all()
            for task_id, detail in rows:
                if isinstance(detail, dict) and isinstance(detail.get("new_task_id"), str):
                    new_ids.setdefault(task_id, []).append(detail["new_task_id"])
        states: dict[str, str] = {}
        for chunk in _chunks(sorted({i for ids in new_ids.values() for i in ids})):
            for new_id, state in connection.execute(
                    select(_TASKS.c.task_id, _TASKS.c.state).where(_TASKS.c.task_id.in_(chunk))):
                states[new_id] = state
    return {task_id: [RetryLink(i, states.get(i)) for i in ids]
            for task_id, ids in new_ids.items()}


def retry_line(engine: Engine, task_id: str) -> list[RetryLink]:
    """``task_id``'s newest manual retry, that retry's newest retry, and so on: the line of
    retries that carries the job on (empty when it was never retried; at most
    :data:`MAX_LINE`).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database failed.

    """
    line: list[RetryLink] = []
    current, seen = task_id, {task_id}
    while len(line) < MAX_LINE:
        links = retries_of(engine, [current]).get(current)
        if not links or links[-1].task_id in seen:
            return line
        line.append(links[-1])
        current = links[-1].task_id
        seen.add(current)
    return line


def state_words(state: str | None) -> str:
    """``SUCCEEDED``, ``FAILED``, ``was REVOKED``, ``is STARTED`` …, or ``is no longer in the
    history`` for ``None``.
    """
    if state is None:
        return "is no longer in the history"
    return _STATE_WORDS.get(state, f"is {state}")


def describe_line(line: Sequence[RetryLink]) -> str:
    """``its retry R1 FAILED, and R1's retry R2 SUCCEEDED`` for a :func:`retry_line`."""
    parts = [f"its retry {line[0].task_id} {state_words(line[0].state)}"]
    parts += [f"{before.task_id}'s retry {link.task_id} {state_words(link.state)}"
              for before, link in zip(line, line[1:], strict=False)]
    return ", and ".join(parts)
