"""Retrying a task whose RabbitMQ queue was declared with arguments (``x-max-priority``,
``x-queue-type=quorum``): the retry reaches the queue as it is, the dry run asks the broker
about the queue the real send would hit, and a broker refusal is a problem document with the
broker's reason (API, bulk retry, and one line from `celery-jobmon retry`) — never a 500.

Real RabbitMQ (a private vhost), a real worker declaring the queues with their arguments
(:mod:`tests.support.queue_app`) and a real `celery-jobmon serve`.
"""

from __future__ import annotations

import json
import subprocess
from urllib.parse import urlsplit

import pytest

from actions.errors import NACK_REASON
from exporter.history import create_history_engine, get_execution
from tests.support.api import Api, problem
from tests.support.exporter import run_cli
from tests.support.queue_app import ENV, declared_queues
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
TOKEN = "test-token-queue-arguments-0123"
QUEUES = {"prio": {"x-max-priority": 10}, "quorum": {"x-queue-type": "quorum"}}
FAIL = "examples.tasks.fail_value"


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def queue_table(vhost: str) -> dict[str, str]:
    """``{queue: arguments as rabbitmqctl prints them}``."""
    lines = rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name",
                        "arguments").splitlines()
    return {name: arguments for name, arguments in (line.split("\t") for line in lines)
            if name in QUEUES}


@pytest.fixture
def stack(amqp_url, producer, start_exporter, start_worker):
    """Exporter with a token, a worker consuming the two queues declared with arguments, the
    failed executions of one task on each queue, and the history engine."""
    exporter = start_exporter(amqp_url, "--api-token", TOKEN, "--inspect-timeout", "1s")
    worker = start_worker(amqp_url, ",".join(QUEUES), app="tests.support.queue_app",
                          env={ENV: json.dumps(QUEUES)})
    wait_for(lambda: exporter.metrics().value("celery_worker_up", hostname=worker.hostname) == 1,
             60, message="worker up")
    app = producer(amqp_url)
    app.conf.task_queues = declared_queues(QUEUES)
    sent = {queue: app.send_task(FAIL, (f"on {queue}",), queue=queue).id for queue in QUEUES}
    engine = create_history_engine(exporter.history_url)
    for task_id in sent.values():
        wait_for(lambda task_id=task_id: (row := get_execution(engine, task_id)) is not None
                 and row.state == "FAILURE", 30, message=f"{task_id} FAILURE")
    yield exporter, worker, sent, engine, urlsplit(amqp_url).path.lstrip("/")
    engine.dispose()


def test_retry_reaches_queues_declared_with_arguments(stack):
    exporter, worker, sent, engine, vhost = stack
    api = Api(exporter.url, TOKEN)
    declared = queue_table(vhost)
    assert declared == {"prio": '[{"x-max-priority",10}]', "quorum": '[{"x-queue-type","quorum"}]'}

    retried: dict[str, str] = {}
    for queue, task_id in sent.items():
        plan = api.post(f"/tasks/{task_id}/retry", dry_run="true")
        assert plan.status_code == 200, plan.text
        body = plan.json()
        # Published to the default exchange with the queue's name as routing key: delivered
        # to that queue as it is, nothing declared.
        assert body["sent"] == {
            "task_name": FAIL, "args": [f"on {queue}"], "kwargs": {}, "queue": queue,
            "routing_key": queue, "exchange": "", "priority": None,
            "argument_source": "history_repr"}
        # What the broker said of the queue the real send publishes to: it exists, the worker
        # consumes it, nothing waits.
        assert body["queue_check"] == {"queue": queue, "exists": True, "messages": 0,
                                       "consumers": 1}
        assert body["warnings"] == []

        done = api.post(f"/tasks/{task_id}/retry")
        assert done.status_code == 202, done.text
        new_id = retried[queue] = done.json()["new_task_id"]
        row = wait_for(lambda new_id=new_id: (r := get_execution(engine, new_id)) is not None
                       and r.state == "FAILURE" and r, 30, message=f"retry of {queue} ran")
        assert (row.hostname, row.queue, row.retry_of) == (worker.hostname, queue, task_id)

    broker = exporter.proc.args[exporter.proc.args.index("--broker-url") + 1]
    # The newest of the chain: the original was retried already (409 already-retried).
    command = run_cli("retry", retried["quorum"], "--broker-url", broker, "--history-url",
                      exporter.history_url)
    assert command.returncode == 0, command.stderr
    # stderr has the action's log line (`action=retry … actor=cli:…`), nothing else.
    assert [line.split(" action=")[0][-31:] for line in command.stderr.splitlines()] == [
        "level=INFO logger=actions.retry"]
    line, = command.stdout.splitlines()
    prefix = f"retried {retried['quorum']} as "
    assert line.startswith(prefix) and line.endswith(
        ": examples.tasks.fail_value('on quorum') → queue quorum (arguments: history_repr)")
    by_cli = line[len(prefix):].split(":")[0]
    wait_for(lambda: (r := get_execution(engine, by_cli)) is not None and r.state == "FAILURE",
             30, message="the command's retry ran")
    assert queue_table(vhost) == declared  # nothing redeclared, nothing added

    bulk = api.post("/tasks/retry", json={"dry_run": False, "name": FAIL, "limit": 10})
    assert bulk.status_code == 202, bulk.text
    # Five failed executions; the three retried already are skipped, one new send per job.
    assert sorted(item["outcome"] for item in bulk.json()["items"]) == [
        "retried", "retried", "skipped", "skipped", "skipped"]
    assert queue_table(vhost) == declared


def test_a_broker_refusal_is_a_problem_and_one_cli_line(stack):
    exporter, worker, sent, engine, vhost = stack
    worker.kill()
    rabbitmqctl("delete_queue", "-p", vhost, "prio")
    api = Api(exporter.url, TOKEN)
    detail = (f"RabbitMQ has no queue 'prio' in vhost '{vhost}' (404 NOT_FOUND to a passive "
              "declare): a retry published there would be dropped. Start a worker that "
              "declares it, then retry.")

    for params in ({"dry_run": "true"}, {}):
        body = problem(api.post(f"/tasks/{sent['prio']}/retry", **params), 409)
        assert (body["title"], body["reason"], body["detail"]) == (
            "Broker refused", "queue-missing", detail)
    bulk = api.post("/tasks/retry", json={"dry_run": False, "queue": "prio"})
    assert bulk.status_code == 202, bulk.text
    assert [(i["task_id"], i["outcome"], i["reason"]) for i in bulk.json()["items"]] == [
        (sent["prio"], "skipped", detail)]
    assert get_execution(engine, sent["prio"]).manual_retry_count == 0

    broker = exporter.proc.args[exporter.proc.args.index("--broker-url") + 1]
    command = run_cli("retry", sent["prio"], "--broker-url", broker, "--history-url",
                      exporter.history_url)
    assert (command.returncode, command.stdout) == (1, "")
    assert command.stderr.splitlines() == [
        f"Error: Broker refused (409, queue-missing): {detail}"]


FULL = {"full": {"x-max-length": 1, "x-overflow": "reject-publish"}}


def test_a_retry_a_full_queue_rejects_is_a_503_not_a_claimed_retry(
        amqp_url, producer, start_exporter, start_worker):
    """A queue at its ``x-max-length`` with ``x-overflow reject-publish`` drops what is
    published to it; with publisher confirms RabbitMQ nacks it, and the retry says so (it
    answered 202 with a new task id and counted a manual retry before)."""
    exporter = start_exporter(amqp_url, "--api-token", TOKEN, "--inspect-timeout", "1s")
    worker = start_worker(amqp_url, "full", app="tests.support.queue_app",
                          env={ENV: json.dumps(FULL)})
    app = producer(amqp_url)
    app.conf.task_queues = declared_queues(FULL)
    failed = app.send_task(FAIL, ("on full",), queue="full").id
    engine = create_history_engine(exporter.history_url)
    try:
        wait_for(lambda: (row := get_execution(engine, failed)) is not None
                 and row.state == "FAILURE", 60, message="the task failed on the full queue")
        worker.kill()
        app.send_task("examples.tasks.add", (1, 2), queue="full")  # the one message it holds
        vhost = urlsplit(amqp_url).path.lstrip("/")

        def waiting() -> str:
            lines = rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name",
                                "messages").splitlines()
            return dict(line.split("\t") for line in lines)["full"]

        assert waiting() == "1"

        body = problem(Api(exporter.url, TOKEN).post(f"/tasks/{failed}/retry"), 503)
        assert body["detail"] == f"the broker took nothing: {NACK_REASON}"
        assert waiting() == "1"
        assert get_execution(engine, failed).manual_retry_count == 0
    finally:
        engine.dispose()
