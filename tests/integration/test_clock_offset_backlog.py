"""A backlog is not a clock offset: a real worker heartbeating on Redis while the exporter is
paused (SIGSTOP, as a VM pause or a long stop-the-world would), its heartbeats then read
together, seconds late.

Before the lowest-of-the-window offset, the moving average took the late heartbeats for a worker
clock behind the exporter's: ``celery_worker_clock_offset_seconds`` rose to seconds and the log
warned "worker clock offset ... its clock is behind" about a worker on the same host.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.exporter import QUIET_POLLER, log_lines
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
PAUSE = 8.0  # seconds: four of Celery's 2 s heartbeats wait in the exporter's socket


def test_heartbeats_read_late_after_a_pause_are_not_a_clock_behind(
        redis_url, start_exporter, start_worker):
    exporter = start_exporter(redis_url, *QUIET_POLLER)  # --clock-offset-warning 1s
    worker = start_worker(redis_url, "a")
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message=lambda: f"worker up\n{worker.output()[-2000:]}")
    time.sleep(2.5)  # at least one heartbeat read on time after the first
    os.kill(exporter.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE)
    finally:
        os.kill(exporter.proc.pid, signal.SIGCONT)
    resumed = time.time()
    # The first heartbeat sent after the pause applied: those of the pause were, before it.
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_worker_last_heartbeat_timestamp_seconds", hostname=worker.hostname) >= resumed
        and m, 30, message="a heartbeat sent after the pause")
    offset = metrics.value("celery_worker_clock_offset_seconds", hostname=worker.hostname)
    assert 0 <= offset < 0.5, offset
    assert log_lines(exporter.output(), "worker clock offset") == []
