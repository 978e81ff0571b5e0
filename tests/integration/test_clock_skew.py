"""A worker whose clock is skewed from the producer's and the exporter's (a real libfaketime
clock): finished tasks stay finished in the history and the action API, on SQLite and
PostgreSQL, and the exporter shows how far the worker's clock is off.

Before the state order of the events/table module, a worker 20 ms behind the producer left
every task it finished PENDING in the history: `state=failed` missed the failure, retry refused
it (409 PENDING) and cancel answered 202 "revoked" for a task that had finished.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from exporter.history import create_history_engine, get_execution
from tests.support.binaries import require_binary
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "clock-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def api(exporter, method: str, path: str, **params: Any) -> httpx.Response:
    return httpx.request(method, f"{exporter.url}/api/v1{path}", params=params, headers=AUTH,
                         timeout=15)


@pytest.mark.parametrize("skew, offset", [("-0.02s", 0.02), ("+2h", -7200.0)],
                         ids=["20ms-behind", "2h-ahead"])
def test_a_skewed_worker_leaves_finished_tasks_finished(skew, offset, redis_url, history_url,
                                                        producer, start_exporter, start_worker):
    require_binary("faketime")
    exporter = start_exporter(redis_url, "--api-token", TOKEN, history_url=history_url)
    # The worker's tasks must not sleep: time.sleep may fail under libfaketime.
    worker = start_worker(redis_url, "a", faketime=skew)
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message=f"worker up\n{worker.output()}")
    app = producer(redis_url)
    ok = [app.send_task("examples.tasks.add", (i, 1), queue="a") for i in range(5)]
    bad = app.send_task("examples.tasks.fail_value", ("skewed",), queue="a")
    engine = create_history_engine(history_url)
    try:
        rows = wait_for(lambda: (found := [get_execution(engine, t.id) for t in [*ok, bad]])
                        and all(r is not None and r.finished_at is not None for r in found)
                        and found, 60, message=f"rows finished\n{exporter.output()}")
        assert [r.state for r in rows] == ["SUCCESS"] * 5 + ["FAILURE"]
        assert all(r.finished_at == r.state_ts for r in rows)
    finally:
        engine.dispose()
    failed = api(exporter, "GET", "/tasks", state="failed").json()
    assert [t["task_id"] for t in failed["items"]] == [bad.id]
    dry_run = api(exporter, "POST", f"/tasks/{bad.id}/retry", dry_run="true")
    assert dry_run.status_code == 200, dry_run.text
    finished = api(exporter, "POST", f"/tasks/{ok[0].id}/cancel")
    assert finished.status_code == 409, finished.text
    metrics = exporter.metrics()
    measured = metrics.value("celery_worker_clock_offset_seconds", hostname=worker.hostname)
    # Exporter clock at receipt − the worker's timestamp: the skew plus the transport delay.
    assert offset <= measured < offset + 0.5, measured
    assert metrics.value("celery_task_succeeded_total", name="examples.tasks.add",
                         queue_name="a") == 5
    assert metrics.value("celery_task_running", name="examples.tasks.add", queue_name="a") == 0
