"""``celery-jobmon demo`` as a new user runs it: no broker, no database, nothing configured.

It must show succeeded, failed, retried and revoked tasks in ``/metrics`` and the history
(through the action API) within a minute, open no connection to the machine's Redis, RabbitMQ
or PostgreSQL, and leave nothing behind after Ctrl-C.
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
import pytest

from tests.support.exporter import Metrics
from tests.support.network import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
#: The services this machine runs on their default ports; the demo must use none of them.
SERVICE_PORTS = {6379, 5672, 5432, 15672}


def _remote_ports(pid: int) -> set[int]:
    """Remote TCP ports of the sockets process ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(match.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def test_the_demo_shows_every_outcome_within_a_minute_and_leaves_nothing_behind():
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("JOBMON_", "CELERY_"))} | {"TMPDIR": tmp}
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            banner = ""
            while not banner.rstrip().endswith("temporary files."):
                line = proc.stdout.readline()  # type: ignore[union-attr]
                assert line, f"the demo ended: {banner}{proc.stderr.read()}"  # type: ignore[union-attr]
                banner += line
            token = re.search(r"API token (\S+)", banner).group(1)  # type: ignore[union-attr]
            base = f"http://127.0.0.1:{port}"

            def metrics() -> Metrics:
                return Metrics(httpx.get(f"{base}/metrics", timeout=5).text)

            def outcomes() -> tuple[float, ...]:
                m = metrics()
                return (m.total("celery_task_succeeded_total", name="demo.add"),
                        m.total("celery_task_failed_total", name="demo.charge"),
                        m.total("celery_task_retried_total", name="demo.fetch"),
                        m.total("celery_task_revoked_total", name="demo.send"))

            wait_for(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 30,
                     message="demo ready")
            # round 2 revokes a scheduled send; round 3 starts a fetch that retries twice;
            # round 4 fails a charge
            wait_for(lambda: all(outcomes()), 60,
                     message=lambda: f"every outcome: {outcomes()}")
            assert metrics().value("celery_worker_up", hostname=f"demo@{os.uname().nodename}") == 1

            auth = {"Authorization": f"Bearer {token}"}

            def failed() -> list[dict]:
                return httpx.get(f"{base}/api/v1/tasks", params={"state": "FAILURE"},
                                 headers=auth, timeout=5).json()["items"]

            # The history writer commits in batches, a moment after /metrics counted.
            wait_for(failed, 10, message="a failure in the history")
            assert {(t["name"], t["exception_type"]) for t in failed()} == {
                ("demo.charge", "PaymentDeclined")}
            detail = httpx.get(f"{base}/api/v1/tasks/{failed()[0]['task_id']}", headers=auth,
                               timeout=5).json()
            assert "PaymentDeclined: card declined for order" in detail["traceback"]
            assert httpx.get(f"{base}/api/v1/tasks", headers={}, timeout=5).status_code == 401
            # The job browser is on: the printed password opens the Failed page.
            password = re.search(r"user demo, password (\S+)", banner).group(1)  # type: ignore[union-attr]
            with httpx.Client(base_url=base, timeout=5) as browser:
                login = browser.get("/ui/login")
                csrf = re.search(r'name="csrftoken" value="([^"]+)"', login.text)
                assert csrf is not None, login.text
                landed = browser.post("/ui/login", data={
                    "username": "demo", "password": password, "csrftoken": csrf.group(1)},
                    follow_redirects=True)
                assert landed.status_code == 200, landed.text
                page = browser.get("/ui/failed")
                assert page.status_code == 200 and "PaymentDeclined" in page.text
                # Before: "No queue known yet." for good, as if lengths were coming.
                overview = browser.get("/ui/").text
                assert ("No queue length read yet: they are read from a Redis or RabbitMQ "
                        "broker only (none from other brokers, such as the demo's in-memory "
                        "one), once it answers.") in overview, overview
            assert not _remote_ports(proc.pid) & SERVICE_PORTS

            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
            assert os.listdir(tmp) == []  # the history and results went with it
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
