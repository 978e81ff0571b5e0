"""Issue 13 item 7's premise on RabbitMQ: two `celery-jobmon serve` replicas on one vhost each
see every event (each consumes its own ``celeryev.<uuid>`` queue bound to the event exchange),
so each gives the whole figures and the rules' ``max without (instance, pod)`` merge gives one
exporter's numbers. tests/e2e/test_two_replicas.py checks the rules and dashboards over two
replicas on Redis; here only the events' fan-out differs.
"""

from __future__ import annotations

import subprocess
from urllib.parse import urlsplit

import pytest

from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ADD, FAIL = "examples.tasks.add", "examples.tasks.fail_value"


def event_queues(vhost: str) -> dict[str, int]:
    """``{celeryev.* queue: consumers}`` as RabbitMQ lists them."""
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers",
                          "name", "consumers"], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return {name: int(consumers) for name, consumers in (line.split("\t")
                                                         for line in out.splitlines())
            if name.startswith("celeryev.")}


def test_two_replicas_on_one_vhost_each_count_every_task(amqp_url, producer, start_exporter,
                                                         start_worker):
    replicas = [start_exporter(amqp_url), start_exporter(amqp_url)]
    worker = start_worker(amqp_url, "a")
    for replica in replicas:
        wait_for(lambda replica=replica: replica.metrics().value(
            "celery_worker_up", hostname=worker.hostname) == 1, 60, message="worker up")
    queues = event_queues(urlsplit(amqp_url).path.lstrip("/"))
    assert sorted(queues.values()) == [1, 1], queues
    app = producer(amqp_url)
    for i in range(7):
        app.send_task(ADD, (i, i), queue="a")
    for i in range(3):
        app.send_task(FAIL, (f"replica {i}",), queue="a")

    def counts(replica) -> tuple[float | None, float | None]:
        metrics = replica.metrics()
        return (metrics.value("celery_task_succeeded_total", name=ADD, queue_name="a"),
                metrics.value("celery_task_failed_total", name=FAIL, queue_name="a"))

    for replica in replicas:
        wait_for(lambda replica=replica: counts(replica) == (7, 3), 30,
                 message=lambda replica=replica: f"every task counted: {counts(replica)}")
