"""Cancel a message that waits in a Redis queue and that no source knows: it was sent before
the exporter started (its task-sent went unheard), so no event, history row or worker knows
it — only the queue, which the Waiting page lists. The cancel finds it there and sends the
revoke; a worker that later takes the message drops it. A real `serve`, a private
redis-server and a real worker.
"""

from __future__ import annotations

import pytest

from exporter.history import create_history_engine, get_execution
from tests.support.api import Api
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "test-token-cancel-waiting-unknown-0123"


def test_cancel_finds_a_message_only_the_redis_queue_knows(
        redis_server, start_exporter, start_worker, producer):  # noqa: F811
    url = redis_server.url()
    app = producer(url)
    waiting = app.send_task("examples.tasks.add", args=(1, 2), queue="nobody")
    worker = start_worker(url, "a")  # up, acknowledges revokes, does not take "nobody"
    exporter = start_exporter(url, "--api-token", TOKEN, "--inspect-timeout", "2s",
                              "--queue", "nobody")
    api = Api(exporter.url, TOKEN)
    wait_for(lambda: [(q["name"], q["length"]) for q in api.get("/queues").json()["queues"]
                      if q["name"] == "nobody"] == [("nobody", 1)], 30,
             message="the poller reads the waiting message")
    wait_for(lambda: [w["hostname"] for w in api.get("/workers").json()["workers"]
                      if w["up"]] == [worker.hostname], 30, message="the worker up")

    response = api.post(f"/tasks/{waiting.id}/cancel")

    assert response.status_code == 202, response.text
    body = response.json()
    assert {k: body[k] for k in ("task_id", "action", "previous_state", "state_source",
                                 "acknowledged_by", "warnings")} == {
        "task_id": waiting.id, "action": "revoke", "previous_state": "PENDING",
        "state_source": "queue", "acknowledged_by": [worker.hostname], "warnings": []}
    # The worker that takes the message now drops it: the revoke is in its memory.
    app.control.add_consumer("nobody", destination=[worker.hostname], reply=True)
    engine = create_history_engine(exporter.history_url)
    try:
        wait_for(lambda: (row := get_execution(engine, waiting.id)) is not None
                 and row.state == "REVOKED", 30, message="the message dropped as revoked")
    finally:
        engine.dispose()
    assert f"Discarding revoked task: examples.tasks.add[{waiting.id}]" in worker.output()
