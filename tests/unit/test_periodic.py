"""Periodic entries: parsing of each schedule source's form, next runs through Celery's own
schedule classes, the missed-run count, and the tracker over a real SQLite history (fake
clock, exact values).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery import Celery
from celery.schedules import crontab, schedule
from redbeat.decoder import RedBeatJSONEncoder
from sqlalchemy import Engine, create_engine, insert, text

from exporter.config import parse_expectation
from exporter.history import create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION
from exporter.periodic.schedules import (
    InvalidEntry,
    entries_from_beat_schedule,
    entry_from_redbeat,
    expected_entry,
    next_run,
)
from exporter.periodic.sources import DjangoBeatSource, ExpectSource
from exporter.periodic.tracker import MissedRuns, PeriodicTracker
from tests.support.clock import T0, FakeClock


@pytest.fixture
def app() -> Celery:
    return Celery("periodic-test", set_as_current=False)


def at(text_time: str) -> float:
    """``2026-12-03T02:00:00`` (UTC) as seconds since the epoch."""
    return datetime.fromisoformat(text_time).replace(tzinfo=UTC).timestamp()


# -- parsing --------------------------------------------------------------------------------------

def test_expect_reads_task_and_interval(app):
    entry = expected_entry(*parse_expectation("reports.nightly=24h"), app)
    assert (entry.name, entry.task, entry.source, entry.schedule_text) == (
        "reports.nightly", "reports.nightly", "expect", "every 86400s")
    assert entry.argument_reprs() is None


@pytest.mark.parametrize("text", ["reports.nightly", "=5m", "a=0s", "a=soon"])
def test_expect_refuses_what_it_cannot_read(text):
    with pytest.raises(ValueError, match="invalid expectation"):
        parse_expectation(text)


def test_beat_schedule_entries_use_celery_schedules(app):
    entries = entries_from_beat_schedule({
        "add": {"task": "app.add", "schedule": 2.5, "args": (2, 3)},
        "nightly": {"task": "app.report", "schedule": crontab(minute=30, hour=2),
                    "kwargs": {"day": "today"}},
    }, app)
    assert [(e.name, e.task, e.schedule_text, e.argument_reprs()) for e in entries] == [
        ("add", "app.add", "every 2.5s", ("[2, 3]", "{}")),
        ("nightly", "app.report", "crontab 30 2 * * *", ("[]", "{'day': 'today'}")),
    ]


def test_beat_schedule_entry_without_a_schedule_is_named(app):
    with pytest.raises(InvalidEntry, match="'broken'"):
        entries_from_beat_schedule({"broken": {"task": "app.add"}}, app)


def test_next_run_is_celerys_answer_whatever_the_clock(app):
    assert next_run(schedule(2.5, app=app), T0) == T0 + 2.5
    nightly = crontab(minute=30, hour=2, app=app)
    assert next_run(nightly, at("2026-12-03T02:30:00")) == at("2026-12-04T02:30:00")
    assert next_run(nightly, at("2026-12-03T01:00:00")) == at("2026-12-03T02:30:00")


def test_redbeat_definition_as_redbeat_writes_it(app):
    definition = json.dumps({
        "name": "nightly", "task": "app.report", "args": [1], "kwargs": {},
        "options": {}, "schedule": crontab(minute=0, hour=3), "enabled": True,
    }, cls=RedBeatJSONEncoder)
    entry = entry_from_redbeat(definition, app)
    assert entry is not None
    assert (entry.name, entry.task, entry.source, entry.schedule_text,
            entry.argument_reprs()) == ("nightly", "app.report", "redbeat",
                                        "crontab 0 3 * * *", ("[1]", "{}"))
    disabled = json.dumps({"name": "off", "task": "app.x", "schedule": schedule(5),
                           "enabled": False}, cls=RedBeatJSONEncoder)
    assert entry_from_redbeat(disabled, app) is None
    with pytest.raises(InvalidEntry):
        entry_from_redbeat("{not json", app)


#: django-celery-beat's tables as its migrations create them on SQLite (every column, so that
#: a column name the source reads wrongly fails here).
DJANGO_DDL = [
    """CREATE TABLE django_celery_beat_intervalschedule (id integer NOT NULL PRIMARY KEY
       AUTOINCREMENT, every integer NOT NULL, period varchar(24) NOT NULL)""",
    """CREATE TABLE django_celery_beat_crontabschedule (id integer NOT NULL PRIMARY KEY
       AUTOINCREMENT, minute varchar(240) NOT NULL, hour varchar(96) NOT NULL,
       day_of_week varchar(64) NOT NULL, day_of_month varchar(124) NOT NULL,
       month_of_year varchar(64) NOT NULL, timezone varchar(63) NOT NULL)""",
    """CREATE TABLE django_celery_beat_solarschedule (id integer NOT NULL PRIMARY KEY
       AUTOINCREMENT, event varchar(24) NOT NULL, latitude decimal NOT NULL,
       longitude decimal NOT NULL)""",
    """CREATE TABLE django_celery_beat_clockedschedule (id integer NOT NULL PRIMARY KEY
       AUTOINCREMENT, clocked_time datetime NOT NULL)""",
    """CREATE TABLE django_celery_beat_periodictask (id integer NOT NULL PRIMARY KEY
       AUTOINCREMENT, name varchar(200) NOT NULL UNIQUE, task varchar(200) NOT NULL,
       args text NOT NULL, kwargs text NOT NULL, queue varchar(200) NULL,
       exchange varchar(200) NULL, routing_key varchar(200) NULL, expires datetime NULL,
       enabled bool NOT NULL, last_run_at datetime NULL,
       total_run_count integer unsigned NOT NULL, date_changed datetime NOT NULL,
       description text NOT NULL, crontab_id integer NULL, interval_id integer NULL,
       solar_id integer NULL, one_off bool NOT NULL, start_time datetime NULL,
       priority integer unsigned NULL, headers text NOT NULL, clocked_id integer NULL,
       expire_seconds integer unsigned NULL)""",
]


def test_django_celery_beat_tables(app, tmp_path: Path):
    engine = create_engine(f"sqlite:///{tmp_path / 'django.sqlite3'}")
    task_columns = ("name, task, args, kwargs, enabled, total_run_count, date_changed, "
                    "description, one_off, headers, interval_id, crontab_id, clocked_id")
    with engine.begin() as connection:
        for statement in DJANGO_DDL:
            connection.execute(text(statement))
        connection.execute(text(
            "INSERT INTO django_celery_beat_intervalschedule VALUES (1, 10, 'minutes')"))
        connection.execute(text("INSERT INTO django_celery_beat_crontabschedule VALUES "
                                "(1, '0', '2', '*', '*', '*', 'Europe/Paris')"))
        connection.execute(text(
            "INSERT INTO django_celery_beat_clockedschedule VALUES (1, '2026-12-03 10:00')"))
        for row in (
            "'sync', 'app.sync', '[1, 2]', '{}', 1, 0, '2026-01-01', '', 0, '{}', 1, NULL, NULL",
            "'nightly', 'app.report', '[]', '{\"to\": \"ops\"}', 1, 0, '2026-01-01', '', 0, "
            "'{}', NULL, 1, NULL",
            "'paused', 'app.sync', '[]', '{}', 0, 0, '2026-01-01', '', 0, '{}', 1, NULL, NULL",
            "'once', 'app.once', '[]', '{}', 1, 0, '2026-01-01', '', 1, '{}', NULL, NULL, 1",
        ):
            connection.execute(text(
                f"INSERT INTO django_celery_beat_periodictask ({task_columns}) VALUES ({row})"))
    entries = DjangoBeatSource(engine, app).read()
    assert [(e.name, e.task, e.source, e.schedule_text, e.argument_reprs())
            for e in entries] == [
        ("sync", "app.sync", "django", "every 600s", ("[1, 2]", "{}")),
        ("nightly", "app.report", "django", "crontab 0 2 * * *", ("[]", "{'to': 'ops'}")),
    ]
    # The crontab follows its row's time zone: 02:00 in Paris is 01:00 UTC in December.
    assert next_run(entries[1].schedule, at("2026-12-03T00:00:00")) == at("2026-12-03T01:00:00")


# -- missed runs ----------------------------------------------------------------------------------

def test_runs_sent_in_time_are_not_missed(app):
    counter = MissedRuns(schedule(2, app=app), start=T0, grace=1)
    counter.observe([T0 + 2.0625, T0 + 4.125], now=T0 + 5)
    assert (counter.missed, counter.last_sent) == (0, T0 + 4.125)


def test_each_period_without_a_send_is_one_miss_after_its_grace(app):
    counter = MissedRuns(schedule(2, app=app), start=T0, grace=1)
    counter.observe([T0 + 2], now=T0 + 5 - 0.0625)  # due T0+4, grace until T0+5: not yet
    assert counter.missed == 0
    counter.observe([], now=T0 + 5)
    assert counter.missed == 1
    counter.observe([], now=T0 + 10)  # due T0+6 (7), T0+8 (9); T0+10 until T0+11
    assert counter.missed == 3
    # beat comes back: it sends at once (its last run is old), then every 2 s from there.
    counter.observe([T0 + 10.5, T0 + 12.5], now=T0 + 13)
    assert counter.missed == 3
    counter.observe([], now=T0 + 20)  # due 14.5 (15.5), 16.5 (17.5), 18.5 (19.5)
    assert counter.missed == 6


def test_a_late_send_ends_the_count_from_where_it_came(app):
    counter = MissedRuns(schedule(10, app=app), start=T0, grace=2)
    counter.observe([T0 + 25], now=T0 + 26)  # due 10 missed (by 12); 20 missed (by 22)
    assert counter.missed == 2
    counter.observe([], now=T0 + 36)  # next due 35, grace until 37
    assert counter.missed == 2


def test_crontab_misses_count_matching_minutes(app):
    start = at("2026-12-03T00:00:30")
    counter = MissedRuns(crontab(app=app), start=start, grace=5)
    counter.observe([], now=at("2026-12-03T00:05:05"))
    assert counter.missed == 5  # 00:01 ... 00:05


# -- the tracker over a history -------------------------------------------------------------------

@pytest.fixture
def history(tmp_path: Path) -> Engine:
    engine = create_history_engine(f"sqlite:///{tmp_path / 'history.sqlite3'}")
    upgrade(engine)
    return engine


def _run(engine: Engine, task_id: str, name: str, state: str, sent: float,
         started: float | None = None, finished: float | None = None,
         args: str = "[]") -> None:
    with engine.begin() as connection:
        connection.execute(insert(TASK_EXECUTION).values(
            task_id=task_id, name=name, state=state, state_ts=finished or started or sent,
            sent_at=sent, started_at=started, finished_at=finished, args=args, kwargs="{}",
            updated_at=sent))


def test_tracker_reports_runs_from_the_history(app, history):
    clock = FakeClock(T0)
    entries = entries_from_beat_schedule({
        "add": {"task": "app.add", "schedule": 10, "args": (2, 3)},
        "report": {"task": "app.report", "schedule": 10},
    }, app)
    tracker = PeriodicTracker([ExpectSource(entries)], history, interval=1, grace=2,
                              clock=clock)
    _run(history, "a1", "app.add", "SUCCESS", T0 - 20, T0 - 19.5, T0 - 19)
    _run(history, "a2", "app.add", "FAILURE", T0 - 10, T0 - 9.5, T0 - 9)
    snapshot = tracker.check()
    add, report = snapshot.entries
    assert (add.entry, add.task, add.source, add.schedule) == ("add", "app.add", "app",
                                                               "every 10s")
    assert (add.last_sent, add.last_started, add.last_succeeded, add.last_outcome) == (
        T0 - 10, T0 - 9.5, T0 - 19, "FAILURE")
    assert (add.next_run, add.missed) == (T0, 0)
    # No run in the history: due one period after the first sighting.
    assert (report.last_sent, report.last_outcome, report.next_run) == (None, None, T0 + 10)
    assert snapshot.sources == {"expect": True}
    assert snapshot.taken_at == T0

    clock.advance(12)  # nothing sent since the start: the run due at T0+10 is missed
    _run(history, "a3", "app.add", "SUCCESS", T0 + 1, T0 + 1.5, T0 + 2)
    add, report = tracker.check().entries
    assert (add.last_sent, add.last_succeeded, add.last_outcome, add.next_run, add.missed) == (
        T0 + 1, T0 + 2, "SUCCESS", T0 + 11, 0)
    assert report.missed == 1


def test_entries_of_one_task_are_told_apart_by_arguments(app, history):
    entries = entries_from_beat_schedule({
        "eu": {"task": "app.sync", "schedule": 60, "args": ("eu",)},
        "us": {"task": "app.sync", "schedule": 60, "args": ("us",)},
    }, app)
    tracker = PeriodicTracker([ExpectSource(entries)], history, interval=1, grace=2,
                              clock=FakeClock(T0))
    _run(history, "e1", "app.sync", "SUCCESS", T0 - 30, T0 - 29, T0 - 28, args="['eu']")
    _run(history, "u1", "app.sync", "FAILURE", T0 - 20, T0 - 19, T0 - 18, args="['us']")
    eu, us = tracker.check().entries
    assert (eu.last_sent, eu.last_outcome) == (T0 - 30, "SUCCESS")
    assert (us.last_sent, us.last_outcome) == (T0 - 20, "FAILURE")


class _Broken:
    name = "redbeat"

    def __init__(self) -> None:
        self.fail = False

    def read(self):
        if self.fail:
            raise ConnectionError("redis down")
        return parse_expect_entries()


def parse_expect_entries():
    return [expected_entry("app.ping", 60, Celery(set_as_current=False))]


def test_an_unreadable_source_keeps_its_last_entries_and_says_so(history, caplog):
    source = _Broken()
    tracker = PeriodicTracker([source], history, interval=1, grace=2, clock=FakeClock(T0))
    assert [e.entry for e in tracker.check().entries] == ["app.ping"]
    source.fail = True
    snapshot = tracker.check()
    assert [e.entry for e in snapshot.entries] == ["app.ping"]
    assert snapshot.sources == {"redbeat": False}
    tracker.check()
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert warnings == ["periodic schedule source unreadable source=redbeat error="
                        "ConnectionError: redis down; keeping its last 1 entries"]


def test_collector_renders_each_entry(app, history):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.utils import floatToGoString as go

    from exporter.metrics.collectors import PeriodicCollector

    entries = entries_from_beat_schedule({"add": {"task": "app.add", "schedule": 10}}, app)
    tracker = PeriodicTracker([ExpectSource(entries)], history, interval=1, grace=2,
                              clock=FakeClock(T0))
    registry = CollectorRegistry()
    registry.register(PeriodicCollector(tracker.latest, "celery_",
                                        const_labels=(("cluster", "eu"),)))
    assert generate_latest(registry) == b""  # before the first check
    _run(history, "a1", "app.add", "FAILURE", T0 - 4, T0 - 3, T0 - 2)
    tracker.check()
    lines = [line for line in generate_latest(registry).decode().splitlines()
             if not line.startswith("#")]
    labels = 'cluster="eu",entry="add",task="app.add"'
    assert lines == [
        f"celery_periodic_task_next_run_timestamp_seconds{{{labels}}} {go(T0 + 6)}",
        f"celery_periodic_task_last_sent_timestamp_seconds{{{labels}}} {go(T0 - 4)}",
        f"celery_periodic_task_last_started_timestamp_seconds{{{labels}}} {go(T0 - 3)}",
        f"celery_periodic_task_missed_runs_total{{{labels}}} 0.0",
        *(f'celery_periodic_task_last_outcome{{cluster="eu",entry="add",state="{state}",'
          f'task="app.add"}} {1.0 if state == "FAILURE" else 0.0}'
          for state in ("SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST")),
        'celery_jobmon_periodic_source_up{cluster="eu",source="expect"} 1.0',
        f'celery_jobmon_periodic_last_check_timestamp_seconds{{cluster="eu"}} {go(T0)}',
    ]


# -- wiring ---------------------------------------------------------------------------------------

def _serve_settings(*args: str):
    from exporter.cli.commands import main
    from exporter.cli.options import settings_from

    return settings_from(dict(main.commands["serve"].make_context("serve", list(args)).params))


def test_serve_options_build_one_source_each_in_priority_order(monkeypatch):
    from exporter.periodic.setup import make_sources

    for name in [n for n in os.environ if n.startswith("JOBMON_")]:
        monkeypatch.delenv(name)
    settings = _serve_settings(
        "--expect", "reports.nightly=24h", "--django-beat-url", "sqlite:///django.db",
        "--redbeat-url", "redis://127.0.0.1:6379/0", "--app", "examples.beat:app",
        "--expect", "app.ping=90s", "--periodic-grace", "2m")
    assert settings.expect == (("reports.nightly", 86400.0), ("app.ping", 90.0))
    assert settings.periodic_grace == 120.0
    sources = make_sources(settings)
    assert [source.name for source in sources] == ["app", "redbeat", "django", "expect"]
    assert [(e.task, e.schedule_text) for e in sources[-1].read()] == [
        ("reports.nightly", "every 86400s"), ("app.ping", "every 90s")]


def test_a_bad_expectation_names_the_option():
    with pytest.raises(ValueError, match="^--expect: invalid expectation 'nightly'"):
        _serve_settings("--expect", "nightly")


def test_without_history_the_tracker_is_not_made_and_the_log_says_why(caplog):
    from exporter.config import Settings
    from exporter.periodic.setup import make_tracker

    settings = Settings(expect=(("reports.nightly", 86400.0),))
    assert make_tracker(settings, None) is None
    assert [r.getMessage() for r in caplog.records] == [
        "periodic tasks not watched: their runs are read from the history, which is off or "
        "could not be opened (sources=expect)"]
    assert make_tracker(Settings(), None) is None  # no source: nothing to say
    assert len(caplog.records) == 1


def test_a_later_read_looks_at_recent_rows_and_merges(history):
    from exporter.periodic.runs import runs

    _run(history, "old", "app.add", "SUCCESS", T0 - 1000, T0 - 999, T0 - 998)
    _run(history, "new", "app.add", "FAILURE", T0 - 20, T0 - 19, T0 - 18)
    _run(history, "running", "app.add", "STARTED", T0 - 5, T0 - 4)
    first = runs(history, "app.add", since=T0 - 30)
    assert (first.last_sent, first.last_started, first.last_succeeded, first.last_outcome,
            first.last_finished, first.sent) == (T0 - 5, T0 - 4, T0 - 998, "FAILURE",
                                                 T0 - 18, (T0 - 20, T0 - 5))
    # Only the rows finished after T0-100 or not finished: "old" is not read again.
    later = runs(history, "app.add", since=T0 - 30, finished_after=T0 - 100)
    assert (later.last_succeeded, later.last_outcome, later.sent) == (
        None, "FAILURE", (T0 - 20, T0 - 5))
    merged = first.merged(later)
    assert merged == first


def test_app_source_reads_the_apps_beat_schedule_and_says_what_cannot_be_imported():
    from examples.beat import EVERY
    from exporter.periodic.sources import AppSource

    assert [(e.name, e.task, e.source, e.schedule_text, e.argument_reprs())
            for e in AppSource("examples.beat:app").read()] == [
        ("add-every", "examples.tasks.add", "app", f"every {EVERY:g}s", ("[2, 3]", "{}")),
        ("report-every", "examples.tasks.fail_value", "app", f"every {EVERY:g}s",
         ("['report broke']", "{}")),
    ]
    with pytest.raises(ModuleNotFoundError, match="no_such_module"):
        AppSource("no_such_module:app").read()
