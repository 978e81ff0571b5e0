"""Shared builders for the unit tests: a fake clock, a model factory and Celery-shaped events.

The events carry the fields Celery's ``EventDispatcher`` publishes (``celery/worker/request.py``,
``celery/app/amqp.py``): every event ``type``, ``timestamp``, ``hostname``, ``utcoffset``,
``pid``, ``clock``; ``task-sent`` name/args/kwargs/retries/eta/expires/queue/exchange/
routing_key; ``task-received`` name/args/kwargs/retries/eta/expires; ``task-started`` nothing
more; ``task-succeeded`` result/runtime; ``task-failed`` and ``task-retried``
exception/traceback; heartbeats active/processed/freq.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from exporter.state.model import Model

#: A fixed epoch second; multiples of 1/16 s added to it stay exact in a float.
T0 = 1_700_000_000.0
RUNTIME_BUCKETS = (0.5, 1.0, 5.0)
QUEUE_WAIT_BUCKETS = (0.1, 1.0, 10.0)
WORKER = "celery@w1"
PRODUCER = "web-1"


class FakeClock:
    """The exporter clock, moved by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def iso(timestamp: float) -> str:
    """An ETA as Celery sends it with ``enable_utc``: aware ISO 8601."""
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


class Events:
    """Build event dicts the way Celery sends them (fresh dicts: the model writes into them)."""

    iso = staticmethod(iso)

    def __init__(self) -> None:
        self._clock = 0

    def _base(self, type_: str, timestamp: float, hostname: str, **fields: Any) -> dict:
        self._clock += 1
        return {"type": type_, "timestamp": timestamp, "hostname": hostname, "utcoffset": 0,
                "pid": 4242, "clock": self._clock, **fields}

    def sent(self, uuid: str, timestamp: float, name: str, queue: str | None = "default",
             routing_key: str | None = None, eta: str | None = None, retries: int = 0) -> dict:
        return self._base("task-sent", timestamp, PRODUCER, uuid=uuid, name=name,
                          args="(1, 2)", kwargs="{}", retries=retries, eta=eta, expires=None,
                          queue=queue, exchange="", routing_key=routing_key or queue,
                          root_id=uuid, parent_id=None)

    def received(self, uuid: str, timestamp: float, name: str, hostname: str = WORKER,
                 eta: str | None = None, retries: int = 0) -> dict:
        return self._base("task-received", timestamp, hostname, uuid=uuid, name=name,
                          args="(1, 2)", kwargs="{}", retries=retries, eta=eta, expires=None,
                          root_id=uuid, parent_id=None)

    def started(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict:
        return self._base("task-started", timestamp, hostname, uuid=uuid)

    def succeeded(self, uuid: str, timestamp: float, runtime: float,
                  hostname: str = WORKER) -> dict:
        return self._base("task-succeeded", timestamp, hostname, uuid=uuid, result="3",
                          runtime=runtime)

    def failed(self, uuid: str, timestamp: float, exception: str = "ValueError('boom')",
               hostname: str = WORKER) -> dict:
        return self._base("task-failed", timestamp, hostname, uuid=uuid, exception=exception,
                          traceback="Traceback (most recent call last):\n...")

    def retried(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict:
        return self._base("task-retried", timestamp, hostname, uuid=uuid,
                          exception="Retry('Retry in 1s')",
                          traceback="Traceback (most recent call last):\n...")

    def revoked(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict:
        return self._base("task-revoked", timestamp, hostname, uuid=uuid, terminated=False,
                          signum=None, expired=False)

    def rejected(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict:
        return self._base("task-rejected", timestamp, hostname, uuid=uuid, requeue=False)

    def cancelled(self, uuid: str, timestamp: float, hostname: str = WORKER) -> dict:
        return self._base("task-cancelled", timestamp, hostname, uuid=uuid)

    def online(self, hostname: str, timestamp: float) -> dict:
        return self._base("worker-online", timestamp, hostname, freq=2.0, sw_ident="py-celery",
                          sw_ver="5.4.0", sw_sys="Linux")

    def heartbeat(self, hostname: str, timestamp: float, active: int = 0,
                  processed: int = 0) -> dict:
        return self._base("worker-heartbeat", timestamp, hostname, freq=2.0, active=active,
                          processed=processed, loadavg=[0.1, 0.2, 0.3])

    def offline(self, hostname: str, timestamp: float) -> dict:
        return self._base("worker-offline", timestamp, hostname, freq=2.0)

    def success(self, uuid: str, t: float, name: str, queue: str = "default",
                runtime: float = 0.25) -> list[dict]:
        """sent at ``t``, received ``t+1/16``, started ``t+1/8``, succeeded ``t+1/8+runtime``."""
        return [self.sent(uuid, t, name, queue), self.received(uuid, t + 0.0625, name),
                self.started(uuid, t + 0.125),
                self.succeeded(uuid, t + 0.125 + runtime, runtime)]

    def failure(self, uuid: str, t: float, name: str, queue: str = "default",
                runtime: float = 3.0, exception: str = "ValueError('boom')") -> list[dict]:
        """sent at ``t``, received ``t+1/16``, started ``t+1/8``, failed ``t+1/8+runtime``."""
        return [self.sent(uuid, t, name, queue), self.received(uuid, t + 0.0625, name),
                self.started(uuid, t + 0.125),
                self.failed(uuid, t + 0.125 + runtime, exception)]


@pytest.fixture
def ev() -> Events:
    return Events()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_model(clock: FakeClock) -> Callable[..., Model]:
    """Model factory on the fake clock; keyword arguments override the small test defaults."""

    def make(**overrides: Any) -> Model:
        settings: dict[str, Any] = {
            "runtime_buckets": RUNTIME_BUCKETS,
            "queue_wait_buckets": QUEUE_WAIT_BUCKETS,
            "max_tasks": 1000,
            "max_task_names": 100,
            "worker_timeout": 30.0,
            "worker_retention": 3600.0,
            "clock": clock,
            "timer": clock,
        }
        settings.update(overrides)
        return Model(**settings)

    return make


@pytest.fixture
def model(make_model: Callable[..., Model]) -> Model:
    return make_model()
