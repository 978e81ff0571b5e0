"""``exception_type`` selects the executions that *failed* with that exception class: a task
that raised it, retried itself (Celery's ``self.retry``) and then succeeded is not listed —
through the API of a real `celery-jobmon serve`, with a real worker on Redis, and through
`celery-jobmon tasks`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from exporter.history import create_history_engine, get_execution
from tests.support.api import Api
from tests.support.exporter import run_cli
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "test-token-exception-filter-0123"
#: This module's Redis database (fixtures.py cycles 1-8; other modules use 13 and 14).
REDIS_DB = 11


@pytest.fixture
def own_redis_url() -> Iterator[str]:
    """Redis database :data:`REDIS_DB`, emptied before and after."""
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()
    client.close()


def test_exception_type_lists_failures_not_successes_that_retried(
        own_redis_url, tmp_path, producer, start_exporter, start_worker):
    exporter = start_exporter(own_redis_url, "--api-token", TOKEN)
    worker = start_worker(own_redis_url, "a",
                          env={"JOBMON_EXAMPLE_STATE_DIR": str(tmp_path / "fail-once")})
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(own_redis_url)
    retried_then_succeeded = app.send_task("examples.tasks.flaky", (2,), queue="a")
    failed = app.send_task("examples.tasks.fail_once", ("filter",), queue="a")
    other = app.send_task("examples.tasks.fail_key", ("k",), queue="a")
    engine = create_history_engine(exporter.history_url)
    ids = [retried_then_succeeded.id, failed.id, other.id]

    def finished() -> list | None:
        rows = [get_execution(engine, task_id) for task_id in ids]
        done = all(r is not None and r.state in ("SUCCESS", "FAILURE") for r in rows)
        return rows if done else None

    try:
        rows = wait_for(finished, 30, message="three finished rows")
    finally:
        engine.dispose()
    # The flaky task raised ConnectionError twice (task-retried) before it succeeded.
    assert [(r.state, r.retries, r.exception_type) for r in rows] == [
        ("SUCCESS", 2, "ConnectionError"), ("FAILURE", 0, "ConnectionError"),
        ("FAILURE", 0, "KeyError")]

    api = Api(exporter.url, TOKEN)
    listed = api.get("/tasks", exception_type="ConnectionError")
    assert listed.status_code == 200, listed.text
    assert [item["task_id"] for item in listed.json()["items"]] == [failed.id]
    succeeded = api.get("/tasks", exception_type="ConnectionError", state="SUCCESS")
    assert succeeded.json() == {"items": [], "next_cursor": None}
    assert [item["task_id"] for item in api.get("/tasks", exception_type="KeyError")
            .json()["items"]] == [other.id]

    command = run_cli("tasks", "--exception-type", "ConnectionError", "--history-url",
                      exporter.history_url)
    assert command.returncode == 0, command.stderr
    header, *lines = command.stdout.splitlines()
    assert [line.split()[-2:] for line in lines] == [[failed.id, "ConnectionError"]]
