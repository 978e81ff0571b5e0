"""The task-name ceiling against a real worker: names the workers registered come first, so a
flood of ``send_task`` names no worker knows (rejected by the workers) cannot fold a real task
into ``name="other"`` (issue: 500 junk names took the ceiling first come, first served).
"""

from __future__ import annotations

import pytest

from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ADD = "examples.tasks.add"


def test_junk_names_take_half_the_cap_and_a_registered_task_keeps_its_name(
        redis_url, producer, start_exporter, start_worker):
    exporter = start_exporter(redis_url, "--max-task-names", "4", "--inspect-interval", "1s")
    worker = start_worker(redis_url, "a")
    # The poller asked the worker what it registered in the round that learnt its pool.
    wait_for(lambda: exporter.metrics().value("celery_worker_pool_size",
                                              hostname=worker.hostname) == 2, 60,
             message=lambda: f"the poller knows the worker\n{worker.output()[-2000:]}")
    app = producer(redis_url)
    for i in range(5):
        app.send_task(f"report.{i}", queue="a")  # no worker knows it: rejected
    wait_for(lambda: exporter.metrics().total("celery_task_sent_total") == 5, 30,
             message="five junk sends")
    app.send_task(ADD, (1, 2), queue="a")
    wait_for(lambda: exporter.metrics().value("celery_task_succeeded_total", name=ADD,
                                              queue_name="a") == 1, 30,
             message=lambda: f"the real task counted\n{exporter.output()[-3000:]}")
    metrics = exporter.metrics()
    assert {(s["name"], metrics.value("celery_task_sent_total", **s))
            for s in metrics.series("celery_task_sent_total")} == {
        ("report.0", 1), ("report.1", 1), ("other", 3), (ADD, 1)}
    assert metrics.value("celery_jobmon_task_names_folded_total") == 3
    assert 'task names folded into name="other" total=1' in exporter.output()
