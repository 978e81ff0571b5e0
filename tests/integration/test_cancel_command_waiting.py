"""`celery-jobmon cancel` finds a task that only waits in a Redis queue: sent before anything
else ran, no event, history row or worker knows it, and the command runs no poller. It reads
the queues bound in Redis and those given with ``--queue``, revokes the task, and a real worker
that later takes the message drops it. A private redis-server, a real worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select

from exporter.history import create_history_engine, upgrade
from exporter.history.orm import ACTION_AUDIT
from tests.support.paths import ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def jobmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def dropped(worker, app: Celery, queue: str, task_id: str) -> None:
    """Make ``worker`` consume ``queue`` and wait until it discards ``task_id`` as revoked."""
    app.control.add_consumer(queue, destination=[worker.hostname], reply=True)
    wait_for(lambda: f"Discarding revoked task: examples.tasks.add[{task_id}]"
             in worker.output(), 30, message=worker.output)


def test_cancel_command_finds_messages_only_redis_queues_hold(
        redis_server, start_worker, producer, tmp_path: Path):
    url = redis_server.url()
    app = producer(url)
    bound = app.send_task("examples.tasks.add", args=(1, 2), queue="nobody")
    # A queue whose binding set is gone (kombu's bindings are how queues are found): only
    # --queue names it.
    unbound = app.send_task("examples.tasks.add", args=(3, 4), queue="hidden")
    client = redis_server.client()
    assert client.delete("_kombu.binding.hidden") == 1
    assert (client.llen("nobody"), client.llen("hidden")) == (1, 1)
    worker = start_worker(url, "a")  # up, acknowledges revokes, consumes neither queue
    wait_for(lambda: f"{worker.hostname} ready." in worker.output(), 30, message=worker.output)
    engine = create_history_engine(f"sqlite:///{tmp_path / 'history.db'}")
    upgrade(engine)
    common = ["--broker-url", url, "--history-url", str(engine.url), "--inspect-timeout", "2s",
              "--json"]

    answer = jobmon("cancel", bound.id, *common)
    assert answer.returncode == 0, answer.stderr
    result = json.loads(answer.stdout)
    assert {k: result[k] for k in ("task_id", "action", "previous_state", "state_source",
                                   "acknowledged_by", "warnings")} == {
        "task_id": bound.id, "action": "revoke", "previous_state": "PENDING",
        "state_source": "queue", "acknowledged_by": [worker.hostname], "warnings": []}

    missing = jobmon("cancel", unbound.id, *common)
    assert missing.returncode == 1
    assert f"task {unbound.id!r} is not known to the history, the task events, the queues or " \
           "any worker" in json.loads(missing.stdout)["detail"]  # --json: the problem
    found = jobmon("cancel", unbound.id, "--queue", "hidden", *common)
    assert found.returncode == 0, found.stderr
    assert (json.loads(found.stdout)["state_source"],
            json.loads(found.stdout)["acknowledged_by"]) == ("queue", [worker.hostname])

    with engine.connect() as connection:
        audited = connection.execute(select(ACTION_AUDIT.c.task_id, ACTION_AUDIT.c.action)
                                     .order_by(ACTION_AUDIT.c.id)).all()
    engine.dispose()
    assert [tuple(row) for row in audited] == [(bound.id, "cancel"), (unbound.id, "cancel")]
    # The worker that takes the messages now drops them: the revokes are in its memory.
    dropped(worker, app, "nobody", bound.id)
    dropped(worker, app, "hidden", unbound.id)
    assert (client.llen("nobody"), client.llen("hidden")) == (0, 0)
