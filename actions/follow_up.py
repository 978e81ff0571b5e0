"""Follow cancel requests until the history shows what came of them.

A revoke's answer can only say who acknowledged it; whether it was honoured shows later, in the
task's row (REVOKED after ``task-revoked``, or the task starting or finishing anyway).
:class:`CancelFollowUp` runs a daemon thread while cancel requests are open: every
``interval`` seconds it calls :func:`exporter.history.audit.settle_cancels`, which records the
outcome of each request whose task's row shows it (an audit row ``cancel-outcome``). The
thread starts on the first request (:meth:`CancelFollowUp.watch`) and ends when no request of
the last ``horizon`` seconds is open; requests made meanwhile by the ``cancel`` command (its
own process) are settled by the same pass, and ``GET /tasks/{id}`` settles the task it reads.

Nothing here runs on the event or scrape path: one indexed SQL pass every ``interval``
seconds, only while something is open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from exporter.history.audit import settle_cancels
from exporter.logs import describe

log = logging.getLogger(__name__)

#: Seconds between two passes while requests are open.
DEFAULT_INTERVAL = 1.0
#: Requests older than this (seconds) are no longer followed by the thread (a task that never
#: runs would keep it polling forever); reading the task still settles them.
DEFAULT_HORIZON = 86400.0


class CancelFollowUp:
    """Records the outcome of open cancel requests from the history.

    Args:
        engine: the history engine.
        clock: seconds since the epoch (the outcome rows' ``at``).
        interval: seconds between passes; horizon: seconds a request is followed.

    """

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time,
                 interval: float = DEFAULT_INTERVAL, horizon: float = DEFAULT_HORIZON) -> None:
        self.engine = engine
        self.clock = clock
        self.interval = interval
        self.horizon = horizon
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wanted = False
        self._stopping = threading.Event()

    def watch(self) -> None:
        """A request was recorded: make sure the thread runs (starts it if needed)."""
        with self._lock:
            self._wanted = True
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="cancel-follow-up",
                                                daemon=True)
                self._thread.start()

    def settle_once(self) -> int:
        """One pass over the requests of the last ``horizon`` seconds.

        Returns:
            How many are still open (1 when the pass failed: it is tried again).

        """
        now = self.clock()
        try:
            result = settle_cancels(self.engine, at=now, since=now - self.horizon)
        except Exception as exc:  # the database may be down: keep following
            log.warning("cancel outcomes not recorded error=%s", describe(exc))
            return 1
        for task_id, outcome in result.recorded:
            log.info("action=cancel-outcome task_id=%s outcome=%s", task_id, outcome)
        return result.still_open

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                self._wanted = False
            still_open = self.settle_once()
            with self._lock:
                if not still_open and not self._wanted:
                    self._thread = None
                    return
            self._stopping.wait(self.interval)
        with self._lock:
            self._thread = None

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (tests; ``serve`` leaves the daemon thread to exit with it)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
