"""`celery-jobmon retry / cancel / tasks` run the API's services from the command line against
the same broker, result backend and history as a running exporter.
"""

from __future__ import annotations

import getpass
import json
import subprocess
import sys

import pytest
from sqlalchemy import select

from exporter.history.orm import ACTION_AUDIT
from tests.support.paths import ROOT

from .test_actions_api import exporter_backend, row_in, stack  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def jobmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_retry_cancel_and_tasks_commands_use_the_same_services(stack):  # noqa: F811
    exporter, _, app, engine = stack
    failed = app.send_task("examples.tasks.fail_once", (5, "ü"), queue="a")
    row_in(engine, failed.id, "FAILURE")
    broker = exporter.proc.args[exporter.proc.args.index("--broker-url") + 1]
    common = ["--broker-url", broker, "--history-url", exporter.history_url]

    plan = jobmon("retry", failed.id, "--dry-run", "--result-backend", exporter_backend(exporter),
                  *common)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.strip() == ("would send examples.tasks.fail_once(5, 'ü') → queue a "
                                   "(arguments: result_backend)")

    listed = jobmon("tasks", "--state", "failed", "--history-url", exporter.history_url)
    assert listed.returncode == 0, listed.stderr
    header, line = listed.stdout.splitlines()
    assert header.split() == ["STATE", "CHANGED", "(UTC)", "NAME", "QUEUE", "TASK", "ID",
                              "EXCEPTION"]
    assert line.split()[0] == "FAILURE" and failed.id in line and "ConnectionError" in line

    done = jobmon("retry", failed.id, "--json", *common)  # no backend: the exact repr
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sent"]["argument_source"] == "history_repr"
    retried = row_in(engine, result["new_task_id"], "SUCCESS")
    assert retried.retry_of == failed.id
    with engine.connect() as connection:
        actors = connection.execute(select(ACTION_AUDIT.c.actor).where(
            ACTION_AUDIT.c.task_id == failed.id)).scalars().all()
    assert actors == [f"cli:{getpass.getuser()}"]

    refused = jobmon("cancel", failed.id, *common)
    assert refused.returncode == 1
    assert "Task not eligible (409, finished): the task already finished (FAILURE)" in \
        refused.stderr
    unknown = jobmon("retry", "no-such-task", *common)
    assert unknown.returncode == 1 and "Unknown task (404)" in unknown.stderr
    bad = jobmon("tasks", "--state", "sideways", "--history-url", exporter.history_url)
    assert bad.returncode == 1 and "unknown state 'sideways'" in bad.stderr
