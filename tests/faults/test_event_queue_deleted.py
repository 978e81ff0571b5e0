"""The exporter's RabbitMQ event queue deleted under it (``rabbitmqctl delete_queue``, the
management UI, a policy): RabbitMQ cancels the consumer and keeps the connection open. Counting
must not stop in silence: it is one event gap (the queue's messages are gone with it) and one
reconnect, which declares the queue again — on each path: pika in the reader process, pika in
the event thread, and the kombu path.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ADD = "examples.tasks.add"


def _event_queues(vhost: str) -> list[str]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers",
                          "name"], check=True, capture_output=True, text=True, timeout=60).stdout
    return [name for name in out.split() if name.startswith("celeryev.")]


@pytest.mark.parametrize("path", [("--amqp-reader", "process"), ("--amqp-reader", "thread"),
                                  ("--no-amqp-fast-path",)],
                         ids=["reader-process", "reader-thread", "kombu"])
def test_a_deleted_event_queue_is_one_gap_and_one_reconnect(amqp_url, producer,
                                                            start_exporter, path):
    exporter = start_exporter(amqp_url, "--no-history", *path)
    vhost = amqp_url.rsplit("/", 1)[1]
    app = producer(amqp_url)

    def sent() -> float | None:
        return exporter.metrics().value("celery_task_sent_total", name=ADD, queue_name="a")

    app.send_task(ADD, (1, 1), queue="a")
    wait_for(lambda: sent() == 1, 30, message="one task-sent counted")
    [queue] = _event_queues(vhost)
    subprocess.run(["rabbitmqctl", "-q", "delete_queue", "-p", vhost, queue], check=True,
                   capture_output=True, timeout=60)
    wait_for(lambda: exporter.metrics().value("celery_jobmon_broker_reconnects_total") == 1,
             30, message=lambda: f"reconnect\n{exporter.output()[-3000:]}")
    assert _event_queues(vhost) == [queue]  # declared again, under the same name
    app.send_task(ADD, (2, 2), queue="a")
    wait_for(lambda: sent() == 2, 30, message=lambda: f"counting resumed\n"
                                                      f"{exporter.output()[-3000:]}")
    metrics = exporter.metrics()
    assert metrics.value("celery_jobmon_event_gaps_total") == 1
    assert metrics.value("celery_jobmon_broker_connected") == 1
