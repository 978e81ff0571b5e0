"""Queue lengths on RabbitMQ: a passive ``queue.declare`` per queue.

A passive declare (``channel.queue_declare(queue, passive=True)``) creates nothing and answers
``queue.declare-ok`` with ``message_count`` (messages ready for delivery; those delivered to a
consumer and not yet acknowledged are not included) and ``consumer_count``. AMQP gives no
per-priority breakdown, so the length carries ``priority=""`` (:data:`NO_PRIORITY`), and no
message can be read without consuming it, so there is no oldest-message age.

A queue that does not exist makes the broker close the *channel* with ``404 NOT_FOUND``: the
queue is reported absent (left out: no series, not a fake 0) and the next declare runs on a
usable channel (py-amqp reopens the channel itself; any other client's channel is replaced).

AMQP cannot list queues: :meth:`AmqpQueueReader.find_queues` asks the management API when
one is configured (:mod:`exporter.poll.rabbitmq_management`) and finds nothing otherwise;
the poller then knows queues from workers, ``task-sent`` events and ``--queue``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kombu import Connection

from exporter.poll.rabbitmq_management import ManagementApi
from exporter.poll.snapshot import NO_PRIORITY, QueueState, SentTime

log = logging.getLogger(__name__)

#: AMQP reply code of ``NOT_FOUND`` (the queue does not exist).
NOT_FOUND = 404


def is_not_found(exc: BaseException) -> bool:
    """Whether a channel error is the broker's ``404 NOT_FOUND`` (py-amqp ``NotFound`` and
    kombu's virtual ``ChannelError`` both carry the code).
    """
    for attr in ("code", "reply_code"):
        value = getattr(exc, attr, None)
        if value in (NOT_FOUND, str(NOT_FOUND)):
            return True
    return False


def parse_declare_ok(name: str, ok: Any) -> QueueState:
    """Turn a ``queue_declare_ok_t(queue, message_count, consumer_count)`` into a
    :class:`QueueState` with ``{NO_PRIORITY: message_count}`` and the consumer count.
    """
    return QueueState(name=name, lengths={NO_PRIORITY: int(ok.message_count)},
                      consumers=int(ok.consumer_count))


class AmqpQueueReader:
    """Reads message and consumer counts of RabbitMQ queues over one kombu connection.

    Not thread-safe: one reader per thread.

    Args:
        connection: a kombu ``Connection`` to an AMQP broker (not necessarily connected yet).
        management: the management API of the connection's vhost, to find queues with
            (``None``: none are found).

    """

    def __init__(self, connection: Connection, management: ManagementApi | None = None
                 ) -> None:
        self.connection = connection
        self.management = management
        self._channel: Any = None

    def _channel_for_use(self) -> Any:
        channel = self._channel
        if channel is not None and not getattr(channel, "is_open", True):
            self._discard_channel()
            channel = None
        if channel is None:
            channel = self._channel = self.connection.channel()
        return channel

    def _discard_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            try:
                channel.close()
            except Exception as exc:  # the broker already closed it
                log.debug("amqp channel close error=%s", type(exc).__name__)

    def declare(self, queue: str) -> QueueState | None:
        """Passive-declare ``queue``: its state, or ``None`` when it does not exist.

        Raises:
            ChannelError: another channel-level refusal (e.g. 403 ACCESS_REFUSED); the channel
                is replaced before the next call.
            connection errors (``connection.connection_errors``): the broker went away.

        """
        channel = self._channel_for_use()
        try:
            ok = channel.queue_declare(queue=queue, passive=True)
        except self.connection.channel_errors as exc:
            if not getattr(self._channel, "is_open", False):
                self._discard_channel()
            if is_not_found(exc):
                return None
            raise
        return parse_declare_ok(queue, ok)

    def read(self, queues: Sequence[str], sent_time: SentTime | None = None
             ) -> dict[str, QueueState]:
        """States of the queues that exist; absent queues are left out. ``sent_time`` is
        accepted for symmetry with the Redis reader and unused (AMQP cannot peek).

        A queue refused for another channel-level reason is logged and left out; the others
        are still read.

        Raises:
            connection errors: the broker went away (the caller closes and retries later).

        """
        states: dict[str, QueueState] = {}
        for queue in queues:
            try:
                state = self.declare(queue)
            except self.connection.channel_errors as exc:
                log.warning("queue declare refused queue=%s error=%s", queue, exc)
                continue
            if state is None:
                log.debug("queue absent queue=%s", queue)
            else:
                states[queue] = state
        return states

    def find_queues(self) -> set[str]:
        """The vhost's queues, from the management API; none without one (the poller reads
        them and shows those holding messages).

        Raises:
            OSError, ValueError: as :meth:`ManagementApi.queue_names`.

        """
        if self.management is None:
            return set()
        return self.management.queue_names()

    def close(self) -> None:
        """Close the channel and release the connection; the next read connects again."""
        self._discard_channel()
        try:
            self.connection.release()
        except Exception as exc:  # closing a broken connection may fail; nothing to do
            log.debug("amqp queue reader close error=%s", type(exc).__name__)
