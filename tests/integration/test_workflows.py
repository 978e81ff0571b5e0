"""Workflows on real canvases (issue 18): a real worker of tests/support/workflow_app.py with a
result backend that joins chords, a real ``serve`` with its history and action API. Each test
runs on a private redis-server (broker on db 0, results on db 1).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, chain, chord, group, signature
from celery.canvas import Signature

from tests.support.api import Api, problem
from tests.support.exporter import Exporter
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import assert_stays, wait_for
from tests.support.worker import Worker
from tests.support.workflow_app import ADD, BOOM, NAP, TOTAL

pytestmark = pytest.mark.integration
TOKEN = "workflows-test-token-0123456789abcdef"
UNLOCK = "celery.chord_unlock"


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    gc.collect()  # the producers' results unsubscribe while their Redis still answers
    server.remove()


def _app(broker: str, backend: str) -> Celery:
    app = Celery("wf-producer", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(task_send_sent_event=True, task_default_queue="wf",
                    broker_connection_retry_on_startup=True)
    return app


def _sig(app: Celery, name: str, *args: Any) -> Signature:
    return signature(name, args=args, app=app, immutable=True)


def _start(broker: str, backend: str, start_exporter, start_worker, *extra: str
           ) -> tuple[Exporter, Worker, Api]:
    exporter = start_exporter(broker, "--api-token", TOKEN, *extra)
    worker = start_worker(broker, "wf", app="tests.support.workflow_app",
                          env={"CELERY_RESULT_BACKEND": backend})
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname)
             == 1, 60, message="worker up")
    return exporter, worker, Api(exporter.url, TOKEN)


def _tree(api: Api, task_id: str, count: int) -> dict[str, Any]:
    """The workflow of ``task_id`` once ``count`` executions are in it, all finished."""
    def ready() -> dict[str, Any] | None:
        response = api.get(f"/tasks/{task_id}/workflow")
        body = response.json() if response.status_code == 200 else None
        return body if body and body["count"] == count else None
    return wait_for(ready, 60, message=f"workflow of {task_id} with {count} tasks")


def _shape(tasks: list[dict[str, Any]]) -> list[tuple[str, str, str, list]]:
    """(task id, name, state, children) of every node, recursively."""
    return [(t["task_id"], t["name"], t["state"], _shape(t["children"])) for t in tasks]


def _settled(api: Api, task_id: str, count: int, states: set[str]) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = _tree(api, task_id, count)

        def walk(tasks: list[dict[str, Any]]) -> bool:
            return all(t["state"] in states and walk(t["children"]) for t in tasks)
        return body if walk(body["tasks"]) else None
    return wait_for(done, 60, message=f"workflow of {task_id} settled")


def test_chain_group_and_chords_as_trees_and_a_held_callback_is_stuck(
        private_redis, start_exporter, start_worker):
    broker, backend = private_redis.url(0), private_redis.url(1)
    exporter, _, api = _start(broker, backend, start_exporter, start_worker,
                              "--chord-stuck-after", "3s")
    app = _app(broker, backend)

    # A chain of 3: each link the child of the one before, under the first.
    result = chain(signature(ADD, (1, 2), app=app), signature(ADD, (3,), app=app),
                   signature(ADD, (4,), app=app)).apply_async()
    assert result.get(timeout=30) == 10
    first, second = result.parent.parent.id, result.parent.id
    body = _settled(api, result.id, 3, {"SUCCESS"})
    assert (body["root_id"], body["count"], body["truncated"]) == (first, 3, False)
    assert _shape(body["tasks"]) == [(first, ADD, "SUCCESS", [
        (second, ADD, "SUCCESS", [(result.id, ADD, "SUCCESS", [])])])]
    one = body["tasks"][0]
    # Celery stamps task-sent after it published the message: a quick worker may start the
    # task a few milliseconds before that (seen: 3 ms), so sent_at is only required here.
    assert one["runtime_seconds"] is not None and one["sent_at"] is not None
    assert one["started_at"] <= one["finished_at"]

    # A group of 3 sent by a task (a chain ending in a group): three siblings.
    result = chain(_sig(app, ADD, 0, 1),
                   group(_sig(app, ADD, 1, 1), _sig(app, ADD, 2, 2), _sig(app, ADD, 3, 3))
                   ).apply_async()
    assert result.get(timeout=30) == [2, 4, 6]
    head = result.parent.id
    members = [r.id for r in result.results]
    body = _settled(api, head, 4, {"SUCCESS"})
    assert body["tasks"][0]["task_id"] == head
    assert sorted(_shape(body["tasks"][0]["children"])) == sorted(
        (member, ADD, "SUCCESS", []) for member in members)

    # A group of 3 at the top level: no event names the group, each member is its own root.
    result = group(_sig(app, ADD, 1, 1), _sig(app, ADD, 2, 2), _sig(app, ADD, 3, 3)
                   ).apply_async()
    assert result.get(timeout=30) == [2, 4, 6]
    for member in result.results:
        assert _shape(_settled(api, member.id, 1, {"SUCCESS"})["tasks"]) == [
            (member.id, ADD, "SUCCESS", [])]

    # A chord whose header succeeds: Redis joins it, and the header task that finished last
    # sends the callback (its child; the other header tasks are roots of their own).
    result = chord([_sig(app, ADD, 1, 1), _sig(app, ADD, 2, 2), _sig(app, ADD, 3, 3)],
                   signature(TOTAL, app=app)).apply_async()
    assert result.get(timeout=30) == 12
    header = {r.id for r in result.parent.results}
    body = _settled(api, result.id, 2, {"SUCCESS"})
    last = body["root_id"]
    assert last in header
    assert _shape(body["tasks"]) == [
        (last, ADD, "SUCCESS", [(result.id, TOTAL, "SUCCESS", [])])]

    # A chord whose header task fails: Celery marks the callback FAILURE (ChordError) in the
    # result backend and never sends it, so no event names it: the monitor shows the failed
    # header task, and nothing waits or is stuck.
    result = chord([_sig(app, ADD, 1, 1), _sig(app, BOOM, "header failed"),
                    _sig(app, ADD, 3, 3)], signature(TOTAL, app=app)).apply_async()
    failed = result.parent.results[1].id
    wait_for(lambda: result.state == "FAILURE", 30, message="callback failed in the backend")
    body = _settled(api, failed, 1, {"FAILURE"})
    assert _shape(body["tasks"]) == [(failed, BOOM, "FAILURE", [])]
    assert problem(api.get(f"/tasks/{result.id}/workflow"), 404)["title"] == "Unknown task"
    assert_stays(lambda: exporter.metrics().value(
        "celery_chords_stuck", name=TOTAL) is None, 4, message="nothing stuck")
    metrics = exporter.metrics()
    assert metrics.value("celery_workflows_in_progress") == 0
    assert metrics.series("celery_chords_stuck") == []

    # A chord whose callback waits on a queue no worker consumes: stuck after 3 s.
    result = chord([_sig(app, ADD, 1, 1), _sig(app, ADD, 2, 2)],
                   signature(TOTAL, app=app).set(queue="held")).apply_async()

    def held_tree() -> dict[str, Any] | None:
        for header_task in result.parent.results:
            body = api.get(f"/tasks/{header_task.id}/workflow").json()
            if body.get("count") == 2 and body["tasks"][0]["state"] == "SUCCESS":
                return body
        return None
    held = wait_for(held_tree, 30, message="callback sent by the header task ended last")
    assert _shape(held["tasks"]) == [(held["root_id"], ADD, "SUCCESS", [
        (result.id, TOTAL, "PENDING", [])])]
    assert exporter.metrics().value("celery_workflows_in_progress") == 1
    wait_for(lambda: exporter.metrics().value("celery_chords_stuck", name=TOTAL) == 1, 30,
             message="the held callback counted stuck")
    assert exporter.metrics().value("celery_chord_unlock_retries_total", name=TOTAL) is None

    # Across a restart (no event of the held callback will come again): still stuck, from
    # what the history holds.
    exporter.stop()
    again = start_exporter(broker, "--chord-stuck-after", "3s",
                           history_url=exporter.history_url)
    metrics = again.metrics()
    assert metrics.value("celery_chords_stuck", name=TOTAL) == 1
    assert metrics.value("celery_workflows_in_progress") == 1


def test_chord_unlock_retries_are_counted_and_the_callback_hangs_under_it(
        private_redis, start_exporter, start_worker, tmp_path: Path):
    broker, backend = private_redis.url(0), f"db+sqlite:///{tmp_path / 'results.sqlite3'}"
    exporter, _, api = _start(broker, backend, start_exporter, start_worker)
    app = _app(broker, backend)
    result = chord([_sig(app, ADD, 1, 1), _sig(app, NAP, 2.5)],
                   signature(TOTAL, app=app)).apply_async()
    assert result.get(timeout=60) == 4.5
    group_id = result.parent.id

    body = _settled(api, result.id, 2, {"SUCCESS"})  # the callback's own event too
    (unlock,) = body["tasks"]
    assert (unlock["name"], unlock["group_id"], body["root_id"]) == (
        UNLOCK, group_id, unlock["task_id"])
    assert _shape(unlock["children"]) == [(result.id, TOTAL, "SUCCESS", [])]
    assert unlock["retries"] >= 1  # the header took 2.5 s; chord_unlock polls every second
    wait_for(lambda: exporter.metrics().value("celery_chord_unlock_retries_total", name=TOTAL)
             == unlock["retries"], 30, message="retries counted")
    metrics = exporter.metrics()
    assert metrics.value("celery_workflows_in_progress") == 0
    assert metrics.series("celery_chords_stuck") == []
