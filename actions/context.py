"""What the action services work with, injected once: :class:`ActionContext`.

``serve`` builds it from the running exporter (:func:`exporter.app.build_service`: the history
engine, the poller's latest snapshot, the live model's running tasks, workers and task index);
the ``retry``,
``cancel`` and ``tasks`` commands build a smaller one (:func:`cli_context`: no poller, no
events). Tests pass fakes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy.engine import Engine

from actions.broker import Broker
from actions.errors import HistoryDisabled
from actions.follow_up import CancelFollowUp
from exporter.config import DEFAULT_MAX_MANUAL_RETRIES, DEFAULT_SLOW_THRESHOLD
from exporter.poll.snapshot import PollSnapshot
from exporter.state.labels import AnyTaskLabels
from exporter.state.workers import WorkerState


class LiveModel(Protocol):
    """What the services read from the live event model (:class:`exporter.state.model.Model`
    has these), each cheap: no full snapshot.
    """

    def running(self) -> Mapping[AnyTaskLabels, int]:
        """Running tasks per label set (read labels by field name)."""

    def worker_states(self) -> tuple[WorkerState, ...]:
        """Every worker the events know, at the exporter's clock now."""


@dataclass(frozen=True)
class KnownTask:
    """What the live task events say about a task: Celery ``state``, ``name``, ``queue``."""

    state: str
    name: str | None
    queue: str | None


@dataclass
class ActionContext:
    """The services' dependencies.

    Args:
        broker: sends, revokes, asks workers, peeks at queues, reads the result backend.
        history: the history engine; ``None`` when the history is off (reads answer 503).
        max_manual_retries: ``--max-manual-retries``.
        slow_threshold: ``--slow-threshold`` seconds, for the statistics' ``slow`` flag.
        poll_latest: the poller's latest snapshot (``None`` before the first round).
        live: the live event model (workers, running tasks); ``None``: no events.
        known_task: task id → what the live events say (the model's task index), or ``None``.
        clock: seconds since the epoch.
        follow_up: records the outcome of cancel requests (``None``: no history, or the
            command line, whose process ends at once: reads settle them then).

    """

    broker: Broker
    history: Engine | None
    max_manual_retries: int = DEFAULT_MAX_MANUAL_RETRIES
    slow_threshold: float = DEFAULT_SLOW_THRESHOLD
    poll_latest: Callable[[], PollSnapshot | None] = lambda: None
    live: LiveModel | None = None
    known_task: Callable[[str], KnownTask | None] | None = None
    clock: Callable[[], float] = time.time
    follow_up: CancelFollowUp | None = None
    #: Held while a retry is checked, sent and recorded: two concurrent retries of one task
    #: cannot both pass the manual-retry limit.
    retry_lock: threading.Lock = field(default_factory=threading.Lock)

    def engine(self) -> Engine:
        """The history engine.

        Raises:
            HistoryDisabled: the history is off or could not be opened at start.

        """
        if self.history is None:
            raise HistoryDisabled(
                "the SQL history is disabled (--no-history, or it could not be opened at start; "
                "see the exporter's log), so executions cannot be looked up")
        return self.history

    def workers_up(self) -> int | None:
        """Workers up by their heartbeats, ``None`` when unknown (no events or none up)."""
        return self.workers_up_known() or None

    def hostnames_up(self) -> tuple[str, ...] | None:
        """The hostnames of the workers up by their heartbeats, sorted (empty: none), ``None``
        without task events (the command line): who a broadcast should hear from.
        """
        if self.live is None:
            return None
        return tuple(sorted(worker.hostname for worker in self.live.worker_states()
                            if worker.up))

    def workers_up_known(self) -> int | None:
        """Workers up by their heartbeats (0: none), ``None`` without task events (the
        command line). A worker busy in a solo pool sends no heartbeat and counts as down.
        """
        up = self.hostnames_up()
        return None if up is None else len(up)
