"""The tasks the repairer still has to check, and when: :class:`SuspectTable` (pure, the
repairer thread's own; not thread-safe).

A task becomes a suspect when its events may have been lost: it was in progress at the end of
an event gap (``gap``), on a worker whose heartbeats showed missed events or not yet with any
worker (``missed_events``), or it was warmed from the history at start (``restart``). Each is
due for a check ``settle`` seconds later. A check either settles it (a source knew: it leaves
the table), or finds nothing: then it is checked again after ``retry_base`` seconds, doubling
up to ``retry_max``, ``max_attempts`` times in all. A task no source knows although the model
says a worker had it (RECEIVED, STARTED), or that nothing could have told (no result backend),
is *unresolved*: after the last attempt it stays in the table, counted, until an event ends it
or the index forgets it. A task waiting in its queue (PENDING, the result backend does not know
it, no worker holds it: all agree) just leaves after its last attempt.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class Suspect:
    """One task to check: why (``reason``), when next (``due``, the repairer's clock; infinite
    once given up), how often a check found nothing (``attempts``), and whether the last one
    left it ``unresolved``.
    """

    reason: str
    due: float
    attempts: int = 0
    unresolved: bool = False


class SuspectTable:
    """Suspects by task id (see the module docs).

    Args:
        capacity: most suspects held; further ones are refused (:meth:`add` says how many were
            taken) — the task index holds no more tasks than this anyway.
        retry_base / retry_max: seconds before the second check, doubling up to this.
        max_attempts: checks that found nothing before a suspect is given up.

    """

    def __init__(self, capacity: int, retry_base: float, retry_max: float,
                 max_attempts: int) -> None:
        self.capacity = capacity
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self._suspects: dict[str, Suspect] = {}

    def __len__(self) -> int:
        return len(self._suspects)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._suspects

    def get(self, task_id: str) -> Suspect | None:
        """The suspect ``task_id``, or ``None``."""
        return self._suspects.get(task_id)

    def add(self, task_ids: Iterable[str], reason: str, due: float) -> int:
        """Make ``task_ids`` due at ``due`` (seconds); one already held is due again at the
        earlier of both times with its attempts reset (a new gap is a new reason to look).
        Returns how many were added or made due again.
        """
        taken = 0
        for task_id in task_ids:
            suspect = self._suspects.get(task_id)
            if suspect is None:
                if len(self._suspects) >= self.capacity:
                    continue
                self._suspects[task_id] = Suspect(reason, due)
            else:
                suspect.due = min(suspect.due, due)
                suspect.attempts = 0
            taken += 1
        return taken

    def due(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` task ids due at ``now``, the longest overdue first."""
        ready = ((s.due, task_id) for task_id, s in self._suspects.items() if s.due <= now)
        return [task_id for _, task_id in heapq.nsmallest(limit, ready)]

    def resolve(self, task_id: str) -> None:
        """A source settled the task, or it ended or was forgotten: it leaves the table."""
        self._suspects.pop(task_id, None)

    def forget(self, task_ids: Iterable[str]) -> None:
        """:meth:`resolve` each of ``task_ids``."""
        for task_id in task_ids:
            self._suspects.pop(task_id, None)

    def inconclusive(self, task_id: str, now: float, unresolved: bool) -> None:
        """A check of ``task_id`` at ``now`` found nothing; ``unresolved``: and the model's
        state is contradicted or could not be confirmed (see the module docs).
        """
        suspect = self._suspects.get(task_id)
        if suspect is None:
            return
        suspect.attempts += 1
        suspect.unresolved = unresolved
        if suspect.attempts >= self.max_attempts:
            if not unresolved:
                del self._suspects[task_id]
                return
            suspect.due = math.inf
            return
        suspect.due = now + min(self.retry_max,
                                self.retry_base * 2.0 ** min(suspect.attempts - 1, 30))

    def defer(self, task_id: str, due: float) -> None:
        """A source was down: check ``task_id`` again at ``due``, no attempt counted."""
        suspect = self._suspects.get(task_id)
        if suspect is not None:
            suspect.due = due

    def ids(self) -> list[str]:
        """Every suspect's task id."""
        return list(self._suspects)

    def pending(self) -> int:
        """Suspects with a check still to come."""
        return sum(1 for s in self._suspects.values() if s.due != math.inf)

    def unresolved(self) -> int:
        """Suspects whose latest check left them unresolved."""
        return sum(1 for s in self._suspects.values() if s.unresolved)
