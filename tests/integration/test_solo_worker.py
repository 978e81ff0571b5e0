"""A worker of the solo pool sends nothing while it runs a task (no heartbeat, and even the
task's own task-started waits until it ends): with a real solo worker, the exporter shows it
silent, not down, until --solo-busy-timeout; a dead one is down after it."""

from __future__ import annotations

import httpx
import pytest

from tests.support.waiting import assert_stays, wait_for

pytestmark = pytest.mark.integration
TOKEN = "solo-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_busy_solo_worker_is_silent_not_down_and_a_dead_one_is_down_after_the_timeout(
        redis_url, producer, start_exporter, start_worker):
    # Before: worker_up 0 three seconds into the task (the worker timeout), and the
    # CeleryWorkerDown alert fired for every long task of a solo worker.
    exporter = start_exporter(redis_url, "--worker-timeout", "3s", "--solo-busy-timeout", "12s",
                              "--task-lost-grace", "0s", "--inspect-interval", "1s",
                              "--api-token", TOKEN)
    worker = start_worker(redis_url, "a", pool="solo")
    host = {"hostname": worker.hostname}
    wait_for(lambda: exporter.metrics().value("celery_worker_up", **host) == 1, 60,
             message="solo worker up")

    def pools() -> dict[str, str | None]:
        workers = httpx.get(f"{exporter.url}/api/v1/workers", headers=AUTH, timeout=5).json()
        return {w["hostname"]: w.get("pool") for w in workers["workers"]}

    wait_for(lambda: pools().get(worker.hostname) == "solo", 20,
             message="the poller knows the solo pool")
    app = producer(redis_url)
    app.send_task("examples.tasks.sleep", (8,), queue="a")
    wait_for(lambda: exporter.metrics().value("celery_worker_silent", **host) == 1, 10,
             message=lambda: f"silent while busy\n{exporter.output()[-2000:]}")
    assert exporter.metrics().value("celery_worker_up", **host) == 1
    wait_for(lambda: exporter.metrics().value("celery_task_succeeded_total",
                                              name="examples.tasks.sleep", queue_name="a") == 1,
             20, message="the task ended")
    assert exporter.metrics().value("celery_worker_silent", **host) == 0
    assert_stays(lambda: exporter.metrics().value("celery_worker_up", **host) == 1, 2.0,
                 message="up after the task")

    worker.kill()  # dead, silent for good
    wait_for(lambda: exporter.metrics().value("celery_worker_silent", **host) == 1, 10,
             message="silent after the kill")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", **host) == 0, 20,
             message="down after --solo-busy-timeout")
