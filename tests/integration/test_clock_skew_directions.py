"""Issue 13 item 1, the clock directions test_clock_skew.py leaves to the unit tests: a real
libfaketime worker whose clock is 20 ms *ahead* of the producer's and the exporter's, and one
2 h *behind* them — on Redis and on RabbitMQ (the fast path), with a SQLite and a PostgreSQL
history. Finished tasks stay finished in the history and the action API, the worker stays up
(liveness reads the exporter's clock), its clock offset is shown with its sign, and an offset
beyond --clock-offset-warning (1 s) for 5 s is one warning in the log, not one per event.

A worker behind by hours also stamps its events further back than ``task-sent``: the
history's state must still follow the execution's stage, not the newest timestamp.
"""

from __future__ import annotations

import pytest

from exporter.history import create_history_engine, get_execution
from tests.support.api import Api
from tests.support.binaries import require_binary
from tests.support.exporter import log_lines
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "skew-directions-token-0123456789"


@pytest.mark.parametrize("skew, offset", [("+0.02s", -0.02), ("-2h", 7200.0)],
                         ids=["20ms-ahead", "2h-behind"])
def test_a_worker_ahead_or_hours_behind_leaves_finished_tasks_finished(
        skew, offset, broker_url, history_url, producer, start_exporter, start_worker):
    require_binary("faketime")
    exporter = start_exporter(broker_url, "--api-token", TOKEN, history_url=history_url)
    # No sleeping tasks: time.sleep may fail under libfaketime.
    worker = start_worker(broker_url, "a", faketime=skew)
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message=lambda: f"worker up\n{worker.output()[-2000:]}")
    app = producer(broker_url)
    ok = [app.send_task("examples.tasks.add", (i, 1), queue="a") for i in range(5)]
    bad = app.send_task("examples.tasks.fail_value", ("skewed",), queue="a")
    engine = create_history_engine(history_url)
    try:
        rows = wait_for(lambda: (found := [get_execution(engine, t.id) for t in [*ok, bad]])
                        and all(r is not None and r.finished_at is not None for r in found)
                        and found, 60, message=lambda: f"rows finished\n{exporter.output()}")
        assert [r.state for r in rows] == ["SUCCESS"] * 5 + ["FAILURE"]
        assert [r.result for r in rows[:5]] == ["1", "2", "3", "4", "5"]
        assert all(r.finished_at == r.state_ts for r in rows)
    finally:
        engine.dispose()
    api = Api(exporter.url, TOKEN)
    failed = api.get("/tasks", state="failed").json()
    assert [t["task_id"] for t in failed["items"]] == [bad.id]
    assert api.post(f"/tasks/{bad.id}/retry", dry_run="true").status_code == 200
    finished = api.post(f"/tasks/{ok[0].id}/cancel")
    assert (finished.status_code, finished.json()["reason"]) == (409, "finished")
    metrics = exporter.metrics()
    assert metrics.value("celery_worker_up", hostname=worker.hostname) == 1
    measured = metrics.value("celery_worker_clock_offset_seconds", hostname=worker.hostname)
    # Exporter clock at receipt − the worker's timestamp: the skew plus the transport delay.
    assert offset <= measured < offset + 0.5, measured
    def warnings() -> list[str]:
        return log_lines(exporter.output(), "worker clock offset hostname=")

    if abs(offset) < 1:
        assert warnings() == []
    else:  # once the offset has lasted 5 s (exporter clock)
        line, = wait_for(warnings, 15, message=lambda: f"the warning\n{exporter.output()}")
        assert f"hostname={worker.hostname} offset=7200." in line and "its clock is behind" in line
    assert (metrics.value("celery_task_succeeded_total", name="examples.tasks.add",
                          queue_name="a"),
            metrics.value("celery_task_failed_total", name="examples.tasks.fail_value",
                          queue_name="a"),
            metrics.value("celery_task_running", name="examples.tasks.add",
                          queue_name="a")) == (5, 1, 0)
