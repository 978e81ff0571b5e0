"""Where the schedule is read from: each source's I/O, the parsing left to
:mod:`exporter.periodic.schedules`.

A source has a ``name`` (one of :data:`~exporter.periodic.schedules.SOURCES`) and a
``read()`` that returns its entries now or raises (the tracker logs it, keeps the entries it
read last and reports the source down). Sources are read in the tracker's thread, never on the
scrape path.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol

import redis
from celery import Celery
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    select,
)

from exporter.periodic.schedules import (
    Entry,
    entries_from_beat_schedule,
    entry_from_django_row,
    entry_from_redbeat,
)


class Source(Protocol):
    """A schedule source: ``name`` and ``read()`` → its entries (raises when unreadable)."""

    name: str

    def read(self) -> list[Entry]:
        """The source's entries now."""
        ...


class AppSource:
    """``--app module:attr``: the user's Celery app, imported (once, at the first read) as
    ``celery -A`` finds it (:func:`celery.app.utils.find_app`: ``module:attr``, ``module``
    with an ``app``/``celery`` attribute), its ``beat_schedule`` read at each check.
    """

    name = "app"

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self._app: Celery | None = None

    def read(self) -> list[Entry]:
        """Entries of the app's ``beat_schedule``.

        Raises:
            ImportError, AttributeError: the module or attribute cannot be imported.
            InvalidEntry: an entry Celery cannot read.

        """
        if self._app is None:
            from celery.app.utils import find_app

            importlib.invalidate_caches()
            self._app = find_app(self.reference)
        return entries_from_beat_schedule(self._app.conf.beat_schedule or {}, self._app)


class RedBeatSource:
    """``--redbeat-url``: RedBeat's entries in Redis — the keys listed in the sorted set
    ``<prefix>:schedule``, each a hash whose ``definition`` field is the entry's JSON (as
    ``redbeat.schedulers.RedBeatSchedulerEntry`` stores them). Crontab entries follow
    ``app``'s time zone (``--beat-timezone``: the beat's ``timezone`` setting).
    """

    name = "redbeat"

    def __init__(self, url: str, key_prefix: str, app: Celery) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._schedule_key = key_prefix + ":schedule"
        self._app = app

    def read(self) -> list[Entry]:
        """Enabled entries (a disabled one is left out).

        Raises:
            redis.RedisError: Redis cannot be read.
            InvalidEntry: a definition RedBeat's decoder cannot read.

        """
        keys: list[bytes] = self._client.zrange(self._schedule_key, 0, -1)  # type: ignore[assignment]
        with self._client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "definition")
            definitions = pipe.execute()
        entries = [entry_from_redbeat(definition, self._app)
                   for definition in definitions if definition]
        return [entry for entry in entries if entry is not None]

    def close(self) -> None:
        """Release the Redis connections."""
        self._client.close()


#: django-celery-beat's tables, with the columns read (names as its migrations create them).
DJANGO_METADATA = MetaData()
PERIODIC_TASK = Table(
    "django_celery_beat_periodictask", DJANGO_METADATA,
    Column("id", Integer, primary_key=True), Column("name", String(200)),
    Column("task", String(200)), Column("args", Text), Column("kwargs", Text),
    Column("enabled", Boolean), Column("one_off", Boolean),
    Column("interval_id", Integer), Column("crontab_id", Integer), Column("solar_id", Integer),
)
INTERVAL = Table(
    "django_celery_beat_intervalschedule", DJANGO_METADATA,
    Column("id", Integer, primary_key=True), Column("every", Integer),
    Column("period", String(24)),
)
CRONTAB = Table(
    "django_celery_beat_crontabschedule", DJANGO_METADATA,
    Column("id", Integer, primary_key=True), Column("minute", String(240)),
    Column("hour", String(96)), Column("day_of_week", String(64)),
    Column("day_of_month", String(124)), Column("month_of_year", String(64)),
    Column("timezone", String(63)),
)
SOLAR = Table(
    "django_celery_beat_solarschedule", DJANGO_METADATA,
    Column("id", Integer, primary_key=True), Column("event", String(24)),
    Column("latitude", Numeric(9, 6)), Column("longitude", Numeric(9, 6)),
)


class DjangoBeatSource:
    """``--django-beat-url``: django-celery-beat's ``periodictask`` table joined with its
    interval, crontab and solar tables, through SQLAlchemy (any URL it reads: the Django
    project's PostgreSQL, MySQL or SQLite database).
    """

    name = "django"

    def __init__(self, engine: Engine, app: Celery) -> None:
        self.engine = engine
        self._app = app

    def read(self) -> list[Entry]:
        """Enabled, periodic (not one-off, not clocked) tasks, by id.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the tables cannot be read.
            InvalidEntry: a row that does not make a schedule.

        """
        task, interval, cron, sun = PERIODIC_TASK.c, INTERVAL.c, CRONTAB.c, SOLAR.c
        statement = (
            select(task.name, task.task, task.args, task.kwargs, task.enabled, task.one_off,
                   interval.every.label("interval_every"),
                   interval.period.label("interval_period"),
                   *(getattr(cron, column).label(f"crontab_{column}") for column in (
                       "minute", "hour", "day_of_week", "day_of_month", "month_of_year",
                       "timezone")),
                   sun.event.label("solar_event"), sun.latitude.label("solar_latitude"),
                   sun.longitude.label("solar_longitude"))
            .select_from(PERIODIC_TASK.outerjoin(INTERVAL, task.interval_id == interval.id)
                         .outerjoin(CRONTAB, task.crontab_id == cron.id)
                         .outerjoin(SOLAR, task.solar_id == sun.id))
            .order_by(task.id)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(statement).mappings().all()
        entries = [entry_from_django_row(dict(row), self._app) for row in rows]
        return [entry for entry in entries if entry is not None]


class ExpectSource:
    """``--expect NAME=INTERVAL``: entries given on the command line (parsed at start)."""

    name = "expect"

    def __init__(self, entries: Sequence[Entry]) -> None:
        self._entries = list(entries)

    def read(self) -> list[Entry]:
        """The expectations as entries."""
        return list(self._entries)
