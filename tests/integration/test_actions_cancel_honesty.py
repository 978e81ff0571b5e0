"""A cancel answer says what will really happen, and the history records the request and,
separately, its outcome — with real workers of each pool and a real `celery-jobmon serve`.

- threads pool: Celery cannot stop a running task there; terminate is refused (409) and nothing
  is sent.
- solo pool: the worker reads control messages only between tasks; terminate is accepted with a
  warning that the running task cannot be interrupted, and the task runs on to SUCCESS — the
  history shows the request, then "not honoured", and never REVOKED.
- no worker online (Redis and RabbitMQ): the answer says that no worker acknowledged and that
  the revoke is lost; a worker started later runs the task and the outcome is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import select

from exporter.history import create_history_engine, get_execution
from exporter.history.orm import ACTION_AUDIT
from tests.support.api import Api, problem
from tests.support.waiting import assert_stays, wait_for

pytestmark = pytest.mark.integration
TOKEN = "test-token-cancel-honesty-0123"
#: This module's Redis database (fixtures.py cycles 1-8; other modules use 13 and 14).
REDIS_DB = 10
SLEEP = "examples.tasks.sleep"


@pytest.fixture
def own_redis_url() -> Iterator[str]:
    """Redis database :data:`REDIS_DB`, emptied before and after."""
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()
    client.close()


@pytest.fixture(params=["redis", "amqp"])
def any_broker(request: pytest.FixtureRequest) -> str:
    """This module's Redis database, then a private RabbitMQ vhost."""
    fixture = "own_redis_url" if request.param == "redis" else "amqp_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def engine_of() -> Iterator[Any]:
    engines: list[Any] = []

    def make(exporter: Any) -> Any:
        engines.append(engine := create_history_engine(exporter.history_url))
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def audit(engine: Any, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    """``(action, detail)`` of the task's audit rows, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(select(ACTION_AUDIT.c.action, ACTION_AUDIT.c.detail).where(
            ACTION_AUDIT.c.task_id == task_id).order_by(ACTION_AUDIT.c.id)).all()
    return [(action, detail) for action, detail in rows]


def run_when_pool_known(exporter: Any, worker: Any, pool: str, seconds: float) -> str:
    """Wait until the exporter knows the worker's pool (inspect stats), then send it a task
    sleeping ``seconds``; returns its id."""
    api = Api(exporter.url, TOKEN)
    wait_for(lambda: [(w["hostname"], w["pool"]) for w in api.get("/workers").json()["workers"]
                      if w["pool"]] == [(worker.hostname, pool)], 30,
             message=f"inspect stats: pool {pool}")
    app = Celery("producer", broker=exporter.proc.args[exporter.proc.args.index(
        "--broker-url") + 1], set_as_current=False)
    app.conf.task_send_sent_event = True
    try:
        return str(app.send_task(SLEEP, (seconds,), queue="a").id)
    finally:
        app.close()


def test_terminate_on_a_threads_worker_is_refused_and_sends_nothing(
        own_redis_url, start_exporter, start_worker, engine_of):
    exporter = start_exporter(own_redis_url, "--api-token", TOKEN, "--inspect-timeout", "1s")
    worker = start_worker(own_redis_url, "a", pool="threads")
    engine = engine_of(exporter)
    task_id = run_when_pool_known(exporter, worker, "threads", 4)
    wait_for(lambda: (row := get_execution(engine, task_id)) is not None
             and row.state == "STARTED" and row.hostname == worker.hostname, 30,
             message="task STARTED")

    body = problem(Api(exporter.url, TOKEN).post(f"/tasks/{task_id}/cancel", terminate="true"),
                   409)
    assert {k: body[k] for k in ("title", "reason", "hostname", "pool", "detail")} == {
        "title": "Task not eligible", "reason": "pool-cannot-terminate",
        "hostname": worker.hostname, "pool": "threads",
        "detail": f"the task runs on {worker.hostname}, whose pool is threads (-P threads): "
                  "Celery's threads pool cannot stop a running task (the worker would log "
                  "NotImplementedError and the task would run to its end). Nothing was sent."}
    row = wait_for(lambda: (r := get_execution(engine, task_id)) and r.state == "SUCCESS" and r,
                   30, message="the task ran to its end")
    assert row.revoke_reason is None
    assert audit(engine, task_id) == []
    assert "NotImplementedError" not in worker.output()


def test_terminate_on_a_busy_solo_worker_warns_and_the_history_records_the_outcome(
        own_redis_url, start_exporter, start_worker, engine_of):
    exporter = start_exporter(own_redis_url, "--api-token", TOKEN, "--inspect-timeout", "1s")
    worker = start_worker(own_redis_url, "a", pool="solo")
    engine = engine_of(exporter)
    task_id = run_when_pool_known(exporter, worker, "solo", 6)
    # The solo worker runs it in its only thread: it sends the task's events, answers inspect
    # and reads control messages only after it. Only its log shows that it started.
    wait_for(lambda: f"sleep[{task_id}] received" in worker.output(), 20,
             message="the worker took the task")

    response = Api(exporter.url, TOKEN).post(f"/tasks/{task_id}/cancel", terminate="true")
    assert response.status_code == 202, response.text
    assert response.json() == {
        "task_id": task_id, "action": "terminate", "signal": "SIGTERM",
        "previous_state": "PENDING", "state_source": "events", "hostname": None, "pool": None,
        "workers_up": 1, "acknowledged_by": [], "terminated_by": [], "refused_by": {},
        "warnings": [
            f"solo-pool workers did not acknowledge ({worker.hostname}): a solo worker reads "
            "control messages only between tasks, so one busy with a task reads the revoke "
            "after it; if this task is the one it runs, it cannot be interrupted and runs to "
            "its end (a solo worker sends its task's events only after it, so the task may "
            "look waiting meanwhile)",
            "no worker acknowledged the revoke within 1 s (1 up by their heartbeats): a worker "
            "that gets it later (a busy solo worker, after its task) drops the task if it has "
            "not run it yet; if no worker gets it, it is lost and a worker started later runs "
            "the task"]}
    # The request is recorded; the row is not REVOKED and no outcome is claimed.
    (action, detail), = audit(engine, task_id)
    assert (action, detail["requested"], detail["acknowledged_by"]) == (
        "cancel", "terminate", [])
    assert get_execution(engine, task_id).state == "PENDING"

    row = wait_for(lambda: (r := get_execution(engine, task_id)) and r.state == "SUCCESS" and r,
                   30, message="the task ran to its end")
    assert (row.revoke_reason, row.updated_by_action) == (None, "cancel")
    outcome = wait_for(lambda: len(rows := audit(engine, task_id)) == 2 and rows[1], 15,
                       message="the outcome recorded")
    assert outcome == ("cancel-outcome", {
        "outcome": "not-honoured", "state": "SUCCESS", "request_id": outcome[1]["request_id"],
        "evidence": "the task ran to its end (SUCCESS) after the request"})
    requests = Api(exporter.url, TOKEN).get(f"/tasks/{task_id}").json()["cancel_requests"]
    assert [(r["action"], r["outcome"], r["acknowledged_by"]) for r in requests] == [
        ("terminate", "not-honoured", [])]


def test_a_revoke_with_no_worker_online_says_it_is_lost_and_the_outcome_is_recorded(
        any_broker, producer, start_exporter, start_worker, engine_of):
    exporter = start_exporter(any_broker, "--api-token", TOKEN, "--inspect-timeout", "1s")
    engine = engine_of(exporter)
    waiting = producer(any_broker).send_task("examples.tasks.add", (2, 3), queue="a")
    wait_for(lambda: get_execution(engine, waiting.id) is not None, 20, message="row PENDING")

    response = Api(exporter.url, TOKEN).post(f"/tasks/{waiting.id}/cancel")
    assert response.status_code == 202, response.text
    assert response.json() == {
        "task_id": waiting.id, "action": "revoke", "signal": None, "previous_state": "PENDING",
        "state_source": "events", "hostname": None, "pool": None, "workers_up": 0,
        "acknowledged_by": [], "terminated_by": [], "refused_by": {},
        "warnings": [
            "no worker acknowledged the revoke within 1 s, and no worker is up by its "
            "heartbeats: the revoke is lost. A worker keeps a revoke only once it received it "
            "(in memory; across its restarts with --statedb; handed to workers that start while "
            "it runs, unless they run --without-mingle), so a worker started later will run "
            "this task. The exporter does not re-send revokes to workers that come online: a "
            "starting worker takes its first messages before its worker-online event can reach "
            "the exporter (README: Cancel a task)."]}
    (action, detail), = audit(engine, waiting.id)
    assert (action, detail["requested"], detail["acknowledged_by"], detail["workers_up"]) == (
        "cancel", "revoke", [], 0)

    worker = start_worker(any_broker, "a")
    row = wait_for(lambda: (r := get_execution(engine, waiting.id)) and r.state == "SUCCESS"
                   and r, 60, message="a worker started later ran it")
    assert (row.hostname, row.result) == (worker.hostname, "5")
    outcome = wait_for(lambda: len(rows := audit(engine, waiting.id)) == 2 and rows[1], 15,
                       message="the outcome recorded")
    assert outcome[0] == "cancel-outcome"
    assert {k: outcome[1][k] for k in ("outcome", "state")} == {
        "outcome": "not-honoured", "state": "SUCCESS"}
    assert_stays(lambda: len(audit(engine, waiting.id)) == 2, 1.0, message="one outcome")
