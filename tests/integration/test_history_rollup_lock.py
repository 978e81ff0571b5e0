"""The statistics build never holds the history writer behind another process's lock: it
waits :data:`~exporter.history.rollup.BUILD_LOCK_WAIT` for the write lock, not the writer's
10 s busy timeout, and leaves the pooled connection's busy timeout as it was. Real SQLite
(a second connection holding ``BEGIN IMMEDIATE``) and PostgreSQL (``LOCK TABLE``).

Before: a build during a 13 s lock waited 10 s and then the writer's batch waited on, so the
lock ended before any write failed (tests/faults/test_history_faults.py failed in a full run).
"""

from __future__ import annotations

import sqlite3
import time

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from exporter.history import create_history_engine, upgrade
from exporter.history.db import SQLITE_BUSY_TIMEOUT
from exporter.history.rollup import BUILD_LOCK_WAIT, build

pytestmark = pytest.mark.integration
NOW = 1_790_000_000.0


def _timed_build(engine) -> float:
    started = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        build(engine, now=NOW)
    return time.monotonic() - started


def test_a_build_on_a_locked_sqlite_history_gives_up_at_once(tmp_path):
    path = tmp_path / "history.sqlite3"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = create_history_engine(url)
    try:
        build(engine, now=NOW)  # the pool holds a connection; nothing to build yet
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            assert _timed_build(engine) < BUILD_LOCK_WAIT + 1.0  # not the 10 s busy timeout
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA busy_timeout")).scalar_one() == int(
                SQLITE_BUSY_TIMEOUT * 1000)
        assert build(engine, now=NOW) is False
    finally:
        engine.dispose()


def test_a_build_behind_a_postgresql_lock_gives_up_at_once(empty_pg_url):
    engine = create_history_engine(empty_pg_url)
    holder = create_history_engine(empty_pg_url)
    try:
        with holder.connect() as connection, connection.begin():
            connection.execute(text("LOCK TABLE task_stats_period IN ACCESS EXCLUSIVE MODE"))
            assert _timed_build(engine) < BUILD_LOCK_WAIT + 1.0
        assert build(engine, now=NOW) is False
    finally:
        holder.dispose()
        engine.dispose()
