"""An exporter paused beyond the AMQP heartbeat timeout (a frozen VM, SIGSTOP, CPU starvation):
RabbitMQ closes its connection and deletes its event queue with it. That is a gap, counted as
one, and the exporter reconnects by itself once it runs again.

The pause stops the exporter and its child processes (the reader process holding the
connection, the history writer), as a frozen VM stops them all: a reader process that kept
running would keep the connection alive.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.exporter import child_pids
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def test_a_pause_beyond_the_heartbeat_timeout_is_one_gap_and_one_reconnect(
        amqp_url, start_exporter):
    exporter = start_exporter(f"{amqp_url}?heartbeat=2")
    metrics = exporter.metrics()
    assert (metrics.value("celery_jobmon_event_gaps_total"),
            metrics.value("celery_jobmon_broker_reconnects_total")) == (0, 0)
    pids = [exporter.proc.pid, *child_pids(exporter.proc.pid)]
    assert len(pids) == 3  # the reader and the history writer
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(10)  # RabbitMQ gives up on a peer after two missed heartbeats (4 s here)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_reconnects_total") == 1,
             60, message=lambda: f"reconnect\n{exporter.output()[-3000:]}")
    metrics = exporter.metrics()
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
    assert metrics.value("celery_jobmon_broker_connected") == 1
