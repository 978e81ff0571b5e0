"""The poller thread: the only place that broadcasts to workers.

Every ``--inspect-interval`` seconds it asks the workers to send events (``enable_events``
broadcast, when ``--enable-events``) and which queues they consume (``inspect active_queues``);
the latter lets ``task-received`` name the queue of a task whose producer sent no
``task-sent``. A failed call is logged and counted in ``celery_jobmon_poll_errors_total{call}``;
the next round tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from celery import Celery

from .model import Model

log = logging.getLogger(__name__)


def parse_active_queues(reply: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """Turn an ``inspect().active_queues()`` reply into ``{hostname: [queue name, ...]}``.

    The reply is ``{hostname: [{"name": "a", "routing_key": "a", ...}, ...]}`` or ``None``
    when no worker answered; entries that are not of that shape are left out.
    """
    queues: dict[str, list[str]] = {}
    for hostname, entries in (reply or {}).items():
        if not isinstance(entries, list):
            continue
        queues[hostname] = [
            e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)
        ]
    return queues


class Poller(threading.Thread):
    """Daemon thread running one broadcast round every ``interval`` seconds until stopped.

    Args:
        app: Celery app connected to the broker (``app.control`` is used).
        model: receives the worker → queues map and the error counts.
        interval: seconds between rounds; timeout: seconds to wait for inspect replies.
        enable_events: also broadcast ``enable_events`` each round.

    """

    def __init__(self, app: Celery, model: Model, *, interval: float, timeout: float,
                 enable_events: bool) -> None:
        super().__init__(name="poller", daemon=True)
        self.app = app
        self.model = model
        self.interval = interval
        self.timeout = timeout
        self.enable_events = enable_events
        self._stopping = threading.Event()

    def poll_once(self) -> None:
        """Run one round; errors are counted and logged, never raised."""
        if self.enable_events:
            try:
                self.app.control.enable_events()
            except Exception as exc:
                self._failed("enable_events", exc)
        try:
            reply = self.app.control.inspect(timeout=self.timeout).active_queues()
        except Exception as exc:
            self._failed("active_queues", exc)
        else:
            self.model.set_worker_queues(parse_active_queues(reply))

    def _failed(self, call: str, exc: Exception) -> None:
        self.model.count_poll_error(call)
        log.warning("broadcast failed call=%s error=%s", call, type(exc).__name__)

    def run(self) -> None:
        """Poll until :meth:`stop`."""
        while not self._stopping.is_set():
            self.poll_once()
            self._stopping.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
