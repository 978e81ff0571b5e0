"""Events lost while the exporter's Redis subscription is cut are detected: the worker's
heartbeats say how many tasks it started (`processed`), the exporter counts the task-started
events that never arrived."""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.exporter import QUIET_POLLER
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ADD = "examples.tasks.add"


def test_task_started_events_lost_in_a_cut_subscription_are_counted_exactly(
        private_redis, producer, start_exporter, start_worker):
    server = private_redis()
    url = server.url(0)
    exporter = start_exporter(url, "--no-history", "--reconnect-max-interval", "1s",
                              *QUIET_POLLER)
    worker = start_worker(url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(url)
    for i in range(5):
        app.send_task(ADD, (i, i), queue="a")
    wait_for(lambda: exporter.metrics().value("celery_task_started_total", name=ADD,
                                              queue_name="a") == 5, 30, message="5 seen")

    def worker_total() -> int:
        stats = app.control.inspect(timeout=1.0, destination=[worker.hostname]).stats() or {}
        return sum((stats.get(worker.hostname) or {}).get("total", {}).values())

    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        server.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        for i in range(20):
            app.send_task(ADD, (i, 1), queue="a")
        wait_for(lambda: worker_total() == 25, 60, message="the worker ran the 20 tasks")
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_worker_missed_task_events_total", hostname=worker.hostname) == 20 and m, 30,
        message=lambda: f"20 missed\n{exporter.output()[-3000:]}")
    # The exporter saw only the first 5: its counters are short by exactly the missed count.
    assert metrics.value("celery_task_started_total", name=ADD, queue_name="a") == 5
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
