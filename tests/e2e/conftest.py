"""Fixtures for the end-to-end tests: the broker database and a PostgreSQL database for the
exporter's history. The ``prometheus`` process and its configuration are in
:mod:`tests.support.prometheus`, the exporter and worker wrappers in :mod:`tests.support`.

Prometheus and promtool come from Debian's ``prometheus`` package; a missing binary skips
locally and fails with CI=true (:func:`tests.support.binaries.require_binary`). Redis db 9 is
this suite's own; each PostgreSQL database is created with a unique name and dropped
afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis
from sqlalchemy import Engine, create_engine

E2E_REDIS_DB = 9
BROKER_URL = f"redis://127.0.0.1:6379/{E2E_REDIS_DB}"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/{db}"


@pytest.fixture(scope="module")
def e2e_redis() -> Iterator[str]:
    """The broker URL of this suite's Redis database, emptied before and after."""
    client = redis.Redis("127.0.0.1", 6379, db=E2E_REDIS_DB)
    client.flushdb()
    yield BROKER_URL
    client.flushdb()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a new, uniquely named PostgreSQL database (dropped afterwards)."""
    name = f"jobmon_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES.format(db=name).replace("postgresql://", "postgresql+psycopg://")
    with psycopg.connect(POSTGRES.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def history_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on the history database, for the test's own reads."""
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()
