"""``GET /api/v1/workers/active`` and ``/workers/scheduled``: what a real worker holds, asked
when the request comes (the action service the Running and Scheduled pages use), with a real
`serve` and a private redis-server.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime

import httpx
import pytest

from tests.support.api import Api
from tests.support.waiting import wait_for
from tests.ui.conftest import PASSWORDS, login
from ui.users import add_user

pytestmark = pytest.mark.integration
TOKEN = "test-token-held-tasks-0123456789"


def test_the_api_lists_the_running_and_the_scheduled_tasks_of_a_real_worker(
        redis_server, start_exporter, start_worker, producer):  # noqa: F811
    url = redis_server.url()
    exporter = start_exporter(url, "--api-token", TOKEN, "--inspect-timeout", "2s")
    api = Api(exporter.url, TOKEN)
    assert api.get("/workers/active").json() == {"asked": False, "tasks": [],
                                                 "unanswered": []}  # none up
    worker = start_worker(url, "a")
    wait_for(lambda: [w["hostname"] for w in api.get("/workers").json()["workers"]
                      if w["up"]] == [worker.hostname], 30, message="the worker up")
    app = producer(url)
    sleeping = app.send_task("examples.tasks.sleep", args=(30,), queue="a", priority=3)
    later = app.send_task("examples.tasks.add", args=(1, 2), queue="a", countdown=600)

    active = wait_for(lambda: (body := api.get("/workers/active").json())["tasks"] and body,
                      30, message="the sleeping task running")
    scheduled = wait_for(lambda: (body := api.get("/workers/scheduled").json())["tasks"]
                         and body, 30, message="the countdown task held")

    [running] = active["tasks"]
    assert active["asked"] is True
    assert {k: running[k] for k in ("hostname", "task_id", "name", "eta", "priority",
                                    "routing_key")} == {
        "hostname": worker.hostname, "task_id": sleeping.id, "name": "examples.tasks.sleep",
        "eta": None, "priority": 3, "routing_key": "a"}
    assert datetime.fromisoformat(running["started_at"]).timestamp() > 0
    [held] = scheduled["tasks"]
    assert {k: held[k] for k in ("hostname", "task_id", "name", "started_at")} == {
        "hostname": worker.hostname, "task_id": later.id, "name": "examples.tasks.add",
        "started_at": None}
    eta = datetime.fromisoformat(held["eta"]).timestamp()
    assert 590 < eta - datetime.now().timestamp() <= 600


def test_a_worker_up_that_does_not_answer_is_named_not_taken_for_holding_nothing(
        redis_server, start_exporter, start_worker, producer, tmp_path):  # noqa: F811
    # Before: {"asked": true, "tasks": []} and "No worker holds a task for later." while a
    # worker up by its heartbeats (frozen: SIGSTOP) held two ETA tasks and ran one.
    url = redis_server.url()
    users = tmp_path / "users"
    add_user(str(users), "alice", "operator", PASSWORDS["alice"])
    exporter = start_exporter(url, "--api-token", TOKEN, "--inspect-timeout", "2s",
                              "--worker-timeout", "120s", "--ui-users-file", str(users),
                              history_url=f"sqlite:///{tmp_path / 'history.sqlite3'}")
    api = Api(exporter.url, TOKEN)
    answering, frozen = start_worker(url, "a"), start_worker(url, "b")
    wait_for(lambda: sorted(w["hostname"] for w in api.get("/workers").json()["workers"]
                            if w["up"]) == sorted((answering.hostname, frozen.hostname)), 30,
             message="both workers up")
    app = producer(url)
    app.send_task("examples.tasks.sleep", args=(60,), queue="b")
    for countdown in (600, 700):
        app.send_task("examples.tasks.add", args=(1, 2), queue="b", countdown=countdown)
    wait_for(lambda: len(api.get("/workers/scheduled").json()["tasks"]) == 2
             and len(api.get("/workers/active").json()["tasks"]) == 1, 30,
             message="two tasks held and one running")

    os.kill(frozen.proc.pid, signal.SIGSTOP)  # up by its heartbeats for 120 s, not answering
    try:
        for path in ("/workers/scheduled", "/workers/active"):
            assert api.get(path).json() == {"asked": True, "tasks": [],
                                            "unanswered": [frozen.hostname]}, path
        with httpx.Client(base_url=exporter.url, timeout=15) as client:
            login(client, "alice")  # type: ignore[arg-type]
            scheduled, running = (client.get(f"/ui/{page}").text
                                  for page in ("scheduled", "running"))
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
    warning = (f"{frozen.hostname} did not answer, though up by its heartbeats: what it holds "
               "is not shown.")
    assert f'<p class="warn">{warning}</p>' in scheduled
    assert f'<p class="warn">Workers: {warning}</p>' in running
    assert "No worker holds a task for later" not in scheduled
    assert "No task held for later is known: see the warning above." in scheduled
