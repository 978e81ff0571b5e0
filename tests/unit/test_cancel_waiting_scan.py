"""How a cancel looks for a task in the waiting messages (actions.cancel._waiting_in): queue by
queue in the poller's order, pages of QUEUE_PAGE, MAX_WAITING_SCAN messages at most over all
queues; RabbitMQ (no listing) and no poll round find nothing. Pure paging logic over a broker
that serves lists.
"""

from __future__ import annotations

from typing import Any

import pytest

from actions import cancel
from actions.context import ActionContext
from actions.errors import NotSupported
from exporter.poll.redis_queues import PendingMessage
from exporter.poll.snapshot import PollSnapshot, QueueState


class ListBroker:
    """``pending`` over lists of task ids per queue; records each (queue, offset, limit)."""

    def __init__(self, queues: dict[str, list[str]] | None) -> None:
        self.queues = queues
        self.reads: list[tuple[str, int, int]] = []

    def pending(self, queue: str, offset: int, limit: int) -> list[PendingMessage]:
        if self.queues is None:
            raise NotSupported("waiting messages can be listed on Redis brokers only")
        self.reads.append((queue, offset, limit))
        return [PendingMessage(task_id, "app.add", None, None, None, None, 0)
                for task_id in self.queues[queue][offset:offset + limit]]


def context(broker: Any, queues: dict[str, list[str]] | None) -> ActionContext:
    states = tuple(QueueState(name, {"0": len(ids)}) for name, ids in (queues or {}).items())
    return ActionContext(broker, None, poll_latest=lambda: PollSnapshot(0.0, 0.0, queues=states))


@pytest.fixture(autouse=True)
def small_pages(monkeypatch):
    monkeypatch.setattr(cancel, "QUEUE_PAGE", 3)
    monkeypatch.setattr(cancel, "MAX_WAITING_SCAN", 10)


def test_finds_the_queue_reading_page_by_page():
    queues = {"a": [f"a{i}" for i in range(5)], "b": [f"b{i}" for i in range(4)]}
    broker = ListBroker(queues)
    assert cancel._waiting_in(context(broker, queues), "b3") == "b"
    assert broker.reads == [("a", 0, 3), ("a", 3, 3), ("b", 0, 3), ("b", 3, 1)]


def test_stops_after_the_budget_over_all_queues():
    queues = {"a": [f"a{i}" for i in range(8)], "b": [f"b{i}" for i in range(8)]}
    broker = ListBroker(queues)
    assert cancel._waiting_in(context(broker, queues), "b7") is None
    assert broker.reads == [("a", 0, 3), ("a", 3, 3), ("a", 6, 3), ("b", 0, 1)]


def test_nothing_to_search_without_a_poll_round_or_on_rabbitmq():
    broker = ListBroker({"a": ["x"]})
    assert cancel._waiting_in(ActionContext(broker, None), "x") is None  # type: ignore[arg-type]
    assert broker.reads == []
    assert cancel._waiting_in(context(ListBroker(None), {"a": ["x"]}), "x") is None
