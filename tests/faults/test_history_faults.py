"""The SQL history under faults: a locked SQLite file (another process holds the write lock)
and a history path that cannot be written at start-up."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from exporter.history import create_history_engine, upgrade
from exporter.history.orm import TASK_EXECUTION
from tests.support.binaries import require_binary, unavailable
from tests.support.exporter import QUIET_POLLER, Exporter, log_lines
from tests.support.paths import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ADD = "examples.tasks.add"
#: Longer than the writer's SQLite busy timeout (10 s): the first attempt must fail.
LOCK_SECONDS = 13.0

LOCKER = r"""
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


def _rows(engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(
            select(TASK_EXECUTION.c.task_id, TASK_EXECUTION.c.state))]


def test_locked_sqlite_history_retries_and_loses_nothing(own_redis_url, tmp_path, producer,
                                                         start_exporter, start_worker):
    path = tmp_path / "history.sqlite3"
    exporter = start_exporter(own_redis_url, *QUIET_POLLER, history_url=f"sqlite:///{path}")
    worker = start_worker(own_redis_url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    engine = create_history_engine(f"sqlite:///{path}")
    app = producer(own_redis_url)
    first = [app.send_task(ADD, (i, i), queue="a").id for i in range(2)]
    wait_for(lambda: sorted(_rows(engine)) == sorted((t, "SUCCESS") for t in first), 30,
             message="rows before the lock")

    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(path), str(LOCK_SECONDS)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        locked_at = time.monotonic()
        during = [app.send_task(ADD, (i, i), queue="a").id for i in range(5)]
        # Metrics do not wait for the database.
        wait_for(lambda: exporter.metrics().value("celery_task_succeeded_total", name=ADD,
                                                  queue_name="a") == 7, 30,
                 message="metrics while the history is locked")
        wait_for(lambda: exporter.metrics().value("celery_jobmon_history_write_errors_total")
                 >= 1, LOCK_SECONDS + 5, message="a failed write")
        assert time.monotonic() - locked_at < LOCK_SECONDS  # failed while still locked
        metrics = exporter.metrics()
        assert metrics.value("celery_jobmon_history_consecutive_write_failures") >= 1
        assert metrics.value("celery_jobmon_history_pending_rows") == 5
        assert len(_rows(engine)) == 2  # readers are not blocked (WAL), writers are
        ready = exporter.get("/readyz")  # ready (metrics work), and says what is wrong
        assert ready.status_code == 200 and [p["condition"] for p in ready.json()["problems"]
                                             ] == ["history_writes"], ready.text
    finally:
        assert locker.wait(LOCK_SECONDS + 10) == 0

    wait_for(lambda: len(_rows(engine)) == 7, 30, message=lambda: f"rows after the lock\n"
                                                       f"{exporter.output()[-3000:]}")
    wait_for(lambda: exporter.metrics().value(
        "celery_jobmon_history_consecutive_write_failures") == 0, 10, message="healthy again")
    assert exporter.get("/readyz").json() == {"status": "ready"}
    assert sorted(_rows(engine)) == sorted((t, "SUCCESS") for t in first + during)
    metrics = exporter.metrics()
    failures = log_lines(exporter.output(), r"history write failed error=OperationalError "
                                            r"detail='database is locked'")
    assert metrics.value("celery_jobmon_history_write_errors_total") == len(failures) >= 1
    assert sum(metrics.value("celery_jobmon_history_dropped_total", **labels)
               for labels in metrics.series("celery_jobmon_history_dropped_total")) == 0
    assert metrics.value("celery_jobmon_history_pending_rows") == 0
    engine.dispose()


def _regular_file_parent(tmp_path: Path) -> str:
    (tmp_path / "regular-file").write_text("not a directory")
    return f"sqlite:///{tmp_path / 'regular-file' / 'history.sqlite3'}"


def _serve_command(broker_url: str, history_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "exporter", "serve", "--broker-url", broker_url,
            "--listen", "127.0.0.1:0", "--log-level", "debug", "--history-url", history_url,
            *extra]


def _read_only_bind(tmp_path: Path, command: list[str]) -> list[str]:
    """``command`` in a private mount namespace where ``tmp_path/ro`` (holding a migrated
    history) is bound read-only; the machine's mounts are not touched."""
    directory = tmp_path / "ro"
    directory.mkdir()
    upgrade(f"sqlite:///{directory / 'history.sqlite3'}")
    probe = subprocess.run([require_binary("unshare", "util-linux"), "-m", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        unavailable(f"unshare -m not permitted here: {probe.stderr.decode().strip()}")
    script = (f'mount --bind "{directory}" "{directory}" && '
              f'mount -o remount,ro,bind "{directory}" && exec "$@"')
    return ["unshare", "-m", "sh", "-c", script, "sh", *command]


@pytest.mark.parametrize("where", ["below-a-regular-file", "proc", "read-only-bind-mount"])
def test_unwritable_history_with_history_required_exits_with_one_line(where, own_redis_url,
                                                                      tmp_path):
    if where == "below-a-regular-file":
        url = _regular_file_parent(tmp_path)
        command = _serve_command(own_redis_url, url, "--history-required")
    elif where == "proc":
        url = "sqlite:////proc/celery-jobmon/history.sqlite3"
        command = _serve_command(own_redis_url, url, "--history-required")
    else:
        url = f"sqlite:///{tmp_path / 'ro' / 'history.sqlite3'}"
        command = _read_only_bind(tmp_path, _serve_command(own_redis_url, url,
                                                           "--history-required"))
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: history database {url} unusable: OperationalError: "
                      "(sqlite3.OperationalError) unable to open database file"]
    assert "Traceback" not in result.stderr
    assert "Uvicorn running" not in result.stderr  # it never served


def test_unwritable_history_without_required_serves_metrics_only(own_redis_url, tmp_path):
    url = _regular_file_parent(tmp_path)
    exporter = Exporter(own_redis_url, *QUIET_POLLER, history_url=url)
    try:
        exporter.wait_ready()
        metrics = exporter.metrics()
        assert metrics.value("celery_jobmon_history_enabled") == 0
        assert metrics.series("celery_jobmon_history_rows_written_total") == []
        warnings = log_lines(exporter.output(), r"level=WARNING .*history database")
        assert warnings and warnings[0].endswith(
            f"history database {url} unusable: OperationalError: (sqlite3.OperationalError) "
            "unable to open database file; running without history (metrics only)")
        assert exporter.proc.poll() is None
    finally:
        exporter.stop()
