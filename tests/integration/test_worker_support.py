"""The test suite's :class:`~tests.support.worker.Worker` leaves no process behind: a worker
left running on a Redis database of the suite's pool consumes the next test's tasks and sends
its heartbeats into the next test's events (seen: a full run where two later tests on the same
database counted a second worker).
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.binaries import require_binary
from tests.support.waiting import wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration


def group_alive(pgid: int) -> bool:
    """Whether any process is left in the process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("stop", ["stop", "quit", "kill"])
def test_a_worker_under_faketime_leaves_no_process_however_it_is_stopped(redis_url, stop):
    # faketime runs the worker as its child and exits alone on SIGTERM: before, stop() left
    # the worker running (and kill() then did nothing, its leader being gone).
    require_binary("faketime")
    worker = Worker(redis_url, "a", faketime="+0")
    try:
        wait_for(lambda: "ready." in worker.output(), 60, message=lambda: worker.output())
        getattr(worker, stop)()
        wait_for(lambda: not group_alive(worker.proc.pid), 5,
                 message="a process of the worker's group is still running")
    finally:
        if group_alive(worker.proc.pid):
            os.killpg(worker.proc.pid, signal.SIGKILL)
