"""One job, one retry: a real `celery-jobmon serve`, a real worker running examples/tasks.py on
a private redis-server (broker and result backend). A bulk retry after the retries failed
sends the retries, not the originals again; a task whose retry succeeded is skipped by bulk
retry, warned about on a dry run, and a real single retry of it — API or `celery-jobmon
retry` — is a 409 until forced.
"""

from __future__ import annotations

import pytest

from exporter.history import create_history_engine, get_execution
from tests.support.api import Api, problem
from tests.support.exporter import run_cli
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "test-token-retry-once-0123456789"


def row_in(engine, task_id: str, state: str):
    """The history row of ``task_id`` once it is in ``state`` (30 s at most)."""
    return wait_for(lambda: (row := get_execution(engine, task_id)) is not None
                    and row.state == state and row, 30, message=f"{task_id} {state}")


@pytest.fixture
def stack(redis_server, tmp_path, producer, start_exporter, start_worker):
    """Exporter (token, result backend) and a worker storing extended results."""
    url = redis_server.url()
    exporter = start_exporter(url, "--api-token", TOKEN, "--result-backend", url)
    worker = start_worker(url, "a", env={"CELERY_RESULT_BACKEND": url,
                                         "CELERY_RESULT_EXTENDED": "1",
                                         "JOBMON_EXAMPLE_STATE_DIR": str(tmp_path / "once")})
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    engine = create_history_engine(exporter.history_url)
    yield exporter, url, producer(url), engine
    engine.dispose()


def test_bulk_retry_after_failed_retries_sends_each_job_once(stack):
    exporter, _, app, engine = stack
    api = Api(exporter.url, TOKEN)
    originals = [app.send_task("examples.tasks.fail_value", (f"bad {i}",), queue="a").id
                 for i in range(3)]
    for task_id in originals:
        row_in(engine, task_id, "FAILURE")
    first = api.post("/tasks/retry", json={"exception_type": "ValueError", "dry_run": False})
    assert first.status_code == 202, first.text
    assert (first.json()["matched"], first.json()["retried"]) == (3, 3)
    retries = [item["new_task_id"] for item in first.json()["items"]]
    for task_id in retries:
        row_in(engine, task_id, "FAILURE")

    dry = api.post("/tasks/retry", json={"exception_type": "ValueError"})
    assert dry.status_code == 200, dry.text
    body = dry.json()
    # Before the fix: matched 6, would_retry 6 — six sends for three jobs.
    assert (body["matched"], body["skipped"]) == (6, 3)
    by_id = {item["task_id"]: item for item in body["items"]}
    assert sorted(i["task_id"] for i in body["items"] if i["outcome"] == "would_retry") == \
        sorted(retries)
    for original, retry in zip([i["task_id"] for i in first.json()["items"]], retries,
                               strict=True):
        item = by_id[original]
        assert (item["outcome"], item["reason_code"]) == ("skipped", "already-retried")
        assert item["reason"] == (f"already retried: its retry {retry} FAILED "
                                  "(include_retried: true sends it)")

    done = api.post("/tasks/retry", json={"exception_type": "ValueError", "dry_run": False})
    assert (done.json()["retried"], done.json()["skipped"]) == (3, 3)
    assert sorted(i["task_id"] for i in done.json()["items"] if i["outcome"] == "retried") == \
        sorted(retries)
    assert [get_execution(engine, t).manual_retry_count for t in originals] == [1, 1, 1]


def test_a_task_whose_retry_succeeded_is_not_sent_again_unless_forced(stack):
    exporter, url, app, engine = stack
    api = Api(exporter.url, TOKEN)
    failed = app.send_task("examples.tasks.fail_once", ("charge", 42), queue="a").id
    row_in(engine, failed, "FAILURE")
    retry_id = api.post(f"/tasks/{failed}/retry").json()["new_task_id"]
    row_in(engine, retry_id, "SUCCESS")

    listed = api.post("/tasks/retry", json={}).json()
    assert [(i["task_id"], i["outcome"], i["reason_code"]) for i in listed["items"]] == [
        (failed, "skipped", "already-retried")]
    assert listed["items"][0]["existing_retries"] == [{"task_id": retry_id, "state": "SUCCESS"}]

    dry = api.post(f"/tasks/{failed}/retry", dry_run="true")
    assert dry.status_code == 200, dry.text
    assert dry.json()["warnings"] == [f"already retried: its retry {retry_id} SUCCEEDED"]
    assert dry.json()["force_needed"] is True
    refused = problem(api.post(f"/tasks/{failed}/retry"), 409)
    assert refused["reason"] == "already-retried"
    assert f"its retry {retry_id} SUCCEEDED" in refused["detail"]

    command = run_cli("retry", failed, "--broker-url", url, "--history-url",
                      exporter.history_url)
    assert command.returncode == 1
    assert (f"Task not eligible (409, already-retried): this task was already retried: its "
            f"retry {retry_id} SUCCEEDED.") in command.stderr
    assert get_execution(engine, failed).manual_retry_count == 1

    forced = api.post(f"/tasks/{failed}/retry", force="true")
    assert forced.status_code == 202, forced.text
    row_in(engine, forced.json()["new_task_id"], "SUCCESS")
    assert get_execution(engine, failed).manual_retry_count == 2
