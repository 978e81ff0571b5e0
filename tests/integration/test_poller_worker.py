"""The poller and `check` against a real Celery worker on Redis (db 14).

One worker (``-c 2``) for the module; the tests run in file order: check, then a round with a
sleeping and a countdown task, then the worker is frozen (SIGSTOP) to see an inspect timeout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli.check import exit_code, run_checks
from exporter.config import Settings
from exporter.metrics.poll_collector import PollCollector
from exporter.poll.poller import Poller
from exporter.poll.snapshot import PollSnapshot
from exporter.state.model import Model

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 14
URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


class WorkerProcess:
    """``celery -A examples.tasks worker -E -Q <queue> -c 2`` in its own process group."""

    def __init__(self, queue: str) -> None:
        self.hostname = f"jm{uuid.uuid4().hex[:6]}@jobmon-test"
        self.log = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "examples.tasks", "worker", "-E", "-Q", queue,
             "-c", "2", "--without-gossip", "--without-mingle", "-n", self.hostname,
             "--loglevel", "INFO"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, "CELERY_BROKER_URL": URL},
        )

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGQUIT)  # cold shutdown: do not wait for tasks
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        os.unlink(self.log.name)


def make_app() -> Celery:
    app = Celery(f"jobmon-test-{uuid.uuid4().hex[:6]}", broker=URL, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    return app


@pytest.fixture(scope="module")
def queue() -> str:
    return f"jmq-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def worker(queue: str) -> Iterator[WorkerProcess]:
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    process = WorkerProcess(queue)
    app = make_app()
    try:
        deadline = time.monotonic() + 30
        while not app.control.ping(destination=[process.hostname], timeout=0.5):
            assert process.proc.poll() is None, process.output()
            assert time.monotonic() < deadline, "worker did not answer ping\n" + process.output()
        yield process
    finally:
        app.close()
        process.stop()
        client.flushdb()


@pytest.fixture(scope="module")
def app() -> Iterator[Celery]:
    app = make_app()
    yield app
    app.close()


def model() -> Model:
    return Model(runtime_buckets=(1.0,), queue_wait_buckets=(1.0,), max_tasks=1000,
                 max_task_names=100, worker_timeout=30.0, worker_retention=3600.0)


def render(snapshot: PollSnapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PollCollector(lambda: snapshot, "celery_"))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_check_passes_with_a_worker_sending_events(worker, queue):
    settings = Settings(broker_url=URL, inspect_timeout=1.0)
    results = run_checks(settings, listen_seconds=3.0)
    rows = {r.name: r for r in results}
    assert rows["broker"].ok is True
    assert rows["workers"].ok is True and f"{worker.hostname} ({queue})" in rows["workers"].message
    assert rows["events"].ok is True, rows["events"]
    assert rows["result backend"].ok is None and rows["history database"].ok is None
    assert exit_code(results) == 0


def test_check_fails_without_a_broker():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    settings = Settings(broker_url=f"redis://:secret@127.0.0.1:{port}/0", inspect_timeout=0.5)
    results = run_checks(settings, listen_seconds=1.0)
    rows = {r.name: r for r in results}
    assert rows["broker"].ok is False and "secret" not in rows["broker"].message
    assert rows["workers"].ok is None
    assert exit_code(results) == 1


def poll_until(poller: Poller, predicate: Any, what: str, timeout: float = 20.0) -> PollSnapshot:
    deadline = time.monotonic() + timeout
    while True:
        snapshot = poller.poll_once()
        if predicate(snapshot):
            return snapshot
        assert time.monotonic() < deadline, f"{what}: {snapshot}"


def test_running_scheduled_and_worker_state_then_an_inspect_timeout(worker, queue, app):
    before = time.time()
    app.send_task("examples.tasks.sleep", args=(30,), queue=queue)
    scheduled = app.send_task("examples.tasks.add", args=(1, 2), queue=queue, countdown=60)
    poller = Poller(app, model(), interval=60.0, timeout=1.0, enable_events=True,
                    queues=["jmq-configured-idle"])
    try:
        first = poll_until(poller, lambda s: s.oldest_running_start and s.scheduled,
                           "sleep running and add scheduled")
        assert first.scheduled == {("examples.tasks.add", queue): 1}
        eta = first.earliest_eta["examples.tasks.add"]
        assert before + 59 < eta < time.time() + 61, scheduled.id
        samples = render(first)
        age = samples[("celery_task_oldest_running_seconds", (("name", "examples.tasks.sleep"),))]
        assert 0 <= age < 20
        (state,) = [w for w in first.workers if w.hostname == worker.hostname]
        assert state.pool_size == 2
        assert state.cpu_user and state.cpu_user > 0 and state.max_rss_bytes
        assert state.max_rss_bytes > 10 * 2**20  # a Python process: tens of MB, in bytes
        queues = {q.name: q for q in first.queues}
        assert queues[queue].consumers == 1 and sum(queues[queue].lengths.values()) == 0
        assert queues["jmq-configured-idle"].consumers == 0

        time.sleep(1.0)
        second = poller.poll_once()
        later = render(second)[
            ("celery_task_oldest_running_seconds", (("name", "examples.tasks.sleep"),))]
        assert later >= age + 1.0
        assert second.inspect_timeouts == {}

        os.kill(worker.proc.pid, signal.SIGSTOP)  # the worker stops answering
        try:
            kept = poller.poll_once()
            assert kept.inspect_timeouts == {worker.hostname: 1}
            assert kept.scheduled == first.scheduled
            assert kept.oldest_running_start == first.oldest_running_start
            assert [w.pool_size for w in kept.workers if w.hostname == worker.hostname] == [2]
            dropped = poller.poll_once()
            assert dropped.inspect_timeouts == {worker.hostname: 2}
            assert (dropped.scheduled, dropped.oldest_running_start, dropped.workers) == (
                {}, {}, ())
            rendered = render(dropped)
            assert rendered[("celery_inspect_timeouts_total",
                             (("hostname", worker.hostname),))] == 2.0
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
    finally:
        poller.close()
