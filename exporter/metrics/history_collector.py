"""Custom collector: the history writer's health, from :meth:`HistoryWriter.stats` at scrape.

``stats()`` copies a few counters under the writer's lock; no SQL runs at scrape time. With
history off (``--no-history``, or the database could not be opened at start) only
``celery_jobmon_history_enabled 0`` is rendered. Sample output (default prefix)::

    celery_jobmon_history_enabled 1.0
    celery_jobmon_history_rows_written_total 1520.0
    celery_jobmon_history_dropped_total{reason="queue_full_success"} 0.0
    celery_jobmon_history_consecutive_write_failures 0.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.history import DROP_REASONS, HistoryStats
from exporter.metrics import catalogue as m
from exporter.metrics.families import Families


class HistoryCollector(Collector):
    """Renders :data:`exporter.metrics.catalogue.HISTORY`.

    Args:
        stats: ``HistoryWriter.stats`` (no I/O), or ``None`` when history is off.
        prefix: metric name prefix, ``celery_`` by default.

    """

    def __init__(self, stats: Callable[[], HistoryStats] | None, prefix: str) -> None:
        self._stats = stats
        self._f = Families(prefix)

    def collect(self) -> Iterator[Metric]:
        """Yield the history families (only ``enabled`` when history is off)."""
        yield self._f.scalar(m.HISTORY_ENABLED, float(self._stats is not None))
        if self._stats is None:
            return
        stats = self._stats()
        yield self._f.scalar(m.HISTORY_ROWS_WRITTEN, stats.rows_written)
        yield self._f.scalar(m.HISTORY_WRITE_ERRORS, stats.write_errors)
        yield self._f.scalar(m.HISTORY_QUEUE_DEPTH, stats.queue_depth)
        yield self._f.scalar(m.HISTORY_PENDING_ROWS, stats.pending_rows)
        yield self._f.values(m.HISTORY_DROPPED, {
            (reason,): stats.dropped.get(reason, 0) for reason in DROP_REASONS})
        if stats.last_write_ts is not None:
            yield self._f.scalar(m.HISTORY_LAST_WRITE, stats.last_write_ts)
        yield self._f.scalar(m.HISTORY_CONSECUTIVE_FAILURES, stats.consecutive_failures)
        yield self._f.scalar(m.HISTORY_ROWS_PRUNED, stats.rows_pruned)
        yield self._f.scalar(m.HISTORY_PRUNE_ERRORS, stats.prune_errors)
