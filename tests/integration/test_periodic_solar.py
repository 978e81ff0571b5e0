"""A solar entry through a real ``serve --app tests.support.solar_app:app`` on a private
redis-server: once a run of its task is sent (a real producer with ``task-sent``), the entry's
``celery_periodic_task_next_run_timestamp_seconds`` is exactly the next sunrise Celery's own
``solar`` schedule gives after that send.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from celery.schedules import solar
from sqlalchemy import create_engine, select

from exporter.history.orm import TASK_EXECUTION
from tests.support import solar_app
from tests.support.exporter import QUIET_POLLER
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

LABELS = {"entry": "sunrise-report", "task": solar_app.TASK}


def sent_at(history_url: str, task_id: str) -> float | None:
    """The history's ``sent_at`` of ``task_id`` (``None``: no row yet)."""
    engine = create_engine(history_url)
    try:
        with engine.connect() as connection:
            return connection.execute(select(TASK_EXECUTION.c.sent_at).where(
                TASK_EXECUTION.c.task_id == task_id)).scalar()
    finally:
        engine.dispose()


def test_serve_exports_the_next_sunrise_celery_computes(redis_server, start_exporter,
                                                         producer):
    url = redis_server.url()
    exporter = start_exporter(url, "--app", "tests.support.solar_app:app",
                              "--periodic-interval", "0.25s", *QUIET_POLLER)
    wait_for(lambda: exporter.metrics().value(
        "celery_jobmon_periodic_source_up", source="app") == 1, 15,
        message=lambda: exporter.output()[-3000:])

    run = producer(url).send_task(solar_app.TASK, queue="a")
    sent = wait_for(lambda: sent_at(exporter.history_url, run.id), 15,
                    message="the run's row in the history")
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_periodic_task_last_sent_timestamp_seconds", **LABELS) == sent and m, 15,
        message=lambda: exporter.output()[-3000:])

    last_run = datetime.fromtimestamp(sent, UTC)
    schedule = solar(solar_app.EVENT, solar_app.LAT, solar_app.LON, app=solar_app.app,
                     nowfun=lambda: last_run)
    expected = (last_run + schedule.remaining_estimate(last_run)).timestamp()
    assert metrics.value("celery_periodic_task_next_run_timestamp_seconds",
                         **LABELS) == expected
    assert sent < expected < sent + 86_400 + 3_600  # the next sunrise, within a day or so
    assert metrics.value("celery_periodic_task_missed_runs_total", **LABELS) == 0
