"""The exporter as a process: :class:`Exporter` runs ``celery-jobmon serve`` on a free port
and reads it over HTTP; :class:`Metrics` is its parsed ``/metrics``; :func:`run_cli` runs any
other command; :func:`log_lines` greps a captured log.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.network import free_port
from tests.support.paths import ROOT, temp_log
from tests.support.waiting import wait_for

#: Exporter flags for tests that do not need the poller: its first round still runs at start,
#: and a SIGTERM does not wait for an inspect broadcast in flight (about 2 s per exporter).
QUIET_POLLER = ("--inspect-interval", "30s")


class Metrics:
    """Parsed ``/metrics`` text: ``value(sample_name, **labels)`` → float or ``None``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = frozenset(sample.labels.items())
                self.samples.setdefault(sample.name, {})[key] = sample.value

    def value(self, metric: str, /, **labels: str) -> float | None:
        """The sample of ``metric`` with exactly ``labels``, or ``None``."""
        return self.samples.get(metric, {}).get(frozenset(labels.items()))

    def series(self, metric: str) -> list[dict[str, str]]:
        """The label sets of every sample of ``metric``."""
        return [dict(key) for key in self.samples.get(metric, {})]

    def total(self, metric: str, /, **labels: str) -> float:
        """The sum of every sample of ``metric`` whose labels include ``labels`` (0 if none)."""
        return sum(value for key, value in self.samples.get(metric, {}).items()
                   if set(labels.items()) <= key)


class Exporter:
    """A ``celery-jobmon serve`` subprocess on a free port, with a history database of its own
    (a fresh SQLite file unless ``history_url`` is given), polling every second and logging
    at debug level to :attr:`log`. It starts at once; :meth:`wait_ready` waits for
    ``/readyz``.
    """

    def __init__(self, broker_url: str, *extra: str, history_url: str | None = None) -> None:
        self.port = free_port()
        self.log = temp_log("exporter-")
        if history_url is None:
            history_url = f"sqlite:///{tempfile.mkdtemp(prefix='jobmon-history-')}/history.db"
        self.history_url = history_url
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--broker-url", broker_url,
             "--listen", f"127.0.0.1:{self.port}", "--inspect-interval", "1s",
             "--log-level", "debug", "--history-url", history_url, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        """GET ``path`` from the exporter.

        Raises:
            AssertionError: an answer came though this exporter had exited: another process
                listens on its port (the text holds this exporter's output).
            httpx.HTTPError: the request failed.

        """
        response = httpx.get(self.url + path, timeout=5)
        if self.proc.poll() is not None:
            raise AssertionError(f"the exporter exited ({self.proc.returncode}):\n{self.output()}")
        return response

    def metrics(self) -> Metrics:
        """Scrape ``/metrics``; raises :class:`httpx.HTTPError` on a failed request."""
        response = self.get("/metrics")
        response.raise_for_status()
        return Metrics(response.text)

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(lambda: self.proc.poll() is None and self.get("/readyz").status_code == 200,
                 timeout, message=lambda: f"exporter ready\n{self.output()}")

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        self.log.flush()
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited 10 s later."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m exporter ARGS`` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=ROOT,
        timeout=timeout, env={**os.environ, **(env or {})},
    )


def log_lines(text: str, pattern: str) -> list[str]:
    """Lines of ``text`` matching the regular expression ``pattern``."""
    return [line for line in text.splitlines() if re.search(pattern, line)]


def child_pids(pid: int, marker: bytes = b"") -> list[int]:
    """The process ids of ``pid``'s children (every thread's; ``serve``'s history writer and
    AMQP reader), those whose command line holds ``marker`` when given."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
            if marker in Path(f"/proc/{child}/cmdline").read_bytes()]
