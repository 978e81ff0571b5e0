"""One scrape of ``/metrics``: every source rendered under its own guard, then the report of how
each one did.

A source is a name (the ``collector`` label) and a function returning its text chunks: the
model's and the health's cached expositions, the poll and history collectors. One that raises
(a bug, a snapshot it cannot read) is left out of this scrape — the others still answer, and
``/metrics`` never becomes a 500 — and shows as
``celery_jobmon_scrape_collector_success{collector="poll"} 0``, as node_exporter reports its
collectors. Sample output (default prefix)::

    celery_jobmon_scrape_collector_success{collector="model"} 1.0
    celery_jobmon_scrape_collector_success{collector="poll"} 0.0
    celery_jobmon_scrape_collector_duration_seconds{collector="model"} 0.0021
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from exporter.history.writer import HistoryStats
from exporter.metrics import catalogue as m
from exporter.metrics.collectors import (
    HistoryCollector,
    PeriodicCollector,
    PollCollector,
    SnapshotCollector,
)
from exporter.metrics.exposition import CachedExposition
from exporter.periodic.tracker import PeriodicSnapshot
from exporter.poll.snapshot import PollSnapshot
from exporter.state.health import Health
from exporter.state.model import Model
from exporter.state.workflows import WorkflowTracker

log = logging.getLogger(__name__)
#: A source of ``/metrics``: its ``collector`` label value and its renderer (text chunks).
Source = tuple[str, Callable[[], list[bytes]]]
#: While a source keeps failing, its traceback is logged again after this many seconds.
FAILURE_LOG_INTERVAL = 600.0


class Scrape:
    """Renders ``sources`` in order, each guarded and timed, then the scrape report.

    Not thread-safe by itself (the cached expositions are not): :meth:`render` holds a lock, so
    concurrent scrapes take turns.

    Args:
        sources: ``(name, render)`` pairs, in exposition order.
        prefix: metric name prefix, ``celery_`` by default.
        timer: monotonic seconds (injected for tests).
        const_labels: ``(name, value)`` pairs the report's series carry (``--const-label``;
            the sources add them to their own).

    """

    def __init__(self, sources: Sequence[Source], prefix: str,
                 timer: Callable[[], float] = time.perf_counter,
                 const_labels: Iterable[tuple[str, str]] = ()) -> None:
        self._sources = tuple(sources)
        self._report = CachedExposition(prefix, m.SCRAPE, const_labels=const_labels)
        self._timer = timer
        self._lock = threading.Lock()
        self._failing_since: dict[str, float] = {}

    def render(self) -> bytes:
        """The whole exposition, UTF-8 text (Prometheus text format 0.0.4)."""
        with self._lock:
            parts: list[bytes] = []
            report: dict[str, tuple[bool, float]] = {}
            for name, render in self._sources:
                started = self._timer()
                try:
                    parts += render()
                    ok = True
                except Exception:
                    ok = False
                    self._log_failure(name, started)
                else:
                    if self._failing_since.pop(name, None) is not None:
                        log.info("metrics source recovered collector=%s", name)
                report[name] = (ok, self._timer() - started)
            parts += self._report.chunks(report, time.time())
        return b"".join(parts)

    def _log_failure(self, name: str, now: float) -> None:
        """Log a failing source with its traceback when it starts failing, then every
        :data:`FAILURE_LOG_INTERVAL` seconds while it goes on (a scrape every 15 s would
        otherwise flood the log).
        """
        since = self._failing_since.get(name)
        if since is None or now - since >= FAILURE_LOG_INTERVAL:
            self._failing_since[name] = now
            log.exception("metrics source failed, left out of the scrape collector=%s", name)


def _collector_source(collector: Collector) -> Callable[[], list[bytes]]:
    """A prometheus-client collector as a source (its own registry, so that it fails alone)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return lambda: [generate_latest(registry)]


def exporter_sources(prefix: str, model: Model, health: Health,
                     poll_latest: Callable[[], PollSnapshot | None],
                     history_stats: Callable[[], HistoryStats] | None,
                     hostname_label: bool = False,
                     const_labels: Iterable[tuple[str, str]] = (),
                     periodic_latest: Callable[[], PeriodicSnapshot | None] | None = None,
                     workflows: WorkflowTracker | None = None,
                     ) -> list[Source]:
    """The four sources of ``serve``'s ``/metrics``, in exposition order: ``model`` (task
    events, cached text), ``health`` (the exporter itself, cached text), ``poll`` (the
    poller's latest snapshot) and ``history`` (the writer's stats; ``None``: history off).
    Every series carries ``const_labels`` (``--const-label`` pairs). With
    ``periodic_latest`` (the periodic tracker's ``latest``), a fifth source ``periodic``; with
    ``workflows``, a source ``workflows`` (:data:`~exporter.metrics.catalogue.WORKFLOWS`, judged
    at the scrape's time).
    """
    const = tuple(const_labels)
    model_text = CachedExposition(prefix, m.MODEL, hostname_label=hostname_label,
                                  const_labels=const)
    health_text = CachedExposition(prefix, m.HEALTH, const_labels=const)

    def render_model() -> list[bytes]:
        snapshot = model.snapshot()
        return model_text.chunks(snapshot, snapshot.taken_at)

    sources: list[Source] = [
        ("model", render_model),
        ("health", lambda: health_text.chunks(health.snapshot(), time.time())),
        ("poll", _collector_source(PollCollector(poll_latest, prefix, const_labels=const))),
        ("history", _collector_source(HistoryCollector(history_stats, prefix,
                                                       const_labels=const))),
    ]
    if periodic_latest is not None:
        sources.append(("periodic", _collector_source(PeriodicCollector(
            periodic_latest, prefix, const_labels=const))))
    if workflows is not None:
        tracker = workflows
        sources.append(("workflows", _collector_source(SnapshotCollector(
            m.WORKFLOWS, lambda: tracker.snapshot(time.time()), prefix, const_labels=const))))
    return sources
