"""Issue 13 items 3, 9, 10 and 13 on RabbitMQ (a private vhost each), where their own tests run
on Redis only: the exporter's event path (the AMQP fast path), the revoke-with-reply broadcast
and ``check``'s control calls go through another transport there.

- item 3: terminate on a prefork worker lists the worker that acknowledged and terminated, and
  the row turns REVOKED (terminated, SIGTERM) through task-revoked; on a threads worker it is
  refused with nothing sent.
- item 9: a worker sending pickled events is one warning naming the fix, a metric and a
  problem in /readyz.
- item 10: ``check`` says it switched task events on when it did, not "events are on".
- item 13: a busy solo worker is silent, not down; a dead one is down after the busy timeout.
"""

from __future__ import annotations

import httpx
import pytest

from exporter.cli.check import run_checks
from exporter.config import Settings
from exporter.history import create_history_engine, get_execution
from tests.support.api import Api, problem
from tests.support.exporter import log_lines
from tests.support.waiting import assert_stays, wait_for
from tests.support.worker import Worker

pytestmark = pytest.mark.integration
TOKEN = "rabbitmq-conditions-token-0123"
SLEEP = "examples.tasks.sleep"


def pool_known(api: Api, hostname: str, pool: str) -> None:
    """Wait until the exporter's poller knows the worker's pool (inspect stats)."""
    wait_for(lambda: {w["hostname"]: w["pool"] for w in api.get("/workers").json()["workers"]}
             .get(hostname) == pool, 30, message=f"inspect stats: pool {pool}")


def test_terminate_by_pool_on_rabbitmq(amqp_url, producer, start_exporter, start_worker):
    exporter = start_exporter(amqp_url, "--api-token", TOKEN, "--inspect-timeout", "2s")
    api = Api(exporter.url, TOKEN)
    engine = create_history_engine(exporter.history_url)
    try:
        prefork = start_worker(amqp_url, "a")
        pool_known(api, prefork.hostname, "prefork")
        running = producer(amqp_url).send_task(SLEEP, (30,), queue="a")
        wait_for(lambda: (r := get_execution(engine, running.id)) is not None
                 and r.state == "STARTED", 30, message="task STARTED")
        response = api.post(f"/tasks/{running.id}/cancel", terminate="true")
        assert response.status_code == 202, response.text
        body = response.json()
        assert {k: body[k] for k in ("action", "signal", "hostname", "pool", "acknowledged_by",
                                     "terminated_by", "refused_by", "warnings")} == {
            "action": "terminate", "signal": "SIGTERM", "hostname": prefork.hostname,
            "pool": "prefork", "acknowledged_by": [prefork.hostname],
            "terminated_by": [prefork.hostname], "refused_by": {}, "warnings": []}
        row = wait_for(lambda: (r := get_execution(engine, running.id)) and r.state == "REVOKED"
                       and r, 20, message="row REVOKED")
        assert (row.revoke_reason, row.revoke_signal) == ("terminated", 15)
        prefork.kill()

        threads = start_worker(amqp_url, "a", pool="threads")
        pool_known(api, threads.hostname, "threads")
        other = producer(amqp_url).send_task(SLEEP, (4,), queue="a")
        wait_for(lambda: (r := get_execution(engine, other.id)) is not None
                 and r.state == "STARTED" and r.hostname == threads.hostname, 30,
                 message="task STARTED on the threads worker")
        refused = problem(api.post(f"/tasks/{other.id}/cancel", terminate="true"), 409)
        assert (refused["reason"], refused["pool"]) == ("pool-cannot-terminate", "threads")
        row = wait_for(lambda: (r := get_execution(engine, other.id)) and r.state == "SUCCESS"
                       and r, 30, message="the task ran to its end")
        assert row.revoke_reason is None
        assert "NotImplementedError" not in threads.output()
    finally:
        engine.dispose()


def test_pickled_events_on_rabbitmq_are_one_warning_naming_the_fix(amqp_url, start_exporter,
                                                                   start_worker):
    exporter = start_exporter(amqp_url)
    worker = start_worker(amqp_url, "a", env={"JOBMON_EXAMPLE_EVENT_SERIALIZER": "pickle"})
    metrics = wait_for(lambda: (m := exporter.metrics()).value(
        "celery_jobmon_events_malformed_total", reason="content_disallowed") >= 4 and m, 60,
        message=lambda: f"refused events\n{worker.output()[-2000:]}\n{exporter.output()}")
    assert metrics.value("celery_worker_up", hostname=worker.hostname) is None
    lines = log_lines(exporter.output(), "event skipped reason=content_disallowed")
    assert len(lines) == 1, lines
    assert "--accept-content (JOBMON_ACCEPT_CONTENT, now json)" in lines[0]
    assert "application/x-python-serialize" in lines[0]
    ready = httpx.get(f"{exporter.url}/readyz", timeout=5)
    assert ready.status_code == 200
    problems = ready.json()["problems"]
    assert [p["condition"] for p in problems] == ["content_disallowed"]
    assert "event_serializer to json" in problems[0]["detail"]


def test_check_on_rabbitmq_says_it_switched_task_events_on(amqp_url):
    quiet = Worker(amqp_url, "a", events=False, env={"JOBMON_EXAMPLE_TASK_EVENTS": "0"})
    try:
        settings = Settings(broker_url=amqp_url, inspect_timeout=1.0)
        rows = wait_for(lambda: (found := {r.name: r for r in run_checks(
            settings, listen_seconds=2.0)}) and found["workers"].ok and found, 60,
            message="the quiet worker answers check")
        assert rows["events"].ok is True
        assert f"task events were off on {quiet.hostname} and this check switched them on" \
            in rows["events"].message, rows["events"]
        again = {r.name: r for r in run_checks(settings, listen_seconds=2.0)}
        assert "switched" not in again["events"].message, again["events"]
    finally:
        quiet.kill()


def test_a_busy_solo_worker_on_rabbitmq_is_silent_not_down(amqp_url, producer, start_exporter,
                                                           start_worker):
    exporter = start_exporter(amqp_url, "--worker-timeout", "3s", "--solo-busy-timeout", "12s",
                              "--task-lost-grace", "0s", "--inspect-interval", "1s",
                              "--api-token", TOKEN)
    worker = start_worker(amqp_url, "a", pool="solo")
    host = {"hostname": worker.hostname}
    pool_known(Api(exporter.url, TOKEN), worker.hostname, "solo")
    producer(amqp_url).send_task(SLEEP, (8,), queue="a")
    wait_for(lambda: exporter.metrics().value("celery_worker_silent", **host) == 1, 10,
             message=lambda: f"silent while busy\n{exporter.output()[-2000:]}")
    assert exporter.metrics().value("celery_worker_up", **host) == 1
    wait_for(lambda: exporter.metrics().value("celery_task_succeeded_total", name=SLEEP,
                                              queue_name="a") == 1, 20, message="the task ended")
    assert exporter.metrics().value("celery_worker_silent", **host) == 0
    assert_stays(lambda: exporter.metrics().value("celery_worker_up", **host) == 1, 2.0,
                 message="up after the task")
    worker.kill()
    wait_for(lambda: exporter.metrics().value("celery_worker_up", **host) == 0, 30,
             message="down after --solo-busy-timeout")
