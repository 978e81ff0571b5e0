"""The history writer: task events in, batched upserts into ``task_execution`` out.

The event consumer calls :meth:`HistoryWriter.submit` with each task event; that only appends
the event to a bounded in-memory queue (never blocks, never raises). The writer thread takes the
whole queue at once, merges the events per task id into *pending rows*
(:mod:`exporter.history.merge`) and writes the pending rows in batches
(:func:`exporter.history.store.upsert_rows`, one transaction per ``batch_size`` rows) when
``batch_size`` rows are pending, when the oldest record waited ``max_delay`` seconds, on
:meth:`~HistoryWriter.flush` and on :meth:`~HistoryWriter.stop`.

Failures:

- Database unreachable, locked, read-only, schema missing (any error but the two below): the
  batch is kept and retried after a capped exponential backoff (``retry_initial`` doubling up to
  ``retry_max`` seconds). The backoff is a deadline in the thread's own loop, not a retry
  library (tenacity is no dependency, and a retry decorator would block the thread): while it
  waits — a condition-variable timeout that ``flush``/``stop`` interrupt — events keep merging
  into pending rows, up to ``max_pending`` rows; then the queue fills up.
- Another writer (a second exporter on the same database) inserted some of the batch's new
  tasks meanwhile (:class:`~exporter.history.store.InsertRaced`): the transaction is rolled
  back and the batch written again at once, merging into those rows (up to
  :data:`MAX_RACE_RETRIES` times in a row, then the backoff below); no error is counted.
- A row the database refuses (``DataError``, ``IntegrityError``, a bug in the merge): the batch
  is written again in halves, and each half that fails in halves again, until every refused row
  is alone and dropped (``dropped{reason="rejected"}``) — about ``2·log2(batch_size)`` more
  transactions per refused row, where one per row would take thousands.
- Queue full (``capacity`` events): the oldest queued ``task-succeeded`` goes first
  (``queue_full_success``), then the oldest sent/received/started (``queue_full_progress``), and
  only then failures, retries, revocations and rejections (``queue_full_failure``). An incoming
  event less important than everything queued is itself dropped under its own reason.

Other drop reasons: ``invalid`` (not a task event with a ``uuid`` and ``timestamp``), ``stopped``
(submitted after :meth:`~HistoryWriter.stop`), ``stop_timeout`` (queued events and pending rows
still unwritten when the stop timeout ran out).

Why one module of this size: the queue with its drop classes, the batch loop, the backoff
while the database is down and the drain on stop share one lock and one set of counters; the
merge rules (:mod:`~exporter.history.merge`) and the SQL (:mod:`~exporter.history.store`) live
apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from exporter.config import DEFAULT_HISTORY_MAX_FIELD_BYTES, DEFAULT_HISTORY_QUEUE_SIZE
from exporter.events.table import WORKER_EVENT_TYPES
from exporter.history.db import WRITE_INTENT, safe_url
from exporter.history.merge import (
    Row,
    merge_into,
    precap_event,
    record_from_event,
)
from exporter.history.retention import prune
from exporter.history.rollup import build
from exporter.history.store import InsertRaced, upsert_rows
from exporter.logs import first_line

log = logging.getLogger(__name__)

#: Rows per transaction. Measured into a table already holding 120,000 rows
#: (benchmarks/README.md, History writer): 5,000 instead of 500 saved 3 % of the CPU when a
#: burst's events merge before the first write and cost 13 % more when rows are inserted and
#: then updated.
DEFAULT_BATCH_SIZE = 500
#: Seconds between builds of the hourly statistics (:mod:`exporter.history.rollup`), and
#: while hours remain to be built (a backfill, each round about 50 ms of work).
ROLLUP_INTERVAL = 60.0
ROLLUP_BACKLOG_INTERVAL = 2.0
DEFAULT_MAX_DELAY = 0.5
DEFAULT_RETRY_INITIAL = 0.5
DEFAULT_RETRY_MAX = 30.0
DEFAULT_PRUNE_INTERVAL = 3600.0
#: Times in a row a batch is written again at once after another writer inserted some of its
#: new tasks meanwhile; each attempt finds the rows the previous one raced with, so a second
#: race needs new tasks inserted again within milliseconds.
MAX_RACE_RETRIES = 5

#: Event type → drop class: lower classes are dropped first when the queue is full.
DROP_CLASS: Mapping[str, int] = {
    "task-succeeded": 0,
    "task-sent": 1, "task-received": 1, "task-started": 1,
    "task-failed": 2, "task-retried": 2, "task-revoked": 2, "task-rejected": 2,
    "task-cancelled": 2, "task-lost": 2,
}
FULL_REASON = ("queue_full_success", "queue_full_progress", "queue_full_failure")
#: Every ``dropped`` reason (label values of ``celery_history_dropped_total``).
#: ``writer_exited``: held by a writer process that died (:mod:`exporter.history.process`).
DROP_REASONS = (*FULL_REASON, "invalid", "stopped", "stop_timeout", "rejected", "writer_exited")


def checked_copy(event: Mapping[str, Any],
                 max_field_bytes: int) -> tuple[int, dict[str, Any] | None]:
    """Check one event for the history and copy it (shallow), its text fields cut to
    ``max_field_bytes`` (:func:`~.merge.precap_event`); never raises.

    Returns ``(-1, None)`` for a worker event (not the history's), ``(drop class, copy)`` for a
    task event with a ``uuid`` (:data:`DROP_CLASS`), ``(0, None)`` for anything else (invalid).
    """
    try:
        event_type = event.get("type")
        if event_type in WORKER_EVENT_TYPES:
            return -1, None
        drop_class = DROP_CLASS.get(event_type)  # type: ignore[arg-type]
        task_id = event.get("uuid")
        if drop_class is None or not isinstance(task_id, str) or not task_id:
            return 0, None
        item = dict(event)
        precap_event(item, max_field_bytes)
    except Exception:  # not a mapping, or a mapping that fails: still never raise
        return 0, None
    return drop_class, item


@dataclass(frozen=True)
class HistoryStats:
    """A snapshot of the writer's counters (totals since start) and gauges.

    ``events_accepted``: events queued by :meth:`HistoryWriter.submit`; ``rows_written``: rows
    inserted or changed; ``write_errors``: failed batch attempts (each retry counts);
    ``queue_depth``: events waiting in the queue or taken by the writer and not merged yet;
    ``pending_rows``: merged rows not yet written (both 0: everything accepted is written);
    ``dropped``: ``{reason: count}`` over :data:`DROP_REASONS` (events, or rows for
    ``rejected``/``stop_timeout``, both for ``writer_exited``); ``last_write_ts``: exporter
    time of the last committed batch, seconds since the epoch, or ``None``;
    ``consecutive_failures``: failed attempts since the last success (0 = healthy);
    ``rows_pruned``/``prune_errors``: periodic retention.
    """

    events_accepted: int
    rows_written: int
    write_errors: int
    queue_depth: int
    pending_rows: int
    dropped: Mapping[str, int]
    last_write_ts: float | None
    consecutive_failures: int
    rows_pruned: int
    prune_errors: int


def _is_row_error(exc: BaseException) -> bool:
    """Whether ``exc`` blames the data (retry in halves) rather than the database."""
    return isinstance(exc, (DataError, IntegrityError)) or not isinstance(
        exc, (SQLAlchemyError, InsertRaced))


def _detail(exc: BaseException) -> str:
    """The first line of the driver's message (without SQLAlchemy's SQL and parameters, which
    may hold task arguments), at most 200 characters.
    """
    return first_line(getattr(exc, "orig", None) or exc)[:200]


class HistoryWriter(threading.Thread):
    """Daemon thread writing task events to the history database in batches.

    Args:
        engine: the history engine (:func:`exporter.history.db.create_history_engine`), schema
            already upgraded.
        capacity: queued events at most (``submit`` drops beyond it, see the module docs).
        batch_size: rows per transaction, and pending rows that trigger a write.
        max_delay: seconds a record waits at most before its batch is written (when the
            database is up).
        max_field_bytes: cap of args/kwargs/result/exception message/traceback, UTF-8 bytes.
        max_pending: merged rows kept while the database is down (default: ``capacity``).
        retry_initial / retry_max: backoff after a failed write, seconds (doubling, capped).
        retention: prune rows older than this many seconds (``None``: keep).
        max_rows: prune all but the newest this many rows (``None``: no limit).
        prune_interval: seconds between prunes (the first runs when the thread starts).
        clock: exporter time in seconds since the epoch (``updated_at``, prune reference).
        upsert: writes one batch inside a transaction (default
            :func:`~exporter.history.store.upsert_rows`; injectable for tests).

    Raises:
        ValueError: a size below 1, a non-positive delay or interval.

    """

    def __init__(
        self,
        engine: Engine,
        *,
        capacity: int = DEFAULT_HISTORY_QUEUE_SIZE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_delay: float = DEFAULT_MAX_DELAY,
        max_field_bytes: int = DEFAULT_HISTORY_MAX_FIELD_BYTES,
        max_pending: int | None = None,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
        retention: float | None = None,
        max_rows: int | None = None,
        prune_interval: float = DEFAULT_PRUNE_INTERVAL,
        clock: Callable[[], float] = time.time,
        upsert: Callable[[Connection, Mapping[str, Row], float], tuple[int, int]] = upsert_rows,
    ) -> None:
        super().__init__(name="history-writer", daemon=True)
        if min(capacity, batch_size, max_field_bytes) < 1:
            raise ValueError("capacity, batch_size and max_field_bytes must be >= 1")
        if min(max_delay, retry_initial, retry_max, prune_interval) <= 0:
            raise ValueError("delays and intervals must be > 0")
        self.engine = engine
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.max_field_bytes = max_field_bytes
        self.max_pending = max(max_pending or capacity, batch_size)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.retention = retention
        self.max_rows = max_rows
        self.prune_interval = prune_interval
        self.clock = clock
        self.upsert = upsert
        self._lock = threading.Lock()
        # submit() takes the bare lock (a Condition's `with` costs another Python call per event).
        self._cond = threading.Condition(self._lock)
        # Guarded by _cond: the queue, flush/stop requests and the counters.
        self._queues: tuple[deque[dict[str, Any]], ...] = (deque(), deque(), deque())
        self._queued = 0
        self._oldest: float | None = None  # monotonic time the oldest queued event came
        self._closed = False
        self._stop_deadline = float("inf")
        self._flush_requested = 0
        self._flushed = 0
        self._accepted = 0
        self._rows_written = 0
        self._write_errors = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._last_write_ts: float | None = None
        self._failures = 0
        self._pending_count = 0
        self._taken = 0  # events the writer took and has not merged into pending rows yet
        self._rows_pruned = 0
        self._prune_errors = 0
        self._abandoned = False  # stop() gave up waiting and counted what was left
        # Writer thread only.
        self._pending: dict[str, Row] = {}
        self._pending_oldest: float | None = None
        self._backoff_until = 0.0
        self._next_prune = (float("-inf") if retention is not None or max_rows is not None
                            else float("inf"))
        self._next_rollup = time.monotonic() + ROLLUP_BACKLOG_INTERVAL
        self.drained = False

    # -- any thread ---------------------------------------------------------------------

    def submit(self, event: Mapping[str, Any]) -> None:
        """Queue one Celery task event dict (as the consumer checked it). Never blocks on I/O,
        never raises; worker events are ignored, unusable or surplus events are counted in
        ``dropped``. The dict is copied (shallow), so the caller may change it afterwards;
        oversized text fields are cut in the copy (:func:`~.merge.precap_event`), so the queue's
        memory is bounded by ``capacity`` whatever the events carry. The writer frees the
        events it takes as soon as they are merged into pending rows, before it writes them: at
        most ``capacity`` queued events and one take being merged are alive at once.
        """
        drop_class, item = checked_copy(event, self.max_field_bytes)
        if drop_class < 0:
            return
        with self._lock:
            if item is None:
                self._dropped["invalid"] += 1
                return
            if self._closed:
                self._dropped["stopped"] += 1
                return
            if self._queued >= self.capacity:
                victim = next((k for k in range(drop_class + 1) if self._queues[k]), None)
                if victim is None:
                    self._dropped[FULL_REASON[drop_class]] += 1
                    return
                self._queues[victim].popleft()
                self._queued -= 1
                self._dropped[FULL_REASON[victim]] += 1
            self._queues[drop_class].append(item)
            self._queued += 1
            self._accepted += 1
            if self._oldest is None:
                self._oldest = time.monotonic()
            if self._queued == 1 or self._queued == self.batch_size:
                self._cond.notify()

    def flush(self, timeout: float) -> bool:
        """Write everything submitted before this call; wait up to ``timeout`` seconds.

        Returns ``True`` when it was written (or nothing was pending), ``False`` on timeout
        (database down) or when the thread is not running with records left.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flush_requested += 1
            wanted = self._flush_requested
            self._cond.notify_all()
            while self._flushed < wanted:
                if not self.is_alive():
                    return self._queued == 0 and self._pending_count == 0
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
        return True

    def stop(self, timeout: float) -> bool:
        """Refuse further events, write what is queued and pending, end the thread.

        Waits up to ``timeout`` seconds (the SIGTERM path: the consumer is stopped first), one
        more for a write in progress. What is still unwritten then is counted as
        ``dropped{reason="stop_timeout"}`` and lost (and logged), also when the thread is stuck
        in the database. Returns whether everything was written.
        """
        with self._cond:
            self._closed = True
            self._stop_deadline = time.monotonic() + timeout
            self._backoff_until = 0.0  # one immediate attempt: the database may be back
            self._cond.notify_all()
        if self.is_alive():
            self.join(timeout + 1.0)
            if self.is_alive():  # stuck in the database (a lock held past its busy timeout)
                with self._cond:
                    lost = self._queued + self._taken + self._pending_count
                    self._dropped["stop_timeout"] += lost
                    self._abandoned = True
                log.error("history records lost at stop records=%d (the database did not "
                          "answer in time)", lost)
        elif not self.drained:
            with self._cond:
                lost = self._queued + len(self._pending)
                self._dropped["stop_timeout"] += lost
                self.drained = lost == 0
        return self.drained

    def stats(self) -> HistoryStats:
        """Return a consistent snapshot of the counters (see :class:`HistoryStats`)."""
        with self._cond:
            return HistoryStats(
                events_accepted=self._accepted, rows_written=self._rows_written,
                write_errors=self._write_errors, queue_depth=self._queued + self._taken,
                pending_rows=self._pending_count, dropped=dict(self._dropped),
                last_write_ts=self._last_write_ts, consecutive_failures=self._failures,
                rows_pruned=self._rows_pruned, prune_errors=self._prune_errors,
            )

    # -- writer thread ------------------------------------------------------------------

    def run(self) -> None:
        """Take, merge, write and prune until stopped; every error is logged, never fatal."""
        log.info("history writer started url=%s batch_size=%d max_delay=%.3fs",
                 safe_url(self.engine), self.batch_size, self.max_delay)
        while True:
            try:
                if self._step():
                    return
            except Exception:  # a bug must not end the history: log, pause, go on
                log.exception("history writer error")
                with self._cond:
                    self._cond.wait(1.0)

    def _step(self) -> bool:
        """One round: wait for work, take the queue, merge, write, prune; ``True`` to end."""
        with self._cond:
            while (wait := self._wait_seconds(time.monotonic())) > 0:
                self._cond.wait(None if wait == float("inf") else wait)
            taken, taken_oldest, generation, emptied = self._take_locked()
            urgent = self._closed or generation > self._flushed
            stopping = self._closed
        if taken is not None:
            self._merge(taken, taken_oldest)
        now = time.monotonic()
        if self._pending and self._write_due(now, urgent):
            self._write_pending()
        with self._cond:
            self._pending_count = len(self._pending)
            if emptied and not self._pending and generation > self._flushed:
                # Everything queued before flush() asked for `generation` is written.
                self._flushed = generation
                self._cond.notify_all()
        if now >= self._next_prune:
            self._prune()
        if now >= self._next_rollup and not stopping:
            self._rollup()
        return stopping and self._finish_stop(now)

    def _wait_seconds(self, now: float) -> float:
        """Seconds until there is work (0: now); ``_cond`` held."""
        if self._closed and (now >= self._stop_deadline
                             or not (self._queued or self._pending)):
            return 0.0
        waits = [self._next_prune - now, self._next_rollup - now, self._stop_deadline - now]
        if self._queued >= self.batch_size and len(self._pending) < self.max_pending:
            return 0.0
        flush = self._flush_requested > self._flushed
        if self._queued or self._pending or flush:
            if flush or self._closed or len(self._pending) >= self.batch_size:
                due = now
            else:
                due = min((t for t in (self._oldest, self._pending_oldest) if t is not None),
                          default=now) + self.max_delay
            if self._pending:
                due = max(due, self._backoff_until)
            waits.append(due - now)
        return max(0.0, min(waits))

    def _take_locked(self) -> tuple[tuple[deque[dict[str, Any]], ...] | None, float | None,
                                    int, bool]:
        """Take queued events to merge, ``_cond`` held: the whole queue when its events fit
        under ``max_pending`` as new rows, else only as many events as rows fit (an event makes
        one new row at most), the most important first — failures, then progress, then
        successes, the drop order backwards —, so pending rows never pass ``max_pending``
        while the database is down. Returns the taken queues (``None``: no room), the oldest
        queued time, the flush generation and whether the queue is empty now.
        """
        room = self.max_pending - len(self._pending)
        if room <= 0:
            return None, None, self._flush_requested, False
        oldest = self._oldest
        if self._queued <= room:
            taken = self._queues
            self._taken = self._queued
            self._queues, self._queued, self._oldest = (deque(), deque(), deque()), 0, None
            return taken, oldest, self._flush_requested, True
        part: tuple[deque[dict[str, Any]], ...] = (deque(), deque(), deque())
        for kept, source in reversed(list(zip(part, self._queues, strict=True))):
            while room and source:
                kept.append(source.popleft())
                room -= 1
        self._taken = sum(len(kept) for kept in part)
        self._queued -= self._taken  # the rest keeps its oldest time: due no later
        return part, oldest, self._flush_requested, False

    def _merge(self, taken: tuple[deque[dict[str, Any]], ...], oldest: float | None) -> None:
        pending = self._pending
        if not pending:
            self._pending_oldest = oldest
        invalid = 0
        for queue in taken:
            for event in queue:
                current = pending.get(event["uuid"])  # a str: submit checked it
                record = record_from_event(event, self.max_field_bytes, current)
                if record is None:
                    invalid += 1
                    continue
                task_id, row = record
                if current is None:
                    pending[task_id] = row
                else:
                    merge_into(current, row)
            # Merged: free the events now. The caller holds the taken queues while it writes,
            # and a new queue fills up to capacity meanwhile (benchmarks/README.md, target 4).
            queue.clear()
        if not pending:
            self._pending_oldest = None
        # The taken events are pending rows now: the counters never show work in hand as done.
        with self._cond:
            self._taken = 0
            self._pending_count = len(pending)
            self._dropped["invalid"] += invalid

    def _write_due(self, now: float, urgent: bool) -> bool:
        if now < self._backoff_until:
            return False
        if urgent or len(self._pending) >= self.batch_size:
            return True
        return self._pending_oldest is not None and now >= self._pending_oldest + self.max_delay

    def _write_pending(self) -> None:
        """Write every pending row in batches; on a database error keep the rest and back off."""
        while self._pending:
            batch = dict(islice(self._pending.items(), self.batch_size))
            try:
                self._write_batch(batch)
            except Exception as exc:
                if not _is_row_error(exc):
                    self._failed(exc)
                    return
                log.warning("history batch refused rows=%d error=%s; writing it in halves",
                            len(batch), type(exc).__name__)
                self._count_error()
                try:
                    self._write_halves(batch)
                except Exception as row_exc:  # the database went away meanwhile
                    self._failed(row_exc)
                    return
        self._pending_oldest = None

    def _write_batch(self, batch: dict[str, Row]) -> None:
        for attempt in range(MAX_RACE_RETRIES + 1):
            try:
                with self.engine.connect() as connection:
                    connection = connection.execution_options(**{WRITE_INTENT: True})
                    with connection.begin():
                        inserted, updated = self.upsert(connection, batch, self.clock())
                break
            except InsertRaced as exc:
                if attempt == MAX_RACE_RETRIES:
                    raise
                log.debug("history batch raced another writer rows=%d raced=%d; writing again",
                          len(batch), exc.count)
        for task_id in batch:
            del self._pending[task_id]
        if self._failures:
            log.info("history writes resumed after_failures=%d pending_rows=%d",
                     self._failures, len(self._pending))
        self._backoff_until = 0.0
        with self._cond:
            self._failures = 0
            self._rows_written += inserted + updated
            self._last_write_ts = self.clock()
            self._pending_count = len(self._pending)

    def _write_halves(self, batch: dict[str, Row]) -> None:
        """Write a batch the database refused: each half on its own, a refused half again in
        halves, down to single rows, which are dropped. Raises what is not a row error (the
        database went away meanwhile).
        """
        items = list(batch.items())
        half = len(items) // 2
        for part in (dict(items[:half]), dict(items[half:])):
            if not part:  # a batch of one row: its only half is itself
                continue
            try:
                self._write_batch(part)
            except Exception as exc:
                if not _is_row_error(exc):
                    raise
                if len(part) > 1:
                    self._write_halves(part)
                    continue
                task_id = next(iter(part))
                log.error("history row dropped task_id=%r error=%s detail=%r", task_id,
                          type(exc).__name__, _detail(exc))
                del self._pending[task_id]
                with self._cond:
                    self._dropped["rejected"] += 1

    def _count_error(self) -> None:
        with self._cond:
            self._write_errors += 1

    def _failed(self, exc: BaseException) -> None:
        with self._cond:
            self._write_errors += 1
            self._failures += 1
            failures = self._failures
        delay = min(self.retry_max, self.retry_initial * 2 ** min(failures - 1, 30))
        self._backoff_until = time.monotonic() + delay
        log.warning("history write failed error=%s detail=%r attempt=%d retry_in=%.1fs "
                    "pending_rows=%d", type(exc).__name__, _detail(exc), failures, delay,
                    len(self._pending))

    def _prune(self) -> None:
        self._next_prune = time.monotonic() + self.prune_interval
        try:
            count = prune(self.engine, self.retention, self.max_rows, now=self.clock())
        except Exception as exc:
            log.warning("history prune failed error=%s", type(exc).__name__)
            with self._cond:
                self._prune_errors += 1
            return
        with self._cond:
            self._rows_pruned += count

    def _rollup(self) -> None:
        """Build missing hours of the hourly statistics, for about 50 ms (then go on soon)."""
        more = False
        try:
            more = build(self.engine, now=self.clock())
        except Exception as exc:
            log.warning("history statistics build failed error=%s", type(exc).__name__)
        self._next_rollup = time.monotonic() + (ROLLUP_BACKLOG_INTERVAL if more
                                                else ROLLUP_INTERVAL)

    def _finish_stop(self, now: float) -> bool:
        """Whether the thread may end: all written, or the stop deadline passed."""
        with self._cond:
            left = self._queued + len(self._pending)
            if left and now < self._stop_deadline:
                return False
            if not self._abandoned:
                self._dropped["stop_timeout"] += left
            self._queued = 0
            self._pending_count = 0
            self.drained = left == 0
        self._pending.clear()
        if left:
            log.error("history records lost at stop records=%d (database unreachable)", left)
        log.info("history writer stopped drained=%s", self.drained)
        return True
