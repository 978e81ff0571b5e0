"""Periodic tasks against a real ``celery beat`` (its file scheduler, then RedBeat) sending
examples/beat.py's two entries every 2 s to a real worker over a private Redis, watched by a
real ``serve``: the runs that happen (timestamps equal to the history's, no miss), the one that
fails (last outcome FAILURE), and the runs that never happen once beat is stopped (one miss per
period after the grace, exactly as the schedule says at the tracker's own check time), and an
``--expect``'ed task nobody sends.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from exporter.history.orm import TASK_EXECUTION
from tests.support.exporter import QUIET_POLLER, Exporter, Metrics
from tests.support.paths import ROOT, temp_log
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

EVERY = 2.0
GRACE = 1.5
ADD = {"entry": "add-every", "task": "examples.tasks.add"}
REPORT = {"entry": "report-every", "task": "examples.tasks.fail_value"}
#: --expect'ed, never sent by anyone.
NEVER = {"entry": "examples.tasks.sleep", "task": "examples.tasks.sleep"}
PERIODIC_FLAGS = ("--periodic-interval", "0.25s", "--periodic-grace", f"{GRACE:g}s")


class Beat:
    """``celery -A examples.beat beat`` as a process (entries every :data:`EVERY` seconds),
    with its schedule file in ``directory``; ``scheduler``: a ``-S`` class.
    """

    def __init__(self, broker_url: str, directory: Path, scheduler: str | None = None) -> None:
        self.log = temp_log("beat-")
        env = {**os.environ, "CELERY_BROKER_URL": broker_url,
               "JOBMON_EXAMPLE_BEAT_EVERY": f"{EVERY:g}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "examples.beat", "beat",
             "-s", str(directory / "beat-schedule"), "--max-interval", "1",
             "--loglevel", "INFO", *(["-S", scheduler] if scheduler else [])],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)


@pytest.fixture
def beats():
    started: list[Beat] = []

    def start(*args, **kwargs) -> Beat:
        beat = Beat(*args, **kwargs)
        started.append(beat)
        return beat

    yield start
    for beat in started:
        if beat.proc.poll() is None:
            beat.proc.kill()
            beat.proc.wait()


def history_runs(exporter: Exporter, task: str) -> dict[str, float | None]:
    """What the exporter's history holds of ``task``: count, newest send/start/success."""
    engine = create_engine(exporter.history_url)
    c = TASK_EXECUTION.c
    with engine.connect() as connection:
        count, sent, started = connection.execute(
            select(func.count(), func.max(c.sent_at), func.max(c.started_at))
            .where(c.name == task)).one()
        succeeded = connection.execute(
            select(func.max(c.finished_at)).where(c.name == task, c.state == "SUCCESS")
        ).scalar()
        failed = connection.execute(
            select(func.count()).where(c.name == task, c.state == "FAILURE")).scalar()
    engine.dispose()
    return {"count": count, "sent": sent, "started": started, "succeeded": succeeded,
            "failed": failed}


def periodic(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.value(f"celery_periodic_task_{name}", **labels)


def scrape_when(exporter: Exporter, condition) -> Metrics:
    """The first scrape for which ``condition(metrics)`` holds (15 s at most)."""
    def scraped() -> Metrics | None:
        metrics = exporter.metrics()
        return metrics if condition(metrics) else None
    return wait_for(scraped, timeout=15, message=lambda: exporter.output()[-3000:])


def test_runs_of_a_real_beat_a_failure_and_the_runs_missed_once_beat_stops(
        redis_server, start_worker, start_exporter, beats, tmp_path, monkeypatch):
    monkeypatch.setenv("JOBMON_EXAMPLE_BEAT_EVERY", f"{EVERY:g}")  # the exporter's --app
    url = redis_server.url()
    worker = start_worker(url, "a,b")
    beat = beats(url, tmp_path)
    exporter = start_exporter(url, "--app", "examples.beat:app",
                              "--expect", f"examples.tasks.sleep={EVERY:g}s", *PERIODIC_FLAGS,
                              *QUIET_POLLER)

    # Two runs of each entry seen from start to end (sent, started, finished) in the history.
    wait_for(lambda: (history_runs(exporter, ADD["task"])["succeeded"] is not None
                      and history_runs(exporter, ADD["task"])["count"] >= 2
                      and history_runs(exporter, REPORT["task"])["failed"] >= 2),
             timeout=30, message=lambda: f"{beat.output()}\n{worker.output()}")
    beat.stop()
    add, report = history_runs(exporter, ADD["task"]), history_runs(exporter, REPORT["task"])

    metrics = scrape_when(exporter, lambda m: (
        periodic(m, "last_sent_timestamp_seconds", ADD) == add["sent"]
        and periodic(m, "last_sent_timestamp_seconds", REPORT) == report["sent"]))
    # The runs, exactly as the history has them; no miss while beat ran.
    assert periodic(metrics, "last_started_timestamp_seconds", ADD) == add["started"]
    assert periodic(metrics, "last_succeeded_timestamp_seconds", ADD) == add["succeeded"]
    assert periodic(metrics, "last_outcome", {**ADD, "state": "SUCCESS"}) == 1
    assert periodic(metrics, "last_outcome", {**REPORT, "state": "FAILURE"}) == 1
    assert periodic(metrics, "last_outcome", {**REPORT, "state": "SUCCESS"}) == 0
    assert periodic(metrics, "last_succeeded_timestamp_seconds", REPORT) is None
    for entry in (ADD, REPORT):
        assert periodic(metrics, "missed_runs_total", entry) == 0
    assert metrics.value("celery_jobmon_periodic_source_up", source="app") == 1
    assert metrics.value("celery_jobmon_periodic_source_up", source="expect") == 1

    # Beat stopped: each period after the last send is one miss once its grace is over.
    metrics = scrape_when(exporter, lambda m: periodic(m, "missed_runs_total", REPORT) >= 2)
    checked = metrics.value("celery_jobmon_periodic_last_check_timestamp_seconds")
    assert checked is not None
    for entry, runs in ((ADD, add), (REPORT, report)):
        last = runs["sent"]
        assert periodic(metrics, "next_run_timestamp_seconds", entry) == pytest.approx(
            last + EVERY, abs=1e-6)
        expected = math.floor((checked - GRACE - last) / EVERY + 1e-9)
        assert periodic(metrics, "missed_runs_total", entry) == expected, (entry, checked, last)
    # Never sent: due one period after the exporter first saw it, then every period.
    first_seen = periodic(metrics, "next_run_timestamp_seconds", NEVER) - EVERY
    assert periodic(metrics, "last_sent_timestamp_seconds", NEVER) is None
    assert periodic(metrics, "missed_runs_total", NEVER) == math.floor(
        (checked - GRACE - first_seen) / EVERY + 1e-9) >= 3


def test_redbeat_entries_and_their_runs(redis_server, start_worker, start_exporter, beats,
                                        tmp_path):
    url = redis_server.url()
    start_worker(url, "a,b")
    beat = beats(url, tmp_path, scheduler="redbeat.RedBeatScheduler")
    wait_for(lambda: redis_server.client().zcard("redbeat::schedule") >= 2, timeout=15,
             message=beat.output)
    exporter = start_exporter(url, "--redbeat-url", url, *PERIODIC_FLAGS, *QUIET_POLLER)
    wait_for(lambda: history_runs(exporter, ADD["task"])["succeeded"] is not None, timeout=20,
             message=beat.output)
    beat.stop()
    add = history_runs(exporter, ADD["task"])
    metrics = scrape_when(
        exporter, lambda m: periodic(m, "last_sent_timestamp_seconds", ADD) == add["sent"])
    assert metrics.value("celery_jobmon_periodic_source_up", source="redbeat") == 1
    assert periodic(metrics, "last_succeeded_timestamp_seconds", ADD) == add["succeeded"]
    assert periodic(metrics, "last_outcome", {**ADD, "state": "SUCCESS"}) == 1
    assert periodic(metrics, "next_run_timestamp_seconds", ADD) == pytest.approx(
        add["sent"] + EVERY, abs=1e-6)
    assert periodic(metrics, "missed_runs_total", ADD) == 0
