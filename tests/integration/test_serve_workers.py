"""`serve` end to end for what the poller adds: workers, running and waiting tasks, queues."""

from __future__ import annotations

import time

import pytest

from tests.support.waiting import assert_stays, wait_for

pytestmark = pytest.mark.integration


def test_sigkilled_worker_goes_down_and_its_series_stays(redis_url, start_exporter,
                                                          start_worker):
    exporter = start_exporter(redis_url, "--worker-timeout", "3s")
    worker = start_worker(redis_url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message=lambda: f"worker up\n{worker.output()}")
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_worker_pool_size", hostname=worker.hostname) is not None and m, 30,
        message="pool size from inspect stats")
    assert metrics.value("celery_worker_pool_size", hostname=worker.hostname) == 2
    assert metrics.value("celery_queue_consumers", queue_name="a") == 1

    worker.kill()
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 0,
             30, message="worker down after the timeout")
    assert_stays(lambda: exporter.metrics().value("celery_worker_up",
                                                  hostname=worker.hostname) == 0, 3.0,
                 message="the down worker's series")
    metrics = exporter.metrics()
    assert metrics.value("celery_worker_up", hostname=worker.hostname) == 0
    assert metrics.value("celery_worker_tasks_active", hostname=worker.hostname) == 0


def test_waiting_running_and_scheduled_tasks_are_visible(redis_url, producer, start_exporter,
                                                         start_worker):
    exporter = start_exporter(redis_url, "--queue", "idle")
    worker = start_worker(redis_url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message=lambda: f"worker up\n{worker.output()}")
    app = producer(redis_url)
    for priority in (0, 3, 5, 9):
        app.send_task("examples.tasks.add", (1, 2), queue="idle", priority=priority)
    app.send_task("examples.tasks.sleep", (30,), queue="a")
    eta_task = app.send_task("examples.tasks.add", (1, 2), queue="a", countdown=60)

    def poll_filled():
        m = exporter.metrics()
        ok = (m.value("celery_task_scheduled", name="examples.tasks.add", queue_name="a") == 1
              and m.value("celery_task_oldest_running_seconds", name="examples.tasks.sleep")
              is not None
              and m.value("celery_queue_length", queue_name="idle", priority="9") == 1)
        return m if ok else None

    metrics = wait_for(poll_filled, 30, message=lambda: f"poll metrics\n{exporter.output()}")
    lengths = {s["priority"]: metrics.value("celery_queue_length", **s)
               for s in metrics.series("celery_queue_length") if s["queue_name"] == "idle"}
    assert lengths == {"0": 1, "3": 2, "6": 0, "9": 1}
    assert metrics.value("celery_queue_consumers", queue_name="idle") == 0
    assert metrics.value("celery_task_running", name="examples.tasks.sleep", queue_name="a") == 1
    eta = metrics.value("celery_task_scheduled_earliest_eta_timestamp_seconds",
                        name="examples.tasks.add")
    assert eta is not None and abs(eta - (time.time() + 60)) < 10
    first_age = metrics.value("celery_task_oldest_running_seconds", name="examples.tasks.sleep")
    # The age grows with the time: 2 s more within a few seconds (polled every second).
    wait_for(lambda: exporter.metrics().value("celery_task_oldest_running_seconds",
                                              name="examples.tasks.sleep") >= first_age + 2, 10,
             message=f"oldest running age past {first_age + 2}")
    app.control.revoke(eta_task.id)


def test_task_hostname_label_counts_each_worker_apart(redis_url, producer, start_exporter,
                                                      start_worker):
    exporter = start_exporter(redis_url, "--task-hostname-label")
    worker = start_worker(redis_url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message=lambda: f"worker up\n{worker.output()}")
    app = producer(redis_url)
    for i in range(3):
        app.send_task("examples.tasks.add", (i, 1), queue="a")
    on_worker = {"name": "examples.tasks.add", "queue_name": "a", "hostname": worker.hostname}
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_task_succeeded_total", **on_worker) == 3 and m, 30,
        message=lambda: f"3 successes on {worker.hostname}\n{exporter.output()}")
    assert metrics.value("celery_task_started_total", **on_worker) == 3
    assert metrics.value("celery_task_runtime_seconds_count", **on_worker, state="SUCCESS") == 3
    assert metrics.value("celery_task_running", **on_worker) == 0
    # task-sent comes from the producer, before any worker has the task: no hostname.
    assert metrics.value("celery_task_sent_total", name="examples.tasks.add",
                         queue_name="a") == 3
