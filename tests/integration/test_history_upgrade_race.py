"""Two replicas migrating one fresh PostgreSQL history at the same moment: both succeed (the
migration holds an advisory lock), the schema is created once."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg import sql

from exporter.history import current_revision, head_revision, upgrade
from exporter.history.db import create_history_engine
from tests.support.network import PG_HOST, PG_PORT

pytestmark = pytest.mark.integration


def _admin() -> psycopg.Connection:
    return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                           autocommit=True, connect_timeout=10)


def test_two_upgrades_at_once_on_a_fresh_database_both_succeed():
    # Before the lock: one of them failed creating a table the other had just created.
    name = f"jobmon_race_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    try:
        for _ in range(3):  # a race: try it a few times
            errors: list[BaseException] = []
            start = threading.Barrier(2)

            def migrate(start: threading.Barrier = start,
                        errors: list[BaseException] = errors) -> None:
                try:
                    start.wait()
                    upgrade(url)
                except BaseException as exc:  # reported below, with the other thread's
                    errors.append(exc)

            threads = [threading.Thread(target=migrate) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert errors == []
            engine = create_history_engine(url)
            assert current_revision(engine) == head_revision()
            with engine.begin() as connection:
                connection.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            engine.dispose()
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
