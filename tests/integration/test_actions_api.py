"""The action API of a real `celery-jobmon serve`: real Redis broker and result backend, a
real worker running examples/tasks.py, the SQL history. Retry re-sends the exact arguments,
cancel revokes waiting tasks and terminates running ones only when asked, and every refusal is
an RFC 9457 problem with the right status.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from celery import Celery

from exporter.history import create_history_engine, get_execution, list_executions
from tests.support.waiting import assert_stays, wait_for

pytestmark = pytest.mark.integration
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAIL_ONCE = "examples.tasks.fail_once"
PROBLEM = "application/problem+json"


class Api:
    """HTTP calls to an exporter's /api/v1 with the token."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base + "/api/v1"
        self.headers = AUTH if headers is None else headers

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.base + path, params=params, headers=self.headers, timeout=15)

    def post(self, path: str, json: Any = None, **params: Any) -> httpx.Response:
        return httpx.post(self.base + path, params=params, json=json, headers=self.headers,
                          timeout=15)


def exporter_backend(exporter) -> str:
    """The --result-backend the exporter was started with."""
    args = exporter.proc.args
    return args[args.index("--result-backend") + 1]


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body


@pytest.fixture
def stack(redis_url, monkeypatch, tmp_path, producer, start_exporter, start_worker):
    """Exporter with a token and the result backend; a worker storing extended results."""
    monkeypatch.setenv("CELERY_RESULT_BACKEND", redis_url)
    monkeypatch.setenv("CELERY_RESULT_EXTENDED", "1")
    monkeypatch.setenv("JOBMON_EXAMPLE_STATE_DIR", str(tmp_path / "fail-once"))
    exporter = start_exporter(redis_url, "--api-token", TOKEN, "--result-backend", redis_url,
                              "--max-manual-retries", "1", "--inspect-timeout", "1s")
    worker = start_worker(redis_url)
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    engine = create_history_engine(exporter.history_url)
    yield exporter, worker, producer(redis_url), engine
    engine.dispose()


def row_in(engine, task_id: str, *states: str, timeout: float = 30):
    return wait_for(lambda: (row := get_execution(engine, task_id)) is not None
                    and row.state in states and row, timeout,
                    message=f"{task_id} in {states}")


def test_retry_resends_the_exact_arguments_as_a_linked_new_task(stack):
    exporter, worker, app, engine = stack
    api = Api(exporter.url)
    args = [7, "naïve ☃", {"nested": {"a": [1, 2.5, None], "b": "x"}}, -3]
    kwargs = {"flag": True, "label": "ünïcødé 🎉", "n": 10**12}
    failed = app.send_task(FAIL_ONCE, args, kwargs, queue="a")
    original = row_in(engine, failed.id, "FAILURE")
    assert original.exception_type == "ConnectionError"

    plan = api.post(f"/tasks/{failed.id}/retry", dry_run="true")
    assert plan.status_code == 200, plan.text
    assert plan.json() == {
        "task_id": failed.id, "dry_run": True, "new_task_id": None,
        "sent": {"task_name": FAIL_ONCE, "args": args, "kwargs": kwargs, "queue": "a",
                 "routing_key": "a", "exchange": "", "priority": None,
                 "argument_source": "result_backend"},
        "queue_check": None,  # Redis cannot tell an empty queue from a missing one
        "manual_retry_count": 0, "warnings": [], "existing_retries": [], "force_needed": False}
    assert get_execution(engine, failed.id).manual_retry_count == 0  # nothing sent

    done = api.post(f"/tasks/{failed.id}/retry")
    assert done.status_code == 202, done.text
    new_id = done.json()["new_task_id"]
    assert new_id and new_id != failed.id
    assert done.json()["manual_retry_count"] == 1
    retried = row_in(engine, new_id, "SUCCESS")
    assert (retried.name, retried.queue, retried.retry_of) == (FAIL_ONCE, "a", failed.id)
    assert retried.created_by_action == "retry"
    assert retried.args == original.args and retried.kwargs == original.kwargs
    # The event reprs stop at task_repr_maxlevels ({...}); the stored result is exact.
    assert "[...]" in original.args
    backend = Celery(backend=exporter_backend(exporter), set_as_current=False)
    assert backend.AsyncResult(new_id).result == {"args": args, "kwargs": kwargs}
    backend.close()
    assert retried.hostname == worker.hostname

    detail = api.get(f"/tasks/{failed.id}")
    assert detail.status_code == 200
    body = detail.json()
    assert (body["state"], body["manual_retry_count"], body["manual_retries"]) == (
        "FAILURE", 1, [new_id])
    assert body["traceback"].startswith("Traceback (most recent call last):")
    assert body["exception_message"] == "first attempt fails; retry me"
    assert body["finished_at"].endswith("Z") and body["hostname"] == worker.hostname
    assert api.get(f"/tasks/{new_id}").json()["retry_of"] == failed.id

    again = problem(api.post(f"/tasks/{failed.id}/retry"), 409)
    assert again["reason"] == "max-manual-retries"
    assert "limit is 1" in again["detail"]
    succeeded = problem(api.post(f"/tasks/{new_id}/retry"), 409)
    assert succeeded["reason"] == "state" and "SUCCESS" in succeeded["detail"]
    problem(api.post("/tasks/no-such-task/retry"), 404)
    problem(api.get("/tasks/no-such-task"), 404)

    wrong = Api(exporter.url, {"Authorization": "Bearer wrong-token-0123456789"})
    response = wrong.post(f"/tasks/{failed.id}/retry")
    problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    problem(Api(exporter.url, {}).get("/tasks"), 401)
    assert TOKEN not in exporter.output()


def test_bulk_retry_dry_run_lists_failures_and_sends_nothing(stack):
    exporter, _, app, engine = stack
    api = Api(exporter.url)
    failures = [app.send_task("examples.tasks.fail_value", (f"bad {i}",), queue="b")
                for i in range(3)]
    other = app.send_task("examples.tasks.fail_key", ("k",), queue="b")
    ok = app.send_task("examples.tasks.add", (1, 2), queue="a")
    for result in [*failures, other]:
        row_in(engine, result.id, "FAILURE")
    row_in(engine, ok.id, "SUCCESS")

    response = api.post("/tasks/retry", json={"name": "examples.tasks.fail_value"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True and (body["matched"], body["retried"], body["more"]) == (
        3, 0, False)
    assert {item["task_id"] for item in body["items"]} == {r.id for r in failures}
    assert {item["outcome"] for item in body["items"]} == {"would_retry"}
    by_exception = api.post("/tasks/retry", json={"exception_type": "KeyError", "limit": 5})
    assert [i["task_id"] for i in by_exception.json()["items"]] == [other.id]
    # Dry runs send nothing: no row appears or changes (one would within a second).
    assert_stays(lambda: len(rows := list_executions(engine, limit=100).items) == 5
                 and all(row.retry_of is None for row in rows), 1.5,
                 message="the five rows, and no retry")
    rows = list_executions(engine, limit=100).items
    assert len(rows) == 5
    assert all(row.manual_retry_count == 0 and row.retry_of is None for row in rows)
    problem(api.post("/tasks/retry", json={"limit": 0}), 400)
    problem(api.post("/tasks/retry", json={"since": "yesterday"}), 400)
    problem(api.post("/tasks/retry", json={"unknown": 1}), 400)

    # Cursor pagination over the same five rows: 2 + 2 + 1, newest first, no duplicates.
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/tasks", **params).json()
        seen += [item["task_id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == [row.task_id for row in rows]
    failed = api.get("/tasks", state="failed", queue="b").json()["items"]
    assert {item["task_id"] for item in failed} == {r.id for r in [*failures, other]}
    problem(api.get("/tasks", cursor="not-a-cursor"), 400)
    problem(api.get("/tasks", limit=-1), 400)
    problem(api.get("/tasks", limit=10**6), 400)
    problem(api.get("/tasks", since="soon"), 400)
    assert len(api.get("/tasks", since=time.time() - 3600, until="9999-01-01T00:00:00Z")
               .json()["items"]) == 5

    stats = api.get("/stats/tasks", window="1h").json()
    by_name = {s["name"]: s for s in stats["tasks"]}
    assert (by_name["examples.tasks.fail_value"]["count"],
            by_name["examples.tasks.fail_value"]["failed"]) == (3, 3)
    assert by_name["examples.tasks.add"]["success_ratio"] == 1.0
    assert stats["failures"][0]["exception_type"] == "ValueError"
    assert stats["failures"][0]["count"] == 3


def test_queues_workers_and_pending_messages(stack):
    exporter, worker, app, _ = stack
    api = Api(exporter.url)
    waiting = [app.send_task("examples.tasks.add", (i, i), queue="nobody", priority=p)
               for i, p in ((1, 0), (2, 9), (3, 0))]
    pending = api.get("/queues/nobody/pending").json()
    # kombu serves priority step 0 first, oldest first within a step.
    assert [m["task_id"] for m in pending["messages"]] == [waiting[0].id, waiting[2].id,
                                                           waiting[1].id]
    assert [m["priority_step"] for m in pending["messages"]] == [0, 0, 9]
    assert pending["messages"][0]["args"] == "(1, 1)"
    assert pending["messages"][0]["name"] == "examples.tasks.add"
    second = api.get("/queues/nobody/pending", offset=1, limit=1).json()
    assert [m["task_id"] for m in second["messages"]] == [waiting[2].id]
    problem(api.get("/queues/nobody/pending", limit=0), 400)

    workers = wait_for(lambda: [w for w in api.get("/workers").json()["workers"]
                                if w["pool_size"] is not None], 20, message="inspect stats")
    assert [(w["hostname"], w["up"], w["pool_size"]) for w in workers] == [
        (worker.hostname, True, 2)]
    queues = {q["name"]: q for q in api.get("/queues").json()["queues"]}
    assert {"a", "b"} <= set(queues)
    assert queues["a"]["consumers"] == 1 and queues["a"]["length"] == 0


def test_cancel_revokes_a_scheduled_task_before_its_eta(stack):
    exporter, worker, app, engine = stack
    api = Api(exporter.url)
    later = app.send_task("examples.tasks.add", (2, 3), queue="a", countdown=4)
    # Held by the worker until its ETA. (The row may still say PENDING: the producer stamps
    # task-sent after publishing, so the worker's task-received can carry an earlier time.)
    wait_for(lambda: (row := get_execution(engine, later.id)) and row.received_at, 20,
             message="task received")
    response = api.post(f"/tasks/{later.id}/cancel")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["previous_state"] in ("PENDING", "RECEIVED")
    assert {k: body[k] for k in ("task_id", "action", "signal", "state_source",
                                 "acknowledged_by", "warnings")} == {
        "task_id": later.id, "action": "revoke", "signal": None, "state_source": "events",
        "acknowledged_by": [worker.hostname], "warnings": []}
    row = row_in(engine, later.id, "REVOKED", timeout=20)
    assert row.started_at is None and row.result is None
    assert row.updated_by_action == "cancel"
    requests = wait_for(lambda: [(r["action"], r["outcome"], r["evidence"]) for r in api.get(
        f"/tasks/{later.id}").json()["cancel_requests"] if r["outcome"] != "pending"], 10,
        message="the outcome recorded")
    assert requests == [("revoke", "honoured", "task-revoked (revoked)")]
    finished = problem(api.post(f"/tasks/{later.id}/cancel"), 409)
    assert finished["reason"] == "finished"
    problem(api.post("/tasks/never-seen-id/cancel"), 404)
    problem(api.post(f"/tasks/{later.id}/cancel", signal="SIGKILL"), 400)


def test_cancel_terminates_a_running_task_only_when_asked(stack):
    exporter, worker, app, engine = stack
    api = Api(exporter.url)
    running = app.send_task("examples.tasks.sleep", (30,), queue="a")
    row_in(engine, running.id, "STARTED")
    refused = problem(api.post(f"/tasks/{running.id}/cancel"), 409)
    assert refused["reason"] == "running" and "terminate=true" in refused["detail"]
    problem(api.post(f"/tasks/{running.id}/cancel", terminate="true", signal="SIGHUP"), 400)
    response = api.post(f"/tasks/{running.id}/cancel", terminate="true")
    assert response.status_code == 202, response.text
    body = response.json()
    assert {k: body[k] for k in ("action", "signal", "hostname", "pool", "acknowledged_by",
                                 "terminated_by", "refused_by", "warnings")} == {
        "action": "terminate", "signal": "SIGTERM", "hostname": worker.hostname,
        "pool": "prefork", "acknowledged_by": [worker.hostname],
        "terminated_by": [worker.hostname], "refused_by": {}, "warnings": []}
    row = row_in(engine, running.id, "REVOKED", timeout=20)
    assert (row.revoke_reason, row.revoke_signal) == ("terminated", 15)
    assert row.finished_at - row.started_at < 10
    requests = wait_for(lambda: [(r["action"], r["outcome"], r["evidence"]) for r in api.get(
        f"/tasks/{running.id}").json()["cancel_requests"] if r["outcome"] != "pending"], 10,
        message="the outcome recorded")
    assert requests == [("terminate", "honoured", "task-revoked (terminated, signal 15)")]
