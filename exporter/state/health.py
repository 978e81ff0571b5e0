"""The exporter's own health: is the event consumer connected, how often it lost the broker, how
busy it is, which poller calls fail. Kept apart from the model (what the events said) with its
own lock, so that ``/readyz`` reads one boolean without copying every task series, and the
consumer and the poller report without touching the model's lock.

Writers: the event consumer (:meth:`Health.set_broker_connected`, :meth:`Health.record_batch`)
and the poller (:meth:`Health.count_poll_error`). Reader: the ``/metrics`` exposition through
:meth:`Health.snapshot`; ``/readyz`` through :attr:`Health.broker_connected`.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

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
    family (``version``, ``celery_version``, ``python_version``).
    """

    broker_connected: bool
    broker_reconnects: int
    event_gaps: int
    event_batches: int
    event_processing_seconds: float
    poll_errors: Mapping[str, int]
    build: Mapping[str, str]


#: Seconds a problem stays reported after it was last seen.
PROBLEM_MEMORY = 600.0


class Health:
    """Counters and flags of the exporter itself; thread-safe (one lock of its own).

    Args:
        build: ``version``, ``celery_version`` and ``python_version`` for the build-info
            family (default: this process's celery-jobmon, Celery and Python versions).

    """

    def __init__(self, build: Mapping[str, str] | None = None) -> None:
        self._build = dict(build) if build is not None else {
            "version": __version__, "celery_version": celery.__version__,
            "python_version": platform.python_version()}
        self._lock = threading.Lock()
        self._broker_connected = False
        self._broker_reconnects = 0
        self._event_gaps = 0
        self._batches = 0
        self._processing_seconds = 0.0
        self._poll_errors: dict[str, int] = {}
        self._problems: dict[str, tuple[str, float]] = {}

    @property
    def broker_connected(self) -> bool:
        """Whether the event consumer is connected to the broker (one attribute read)."""
        return self._broker_connected

    def set_broker_connected(self, connected: bool, *, reconnected: bool = False) -> None:
        """Record the consumer's connection state; ``reconnected`` counts a reconnect, and
        losing a connection that was consuming counts an event gap.
        """
        with self._lock:
            if self._broker_connected and not connected:
                self._event_gaps += 1
            self._broker_connected = connected
            if reconnected:
                self._broker_reconnects += 1

    def record_batch(self, seconds: float) -> None:
        """Count one batch of events applied to the model in ``seconds`` (wall time)."""
        with self._lock:
            self._batches += 1
            self._processing_seconds += seconds

    def count_poll_error(self, call: str) -> None:
        """Count a failed poller call (``call``: ``enable_events``, ``active_queues``, …)."""
        with self._lock:
            self._poll_errors[call] = self._poll_errors.get(call, 0) + 1

    def report_problem(self, condition: str, detail: str) -> None:
        """Note that ``condition`` (a short name, e.g. ``content_disallowed``) holds now;
        ``detail`` says what is wrong and what to do. Shown by ``/readyz`` for
        :data:`PROBLEM_MEMORY` seconds after it was last reported.
        """
        now = time.time()
        with self._lock:
            self._problems[condition] = (detail, now)

    def problems(self) -> dict[str, tuple[str, float]]:
        """The problems reported in the last :data:`PROBLEM_MEMORY` seconds:
        ``{condition: (detail, last seen)}``.
        """
        cutoff = time.time() - PROBLEM_MEMORY
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
            )
