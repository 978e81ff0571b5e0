"""Fixtures of the unit tests: the fake clock, a model factory on it, and the event builder.

``clock`` is a :class:`tests.support.clock.FakeClock` at :data:`~tests.support.clock.T0`;
``ev`` is a :class:`tests.support.events.Events` (Celery-shaped events, see that module);
``make_model`` builds a :class:`~exporter.state.model.Model` on the fake clock with small
test settings, ``model`` is one with the defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from exporter.state.model import Model
from tests.support.clock import FakeClock
from tests.support.events import Events

RUNTIME_BUCKETS = (0.5, 1.0, 5.0)
QUEUE_WAIT_BUCKETS = (0.1, 1.0, 10.0)


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
        }
        settings.update(overrides)
        return Model(**settings)

    return make


@pytest.fixture
def model(make_model: Callable[..., Model]) -> Model:
    return make_model()
