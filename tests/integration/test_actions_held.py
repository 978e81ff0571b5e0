"""``GET /api/v1/workers/active`` and ``/workers/scheduled``: what a real worker holds, asked
when the request comes (the action service the Running and Scheduled pages use), with a real
`serve` and a private redis-server.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.support.api import Api
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "test-token-held-tasks-0123456789"


def test_the_api_lists_the_running_and_the_scheduled_tasks_of_a_real_worker(
        redis_server, start_exporter, start_worker, producer):  # noqa: F811
    url = redis_server.url()
    exporter = start_exporter(url, "--api-token", TOKEN, "--inspect-timeout", "2s")
    api = Api(exporter.url, TOKEN)
    assert api.get("/workers/active").json() == {"asked": False, "tasks": []}  # none up
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
