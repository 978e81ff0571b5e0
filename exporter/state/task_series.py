"""The numbers kept per task label set: lifecycle counts, exceptions, histograms, running, lost.

The model decides *what* an event means (joins, state order, duplicates); this table only
adds it up under ``(name, queue_name)`` labels (``(name, exception)`` for exceptions,
``(name, queue_name, state)`` for run times). Not thread-safe: the model holds its lock.

First sighting of a ``(name, queue_name)`` pair creates its ``succeeded``, ``failed``,
``retried`` and ``lost`` counters, both run-time histograms (SUCCESS, FAILURE) and the
queue-wait histogram at 0, so that the first failure, retry, lost task or run is an
``increase()``/``rate()`` away rather than a new series Prometheus has no earlier sample of.
A task warmed from the history when the exporter starts is such a first sighting too
(:meth:`TaskSeries.sight`): it may end before any other event of its label set arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from exporter.state.histogram import Histogram, HistogramValue
from exporter.state.labels import AnyRuntimeLabels, AnyTaskLabels, ExceptionLabels

#: Task event types with a lifecycle counter (``task_<verb>_total``).
LIFECYCLE_TYPES = (
    "task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
    "task-retried", "task-revoked", "task-rejected", "task-cancelled",
)


class SeriesCopy(NamedTuple):
    """What :meth:`TaskSeries.copy` returns: ``lifecycle`` maps a task event type to
    ``{(name, queue_name): count}``; ``exceptions`` is ``{(name, exception): count}``;
    ``runtime`` ``{(name, queue_name, state): HistogramValue}``; ``queue_wait``, ``running``
    and ``lost`` are keyed by ``(name, queue_name)``.
    """

    lifecycle: Mapping[str, Mapping[AnyTaskLabels, int]]
    exceptions: Mapping[ExceptionLabels, int]
    runtime: Mapping[AnyRuntimeLabels, HistogramValue]
    queue_wait: Mapping[AnyTaskLabels, HistogramValue]
    running: Mapping[AnyTaskLabels, int]
    lost: Mapping[AnyTaskLabels, int]


class TaskSeries:
    """Counts and histograms per label set.

    Args:
        runtime_buckets: upper bounds (seconds) of ``task_runtime_seconds``.
        queue_wait_buckets: upper bounds (seconds) of ``task_queue_wait_seconds``.

    """

    def __init__(self, runtime_buckets: tuple[float, ...],
                 queue_wait_buckets: tuple[float, ...]) -> None:
        self._runtime_buckets = runtime_buckets
        self._queue_wait_buckets = queue_wait_buckets
        self._pairs: set[AnyTaskLabels] = set()
        self._lifecycle: dict[str, dict[AnyTaskLabels, int]] = {t: {} for t in LIFECYCLE_TYPES}
        self._exceptions: dict[ExceptionLabels, int] = {}
        self._runtime: dict[AnyRuntimeLabels, Histogram] = {}
        self._queue_wait: dict[AnyTaskLabels, Histogram] = {}
        self._running: dict[AnyTaskLabels, int] = {}
        self._lost: dict[AnyTaskLabels, int] = {}

    def count(self, event_type: str, labels: AnyTaskLabels, first_sighting: bool = True) -> None:
        """Add 1 to ``event_type``'s counter (one of :data:`LIFECYCLE_TYPES`) for ``labels``
        (``(name, queue_name)``, or ``(name, queue_name, hostname)``). ``first_sighting``
        off: ``labels`` do not key the other families (``task-sent`` without the hostname
        the others have), so they create nothing at 0.
        """
        counts = self._lifecycle[event_type]
        counts[labels] = counts.get(labels, 0) + 1
        if first_sighting and labels not in self._pairs:  # tested here: no call per event
            self.sight(labels)

    def sight(self, labels: AnyTaskLabels) -> None:
        """First sighting of ``labels`` (``(name, queue_name)``, or with the hostname): create
        its ``succeeded``, ``failed``, ``retried``, ``cancelled`` and ``lost`` counters, both
        run-time histograms and the queue-wait histogram at 0 (see the module docs); nothing when
        ``labels`` were seen before. :meth:`count` calls it; so does the model for a task warmed
        from the history at start, which no event has counted yet.
        """
        if labels in self._pairs:
            return
        self._pairs.add(labels)
        self._lifecycle["task-succeeded"].setdefault(labels, 0)
        self._lifecycle["task-failed"].setdefault(labels, 0)
        self._lifecycle["task-retried"].setdefault(labels, 0)
        self._lifecycle["task-cancelled"].setdefault(labels, 0)
        self._lost.setdefault(labels, 0)
        for state in ("SUCCESS", "FAILURE"):
            self._runtime.setdefault(labels.with_state(state), Histogram(self._runtime_buckets))
        self._queue_wait.setdefault(labels, Histogram(self._queue_wait_buckets))

    def count_exception(self, labels: ExceptionLabels) -> None:
        """Add 1 to ``task_exceptions_total{name, exception}``."""
        self._exceptions[labels] = self._exceptions.get(labels, 0) + 1

    def observe_runtime(self, labels: AnyTaskLabels, state: str, seconds: float) -> None:
        """Observe a run time (seconds) of an execution that ended in ``state`` (SUCCESS or
        FAILURE).
        """
        self._observe(self._runtime, labels.with_state(state), self._runtime_buckets, seconds)

    def observe_queue_wait(self, labels: AnyTaskLabels, seconds: float) -> None:
        """Observe the seconds a task waited between being sent (or its ETA) and starting."""
        self._observe(self._queue_wait, labels, self._queue_wait_buckets, seconds)

    def add_running(self, labels: AnyTaskLabels, delta: int) -> None:
        """Move the running gauge of ``labels`` by ``delta`` (+1 started, -1 ended)."""
        self._running[labels] = self._running.get(labels, 0) + delta

    def count_lost(self, labels: AnyTaskLabels) -> None:
        """Add 1 to ``task_lost_total`` for ``labels``."""
        self._lost[labels] = self._lost.get(labels, 0) + 1

    def copy(self) -> SeriesCopy:
        """A copy of every table for a snapshot. A histogram unchanged since the previous copy
        is the same :class:`HistogramValue` object (no call for it: most are unchanged).
        """
        return SeriesCopy(
            lifecycle={t: dict(counts) for t, counts in self._lifecycle.items()},
            exceptions=dict(self._exceptions),
            runtime={k: h.frozen or h.freeze() for k, h in self._runtime.items()},
            queue_wait={k: h.frozen or h.freeze() for k, h in self._queue_wait.items()},
            running=dict(self._running),
            lost=dict(self._lost),
        )

    def copy_running(self) -> dict[AnyTaskLabels, int]:
        """A copy of the running gauge's values alone."""
        return dict(self._running)

    @staticmethod
    def _observe(table: dict[Any, Histogram], labels: tuple[str, ...],
                 bounds: tuple[float, ...], value: float) -> None:
        histogram = table.get(labels)
        if histogram is None:
            histogram = table[labels] = Histogram(bounds)
        histogram.observe(value)
