"""The cancel command's reading of the queues (actions/wiring.py) on a broker whose waiting
messages cannot be read: nothing to search, and nothing connects.
"""

from __future__ import annotations

from celery import Celery

from actions.wiring import queues_read_once


def test_no_queue_reading_on_rabbitmq():
    app = Celery("cancel-command", broker="amqp://guest:guest@127.0.0.1:1//",
                 set_as_current=False)
    latest = queues_read_once(app, ("a",))
    assert latest() is None  # port 1: a connection attempt would have raised
    assert latest() is None
