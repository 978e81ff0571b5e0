"""examples/tasks.py plus :func:`gated_fail`, a task that runs until the test opens its gate:
``celery -A tests.support.gate_app worker``. A test that must act while a task runs (restart
the exporter, kill a worker) then depends on no timing: the task ends when the test says.
"""

from __future__ import annotations

import os
import time

from examples.tasks import app

#: The name :func:`gated_fail` is registered (and sent) under.
GATED_FAIL = "tests.gated_fail"


@app.task(name=GATED_FAIL)
def gated_fail(gate: str, message: str = "gave up", timeout: float = 120.0) -> None:
    """Run until the file ``gate`` exists (checked every 50 ms), at most ``timeout`` seconds,
    then raise ``RuntimeError(message)``.
    """
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    raise RuntimeError(message)


__all__ = ["GATED_FAIL", "app", "gated_fail"]
