"""Solar schedules (``celery.schedules.solar``, computed by ``ephem``): an app's solar entry read
through ``--app``, its next run and missed runs in the tracker against Celery's own
``remaining_estimate``/``is_due`` at a fixed clock, and a django-celery-beat solar row.

The entry (tests/support/solar_app.py) is Paris' sunrise in an app whose time zone is New
York's; sunrise in Paris on 2026-12-03 is at 07:24:58.238250 UTC as ephem computes it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery.schedules import solar
from sqlalchemy import Engine, create_engine, insert, text

from exporter.history import create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION
from exporter.periodic.schedules import next_run
from exporter.periodic.sources import AppSource, DjangoBeatSource
from exporter.periodic.tracker import PeriodicTracker
from tests.support import solar_app
from tests.support.clock import FakeClock
from tests.unit.test_periodic import DJANGO_DDL

REFERENCE = "tests.support.solar_app:app"
ENTRY = ("sunrise-report", "reports.sunrise", "app", "solar sunrise 48.85,2.35", ("[]", "{}"))


def at(text_time: str) -> float:
    """An ISO time (UTC) as seconds since the epoch."""
    return datetime.fromisoformat(text_time).replace(tzinfo=UTC).timestamp()


#: Sunrises in Paris as ephem gives them (UTC).
SUNRISE_3 = at("2026-12-03T07:24:58.238250")
SUNRISE_4 = at("2026-12-04T07:26:10.831535")


def celery_solar(now: float) -> solar:
    """The app's schedule as Celery's beat would use it with its clock stopped at ``now``."""
    frozen = datetime.fromtimestamp(now, UTC)
    return solar(solar_app.EVENT, solar_app.LAT, solar_app.LON, app=solar_app.app,
                 nowfun=lambda: frozen)


def celery_next(last_run: float, now: float) -> float:
    """Celery's next due time after a run at ``last_run``, asked at ``now``:
    ``now + remaining_estimate(last_run)``.
    """
    frozen = datetime.fromtimestamp(now, UTC)
    remaining = celery_solar(now).remaining_estimate(datetime.fromtimestamp(last_run, UTC))
    return (frozen + remaining).timestamp()


@pytest.fixture
def history(tmp_path: Path) -> Engine:
    engine = create_history_engine(f"sqlite:///{tmp_path / 'history.sqlite3'}")
    upgrade(engine)
    return engine


def sent(engine: Engine, task_id: str, when: float) -> None:
    """A run of the solar entry's task sent at ``when`` (not started yet)."""
    with engine.begin() as connection:
        connection.execute(insert(TASK_EXECUTION).values(
            task_id=task_id, name=solar_app.TASK, state="PENDING", state_ts=when,
            sent_at=when, args="[]", kwargs="{}", updated_at=when))


def test_app_source_reads_a_solar_entry_in_the_apps_time_zone():
    (entry,) = AppSource(REFERENCE).read()
    assert (entry.name, entry.task, entry.source, entry.schedule_text,
            entry.argument_reprs()) == ENTRY
    assert isinstance(entry.schedule, solar)
    assert str(entry.schedule.tz) == "America/New_York"


def test_next_run_is_celerys_answer_at_a_fixed_clock():
    (entry,) = AppSource(REFERENCE).read()
    night = at("2026-12-03T02:00:00")
    assert celery_next(night, night) == SUNRISE_3
    assert next_run(entry.schedule, night) == SUNRISE_3
    # A run at today's sunrise (beat sends a little after it): the next is tomorrow's.
    assert next_run(entry.schedule, SUNRISE_3 + 0.5) == celery_next(SUNRISE_3 + 0.5,
                                                                     SUNRISE_3 + 0.5)
    assert next_run(entry.schedule, SUNRISE_3 + 0.5) == SUNRISE_4
    # Celery's beat: not due a microsecond before, due at the sunrise (and then the next one
    # is tomorrow's, SUNRISE_4, 86,472.593285 s later).
    last = datetime.fromtimestamp(night, UTC)
    before = celery_solar(SUNRISE_3 - 1e-6).is_due(last)
    assert (before.is_due, before.next) == (False, 1e-6)
    due = celery_solar(SUNRISE_3).is_due(last)
    assert (due.is_due, due.next) == (True, 86_472.593285)


def test_tracker_next_run_and_misses_of_a_solar_entry(history):
    clock = FakeClock(at("2026-12-03T02:00:00"))
    tracker = PeriodicTracker([AppSource(REFERENCE)], history, interval=1, grace=60,
                              clock=clock)
    sent(history, "yesterday", at("2026-12-02T07:24:00"))
    (status,) = tracker.check().entries
    assert (status.entry, status.task, status.source, status.schedule) == ENTRY[:4]
    # ephem's answer depends a little on where its search starts: 49 ms earlier than from
    # 02:00 (SUNRISE_3); the tracker gives Celery's answer from the last send.
    assert (status.last_sent, status.next_run, status.missed) == (
        at("2026-12-02T07:24:00"), at("2026-12-03T07:24:58.189503"), 0)
    assert status.next_run == celery_next(at("2026-12-02T07:24:00"), clock.now)

    # Misses are judged from the first check (02:00): today's sunrise from there is SUNRISE_3.
    clock.now = SUNRISE_3 + 60 - 1e-3  # within the grace: not missed yet
    assert tracker.check().entries[0].missed == 0
    clock.now = SUNRISE_3 + 60  # no run at the sunrise: one missed
    (status,) = tracker.check().entries
    assert (status.next_run, status.missed) == (at("2026-12-03T07:24:58.189503"), 1)
    clock.now = SUNRISE_4 + 60  # nor the next day's
    assert tracker.check().entries[0].missed == 2

    # beat comes back and sends at its check after the sunrise: the next is due tomorrow.
    late = SUNRISE_4 + 61
    sent(history, "today", late)
    clock.now = late + 1
    (status,) = tracker.check().entries
    assert (status.last_sent, status.next_run, status.missed) == (
        late, celery_next(late, clock.now), 2)
    assert status.next_run == at("2026-12-05T07:27:21.682470")


def test_django_beat_solar_row(tmp_path: Path):
    engine = create_engine(f"sqlite:///{tmp_path / 'django.sqlite3'}")
    with engine.begin() as connection:
        for statement in DJANGO_DDL:
            connection.execute(text(statement))
        connection.execute(text("INSERT INTO django_celery_beat_solarschedule VALUES "
                                "(1, 'sunrise', 48.850000, 2.350000)"))
        connection.execute(text(
            "INSERT INTO django_celery_beat_periodictask (name, task, args, kwargs, enabled, "
            "total_run_count, date_changed, description, one_off, headers, solar_id) VALUES "
            "('sunrise', 'reports.sunrise', '[]', '{}', 1, 0, '2026-01-01', '', 0, '{}', 1)"))
    (entry,) = DjangoBeatSource(engine, solar_app.app).read()
    assert (entry.name, entry.task, entry.source, entry.schedule_text) == (
        "sunrise", "reports.sunrise", "django", "solar sunrise 48.85,2.35")
    assert next_run(entry.schedule, at("2026-12-03T02:00:00")) == SUNRISE_3
    assert timedelta(seconds=SUNRISE_3 - at("2026-12-03T02:00:00")) == timedelta(
        hours=5, minutes=24, seconds=58.23825)
