"""``--max-manual-retries`` covers the whole chain of an execution — the retries before it and
those made after it — with a real `celery-jobmon serve` and a real worker on a private
redis-server, so ``force`` on an older execution of the chain cannot send one more.
"""

from __future__ import annotations

import pytest

from exporter.history import create_history_engine, get_execution
from tests.support.api import Api, problem
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "test-token-retry-limit-0123456789"


def failed(engine, task_id: str):
    """The history row of ``task_id`` once it is FAILURE (30 s at most)."""
    return wait_for(lambda: (row := get_execution(engine, task_id)) is not None
                    and row.state == "FAILURE" and row, 30, message=f"{task_id} FAILURE")


def test_force_on_an_older_execution_cannot_pass_the_limit_of_its_chain(
        redis_server, producer, start_exporter, start_worker):
    # Before: C0 -> R1 -> R2 -> R3 with the default limit 3; retrying R3 was refused, but
    # retrying C0 (or R1) with force=true answered 202 and sent a fourth retry: only the
    # retries before an execution and those made of it counted, not those after it.
    url = redis_server.url()
    exporter = start_exporter(url, "--api-token", TOKEN)  # --max-manual-retries 3
    worker = start_worker(url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    engine = create_history_engine(exporter.history_url)
    api = Api(exporter.url, TOKEN)
    try:
        chain = [producer(url).send_task("examples.tasks.fail_value", ("boom",), queue="a").id]
        failed(engine, chain[0])
        for _ in range(3):
            sent = api.post(f"/tasks/{chain[-1]}/retry")
            assert sent.status_code == 202, sent.text
            chain.append(sent.json()["new_task_id"])
            failed(engine, chain[-1])

        for task_id in chain:
            for force in ("false", "true"):
                refused = problem(api.post(f"/tasks/{task_id}/retry", force=force), 409)
                assert refused["reason"] == "max-manual-retries", (task_id, force, refused)
                assert refused["detail"] == (
                    "3 manual retries were already made in this task's chain; the limit is 3 "
                    "(--max-manual-retries)")
        assert [get_execution(engine, task_id).manual_retry_count for task_id in chain] == [
            1, 1, 1, 0]
    finally:
        engine.dispose()
