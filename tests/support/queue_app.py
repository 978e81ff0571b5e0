"""examples/tasks.py with queues declared with arguments, for workers and producers that
must agree with RabbitMQ on how a queue is declared (``x-max-priority``,
``x-queue-type=quorum``): ``celery -A tests.support.queue_app worker -Q prio,quorum``.

:data:`QUEUE_ARGUMENTS` is read from ``$JOBMON_TEST_QUEUE_ARGUMENTS`` (JSON
``{"queue name": {"x-argument": value}}``); :func:`declared_queues` builds the same
:class:`kombu.Queue` list for a producer's ``task_queues``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from kombu import Queue

from examples.tasks import app

ENV = "JOBMON_TEST_QUEUE_ARGUMENTS"
#: ``{queue name: queue arguments}`` of this process (empty: examples/tasks.py unchanged).
QUEUE_ARGUMENTS: dict[str, dict[str, Any]] = json.loads(os.environ.get(ENV) or "{}")


def declared_queues(arguments: Mapping[str, Mapping[str, Any]]) -> list[Queue]:
    """One queue per name, bound by its own name as routing key, with its arguments."""
    return [Queue(name, routing_key=name, queue_arguments=dict(args))
            for name, args in arguments.items()]


if QUEUE_ARGUMENTS:
    app.conf.task_queues = declared_queues(QUEUE_ARGUMENTS)

__all__ = ["app", "declared_queues"]
