"""A Celery app whose ``beat_schedule`` has one solar entry, for ``--app
tests.support.solar_app:app``: ``sunrise-report`` sends ``reports.sunrise`` at each sunrise in
Paris (:data:`EVENT`, :data:`LAT`, :data:`LON`). The app's time zone is New York's
(:data:`TIMEZONE`), not UTC and not Paris', so that a solar time read in the wrong zone shows.
"""

from __future__ import annotations

from celery import Celery
from celery.schedules import solar

EVENT, LAT, LON = "sunrise", 48.85, 2.35
TIMEZONE = "America/New_York"
TASK = "reports.sunrise"

app = Celery("solar-app", set_as_current=False)
app.conf.timezone = TIMEZONE
app.conf.beat_schedule = {
    "sunrise-report": {"task": TASK, "schedule": solar(EVENT, LAT, LON)},
}
