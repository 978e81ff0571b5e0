"""A Celery worker as a process: :class:`Worker` runs ``celery -A examples.tasks worker -E``
(two prefork processes by default, its own process group) against a broker URL, and stops it
three ways: :meth:`Worker.stop` (warm), :meth:`Worker.quit` (cold), :meth:`Worker.kill`
(SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.paths import ROOT, temp_log


class Worker:
    """A real ``celery worker`` subprocess running examples/tasks.py with events on (-E),
    consuming ``queues`` (comma-separated) with two pool processes, without gossip and
    mingle; :attr:`hostname` is unique unless ``name`` is given.

    ``pool``: Celery's ``-P`` (``prefork``, ``threads``, ``solo``); ``app``: the ``-A`` module
    (e.g. :mod:`tests.support.queue_app`, examples/tasks.py with queues declared with
    arguments); ``env``: more environment variables; ``events``: ``-E`` (task events on).
    """

    def __init__(self, broker_url: str, queues: str = "a,b", name: str | None = None,
                 faketime: str | None = None, pool: str = "prefork",
                 app: str = "examples.tasks", env: dict[str, str] | None = None,
                 events: bool = True) -> None:
        self.hostname = name or f"w{uuid.uuid4().hex[:6]}@jobmon-test"
        self.log = temp_log("worker-")
        environment = {**os.environ, **(env or {}), "CELERY_BROKER_URL": broker_url}
        # faketime: a libfaketime offset ("-0.02s", "+2h"), the worker's clock skewed from
        # the exporter's and the producer's (the binary: require_binary("faketime")).
        skewed = ["faketime", "-f", faketime] if faketime else []
        self.proc = subprocess.Popen(
            [*skewed, sys.executable, "-m", "celery", "-A", app, "worker",
             *(["-E"] if events else []),
             "-Q", queues, "-c", "2", "-P", pool, "--without-gossip", "--without-mingle",
             "-n", self.hostname, "--loglevel", "INFO"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment,
            start_new_session=True,  # its own process group: the pool dies with it
        )

    def output(self) -> str:
        """Everything the worker wrote so far (stdout and stderr)."""
        self.log.flush()
        return Path(self.log.name).read_text()

    def kill(self) -> None:
        """SIGKILL the worker and its pool: no worker-offline, no terminal task events.

        The whole process group, even when its leader has exited: ``faketime`` runs the
        worker as its child and exits alone on a signal, leaving the worker running.
        """
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone
            pass
        self.proc.wait()

    def quit(self) -> None:
        """Cold shutdown (SIGCONT, then SIGQUIT to the process group: running tasks are not
        waited for); SIGKILL if it has not exited 10 s later."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # what is left of the group

    def stop(self) -> None:
        """Warm shutdown (SIGTERM: running tasks finish); SIGKILL if it has not exited 15 s
        later."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # what is left of the group (a faketime worker outlives its wrapper)
