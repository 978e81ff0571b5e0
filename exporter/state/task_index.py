"""The task index: a bounded LRU map task id → what earlier events said about the task.

``task-started``, ``task-succeeded`` and ``task-failed`` carry only the task id; the name and
queue they are counted under come from here. Not thread-safe: the model holds its lock while it
uses the index.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from exporter.events.table import UNKNOWN
from exporter.state.labels import AnyTaskLabels


@dataclass(slots=True)
class TaskRecord:
    """What the exporter knows about one task; times are seconds since the epoch.

    ``name`` is the label value (already folded to ``other`` by the name guard); ``queue`` is
    ``unknown`` until an event or the worker's queues tell it. ``state`` is Celery's state name
    (PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED, REJECTED, CANCELLED) and
    ``state_ts`` the timestamp of the event that set it; ``running`` is the ``(name, queue)``
    the task counts under in the running gauge while it runs, else ``None`` (kept because a late
    event can still change ``name``/``queue`` after ``task-started``). ``sent``, ``received``,
    ``started`` and ``state_ts`` also recognise a duplicate delivery (same timestamp).
    ``hostname`` is the worker that received or started it. ``repaired`` holds the event types
    a repair (:mod:`exporter.repair`) counted for the current execution in place of events that
    were lost: the real event, should it still arrive, is not counted again.
    """

    name: str = UNKNOWN
    queue: str = UNKNOWN
    routing_key: str | None = None
    hostname: str | None = None
    state: str = "PENDING"
    sent: float | None = None
    received: float | None = None
    started: float | None = None
    eta: float | None = None
    retries: int = 0
    state_ts: float | None = None
    running: AnyTaskLabels | None = None
    repaired: frozenset[str] = frozenset()


class TaskIndex:
    """Bounded map of task id → :class:`TaskRecord`, least recently used out first.

    Two LRU lists: tasks still in progress, and tasks that finished (:meth:`finish`). A
    finished task's record only serves to recognise a duplicate or a late event, so finished
    tasks are the first to go: they are kept up to ``finished_capacity`` (a quarter of
    ``capacity`` by default), and when more than ``capacity`` tasks are held in all, the least
    recently used finished one is evicted before any task in progress — whose record is what
    joins its ``task-succeeded``/``task-failed`` (which carry only the id) to its name and
    queue. ``get_or_create``, ``get`` and ``finish`` mark an entry as used; an evicted record is
    returned to the caller so it can undo what it contributed (e.g. the running gauge).
    """

    def __init__(self, capacity: int, finished_capacity: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.finished_capacity = max(1, capacity // 4) if finished_capacity is None \
            else finished_capacity
        self._active: OrderedDict[str, TaskRecord] = OrderedDict()
        self._finished: OrderedDict[str, TaskRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._active) + len(self._finished)

    def __iter__(self) -> Iterator[tuple[str, TaskRecord]]:
        """Every ``(task id, record)``: tasks in progress, then finished ones."""
        yield from self._active.items()
        yield from self._finished.items()

    def in_progress(self) -> Iterator[tuple[str, TaskRecord]]:
        """Every ``(task id, record)`` of the tasks in progress (not finished), least recently
        used first.
        """
        yield from self._active.items()

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the record for ``task_id`` (and mark it used), or ``None``."""
        for entries in (self._active, self._finished):
            record = entries.get(task_id)
            if record is not None:
                entries.move_to_end(task_id)
                return record
        return None

    def peek(self, task_id: str) -> TaskRecord | None:
        """Return the record for ``task_id`` without marking it used, or ``None``."""
        record = self._active.get(task_id)
        return self._finished.get(task_id) if record is None else record

    def get_or_create(self, task_id: str) -> tuple[TaskRecord, TaskRecord | None]:
        """Return ``(record, evicted)``: the record for ``task_id``, created (in progress) when
        absent. ``evicted`` is the record pushed out to stay within ``capacity`` — the least
        recently used finished task, else the least recently used task in progress — or
        ``None``.
        """
        record = self.get(task_id)
        if record is not None:
            return record, None
        record = self._active[task_id] = TaskRecord()
        if len(self._active) + len(self._finished) <= self.capacity:
            return record, None
        victims = self._finished if self._finished else self._active
        return record, victims.popitem(last=False)[1]

    def finish(self, task_id: str) -> TaskRecord | None:
        """Move ``task_id`` to the finished tasks (marked used); returns the finished record
        evicted to stay within ``finished_capacity``, or ``None``.
        """
        record = self._active.pop(task_id, None)
        if record is None:
            if task_id in self._finished:
                self._finished.move_to_end(task_id)
            return None
        self._finished[task_id] = record
        if len(self._finished) > self.finished_capacity:
            return self._finished.popitem(last=False)[1]
        return None
