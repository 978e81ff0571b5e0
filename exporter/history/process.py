"""The history writer in a child process: ``serve``'s writer, off the event thread's GIL.

:class:`~exporter.history.writer.HistoryWriter` runs in a process of its own
(:mod:`exporter.history.child`, started with ``python -c``), so merging and SQL no longer take
turns with the event thread at one interpreter lock. The exporter keeps a bounded buffer:
:meth:`WriterProcess.submit` checks and copies an event as the thread writer does and appends
it; a feeder thread sends what the buffer holds, pickled in one message, through a socket
(:mod:`multiprocessing.connection`'s framing); the child hands each event to its own
``HistoryWriter``, whose queue applies the drop classes (the child reads the socket at once, so
its queue is where a slow database shows). The child sends a snapshot of its counters every
:data:`~.child.STATS_INTERVAL` seconds and when it stops; :meth:`WriterProcess.stats` adds what
is still in the exporter's buffer or in the socket, so the counters never show work in hand as
done. Held at most: ``capacity`` events in the exporter plus one message in flight
(:data:`MAX_MESSAGE_EVENTS`), and in the child its writer's ``capacity`` events and
``max_pending`` rows.

Guarantees as for the thread writer: an outage is the child writer's business (kept in memory,
backoff, ``max_pending``); on SIGTERM ``serve`` calls :meth:`~WriterProcess.stop`, which sends
the rest and waits for the child to write it. The child ignores SIGINT and SIGTERM and runs in a
session of its own (a terminal's Ctrl-C, a kill of the exporter's process group or systemd's
SIGTERM to the whole unit reach it too: the exporter decides when it stops); when the
exporter's end of the socket closes (the exporter killed) it writes what it holds and exits —
unless it is killed too: in a container whose first process is the exporter, the kernel kills
every process of the container with it. A child that dies (the kernel's OOM killer, say) or
cannot read a message loses what it held: counted as ``dropped{reason="writer_exited"}`` —
events and rows, from its last snapshot (up to :data:`~.child.STATS_INTERVAL` seconds old, so
rows written meanwhile count as lost too) and what was in the socket — and a new child starts
after a backoff (``retry_initial`` doubling up to ``retry_max``, from ``retry_initial`` again
after a child that reported); children that exit in a row
show as ``consecutive_failures`` (``/readyz``'s ``history_writes`` problem) until one reports.

Why a process (benchmarks/README.md, "The history writer in a child process"): in a burst the
thread writer's share of the GIL slowed the event thread and its queue overflowed; in a child
the writer has a core of its own. The price is a second interpreter (60–70 MB RSS) and the
pickling (7–17 % more CPU); ``--history-writer thread`` keeps the writer in the exporter's process.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from exporter.child_process import start_child
from exporter.config import DEFAULT_HISTORY_MAX_FIELD_BYTES, DEFAULT_HISTORY_QUEUE_SIZE
from exporter.history import child
from exporter.history.writer import (
    DEFAULT_RETRY_INITIAL,
    DEFAULT_RETRY_MAX,
    DROP_REASONS,
    FULL_REASON,
    HistoryStats,
    checked_copy,
)
from exporter.logs import describe

log = logging.getLogger(__name__)

#: Events per message at most (a larger buffer goes in several).
MAX_MESSAGE_EVENTS = 5000
#: Seconds the feeder lets the buffer fill after its first event before it sends: one
#: message per 20 ms at most while events trickle in (pickling, two system calls and the
#: child's wake-up are paid per message), well within the writer's own 0.5 s batching delay.
FEED_INTERVAL = 0.02
#: Seconds a stopping child has, beyond the stop timeout, to end before it is killed.
EXIT_GRACE = 5.0
#: Totals a child's snapshot carries that the exporter keeps when the child ends.
_TOTALS = ("rows_written", "write_errors", "rows_pruned", "prune_errors")


@dataclass
class _Child:
    """One child process's share of the counters; guarded by ``WriterProcess._lock``."""

    sent: int = 0  # events sent to it
    received: int = 0  # events it took from the socket (its last snapshot)
    snapshot: HistoryStats | None = None
    gone: bool = False  # ended and counted (its totals kept, what it held counted as lost)
    ended: threading.Event = field(default_factory=threading.Event)


class WriterProcess:
    """The exporter's handle of a history writer running in a child process.

    Args:
        url: the history database URL (the child opens its own engine; the schema is upgraded).
        capacity: events the exporter buffers at most, and the child writer's queue capacity.
        max_field_bytes, retention, max_rows: the child writer's (see
            :class:`~exporter.history.writer.HistoryWriter`).
        retry_initial / retry_max: backoff before a new child after one exited, seconds.
        log_level / log_format / secrets: the child's logging (see
            :func:`exporter.logs.configure_logging`).

    Same interface as the thread writer for ``serve``: :meth:`start`, :meth:`submit`,
    :meth:`stats`, :meth:`stop` and :attr:`drained`.

    Raises:
        ValueError: ``capacity`` or ``max_field_bytes`` below 1, a non-positive delay.

    """

    def __init__(self, url: str, *, capacity: int = DEFAULT_HISTORY_QUEUE_SIZE,
                 max_field_bytes: int = DEFAULT_HISTORY_MAX_FIELD_BYTES,
                 retention: float | None = None, max_rows: int | None = None,
                 retry_initial: float = DEFAULT_RETRY_INITIAL,
                 retry_max: float = DEFAULT_RETRY_MAX, log_level: str = "INFO",
                 log_format: str = "text", secrets: Iterable[str] = ()) -> None:
        if min(capacity, max_field_bytes) < 1:
            raise ValueError("capacity and max_field_bytes must be >= 1")
        if min(retry_initial, retry_max) <= 0:
            raise ValueError("delays must be > 0")
        self.url = url
        self.capacity = capacity
        self.max_field_bytes = max_field_bytes
        self.writer_options = {"capacity": capacity, "max_field_bytes": max_field_bytes,
                               "retention": retention, "max_rows": max_rows}
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.log_config = (log_level, log_format, tuple(secrets))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Guarded by _cond.
        self._buffer: list[dict[str, Any]] = []
        self._taking = 0  # events taken from the buffer and not yet sent
        self._closed = False
        self._deadline = float("inf")  # monotonic time the stop's writing must end
        self._accepted = 0
        self._dropped = dict.fromkeys(DROP_REASONS, 0)  # here, and of children that ended
        self._totals = dict.fromkeys(_TOTALS, 0)  # of children that ended
        self._last_write_ts: float | None = None
        self._child: _Child | None = None  # the current child, until it ended
        self._exits = 0  # children that exited in a row before one reported
        self._thread: threading.Thread | None = None
        #: Whether everything was written at :meth:`stop`.
        self.drained = False
        #: The current child's process id (``None`` before the first has started).
        self.pid: int | None = None

    # -- any thread ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the feeder thread, which starts the child process (and any replacement)."""
        self._thread = threading.Thread(target=self._run, name="history-feeder", daemon=True)
        self._thread.start()

    def submit(self, event: Mapping[str, Any]) -> None:
        """Buffer one Celery task event dict, as :meth:`HistoryWriter.submit
        <exporter.history.writer.HistoryWriter.submit>` queues it (same checks, copy and size
        caps; never blocks, never raises). Beyond ``capacity`` buffered events — the child is
        not reading: starting, or gone — the incoming event is dropped under its class's
        ``queue_full_*`` reason.
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
            if len(self._buffer) >= self.capacity:
                self._dropped[FULL_REASON[drop_class]] += 1
                return
            self._buffer.append(item)
            self._accepted += 1
            if len(self._buffer) == 1:
                self._cond.notify()

    def stats(self) -> HistoryStats:
        """A snapshot of the counters (:class:`~exporter.history.writer.HistoryStats`): the
        current child's last snapshot, plus the events still in the exporter's buffer or in
        the socket in ``queue_depth``, plus the totals of children that ended before;
        ``consecutive_failures`` is at least the children that exited in a row.
        """
        with self._lock:
            child = self._child
            snap = child.snapshot if child is not None else None
            depth = len(self._buffer) + self._taking
            totals = dict(self._totals)
            dropped = dict(self._dropped)
            last_write, failures, pending = self._last_write_ts, self._exits, 0
            if child is not None:
                depth += child.sent - child.received
            if snap is not None:
                depth += snap.queue_depth
                pending = snap.pending_rows
                failures = max(failures, snap.consecutive_failures)
                last_write = snap.last_write_ts or last_write
                for key in totals:
                    totals[key] += getattr(snap, key)
                for reason, count in snap.dropped.items():
                    dropped[reason] = dropped.get(reason, 0) + count
            return HistoryStats(
                events_accepted=self._accepted, queue_depth=depth, pending_rows=pending,
                dropped=dropped, last_write_ts=last_write, consecutive_failures=failures,
                **totals)

    def stop(self, timeout: float) -> bool:
        """Refuse further events, send the rest, let the child write it and end.

        The child has until ``timeout`` seconds from now to write (what it could not is
        counted as ``dropped{reason="stop_timeout"}``) and :data:`EXIT_GRACE` more to end,
        else it is killed: this returns within ``timeout`` + 3 × ``EXIT_GRACE`` seconds.
        Returns whether everything was written.
        """
        with self._cond:
            self._closed = True
            self._deadline = time.monotonic() + timeout
            lost_before = self._lost()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout + 3 * EXIT_GRACE)
        with self._lock:
            unsent = len(self._buffer)
            if unsent:  # never started, or no child took them in time
                self._dropped["stop_timeout"] += unsent
                self._buffer.clear()
                log.error("history records lost at stop records=%d (not sent to the writer "
                          "process)", unsent)
            finished = self._thread is None or not self._thread.is_alive()
            self.drained = finished and self._lost() == lost_before
        return self.drained

    def _lost(self) -> int:
        """Events and rows lost at a stop or with a child so far; ``_lock`` held."""
        child = self._child
        snap = child.snapshot if child is not None else None
        return (self._dropped["stop_timeout"] + self._dropped["writer_exited"]
                + (snap.dropped.get("stop_timeout", 0) if snap is not None else 0))

    # -- feeder thread ------------------------------------------------------------------

    def _run(self) -> None:
        """Start a child, feed it until stopped; start another when one exits."""
        failures = 0
        while True:
            started, reported = time.monotonic(), False
            try:
                ended, why, reported = self._one_child()
            except Exception as exc:  # it could not start (fork failed, no descriptors left)
                ended, why = False, f"could not start: {describe(exc)}"
            if ended:
                break
            healthy = reported or time.monotonic() - started > self.retry_max
            failures = 1 if healthy else failures + 1
            delay = min(self.retry_max, self.retry_initial * 2 ** min(failures - 1, 30))
            with self._cond:
                self._exits += 1
                if self._closed and (not self._buffer or time.monotonic() >= self._deadline):
                    log.error("history writer process %s", why)
                    break
                if self._closed:
                    log.error("history writer process %s; starting another to write what "
                              "is left", why)
                    continue
                log.error("history writer process %s; starting another in %.1fs", why, delay)
                wake = time.monotonic() + delay
                while not self._closed and (left := wake - time.monotonic()) > 0:
                    self._cond.wait(left)

    def _one_child(self) -> tuple[bool, str, bool]:
        """Run one child until stopped (``(True, ...)``) or gone (``(False, why, ...)``); the
        last item: whether it reported (it started well).
        """
        process, conn = self._spawn()
        child = _Child()
        with self._lock:
            self._child = child
        listener = threading.Thread(target=self._listen, args=(conn, child),
                                    name="history-stats", daemon=True)
        listener.start()
        try:
            ended = self._feed(conn, child)
        finally:
            try:
                process.wait(EXIT_GRACE)
            except subprocess.TimeoutExpired:
                log.error("history writer process did not end; killing it pid=%s", process.pid)
                process.kill()
                process.wait()
            listener.join()
            conn.close()
        return ended, f"exited code={process.returncode}", child.snapshot is not None

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Connection]:
        """Start a Python running :func:`exporter.history.child.main` in a session of its own, its
        standard input a socket to this process; the settings and ``sys.path`` go as the
        first message (a password in the URL is never on a command line).
        """
        process, conn = start_child(child.__name__)
        try:
            conn.send((self.url, self.writer_options, self.log_config, sys.path))
        except BaseException:
            conn.close()
            process.kill()
            process.wait()
            raise
        self.pid = process.pid
        log.info("history writer process started pid=%s", process.pid)
        return process, conn

    def _feed(self, conn: Connection, child: _Child) -> bool:
        """Send the buffer until stopped (``True``) or the child is gone (``False``)."""
        while True:
            with self._cond:
                while not self._buffer and not self._closed and not child.gone:
                    self._cond.wait(1.0)
                if not self._closed and len(self._buffer) < MAX_MESSAGE_EVENTS:
                    self._cond.wait(FEED_INTERVAL)  # only stop() notifies meanwhile
                if child.gone:
                    return False
                batch = self._buffer[:MAX_MESSAGE_EVENTS]
                del self._buffer[:MAX_MESSAGE_EVENTS]
                self._taking = len(batch)
                stopping = self._closed and not self._buffer
            payload, kept = self._pickled(batch)
            with self._lock:
                self._taking = 0
                if child.gone:  # ended meanwhile: the next child takes them
                    self._buffer[:0] = kept
                    return False
                child.sent += len(kept)
            try:
                if kept:
                    conn.send_bytes(payload)
                if stopping:
                    conn.send_bytes(pickle.dumps(max(0.0, self._deadline - time.monotonic())))
            except OSError:  # the child is gone: the listener counts what it held
                child.ended.wait(EXIT_GRACE)
                return False
            if stopping:
                child.ended.wait(max(0.0, self._deadline - time.monotonic()) + EXIT_GRACE)
                return True

    def _pickled(self, batch: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
        """``batch`` pickled, and the events in it: one that cannot be (an odd object in a
        pickled event) is left out and counted ``invalid``.
        """
        try:
            return pickle.dumps(batch, pickle.HIGHEST_PROTOCOL), batch
        except Exception:
            kept = []
            for event in batch:
                try:
                    pickle.dumps(event, pickle.HIGHEST_PROTOCOL)
                except Exception:
                    continue
                kept.append(event)
            with self._lock:
                self._dropped["invalid"] += len(batch) - len(kept)
            return pickle.dumps(kept, pickle.HIGHEST_PROTOCOL), kept

    def _listen(self, conn: Connection, child: _Child) -> None:
        """Take the child's snapshots until its last one, or until its socket ends."""
        try:
            while True:
                try:
                    received, snapshot, drained = conn.recv()
                except (EOFError, OSError):
                    break
                with self._lock:
                    child.received, child.snapshot = received, snapshot
                    self._exits = 0
                    if drained is not None:  # it stopped: what it did not take is lost
                        self._retire(child, child.sent - received, "writer_exited")
                        return
            with self._lock:
                snap = child.snapshot
                held = snap.queue_depth + snap.pending_rows if snap is not None else 0
                self._retire(child, child.sent - child.received + held,
                             "stop_timeout" if self._closed else "writer_exited")
        finally:
            child.ended.set()
            with self._cond:
                self._cond.notify_all()

    def _retire(self, child: _Child, lost: int, reason: str) -> None:
        """Keep an ended child's totals, count ``lost`` (events or rows it held) under
        ``reason``; ``_lock`` held.
        """
        child.gone = True
        if self._child is child:
            self._child = None
        snap = child.snapshot
        if snap is not None:
            for key in self._totals:
                self._totals[key] += getattr(snap, key)
            for name, count in snap.dropped.items():
                self._dropped[name] = self._dropped.get(name, 0) + count
            self._last_write_ts = snap.last_write_ts or self._last_write_ts
        if lost:
            self._dropped[reason] += lost
            log.error("history records lost records=%d reason=%s", lost, reason)
