"""Custom collector: at scrape time, render a :class:`~exporter.model.ModelSnapshot` as families.

prometheus-client's custom-collector pattern: ``collect()`` builds fresh ``*MetricFamily``
objects from a snapshot and keeps nothing, so a worker that is forgotten simply stops being
rendered. Sample output (default prefix)::

    celery_task_failed_total{name="examples.fail",queue_name="b"} 3.0
    celery_task_runtime_seconds_count{name="examples.add",queue_name="a",state="SUCCESS"} 7.0
    celery_worker_up{hostname="celery@host"} 1.0
    celery_jobmon_events_received_total{type="task-started"} 12.0
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from . import metrics as m
from .families import Families
from .model import ModelSnapshot


class ModelCollector(Collector):
    """Renders the model's snapshot; every family of :data:`exporter.metrics.CATALOGUE`.

    Args:
        snapshot: returns a fresh :class:`ModelSnapshot` (``Model.snapshot``); called once per
            scrape, it takes the model's lock only for the copy.
        prefix: metric name prefix, ``celery_`` by default.
        versions: values of the build-info labels (``version``, ``celery_version``).

    """

    def __init__(
        self,
        snapshot: Callable[[], ModelSnapshot],
        prefix: str,
        versions: Mapping[str, str],
    ) -> None:
        self._snapshot = snapshot
        self._f = Families(prefix)
        self._build = {**versions, "python_version": platform.python_version()}

    def collect(self) -> Iterator[Metric]:
        """Yield every family from one snapshot."""
        snap = self._snapshot()
        for event_type, spec in m.LIFECYCLE.items():
            yield self._f.values(spec, snap.lifecycle[event_type])
        yield self._f.values(m.TASK_EXCEPTIONS, snap.exceptions)
        yield self._f.histograms(m.TASK_RUNTIME, snap.runtime)
        yield self._f.histograms(m.TASK_QUEUE_WAIT, snap.queue_wait)
        yield self._f.values(m.TASK_RUNNING, snap.running)
        yield self._f.values(m.TASK_LOST, snap.lost)
        workers = snap.workers
        yield self._f.values(m.WORKER_UP, {(w.hostname,): float(w.up) for w in workers})
        yield self._f.values(m.WORKER_TASKS_ACTIVE, {
            (w.hostname,): w.active for w in workers if w.active is not None})
        yield self._f.values(m.WORKER_LAST_HEARTBEAT, {
            (w.hostname,): w.last_heartbeat for w in workers})
        yield self._f.values(m.WORKER_PROCESSED, {
            (w.hostname,): w.processed for w in workers if w.processed is not None})
        yield self._f.values(m.EVENTS_RECEIVED, _by_one_label(snap.events_received))
        yield self._f.values(m.EVENTS_MALFORMED, _by_one_label(snap.events_malformed))
        if snap.last_event is not None:
            yield self._f.scalar(m.LAST_EVENT, snap.last_event)
        yield self._f.scalar(m.BROKER_CONNECTED, float(snap.broker_connected))
        yield self._f.scalar(m.BROKER_RECONNECTS, snap.broker_reconnects)
        yield self._f.scalar(m.EVENT_GAPS, snap.event_gaps)
        if snap.event_lag is not None:
            yield self._f.scalar(m.EVENT_LAG, snap.event_lag)
        yield self._f.scalar(m.EVENT_BATCHES, snap.event_batches)
        yield self._f.scalar(m.EVENT_PROCESSING, snap.event_processing_seconds)
        yield self._f.scalar(m.TASKS_IN_MEMORY, snap.tasks_in_memory)
        yield self._f.scalar(m.TASK_INDEX_EVICTIONS, snap.task_index_evictions)
        yield self._f.scalar(m.TASK_NAMES_FOLDED, snap.task_names_folded)
        yield self._f.values(m.POLL_ERRORS, _by_one_label(snap.poll_errors))
        yield self._f.info(m.BUILD_INFO, self._build)


def _by_one_label(counts: Mapping[str, int]) -> dict[tuple[str, ...], float]:
    return {(key,): value for key, value in counts.items()}
