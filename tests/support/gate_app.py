"""examples/tasks.py plus :func:`gated_fail` and :func:`gated_sleep`, tasks that run until the
test opens their gate: ``celery -A tests.support.gate_app worker``. A test that must act while
a task runs (restart the exporter, kill a worker) then depends on no
timing: the task ends when the test says.
"""

from __future__ import annotations

import os
import time

from examples.tasks import app

#: The name :func:`gated_fail` is registered (and sent) under.
GATED_FAIL = "tests.gated_fail"
#: The name :func:`gated_sleep` is registered (and sent) under.
GATED_SLEEP = "tests.gated_sleep"


@app.task(name=GATED_FAIL)
def gated_fail(gate: str, message: str = "gave up", timeout: float = 120.0) -> None:
    """Run until the file ``gate`` exists (checked every 50 ms), at most ``timeout`` seconds,
    then raise ``RuntimeError(message)``.
    """
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    raise RuntimeError(message)


@app.task(name=GATED_SLEEP)
def gated_sleep(gate: str, timeout: float = 120.0) -> float:
    """Run until the file ``gate`` exists (checked every 50 ms), at most ``timeout`` seconds,
    then succeed with the seconds it ran (a float).
    """
    start = time.monotonic()
    while not os.path.exists(gate) and time.monotonic() - start < timeout:
        time.sleep(0.05)
    return time.monotonic() - start


__all__ = ["GATED_FAIL", "GATED_SLEEP", "app", "gated_fail", "gated_sleep"]
