"""Fault-injection tests: real processes, real outages, exact outcomes.

The integration fixtures (``redis_url``, ``amqp_url``, ``pg_url``, ``redis_server``,
``producer``, ``start_exporter``, ``start_worker``) come from :mod:`tests.support.fixtures`
(registered by ``tests/conftest.py``); helpers (:class:`~tests.support.exporter.Exporter`,
:class:`~tests.support.worker.Worker`, :class:`~tests.support.network.TcpProxy`,
:func:`~tests.support.waiting.wait_for`...) from :mod:`tests.support`. A missing service
fails a test, never skips it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.redis_server import PrivateRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def private_redis() -> Iterator[Callable[..., PrivateRedis]]:
    """Start private redis-servers with extra arguments; all are killed afterwards."""
    started: list[PrivateRedis] = []

    def start(*args: str) -> PrivateRedis:
        server = PrivateRedis(*args)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.remove()


@pytest.fixture
def own_redis_url(private_redis: Callable[..., PrivateRedis]) -> str:
    """A broker URL on a private ``redis-server`` of this test: nothing else — another test,
    another suite running at the same time — can flush it or publish to it."""
    return private_redis().url(0)


@pytest.fixture(params=["redis", "amqp"])
def any_broker_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on a private Redis and on a RabbitMQ vhost of its own."""
    name = "own_redis_url" if request.param == "redis" else "amqp_url"
    return str(request.getfixturevalue(name))
