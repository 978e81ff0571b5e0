"""The exporter's own health: is the event consumer connected, how often it lost the broker, how
busy it is, which poller calls fail, what the repair of lost events did. Kept apart from the
model (what the events said) with its own lock, so that ``/readyz`` reads one boolean without
copying every task series, and the consumer and the poller report without touching the model's
lock.

Writers: the event consumer (:meth:`Health.set_broker_connected`, :meth:`Health.record_batch`),
the poller (:meth:`Health.count_poll_error`) and the repairer (:meth:`Health.count_repair`,
:meth:`Health.count_repair_error`, :meth:`Health.set_repair_backlog`). Readers: the ``/metrics``
exposition through :meth:`Health.snapshot`; ``/readyz`` through :attr:`Health.broker_connected`;
the repairer through :meth:`Health.gap_windows` and :attr:`Health.gap_closed`.

Event gaps: losing a consuming connection opens a gap, consuming again closes it. Its window
(:class:`GapWindow`, exporter clock) starts when the last batch of events arrived on the lost
connection — the exporter cannot tell when a connection died while it was paused or starved,
only that nothing arrived after that batch — and ends when events are consumed again. The last
:data:`GAP_MEMORY` windows are kept.
"""

from __future__ import annotations

import platform
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import celery

from exporter import __version__


@dataclass(frozen=True)
class HealthSnapshot:
    """The exporter's health at one instant.

    ``broker_connected``: the consumer holds a consuming connection; ``broker_reconnects``:
    connections made again after one was lost; ``event_gaps``: consuming connections lost
    (events published until the reconnect are missing); ``event_batches`` and
    ``event_processing_seconds``: batches applied to the model and the wall time (seconds)
    the consumer spent applying them, lock waits included; ``poll_errors``: failed poller
    calls by call name (``enable_events``, ``active_queues``, ``active``, ``reserved``,
    ``scheduled``, ``stats``, ``queue_lengths``); ``build``: the versions of the build-info
    family (``version``, ``celery_version``, ``python_version``); ``external_url``: where the
    job browser is reached (``--external-url``), for the UI-info family (``None``: not set).
    """

    broker_connected: bool
    broker_reconnects: int
    event_gaps: int
    event_batches: int
    event_processing_seconds: float
    poll_errors: Mapping[str, int]
    build: Mapping[str, str]
    #: Repairs applied, ``{(state, source): count}``; failed calls to a repair source,
    #: ``{source: count}``; tasks waiting for a check and tasks no source knows (``None``
    #: while no repairer runs). See :mod:`exporter.repair`.
    repairs: Mapping[tuple[str, str], int] = field(default_factory=dict)
    repair_errors: Mapping[str, int] = field(default_factory=dict)
    repair_pending: int | None = None
    repair_unresolved: int | None = None
    external_url: str | None = None


@dataclass(frozen=True)
class GapWindow:
    """One event gap, exporter clock (seconds since the epoch): ``number`` counts gaps from 1;
    ``start`` is when the last batch arrived on the connection that was lost (or when it was
    made, if none arrived), ``end`` when events were consumed again. Events published between
    the two never reached the exporter.
    """

    number: int
    start: float
    end: float


#: Seconds a problem stays reported after it was last seen.
PROBLEM_MEMORY = 600.0
#: Closed gap windows kept (the most recent).
GAP_MEMORY = 100


class Health:
    """Counters and flags of the exporter itself; thread-safe (one lock of its own).

    Args:
        build: ``version``, ``celery_version`` and ``python_version`` for the build-info
            family (default: this process's celery-jobmon, Celery and Python versions).
        clock: the exporter's time, seconds since the epoch (gap windows, when a problem was
            last seen; injected for tests).
        external_url: the job browser's URL (``--external-url``) for the UI-info family.

    """

    def __init__(self, build: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time,
                 external_url: str | None = None) -> None:
        self._build = dict(build) if build is not None else {
            "version": __version__, "celery_version": celery.__version__,
            "python_version": platform.python_version()}
        self._external_url = external_url
        self._lock = threading.Lock()
        self._broker_connected = False
        self._broker_reconnects = 0
        self._event_gaps = 0
        self._batches = 0
        self._processing_seconds = 0.0
        self._poll_errors: dict[str, int] = {}
        self._problems: dict[str, tuple[str, float]] = {}
        self._clock = clock
        self._last_data: float | None = None
        self._gap_start: float | None = None
        self._gaps: deque[GapWindow] = deque(maxlen=GAP_MEMORY)
        self._repairs: dict[tuple[str, str], int] = {}
        self._repair_errors: dict[str, int] = {}
        self._repair_backlog: tuple[int, int] | None = None
        #: Set when a gap closes (the repairer waits on it, then clears it).
        self.gap_closed = threading.Event()

    @property
    def broker_connected(self) -> bool:
        """Whether the event consumer is connected to the broker (one attribute read)."""
        return self._broker_connected

    def set_broker_connected(self, connected: bool, *, reconnected: bool = False) -> None:
        """Record the consumer's connection state; ``reconnected`` counts a reconnect, and
        losing a connection that was consuming counts an event gap.
        """
        now = self._clock()
        with self._lock:
            if self._broker_connected and not connected:
                self._event_gaps += 1
                self._gap_start = self._last_data if self._last_data is not None else now
            elif connected and not self._broker_connected:
                self._last_data = now  # nothing arrived on this connection yet
                if self._gap_start is not None:
                    self._gaps.append(GapWindow(self._event_gaps, self._gap_start, now))
                    self._gap_start = None
                    self.gap_closed.set()
            self._broker_connected = connected
            if reconnected:
                self._broker_reconnects += 1

    def record_batch(self, seconds: float) -> None:
        """Count one batch of events applied to the model in ``seconds`` (wall time)."""
        now = self._clock()
        with self._lock:
            self._batches += 1
            self._processing_seconds += seconds
            self._last_data = now

    def count_poll_error(self, call: str) -> None:
        """Count a failed poller call (``call``: ``enable_events``, ``active_queues``, …)."""
        with self._lock:
            self._poll_errors[call] = self._poll_errors.get(call, 0) + 1

    def gap_windows(self) -> tuple[GapWindow, ...]:
        """The closed event gaps, oldest first (at most :data:`GAP_MEMORY`)."""
        with self._lock:
            return tuple(self._gaps)

    def count_repair(self, state: str, source: str, count: int = 1) -> None:
        """Count ``count`` tasks whose ``state`` (SUCCESS, FAILURE, …) a repair took from
        ``source`` (``result_backend``, ``workers``); ``count=0`` makes the series exist at 0.
        """
        with self._lock:
            key = (state, source)
            self._repairs[key] = self._repairs.get(key, 0) + count

    def count_repair_error(self, source: str) -> None:
        """Count a failed call to a repair source (``result_backend``, ``workers``)."""
        with self._lock:
            self._repair_errors[source] = self._repair_errors.get(source, 0) + 1

    def set_repair_backlog(self, pending: int, unresolved: int) -> None:
        """Record the repairer's tasks waiting for a check (``pending``) and those no source
        knows (``unresolved``) after its latest round.
        """
        with self._lock:
            self._repair_backlog = (pending, unresolved)

    def declare_repair_sources(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Make the ``(state, source)`` repair series and every source's error series exist at
        0 (a running repairer's first repair then shows in ``increase()``).
        """
        with self._lock:
            for state, source in pairs:
                self._repairs.setdefault((state, source), 0)
                self._repair_errors.setdefault(source, 0)

    def report_problem(self, condition: str, detail: str) -> None:
        """Note that ``condition`` (a short name, e.g. ``content_disallowed``) holds now;
        ``detail`` says what is wrong and what to do. Shown by ``/readyz`` for
        :data:`PROBLEM_MEMORY` seconds after it was last reported.
        """
        now = self._clock()
        with self._lock:
            self._problems[condition] = (detail, now)

    def problems(self) -> dict[str, tuple[str, float]]:
        """The problems reported in the last :data:`PROBLEM_MEMORY` seconds:
        ``{condition: (detail, last seen)}``.
        """
        cutoff = self._clock() - PROBLEM_MEMORY
        with self._lock:
            return {k: v for k, v in self._problems.items() if v[1] >= cutoff}

    def snapshot(self) -> HealthSnapshot:
        """A frozen copy of every counter."""
        with self._lock:
            return HealthSnapshot(
                broker_connected=self._broker_connected,
                broker_reconnects=self._broker_reconnects,
                event_gaps=self._event_gaps,
                event_batches=self._batches,
                event_processing_seconds=self._processing_seconds,
                poll_errors=dict(self._poll_errors),
                build=self._build,
                repairs=dict(self._repairs),
                repair_errors=dict(self._repair_errors),
                repair_pending=None if self._repair_backlog is None else self._repair_backlog[0],
                repair_unresolved=(None if self._repair_backlog is None
                                   else self._repair_backlog[1]),
                external_url=self._external_url,
            )
