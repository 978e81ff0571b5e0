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
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import metrics as m
from .histogram import HistogramValue
from .model import ModelSnapshot

_FAMILY = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


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
        self._prefix = prefix
        self._build = {**versions, "python_version": platform.python_version()}

    def _new(self, spec: m.MetricSpec) -> Any:
        name = self._prefix + spec.name
        if spec.kind == "histogram":
            return HistogramMetricFamily(name, spec.help, labels=spec.labels)
        if spec.kind == "info":
            return InfoMetricFamily(name, spec.help, labels=())
        return _FAMILY[spec.kind](name, spec.help, labels=spec.labels)

    def _counts(self, spec: m.MetricSpec, values: Mapping[tuple[str, ...], float]) -> Metric:
        family = self._new(spec)
        for labels, value in values.items():
            family.add_metric(list(labels), value)
        return family

    def _histograms(self, spec: m.MetricSpec, values: Mapping[tuple[str, ...], HistogramValue]
                    ) -> Metric:
        family = self._new(spec)
        assert isinstance(family, HistogramMetricFamily)
        for labels, hist in values.items():
            pairs = zip(hist.bounds, hist.cumulative, strict=False)
            buckets = [(_le(bound), count) for bound, count in pairs]
            buckets.append(("+Inf", hist.count))
            family.add_metric(list(labels), buckets, hist.total)
        return family

    def _scalar(self, spec: m.MetricSpec, value: float) -> Metric:
        family = self._new(spec)
        family.add_metric([], value)
        return family

    def collect(self) -> Iterator[Metric]:
        """Yield every family from one snapshot."""
        snap = self._snapshot()
        for event_type, spec in m.LIFECYCLE.items():
            yield self._counts(spec, snap.lifecycle[event_type])
        yield self._counts(m.TASK_EXCEPTIONS, snap.exceptions)
        yield self._histograms(m.TASK_RUNTIME, snap.runtime)
        yield self._histograms(m.TASK_QUEUE_WAIT, snap.queue_wait)
        yield self._counts(m.TASK_RUNNING, snap.running)
        workers = snap.workers
        yield self._counts(m.WORKER_UP, {(w.hostname,): float(w.up) for w in workers})
        yield self._counts(m.WORKER_TASKS_ACTIVE, {
            (w.hostname,): w.active for w in workers if w.active is not None})
        yield self._counts(m.WORKER_LAST_HEARTBEAT, {
            (w.hostname,): w.last_heartbeat for w in workers})
        yield self._counts(m.WORKER_PROCESSED, {
            (w.hostname,): w.processed for w in workers if w.processed is not None})
        yield self._counts(m.EVENTS_RECEIVED, {(k,): v for k, v in snap.events_received.items()})
        yield self._counts(m.EVENTS_MALFORMED, {(k,): v for k, v in snap.events_malformed.items()})
        if snap.last_event is not None:
            yield self._scalar(m.LAST_EVENT, snap.last_event)
        yield self._scalar(m.BROKER_CONNECTED, float(snap.broker_connected))
        yield self._scalar(m.BROKER_RECONNECTS, snap.broker_reconnects)
        yield self._scalar(m.EVENT_GAPS, snap.event_gaps)
        if snap.event_lag is not None:
            yield self._scalar(m.EVENT_LAG, snap.event_lag)
        yield self._scalar(m.EVENT_BATCHES, snap.event_batches)
        yield self._scalar(m.EVENT_PROCESSING, snap.event_processing_seconds)
        yield self._scalar(m.TASKS_IN_MEMORY, snap.tasks_in_memory)
        yield self._scalar(m.TASK_INDEX_EVICTIONS, snap.task_index_evictions)
        yield self._scalar(m.TASK_NAMES_FOLDED, snap.task_names_folded)
        yield self._counts(m.POLL_ERRORS, {(k,): v for k, v in snap.poll_errors.items()})
        info = self._new(m.BUILD_INFO)
        assert isinstance(info, InfoMetricFamily)
        info.add_metric([], self._build)
        yield info


def _le(bound: float) -> str:
    """Format a bucket bound as prometheus-client does (``1.0``, ``0.005``)."""
    return repr(float(bound))
