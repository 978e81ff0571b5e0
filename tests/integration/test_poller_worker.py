"""The poller and `check` against a real Celery worker on Redis (db 14).

One worker (``-c 2``) for the module; the tests run in file order: check, then a round with a
sleeping and a countdown task, then the worker is frozen (SIGSTOP) to see an inspect timeout.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli.check import run_checks
from exporter.cli.check_rows import exit_code
from exporter.config import Settings
from exporter.metrics.collectors import PollCollector
from exporter.poll.poller import Poller
from exporter.poll.snapshot import PollSnapshot
from exporter.state.health import Health
from exporter.state.model import Model
from tests.support.network import free_port
from tests.support.waiting import wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

REDIS_DB = 14
URL = f"redis://127.0.0.1:6379/{REDIS_DB}"


def make_app() -> Celery:
    app = Celery(f"jobmon-test-{uuid.uuid4().hex[:6]}", broker=URL, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    return app


@pytest.fixture(scope="module")
def queue() -> str:
    return f"jmq-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def worker(queue: str) -> Iterator[Worker]:
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    process = Worker(URL, queue)
    app = make_app()

    def answers() -> bool:
        assert process.proc.poll() is None, process.output()
        return bool(app.control.ping(destination=[process.hostname], timeout=0.5))

    try:
        wait_for(answers, 30, interval=0,
                 message=lambda: f"worker answering ping\n{process.output()}")
        yield process
    finally:
        app.close()
        process.quit()  # cold: do not wait for the sleeping task
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


def test_check_says_when_it_switched_task_events_on_itself(queue):
    # A worker without -E and worker_send_task_events off: check's own enable_events turns
    # its task events on. Before: "task events are on", as if the setup were right.
    quiet = Worker(URL, queue, events=False, env={"JOBMON_EXAMPLE_TASK_EVENTS": "0"})
    try:
        settings = Settings(broker_url=URL, inspect_timeout=1.0)
        wait_for(lambda: quiet.hostname in {h for r in make_app().control.ping(timeout=1.0)
                                            for h in r}, 60, message="quiet worker answers")
        rows = {r.name: r for r in run_checks(settings, listen_seconds=2.0)}
        assert rows["events"].ok is True
        assert f"task events were off on {quiet.hostname} and this check switched them on" \
            in rows["events"].message, rows["events"]
        again = {r.name: r for r in run_checks(settings, listen_seconds=2.0)}
        assert "switched" not in again["events"].message, again["events"]
    finally:
        quiet.kill()


def test_check_fails_without_a_broker():
    port = free_port()  # nothing listens there
    settings = Settings(broker_url=f"redis://:secret@127.0.0.1:{port}/0", inspect_timeout=0.5)
    results = run_checks(settings, listen_seconds=1.0)
    rows = {r.name: r for r in results}
    assert rows["broker"].ok is False and "secret" not in rows["broker"].message
    assert rows["workers"].ok is None
    assert exit_code(results) == 1


def poll_until(poller: Poller, predicate: Any, what: str, timeout: float = 20.0) -> PollSnapshot:
    """Run poll rounds back to back until ``predicate(snapshot)``; that snapshot."""
    rounds: list[PollSnapshot] = []

    def poll_round() -> PollSnapshot | None:
        rounds.append(snapshot := poller.poll_once())
        return snapshot if predicate(snapshot) else None

    return wait_for(poll_round, timeout, interval=0, message=lambda: f"{what}: {rounds[-1:]}")


def test_running_scheduled_and_worker_state_then_an_inspect_timeout(worker, queue, app):
    before = time.time()
    app.send_task("examples.tasks.sleep", args=(30,), queue=queue)
    scheduled = app.send_task("examples.tasks.add", args=(1, 2), queue=queue, countdown=60)
    poller = Poller(app, model(), Health(), interval=60.0, timeout=1.0, enable_events=True,
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

        # The age grows with the time: a later round shows the task a second older.
        second = poll_until(poller, lambda s: render(s)[
            ("celery_task_oldest_running_seconds", (("name", "examples.tasks.sleep"),))]
            >= age + 1.0, "the running task a second older")
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
