"""What the action API refuses, and why: no token configured (403, /metrics still open),
arguments that are not known exactly without result_extended (409), retries from the history's
reprs when they are exact, and peeking at RabbitMQ queues (501).
"""

from __future__ import annotations

import httpx
import pytest

from exporter.history import create_history_engine, get_execution
from tests.support.waiting import wait_for

from .test_actions_api import AUTH, TOKEN, Api, problem, row_in

pytestmark = pytest.mark.integration


def test_without_a_token_every_api_route_is_403_and_metrics_stay_open(redis_url,
                                                                      start_exporter):
    exporter = start_exporter(redis_url)
    for path in ("/tasks", "/tasks/some-id", "/queues", "/openapi.json", "/no-such-route"):
        body = problem(Api(exporter.url).get(path), 403)
        assert "JOBMON_API_TOKEN" in body["detail"]
    problem(Api(exporter.url).post("/tasks/some-id/retry"), 403)
    assert exporter.get("/metrics").status_code == 200
    assert exporter.get("/healthz").status_code == 200
    assert exporter.get("/readyz").status_code == 200


def test_token_file_is_read_and_the_token_never_logged(redis_url, tmp_path, start_exporter):
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}\n")
    exporter = start_exporter(redis_url, "--api-token-file", str(token_file))
    assert Api(exporter.url).get("/tasks").status_code == 200
    problem(Api(exporter.url, {"Authorization": "Bearer " + TOKEN[:-1]}).get("/tasks"), 401)
    response = httpx.get(exporter.url + "/api/v1/openapi.json", headers=AUTH, timeout=5)
    assert response.json()["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert TOKEN not in exporter.output()


def test_retry_without_result_extended_uses_exact_reprs_and_refuses_the_rest(
        redis_url, tmp_path, monkeypatch, producer, start_exporter, start_worker):
    monkeypatch.setenv("JOBMON_EXAMPLE_STATE_DIR", str(tmp_path / "fail-once"))
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    exporter = start_exporter(redis_url, "--api-token", TOKEN, "--history-max-field-bytes",
                              "64")
    worker = start_worker(redis_url)
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(redis_url)
    engine = create_history_engine(exporter.history_url)
    api = Api(exporter.url)
    exact = app.send_task("examples.tasks.fail_once", (3, "é"), {"k": [1, 2]}, queue="b")
    long = app.send_task("examples.tasks.fail_once", ("x" * 100,), queue="b")
    deep = app.send_task("examples.tasks.fail_once", ([[[[1]]]],), queue="b")
    for result in (exact, long, deep):
        row_in(engine, result.id, "FAILURE")

    cut = problem(api.post(f"/tasks/{long.id}/retry"), 409)
    assert cut["reason"] == "arguments-unavailable"
    assert "cut the args repr at --history-max-field-bytes" in cut["detail"]
    assert "result_extended=True" in cut["detail"]
    shortened = problem(api.post(f"/tasks/{deep.id}/retry"), 409)
    assert "`...`" in shortened["detail"] and "none configured" in shortened["detail"]

    response = api.post(f"/tasks/{exact.id}/retry")
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["sent"]["args"], body["sent"]["kwargs"], body["sent"]["queue"],
            body["sent"]["argument_source"]) == ([3, "é"], {"k": [1, 2]}, "b", "history_repr")
    retried = row_in(engine, body["new_task_id"], "SUCCESS")
    assert retried.result == "{'args': [3, 'é'], 'kwargs': {'k': [1, 2]}}"
    assert retried.retry_of == exact.id
    assert get_execution(engine, exact.id).manual_retry_count == 1
    engine.dispose()


def test_pending_messages_on_rabbitmq_are_501(amqp_url, start_exporter):
    exporter = start_exporter(amqp_url, "--api-token", TOKEN)
    body = problem(Api(exporter.url).get("/queues/a/pending"), 501)
    assert "Redis" in body["detail"]
