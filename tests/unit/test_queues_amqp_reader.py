"""RabbitMQ passive declares: counts, absent queues, channel replacement (fake connection)."""

from __future__ import annotations

from typing import Any

import pytest
from amqp.exceptions import AccessRefused, ChannelError, NotFound
from kombu.exceptions import ChannelError as VirtualChannelError
from kombu.exceptions import OperationalError
from kombu.transport.virtual.base import queue_declare_ok_t

from exporter.poll.amqp_queues import AmqpQueueReader, is_not_found, parse_declare_ok
from exporter.poll.snapshot import NO_PRIORITY, QueueState


class FakeChannel:
    def __init__(self, queues: dict[str, tuple[int, int]], revive: bool) -> None:
        self.queues = queues
        self.revive = revive
        self.is_open = True
        self.closed = False

    def queue_declare(self, queue: str, passive: bool) -> Any:
        assert passive
        assert self.is_open, "declare on a closed channel"
        if queue == "locked":
            self.is_open = self.revive
            raise AccessRefused("ACCESS_REFUSED", (50, 10), "Queue.declare")
        if queue not in self.queues:
            # The broker closes the channel; py-amqp reopens it, other clients do not.
            self.is_open = self.revive
            raise NotFound(f"NOT_FOUND - no queue {queue!r}", (50, 10), "Queue.declare")
        return queue_declare_ok_t(queue, *self.queues[queue])

    def close(self) -> None:
        self.closed = True


class FakeConnection:
    channel_errors = (ChannelError,)
    connection_errors = (OSError,)

    def __init__(self, queues: dict[str, tuple[int, int]], revive: bool = False) -> None:
        self.queues = queues
        self.revive = revive
        self.channels: list[FakeChannel] = []
        self.released = False

    def channel(self) -> FakeChannel:
        channel = FakeChannel(self.queues, self.revive)
        self.channels.append(channel)
        return channel

    def release(self) -> None:
        self.released = True


def test_declare_ok_gives_length_without_priority_and_consumers():
    ok = queue_declare_ok_t("a", 7, 2)
    assert parse_declare_ok("a", ok) == QueueState("a", {NO_PRIORITY: 7}, consumers=2)


def test_not_found_is_recognised_from_py_amqp_and_kombu_virtual_errors():
    assert is_not_found(NotFound("NOT_FOUND", (50, 10), "Queue.declare"))
    assert is_not_found(VirtualChannelError("NOT_FOUND", (50, 10), "Queue.declare", "404"))
    assert not is_not_found(AccessRefused("ACCESS_REFUSED", (50, 10), "Queue.declare"))
    assert not is_not_found(OperationalError("down"))


@pytest.mark.parametrize("revive", [False, True])
def test_absent_queue_is_left_out_and_the_next_queue_is_still_read(revive):
    conn = FakeConnection({"a": (3, 1), "c": (0, 0)}, revive=revive)
    reader = AmqpQueueReader(conn)  # type: ignore[arg-type]
    states = reader.read(["a", "missing", "c"])
    assert states == {"a": QueueState("a", {"": 3}, 1), "c": QueueState("c", {"": 0}, 0)}
    # A closed channel is replaced; a revived one is kept.
    assert len(conn.channels) == (1 if revive else 2)
    assert conn.channels[0].closed is not revive


def test_other_refusals_skip_that_queue_only():
    conn = FakeConnection({"a": (1, 0)})
    reader = AmqpQueueReader(conn)  # type: ignore[arg-type]
    assert reader.read(["locked", "a"]) == {"a": QueueState("a", {"": 1}, 0)}


def test_close_releases_the_connection():
    conn = FakeConnection({"a": (1, 0)})
    reader = AmqpQueueReader(conn)  # type: ignore[arg-type]
    reader.read(["a"])
    reader.close()
    assert conn.released and conn.channels[0].closed
