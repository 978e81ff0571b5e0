"""`celery-jobmon retry` and `cancel` exit codes and ``--json`` errors, against a private
redis-server with no worker: a revoke nobody acknowledged exits 3, a refusal 1 and a usage error
2, and with ``--json`` every one of them prints JSON on stdout (as the success output does) and
nothing on stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.history import create_history_engine, upgrade
from tests.support.paths import ROOT

pytestmark = pytest.mark.integration


def jobmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_exit_codes_and_json_errors_of_retry_and_cancel(redis_server, producer,
                                                         tmp_path: Path):
    # Before: a cancel no worker acknowledged exited 0, and with --json the errors were text
    # on stderr ("Error: Unknown task (404): ...", click's "Missing argument 'TASK_ID'").
    url = redis_server.url()
    waiting = producer(url).send_task("examples.tasks.add", args=(1, 2), queue="nobody")
    engine = create_history_engine(f"sqlite:///{tmp_path / 'history.db'}")
    upgrade(engine)
    engine.dispose()
    common = ["--broker-url", url, "--history-url", str(engine.url), "--inspect-timeout", "1s"]

    text = jobmon("cancel", waiting.id, *common)
    assert text.returncode == 3, text.stderr
    assert text.stdout.startswith(f"asked to revoke {waiting.id} (was PENDING, known from "
                                  "queue): acknowledged by no worker\nwarning: no worker "), text
    as_json = jobmon("cancel", waiting.id, *common, "--json")
    assert as_json.returncode == 3 and "Error" not in as_json.stderr  # its log line only
    answer = json.loads(as_json.stdout)
    assert (answer["task_id"], answer["acknowledged_by"]) == (waiting.id, [])

    unknown = jobmon("retry", "nope", *common, "--json")
    assert (unknown.returncode, unknown.stderr) == (1, "")
    assert json.loads(unknown.stdout) == {
        "type": "tag:celery-jobmon,2025:problem:task-not-found", "title": "Unknown task",
        "status": 404, "detail": "no task 'nope' in the history (unknown, or pruned)"}
    unknown_text = jobmon("retry", "nope", *common)
    assert (unknown_text.returncode, unknown_text.stdout) == (1, "")
    assert unknown_text.stderr == ("Error: Unknown task (404): no task 'nope' in the history "
                                   "(unknown, or pruned)\n")

    for command in ("cancel", "retry"):
        usage = jobmon(command, "--json", *common)
        assert (usage.returncode, usage.stderr) == (2, ""), usage
        assert json.loads(usage.stdout) == {
            "type": "tag:celery-jobmon,2025:problem:invalid-parameter",
            "title": "Invalid parameter", "status": 400,
            "detail": "Missing argument 'TASK_ID'.",
            "errors": [{"loc": ["argument", "task_id"], "msg": "Missing argument 'TASK_ID'."}]}
        bad_option = jobmon(command, "x", "--inspect-timeout", "soon", "--json",
                            "--broker-url", url)
        assert (bad_option.returncode, bad_option.stderr) == (2, ""), bad_option
        problem = json.loads(bad_option.stdout)
        assert problem["status"] == 400 and problem["errors"][0]["loc"] == [
            "option", "inspect_timeout"], problem
        helped = jobmon(command, "--help")
        assert "Exit status: 0" in helped.stdout and " 3 " in helped.stdout
