"""The sources of truth a repair asks, thin I/O over a Celery app of the repairer's own (the
parsing is in :mod:`exporter.repair.findings`): the result backend
(:class:`ResultBackendSource`, ``backend.get_task_meta``, one read per task) and the workers
(:class:`WorkerSource`, one ``inspect query_task`` broadcast per round for every task asked).

A source that cannot be reached raises :class:`SourceUnavailable` (the repairer backs off); a
stored result the exporter cannot read (a serializer not in ``--accept-content``, a class it
refuses to rebuild) is that task's problem only: no finding, logged once per reason every
5 minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from celery import Celery
from celery.exceptions import SecurityError
from kombu.exceptions import ContentDisallowed, DecodeError

from exporter.celery_app import exporter_app
from exporter.config import Settings
from exporter.events.table import SOURCE_RESULT_BACKEND, SOURCE_WORKERS
from exporter.logs import Throttled, describe
from exporter.repair.findings import Finding, finding_from_meta, findings_from_query

log = logging.getLogger(__name__)
#: Errors that blame one stored result, not the backend.
_DATA_ERRORS = (ContentDisallowed, DecodeError, SecurityError, ValueError, TypeError, KeyError,
                AttributeError, ImportError)


class SourceUnavailable(Exception):
    """A source of truth did not answer (broker or backend down, timeout)."""


class BackendSource(Protocol):
    """What the repairer asks the result backend."""

    name: str

    def outcome(self, task_id: str) -> Finding | None:
        """The outcome stored for ``task_id``, ``None`` when there is none."""


class HeldSource(Protocol):
    """What the repairer asks the workers."""

    name: str

    def held(self, task_ids: Sequence[str], workers: int) -> dict[str, Finding]:
        """The tasks among ``task_ids`` a worker holds now (``workers``: replies to expect)."""


def make_repair_app(settings: Settings) -> Celery:
    """The Celery app the repairer reads the result backend and broadcasts with (its own: the
    backend client is per app and thread, and the poller's broadcasts stay apart).
    """
    return exporter_app(settings, "celery-jobmon-repair", result_backend=True,
                        broker_connection_timeout=4)


class ResultBackendSource:
    """The result backend of ``app`` (``--result-backend``): what the workers stored for a
    task — state, ``date_done``, result or exception and traceback, and with
    ``result_extended`` name, arguments, worker and queue.
    """

    name = SOURCE_RESULT_BACKEND

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._throttled = Throttled(log)

    def outcome(self, task_id: str) -> Finding | None:
        """``backend.get_task_meta(task_id)`` read afresh (no cache), as a finding.

        Raises:
            SourceUnavailable: the backend did not answer (connection refused, timeout, …).

        """
        try:
            meta = self.app.backend.get_task_meta(task_id, cache=False)
        except _DATA_ERRORS as exc:
            self._throttled.log(logging.WARNING, type(exc).__name__,
                                "stored result unreadable task_id=%s error=%s", task_id,
                                describe(exc))
            return None
        except Exception as exc:
            raise SourceUnavailable(describe(exc)) from exc
        return finding_from_meta(task_id, meta)


class WorkerSource:
    """The workers, asked with ``inspect query_task`` (``timeout``: seconds to wait for the
    replies; the broadcast ends early once ``workers`` replied).
    """

    name = SOURCE_WORKERS

    def __init__(self, app: Celery, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    def held(self, task_ids: Sequence[str], workers: int) -> dict[str, Finding]:
        """The tasks among ``task_ids`` a worker holds (running, reserved, scheduled). The
        broadcast returns once ``workers`` replied (the workers the model sees up), else after
        the timeout: with none known (just started) every worker that answers in time counts.

        Raises:
            SourceUnavailable: the broker did not take the broadcast.

        """
        if not task_ids:
            return {}
        try:
            replies = self.app.control.inspect(
                timeout=self.timeout, limit=workers if workers > 0 else None,
            ).query_task(list(task_ids))
        except Exception as exc:
            raise SourceUnavailable(describe(exc)) from exc
        return findings_from_query(replies, task_ids)
