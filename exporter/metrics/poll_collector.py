"""Custom collector: at scrape time, render the poller's latest :class:`PollSnapshot`.

It never calls the broker or the workers: it reads the snapshot the poller thread published
(one attribute read) and the clock, so concurrent scrapes cost no broadcast. Before the first
round completes it renders nothing. Failed poller calls are counted in the model and rendered
with the model's families (:mod:`exporter.metrics.exposition`,
``celery_jobmon_poll_errors_total{call}``).
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

"Messages wait and nobody consumes them" in PromQL::

    sum by (queue_name) (celery_queue_length) > 0 and on (queue_name) celery_queue_consumers == 0
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.metrics import catalogue as m
from exporter.metrics.families import Families
from exporter.poll.snapshot import PollSnapshot


class PollCollector(Collector):
    """Renders :data:`exporter.metrics.catalogue.POLL` from the latest poll snapshot.

    Args:
        snapshot: returns the latest :class:`PollSnapshot` or ``None`` before the first round
            (``Poller.latest``); must not do I/O.
        prefix: metric name prefix, ``celery_`` by default.
        clock: exporter time, seconds since the epoch (ages are computed at scrape time).

    """

    def __init__(self, snapshot: Callable[[], PollSnapshot | None], prefix: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._snapshot = snapshot
        self._f = Families(prefix)
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        """Yield every poll family from one snapshot."""
        snap = self._snapshot()
        if snap is None:
            return
        now = self._clock()
        queues = snap.queues
        yield self._f.values(m.QUEUE_LENGTH, {
            (q.name, priority): n for q in queues for priority, n in q.lengths.items()})
        yield self._f.values(m.QUEUE_CONSUMERS, {
            (q.name,): q.consumers for q in queues if q.consumers is not None})
        yield self._f.values(m.QUEUE_OLDEST_MESSAGE_AGE, {
            (q.name,): max(0.0, now - q.waiting_since)
            for q in queues if q.waiting_since is not None})
        yield self._f.values(m.TASK_RESERVED, snap.reserved)
        yield self._f.values(m.TASK_SCHEDULED, snap.scheduled)
        yield self._f.values(m.TASK_SCHEDULED_EARLIEST_ETA, {
            (name,): eta for name, eta in snap.earliest_eta.items()})
        yield self._f.values(m.TASK_OLDEST_RUNNING, {
            (name,): max(0.0, now - start) for name, start in snap.oldest_running_start.items()})
        workers = snap.workers
        yield self._f.values(m.WORKER_POOL_SIZE, {
            (w.hostname,): w.pool_size for w in workers if w.pool_size is not None})
        yield self._f.values(m.WORKER_CPU_USER, {
            (w.hostname,): w.cpu_user for w in workers if w.cpu_user is not None})
        yield self._f.values(m.WORKER_CPU_SYSTEM, {
            (w.hostname,): w.cpu_system for w in workers if w.cpu_system is not None})
        yield self._f.values(m.WORKER_MAX_RSS, {
            (w.hostname,): w.max_rss_bytes for w in workers if w.max_rss_bytes is not None})
        yield self._f.values(m.INSPECT_TIMEOUTS, {
            (h,): n for h, n in snap.inspect_timeouts.items()})
        yield self._f.values(m.POLL_AGE, {(): max(0.0, now - snap.taken_at)})
        yield self._f.values(m.POLL_DURATION, {(): snap.duration})
