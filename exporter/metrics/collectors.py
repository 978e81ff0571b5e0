"""prometheus-client collectors of the poller's and the history writer's families: at scrape
time, render the source's latest snapshot through the catalogue's readers.

They never call the broker, the workers or the database: they read what the poller thread
published (one attribute read) or the writer's counters (copied under its lock), and the clock,
so concurrent scrapes cost no broadcast and no SQL. Before the poller's first round the poll
families are absent; with the history off only ``celery_jobmon_history_enabled 0`` is rendered.
Sample output (default prefix)::

    celery_queue_length{priority="0",queue_name="a"} 12.0
    celery_queue_length{priority="",queue_name="b"} 3.0
    celery_queue_consumers{queue_name="a"} 2.0
    celery_queue_oldest_message_age_seconds{queue_name="a"} 41.5
    celery_task_reserved{name="examples.tasks.add",queue_name="a"} 4.0
    celery_task_oldest_running_seconds{name="examples.tasks.sleep"} 12.3
    celery_worker_pool_size{hostname="celery@host"} 8.0
    celery_inspect_timeouts_total{hostname="celery@host"} 1.0
    celery_jobmon_poll_age_seconds 3.2
    celery_jobmon_history_enabled 1.0
    celery_jobmon_history_rows_written_total 1520.0
    celery_jobmon_history_dropped_total{reason="queue_full_success"} 0.0

"Messages wait and nobody consumes them" in PromQL::

    sum by (queue_name) (celery_queue_length) > 0 and on (queue_name) celery_queue_consumers == 0
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.history.writer import HistoryStats
from exporter.metrics import catalogue as m
from exporter.metrics.catalogue import MetricSpec
from exporter.periodic.tracker import PeriodicSnapshot
from exporter.poll.snapshot import PollSnapshot

_FAMILY = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


class SnapshotCollector(Collector):
    """Renders counter and gauge ``specs`` from ``snapshot()`` at each scrape.

    Args:
        specs: the families, each with its catalogue ``read``.
        snapshot: returns the source's latest snapshot, or ``None`` when there is none (yet);
            must not do I/O.
        prefix: metric name prefix, ``celery_`` by default.
        clock: exporter time, seconds since the epoch (ages are computed at scrape time).
        without_snapshot: the families still rendered when ``snapshot()`` is ``None`` (their
            readers take ``None``).
        const_labels: ``(name, value)`` pairs every series carries (``--const-label``).

    """

    def __init__(self, specs: Iterable[MetricSpec], snapshot: Callable[[], Any], prefix: str,
                 clock: Callable[[], float] = time.time,
                 without_snapshot: Iterable[MetricSpec] = (),
                 const_labels: Iterable[tuple[str, str]] = ()) -> None:
        pairs = tuple(const_labels)
        self._const_names = [name for name, _ in pairs]
        self._const_values = [value for _, value in pairs]
        self._specs = tuple(specs)
        self._without = tuple(without_snapshot)
        self._snapshot = snapshot
        self._prefix = prefix
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        """Yield every family from one snapshot (see the class docs)."""
        snapshot = self._snapshot()
        now = self._clock()
        for spec in self._specs if snapshot is not None else self._without:
            values = spec.read(snapshot, now)
            if values is None:
                continue
            family = _FAMILY[spec.kind](self._prefix + spec.name, spec.help,
                                        labels=[*spec.labels, *self._const_names])
            for labels, value in values.items():
                family.add_metric([*labels, *self._const_values], value)
            yield family


class PollCollector(SnapshotCollector):
    """:data:`~exporter.metrics.catalogue.POLL` from ``snapshot`` (``Poller.latest``: the
    latest :class:`~exporter.poll.snapshot.PollSnapshot`, ``None`` before the first round).
    """

    def __init__(self, snapshot: Callable[[], PollSnapshot | None], prefix: str,
                 clock: Callable[[], float] = time.time,
                 const_labels: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(m.POLL, snapshot, prefix, clock, const_labels=const_labels)


class HistoryCollector(SnapshotCollector):
    """:data:`~exporter.metrics.catalogue.HISTORY` from ``stats`` (``HistoryWriter.stats``, no
    I/O), or only ``jobmon_history_enabled 0`` when ``stats`` is ``None`` (history off).
    """

    def __init__(self, stats: Callable[[], HistoryStats] | None, prefix: str,
                 const_labels: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(m.HISTORY, stats or (lambda: None), prefix,
                         without_snapshot=(m.HISTORY_ENABLED,), const_labels=const_labels)


class PeriodicCollector(SnapshotCollector):
    """:data:`~exporter.metrics.catalogue.PERIODIC` from ``snapshot``.

    ``snapshot`` is ``PeriodicTracker.latest``: the latest check, ``None`` before the first
    one. Sample output (default prefix)::

        celery_periodic_task_next_run_timestamp_seconds{entry="nightly",task="app.rep"} 1.7e9
        celery_periodic_task_missed_runs_total{entry="nightly",task="app.rep"} 1.0
        celery_periodic_task_last_outcome{entry="nightly",state="FAILURE",task="app.rep"} 1.0
        celery_jobmon_periodic_source_up{source="redbeat"} 1.0
    """

    def __init__(self, snapshot: Callable[[], PeriodicSnapshot | None], prefix: str,
                 const_labels: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(m.PERIODIC, snapshot, prefix, const_labels=const_labels)
