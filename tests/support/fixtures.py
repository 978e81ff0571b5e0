"""Fixtures the suites share, registered for all of them as a plugin by ``tests/conftest.py``
(``pytest_plugins``): no suite imports them by name.

Services: Redis 127.0.0.1:6379, RabbitMQ 127.0.0.1:5672 (guest/guest) and PostgreSQL
127.0.0.1:5432 (trust, user ``postgres``), started by the machine or by ``.ci/run``. A missing
service fails the test, never skips it. Each test gets its own Redis database or RabbitMQ
vhost, so tests cannot see each other's queues and events.

- ``redis_url``, ``amqp_url``, ``broker_url`` (both, one after the other): broker URLs.
- ``redis_server``: a started :class:`~tests.support.redis_server.PrivateRedis` to kill and
  start again.
- ``producer``: builds a Celery app sending ``task-sent`` events for a broker URL.
- ``start_exporter``, ``start_worker``: start :class:`~tests.support.exporter.Exporter` and
  :class:`~tests.support.worker.Worker` processes, stopped (workers SIGKILLed) at teardown.
- ``pg_url`` (session), ``empty_pg_url`` (it, emptied), ``history_url`` (SQLite, then
  PostgreSQL): history databases.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery
from psycopg import sql

from exporter.history import create_history_engine, upgrade
from exporter.history.orm import (
    ACTION_AUDIT,
    TASK_EXECUTION,
    TASK_STATS_BUILT,
    TASK_STATS_PERIOD,
)
from tests.support.exporter import Exporter
from tests.support.network import PG_HOST, PG_PORT
from tests.support.redis_server import PrivateRedis
from tests.support.worker import Worker

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
AMQP_HOST = "127.0.0.1:5672"
#: Redis databases this suite hands out (others are left to modules that name their own and to
#: the user): 1-8, split between pytest-xdist workers so that two never share one.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
_REDIS_DBS = itertools.cycle([db for db in range(1, 9) if (db - 1) % _WORKERS == _WORKER])


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A broker URL on an emptied Redis database of its own."""
    db = next(_REDIS_DBS)
    client = redis.Redis(REDIS_HOST, REDIS_PORT, db=db)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    client.flushdb()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A broker URL on a RabbitMQ vhost of its own (deleted afterwards)."""
    vhost = f"jobmon-test-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on Redis and once on RabbitMQ."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    """A started private ``redis-server``: ``.url()``, ``.kill()``, ``.start()``."""
    server = PrivateRedis()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def producer() -> Iterator[Callable[[str], Celery]]:
    """Build a producer Celery app for a broker URL that sends `task-sent` events."""
    apps: list[Celery] = []

    def make(url: str) -> Celery:
        app = Celery(f"producer-{uuid.uuid4().hex[:6]}", broker=url, set_as_current=False)
        app.conf.update(task_send_sent_event=True, broker_connection_retry_on_startup=True)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def start_exporter() -> Iterator[Callable[..., Exporter]]:
    """Start an :class:`Exporter` (same arguments) and wait until it is ready."""
    started: list[Exporter] = []

    def start(broker_url: str, *extra: str, history_url: str | None = None) -> Exporter:
        exporter = Exporter(broker_url, *extra, history_url=history_url)
        started.append(exporter)
        exporter.wait_ready()
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    """Start a :class:`Worker` for a broker URL and queues (not waiting for it); keyword
    arguments go to :class:`Worker` (``name``, ``faketime``)."""
    started: list[Worker] = []

    def start(broker_url: str, queues: str = "a,b", **options: Any) -> Worker:
        worker = Worker(broker_url, queues, **options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()  # teardown: nothing to drain, and a warm shutdown waits for its tasks


def _admin() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                           autocommit=True, connect_timeout=10)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this session (dropped afterwards)."""
    name = f"jobmon_history_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
            sql.Identifier(name)))
    url = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture
def empty_pg_url(pg_url: str) -> str:
    """The session's PostgreSQL history database with its tables emptied: the tests of one
    xdist worker share it, and what an earlier test wrote would change this one's figures."""
    engine = create_history_engine(pg_url)
    with engine.begin() as connection:
        for table in (TASK_EXECUTION, ACTION_AUDIT, TASK_STATS_PERIOD, TASK_STATS_BUILT):
            connection.execute(table.delete())
    engine.dispose()
    return pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty history database: a SQLite file, then the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite3'}"
    return str(request.getfixturevalue("empty_pg_url"))
