"""The task index: a bounded LRU map task id → what earlier events said about the task.

``task-started``, ``task-succeeded`` and ``task-failed`` carry only the task id; the name and
queue they are counted under come from here. Not thread-safe: the model holds its lock while it
uses the index.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from .events import UNKNOWN


@dataclass(slots=True)
class TaskRecord:
    """What the exporter knows about one task; times are seconds since the epoch.

    ``name`` is the label value (already folded to ``other`` by the name guard); ``queue`` is
    ``unknown`` until an event or the worker's queues tell it. ``state`` is Celery's state name
    (PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED, REJECTED, CANCELLED) and
    ``state_ts`` the timestamp of the event that set it; ``running`` is the ``(name, queue)``
    the task counts under in the running gauge while it runs, else ``None`` (kept because a late
    event can still change ``name``/``queue`` after ``task-started``). ``deferred`` counts
    ``task-received`` events not counted yet because the task's ``task-sent`` (its queue) may
    still be on its way. ``seen`` holds ``(event type, timestamp)`` of the task's latest
    events, to skip a duplicate delivery. ``hostname`` is the worker that received or started
    it.
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
    deferred: int = 0
    running: tuple[str, ...] | None = None


class TaskIndex:
    """Bounded, least-recently-used map of task id → :class:`TaskRecord`.

    ``get_or_create`` and ``get`` mark an entry as used; when more than ``capacity`` entries
    exist, the least recently used one is evicted and returned to the caller so it can undo
    what the entry contributed (e.g. the running gauge).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: OrderedDict[str, TaskRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[str, TaskRecord]]:
        return iter(self._entries.items())

    def get(self, task_id: str) -> TaskRecord | None:
        """Return the record for ``task_id`` (and mark it used), or ``None``."""
        record = self._entries.get(task_id)
        if record is not None:
            self._entries.move_to_end(task_id)
        return record

    def peek(self, task_id: str) -> TaskRecord | None:
        """Return the record for ``task_id`` without marking it used, or ``None``."""
        return self._entries.get(task_id)

    def get_or_create(self, task_id: str) -> tuple[TaskRecord, TaskRecord | None]:
        """Return ``(record, evicted)``: the record for ``task_id``, created when absent.

        ``evicted`` is the record pushed out to stay within ``capacity``, or ``None``.
        """
        entries = self._entries
        record = entries.get(task_id)
        if record is not None:
            entries.move_to_end(task_id)
            return record, None
        record = entries[task_id] = TaskRecord()
        if len(entries) > self.capacity:
            return record, entries.popitem(last=False)[1]
        return record, None
