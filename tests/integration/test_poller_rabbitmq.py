"""The poller's queue round on RabbitMQ (private vhost): counts, consumers, absent queues."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery
from kombu import Exchange, Queue

from exporter.poll.poller import Poller
from exporter.poll.snapshot import QueueState
from exporter.state.health import Health
from exporter.state.model import Model

pytestmark = pytest.mark.integration


@pytest.fixture
def app() -> Iterator[Celery]:
    vhost = f"jobmon-poller-{uuid.uuid4().hex[:8]}"
    ctl = ["rabbitmqctl", "-q"]
    subprocess.run([*ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run([*ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True, timeout=60)
    app = Celery("jobmon-test", broker=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
                 set_as_current=False)
    yield app
    app.close()
    subprocess.run([*ctl, "delete_vhost", vhost], check=True, capture_output=True, timeout=60)


def test_configured_queues_are_read_and_an_absent_one_has_no_series(app):
    app.conf.task_queues = [Queue("prio", Exchange("prio"), routing_key="prio",
                                  queue_arguments={"x-max-priority": 10})]
    app.conf.broker_transport_options = {"confirm_publish": True}  # counted at once
    for priority in (0, 3, 5, 9):
        app.send_task("examples.tasks.add", args=(1, 2), queue="prio", priority=priority)
    model = Model(runtime_buckets=(1.0,), queue_wait_buckets=(1.0,), max_tasks=10,
                  max_task_names=10, worker_timeout=30.0, worker_retention=60.0)
    health = Health()
    poller = Poller(app, model, health, interval=60.0, timeout=0.5, enable_events=False,
                    queues=["prio", "never-declared"])
    try:
        snapshot = poller.poll_once()
        assert poller.poll_once().queues == snapshot.queues  # the channel survived the 404
    finally:
        poller.close()
    assert snapshot.queues == (QueueState("prio", {"": 4}, consumers=0),)
    assert health.snapshot().poll_errors == {}
