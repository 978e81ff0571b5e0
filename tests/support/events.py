"""The one builder of Celery event dicts, for pure tests and for events published by hand.

- :func:`task_event` and :func:`worker_event` build a fresh dict with the fields Celery's
  ``EventDispatcher`` puts in every event (``type``, ``timestamp``, ``hostname``,
  ``utcoffset``, ``pid``, ``clock``), plus ``uuid`` for a task event, plus any keyword
  ``fields`` (which may also replace those, ``type`` included, to build broken events).
- :func:`without` drops a key (an event missing its ``uuid``, ``hostname``...).
- :class:`Events` (the unit suite's ``ev`` fixture) builds whole Celery-shaped events on top:
  ``task-sent`` name/args/kwargs/retries/eta/expires/queue/exchange/routing_key/root_id/
  parent_id; ``task-received`` the same without the routing fields; ``task-started``
  nothing more; ``task-succeeded`` result/runtime; ``task-failed`` and ``task-retried``
  exception/traceback; ``task-revoked`` terminated/signum/expired; heartbeats
  active/processed/freq/loadavg (``celery/worker/request.py``, ``celery/app/amqp.py``).

Example::

    task_event("task-succeeded", uuid="t1", timestamp=T0 + 1, runtime=0.5, result="3")
    worker_event("worker-heartbeat", hostname="celery@w2", timestamp=T0, active=1)
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from tests.support.clock import T0

#: The worker and producer hostnames events come from unless a test says otherwise.
WORKER = "celery@w1"
PRODUCER = "web-1"
#: The ``pid`` field of every built event (the exporter does not read it).
PID = 4242
#: A ``traceback`` field as a failing task sends it (abridged).
TRACEBACK = "Traceback (most recent call last):\n..."


def task_event(type_: str, /, *, uuid: Any, timestamp: Any, hostname: Any = WORKER,
               **fields: Any) -> dict[str, Any]:
    """A task event: ``{"type": type_, "uuid", "timestamp", "hostname", "utcoffset": 0,
    "pid": PID, "clock": 1, **fields}`` (a new dict: the model writes into events).

    ``uuid``, ``timestamp`` and ``hostname`` are stored as given, of any type, so malformed
    events are built the same way; drop a key with :func:`without`.
    """
    return {"type": type_, "uuid": uuid, "timestamp": timestamp, "hostname": hostname,
            "utcoffset": 0, "pid": PID, "clock": 1, **fields}


def worker_event(type_: str, /, *, timestamp: Any, hostname: Any = WORKER,
                 **fields: Any) -> dict[str, Any]:
    """A worker event (no ``uuid``): ``{"type": type_, "timestamp", "hostname",
    "utcoffset": 0, "pid": PID, "clock": 1, **fields}``.
    """
    return {"type": type_, "timestamp": timestamp, "hostname": hostname, "utcoffset": 0,
            "pid": PID, "clock": 1, **fields}


def without(event: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of ``event`` without ``key``."""
    return {k: v for k, v in event.items() if k != key}


def iso(timestamp: float) -> str:
    """An ETA as Celery sends it with ``enable_utc``: aware ISO 8601."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


class Events:
    """Whole Celery-shaped events, each a fresh dict with the next Lamport ``clock``.

    Task events come from :data:`WORKER` (``task-sent`` from :data:`PRODUCER`) with
    ``args="(1, 2)"``, ``kwargs="{}"``, ``root_id`` the task's own id and no parent.
    """

    iso = staticmethod(iso)

    def __init__(self) -> None:
        self._clock = 0

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _task(self, type_: str, uuid: str, timestamp: float, hostname: str,
              **fields: Any) -> dict[str, Any]:
        return task_event(type_, uuid=uuid, timestamp=timestamp, hostname=hostname,
                          clock=self._tick(), **fields)

    def _worker(self, type_: str, hostname: str, timestamp: float,
                **fields: Any) -> dict[str, Any]:
        return worker_event(type_, timestamp=timestamp, hostname=hostname, clock=self._tick(),
                            **fields)

    def sent(self, uuid: str, timestamp: float, name: str, queue: str | None = "default",
             routing_key: str | None = None, eta: str | None = None,
             retries: int = 0) -> dict[str, Any]:
        return self._task("task-sent", uuid, timestamp, PRODUCER, name=name, args="(1, 2)",
                          kwargs="{}", retries=retries, eta=eta, expires=None, queue=queue,
                          exchange="", routing_key=routing_key or queue, root_id=uuid,
                          parent_id=None)

    def received(self, uuid: str, timestamp: float, name: str, hostname: str = WORKER,
                 eta: str | None = None, retries: int = 0) -> dict[str, Any]:
        return self._task("task-received", uuid, timestamp, hostname, name=name, args="(1, 2)",
                          kwargs="{}", retries=retries, eta=eta, expires=None, root_id=uuid,
                          parent_id=None)

    def started(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict[str, Any]:
        return self._task("task-started", uuid, timestamp, hostname)

    def succeeded(self, uuid: str, timestamp: float, runtime: float,
                  hostname: str = WORKER) -> dict[str, Any]:
        return self._task("task-succeeded", uuid, timestamp, hostname, result="3",
                          runtime=runtime)

    def failed(self, uuid: str, timestamp: float, exception: str = "ValueError('boom')",
               hostname: str = WORKER) -> dict[str, Any]:
        return self._task("task-failed", uuid, timestamp, hostname, exception=exception,
                          traceback=TRACEBACK)

    def retried(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict[str, Any]:
        return self._task("task-retried", uuid, timestamp, hostname,
                          exception="Retry('Retry in 1s')", traceback=TRACEBACK)

    def revoked(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict[str, Any]:
        return self._task("task-revoked", uuid, timestamp, hostname, terminated=False,
                          signum=None, expired=False)

    def rejected(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict[str, Any]:
        return self._task("task-rejected", uuid, timestamp, hostname, requeue=False)

    def cancelled(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict[str, Any]:
        return self._task("task-cancelled", uuid, timestamp, hostname)

    def online(self, hostname: str, timestamp: float) -> dict[str, Any]:
        return self._worker("worker-online", hostname, timestamp, freq=2.0,
                            sw_ident="py-celery", sw_ver="5.4.0", sw_sys="Linux")

    def heartbeat(self, hostname: str, timestamp: float, active: int = 0,
                  processed: int = 0) -> dict[str, Any]:
        return self._worker("worker-heartbeat", hostname, timestamp, freq=2.0, active=active,
                            processed=processed, loadavg=[0.1, 0.2, 0.3])

    def offline(self, hostname: str, timestamp: float) -> dict[str, Any]:
        return self._worker("worker-offline", hostname, timestamp, freq=2.0)

    def success(self, uuid: str, t: float, name: str, queue: str = "default",
                runtime: float = 0.25) -> list[dict[str, Any]]:
        """sent at ``t``, received ``t+1/16``, started ``t+1/8``, succeeded ``t+1/8+runtime``."""
        return [self.sent(uuid, t, name, queue), self.received(uuid, t + 0.0625, name),
                self.started(uuid, t + 0.125),
                self.succeeded(uuid, t + 0.125 + runtime, runtime)]

    def failure(self, uuid: str, t: float, name: str, queue: str = "default",
                runtime: float = 3.0,
                exception: str = "ValueError('boom')") -> list[dict[str, Any]]:
        """sent at ``t``, received ``t+1/16``, started ``t+1/8``, failed ``t+1/8+runtime``."""
        return [self.sent(uuid, t, name, queue), self.received(uuid, t + 0.0625, name),
                self.started(uuid, t + 0.125),
                self.failed(uuid, t + 0.125 + runtime, exception)]


__all__ = ["PID", "PRODUCER", "T0", "TRACEBACK", "WORKER", "Events", "iso", "task_event",
           "without", "worker_event"]
