"""The history database: default location, engine creation and Alembic migrations.

Default: a SQLite file, ``$XDG_DATA_HOME/celery-jobmon/history.sqlite3`` (``XDG_DATA_HOME``
defaults to ``~/.local/share``), in WAL mode so API reads do not block the writer. Any other
SQLAlchemy URL works (PostgreSQL is tested; ``postgresql://`` uses psycopg 3).

The migrations ship inside the package (``exporter/history/migrations``) and run
programmatically, no ``alembic.ini`` needed; their version table is ``jobmon_alembic_version``
so the history can share a database with an application that uses Alembic itself.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event, func, insert, select, text
from sqlalchemy.engine import URL, make_url

from exporter.history.orm import TASK_EXECUTION

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Alembic's version table for the history (not the default ``alembic_version``).
VERSION_TABLE = "jobmon_alembic_version"
#: PostgreSQL advisory lock key held while migrating (any constant the project owns).
UPGRADE_LOCK_KEY = 0x6A6F626D6F6E  # "jobmon"
#: How long a SQLite connection waits for another writer's lock, seconds (sqlite3 ``timeout``).
SQLITE_BUSY_TIMEOUT = 10.0
#: Pages in the write-ahead log after which the committing connection copies them back into
#: the database file (SQLite's default: 1,000 pages, 4 MB: every second or third batch of the
#: writer, which logs about 0.8 page a row). Every batch dirties the same index pages again
#: (random task ids in the primary key, the ends of the time-ordered indexes); a longer log
#: copies each of them back once for ten times as many batches. Commits are as durable as
#: before (the log is the database until it is copied back); the log file grows to about 40 MB.
SQLITE_WAL_AUTOCHECKPOINT = 10_000
#: Page cache of a connection while it writes, KiB (SQLite's default: 2,000). The writer's
#: inserts land on random pages of the primary key index (uuid task ids): once the table holds
#: some tens of thousands of rows they no longer fit the default cache and are read back from
#: the file at every batch. With this cache and the longer log the writer's SQL took 14 % less
#: CPU into a table growing to 100,000 rows (benchmarks/README.md, issue 17 target 2). Set at
#: the start of a write-intent transaction (:data:`WRITE_INTENT`: the history writer, the
#: statistics build), so readers' connections keep SQLite's default; a pooled connection
#: keeps it afterwards.
SQLITE_WRITE_CACHE_KIB = 8192


def default_history_url(environ: Mapping[str, str] | None = None) -> str:
    """Return ``sqlite:///<data dir>/celery-jobmon/history.sqlite3``, creating the directory.

    ``<data dir>`` is ``$XDG_DATA_HOME`` when set and absolute, else ``~/.local/share``.

    Raises:
        OSError: the directory cannot be created.

    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "share"
    directory = root / "celery-jobmon"
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'history.sqlite3'}"


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # sqlite3's legacy transaction control would skip BEGIN before SELECT; SQLAlchemy emits it
    # instead (see _sqlite_begin), so read-then-write batches are one real transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT}")
    finally:
        cursor.close()


#: Execution option of a connection whose transactions will write: on SQLite they start with
#: ``BEGIN IMMEDIATE``, taking the write lock up front, so a read-then-write batch waits for
#: another writer (busy timeout) instead of failing with "database is locked" when it upgrades.
WRITE_INTENT = "jobmon_write_intent"


def _sqlite_begin(connection: Any) -> None:
    immediate = connection.get_execution_options().get(WRITE_INTENT)
    if immediate:
        connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_WRITE_CACHE_KIB}")
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_history_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """Create the SQLAlchemy engine of the history database (no connection is opened).

    Args:
        url: any SQLAlchemy URL; ``None`` means :func:`default_history_url`. SQLite files get
            ``journal_mode=WAL``, ``synchronous=NORMAL``, ``wal_autocheckpoint`` at
            :data:`SQLITE_WAL_AUTOCHECKPOINT` pages and a 10 s busy timeout on every connection,
            a :data:`SQLITE_WRITE_CACHE_KIB` page cache on those that write; other databases
            get ``pool_pre_ping`` (a restarted server costs one failed batch at most), psycopg
            a 10 s ``connect_timeout``.
        kwargs: passed to :func:`sqlalchemy.create_engine`.

    Raises:
        sqlalchemy.exc.ArgumentError: the URL cannot be parsed or names an unknown dialect.
        ImportError: the URL's driver is not installed.

    """
    parsed = make_url(url if url is not None else default_history_url())
    if parsed.get_backend_name() == "sqlite":
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT, **kwargs.pop("connect_args", {})}
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        # A blackholed server would otherwise hold the writer for the OS TCP timeout.
        kwargs["connect_args"] = {"connect_timeout": 10, **kwargs.get("connect_args", {})}
    return create_engine(parsed, **kwargs)


def safe_url(engine_or_url: Engine | URL | str) -> str:
    """The database URL with its password masked, for logs and errors."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.render_as_string(hide_password=True)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Migrate the history schema to ``revision`` (default: the newest), in one transaction.

    ``target`` is an engine, or a URL for which an engine is created and disposed. Safe to run
    on every start: an up-to-date schema is left alone.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unreachable or not writable.
        alembic.util.exc.CommandError: ``revision`` is unknown.

    """
    engine = target if isinstance(target, Engine) else create_history_engine(target)
    try:
        config = _alembic_config()
        before = current_revision(engine)
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Two replicas starting at once on one database would both create the
                # schema: the second waits here for the first's transaction, then finds it.
                connection.execute(select(func.pg_advisory_xact_lock(UPGRADE_LOCK_KEY)))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        after = current_revision(engine)
        if after != before:  # an up-to-date schema is no news at every start
            log.info("history schema upgraded url=%s from=%s revision=%s", safe_url(engine),
                     before or "empty", after)
    finally:
        if engine is not target:
            engine.dispose()


def head_revision() -> str:
    """The newest migration revision shipped with this package."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, ``None`` when the history was never created.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unreachable.

    """
    with engine.connect() as connection:
        context = MigrationContext.configure(connection,
                                             opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def needs_upgrade(engine: Engine) -> bool:
    """Whether the schema is behind this package (``serve --no-history-upgrade`` refuses to
    start then, telling the user to run ``celery-jobmon db upgrade``).

    Raises:
        sqlalchemy.exc.OperationalError: the database is unreachable.

    """
    return current_revision(engine) != head_revision()


#: The table :func:`probe_writable` creates and drops inside a transaction it rolls back.
PROBE_TABLE = "jobmon_check_probe"


def probe_writable(url: str) -> str:
    """Write what ``serve`` would write to the history at ``url``, in a transaction rolled back
    (nothing is left behind): a ``task_execution`` row when the schema exists (the rights
    ``serve --no-history-upgrade`` needs), else :data:`PROBE_TABLE`, created and dropped (an
    empty database: ``serve`` creates the schema). Returns the schema's state: ``"schema at
    revision R"``, ``"schema behind: at R, this version needs H"`` or ``"empty: serve creates
    the schema"``.

    Raises:
        sqlalchemy.exc.OperationalError and other ``sqlalchemy.exc.DBAPIError``: unreachable,
        read-only, or refuses DDL.
        OSError: the default SQLite directory cannot be created.

    """
    engine = create_history_engine(url)
    try:
        revision, head = current_revision(engine), head_revision()
        with engine.connect() as connection:
            transaction = connection.begin()
            if revision is None:
                connection.execute(text(f"CREATE TABLE {PROBE_TABLE} (probe INTEGER)"))
                connection.execute(text(f"DROP TABLE {PROBE_TABLE}"))
            else:
                now = time.time()
                table: Table = TASK_EXECUTION  # type: ignore[assignment]
                connection.execute(insert(table).values(
                    task_id=PROBE_TABLE, state="PENDING", state_ts=now, updated_at=now))
            transaction.rollback()
    finally:
        engine.dispose()
    if revision is None:
        return "empty: serve creates the schema"
    if revision != head:
        return f"schema behind: at {revision}, this version needs {head} (serve upgrades it)"
    return f"schema at revision {revision}"
