"""The broker side of the actions: send a task, revoke, ask workers, peek at queues, read the
result backend. :class:`Broker` is what the services need; :class:`CeleryBroker` does it with
a Celery app of the exporter's own (:func:`make_action_app`), so tests can pass a fake.

Every method turns an unreachable broker or backend into
:class:`~actions.errors.BrokerUnavailable` (503) and a broker's refusal into
:class:`~actions.errors.BrokerRefused` (409) with the broker's reason
(:func:`~actions.errors.broker_errors`).

A retry declares nothing: it publishes to the default exchange (``""``) with the queue's name
as routing key, which delivers to that queue whatever arguments it was declared with
(``x-max-priority``, ``x-queue-type=quorum``, …). Declaring it again with other arguments — what
``send_task(queue=name)`` does — makes RabbitMQ close the channel with ``406
PRECONDITION_FAILED - inequivalent arg``. On RabbitMQ, :meth:`CeleryBroker.check_queue` asks
(passive declare) whether the queue exists, since a message published to a queue that does not
exist is dropped without an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import kombu.exceptions
from celery import Celery

from actions.errors import NotEligible, NotSupported, broker_errors
from exporter.celery_app import exporter_app
from exporter.config import Settings
from exporter.poll.amqp_queues import AmqpQueueReader
from exporter.poll.inspect_replies import parse_stats
from exporter.poll.redis_queues import PendingMessage, RedisQueueReader

log = logging.getLogger(__name__)

#: Publishing a retry gives up after about 1.5 s of broker trouble (503), not Celery's 3+ s.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5,
                        "interval_max": 1}


@dataclass(frozen=True)
class Outgoing:
    """One message to send by task name: ``args`` list, ``kwargs`` dict; ``queue``,
    ``routing_key``, ``exchange`` (``None``: the queue's), ``priority`` (``None``: default).
    """

    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None
    routing_key: str | None
    exchange: str | None
    priority: int | None


@dataclass(frozen=True)
class QueueCheck:
    """What the broker said of a queue (RabbitMQ: a passive ``queue.declare``): whether it
    ``exists``, its ready ``messages`` and ``consumers`` (``None`` when it does not exist), and
    ``vhost``: the virtual host asked.
    """

    queue: str
    exists: bool
    messages: int | None
    consumers: int | None
    vhost: str


@dataclass(frozen=True)
class RevokeReplies:
    """The workers' replies to a ``revoke`` broadcast, waited for ``waited`` seconds.

    ``acknowledged``: workers that replied ``ok`` (they keep the id as revoked);
    ``terminated``: those of them that replied ``terminate: <id>`` — they held the task and
    signalled its process (or will when it starts); ``refused``: ``{worker: error reply}``
    (e.g. a threads pool's ``NotImplementedError``). Each sorted by worker name.
    """

    acknowledged: tuple[str, ...]
    terminated: tuple[str, ...]
    refused: Mapping[str, str]
    waited: float


#: What a worker replies to ``revoke(terminate=True)`` when it does not hold the task
#: (celery/worker/control.py ``_revoke``).
TERMINATE_UNKNOWN = "terminate: tasks unknown"


def parse_revoke_replies(replies: Any, waited: float) -> RevokeReplies:
    """Parse ``app.control.revoke(..., reply=True)``: a list of ``{hostname: {"ok": text}}``
    or ``{hostname: {"error": text}}``; anything of another shape is left out.
    """
    acknowledged: set[str] = set()
    terminated: set[str] = set()
    refused: dict[str, str] = {}
    for reply in replies if isinstance(replies, list) else ():
        for hostname, answer in (reply.items() if isinstance(reply, Mapping) else ()):
            if not isinstance(hostname, str) or not isinstance(answer, Mapping):
                continue
            if "error" in answer:
                refused[hostname] = str(answer["error"])
            elif isinstance(answer.get("ok"), str):
                acknowledged.add(hostname)
                text = answer["ok"]
                if text.startswith("terminate: ") and text != TERMINATE_UNKNOWN:
                    terminated.add(hostname)
    return RevokeReplies(tuple(sorted(acknowledged)), tuple(sorted(terminated)),
                         dict(sorted(refused.items())), waited)


@dataclass(frozen=True)
class HeldTask:
    """A task a worker holds now (``inspect query_task``): ``where`` is ``active`` (running),
    ``reserved`` (prefetched) or ``scheduled`` (waiting for its ETA).
    """

    hostname: str
    where: str
    name: str | None


#: The ``inspect`` broadcasts the services make to list what the workers hold.
InspectCall = Literal["active", "scheduled"]


class Broker(Protocol):
    """What the action services do with the broker and the result backend."""

    def send(self, message: Outgoing, task_id: str) -> None:
        """Publish ``message`` as task ``task_id``, declaring nothing."""

    def check_queue(self, queue: str) -> QueueCheck | None:
        """Ask the broker about ``queue``; ``None`` when this broker cannot tell."""

    def revoke(self, task_id: str, *, terminate: bool, signal: str | None,
               workers: int | None) -> RevokeReplies:
        """Broadcast ``revoke`` to the workers and collect their replies (``workers``: how
        many to wait for; ``None``: wait the whole timeout).
        """

    def worker_pool(self, hostname: str) -> str | None:
        """The pool (``-P`` name) ``hostname`` reports, ``None`` if it does not answer."""

    def find_held(self, task_id: str, workers: int | None) -> HeldTask | None:
        """Which worker holds ``task_id`` now (``workers``: how many replies to wait for)."""

    def pending(self, queue: str, offset: int, limit: int) -> list[PendingMessage]:
        """Waiting messages of ``queue`` in consumption order, not consumed."""

    def inspect(self, call: InspectCall, workers: int | None) -> Mapping[str, Any]:
        """Broadcast ``inspect <call>``: the replies by worker (``workers``: how many to wait
        for; ``None``: wait the whole timeout).
        """

    def stored_meta(self, task_id: str) -> Mapping[str, Any] | None:
        """The result backend's meta of ``task_id``; ``None`` when there is no backend."""

    @property
    def has_result_backend(self) -> bool:
        """Whether :meth:`stored_meta` can say anything."""


def make_action_app(settings: Settings) -> Celery:
    """The Celery app the actions send and revoke with (not the event consumer's: it sends
    ``task-sent`` events, so retries show up like any task).

    It has no result backend: nothing here waits for a retry's result, and with one Celery's
    Redis backend subscribes to the result of every task sent — with the backend down, each
    send retried for about 20 s and ended in a CRITICAL "must be restarted". The stored
    arguments are read through :func:`make_results_app`.

    On RabbitMQ it publishes with confirms (``confirm_publish``): a message the broker does not
    enqueue (a queue full with ``x-overflow reject-publish``) is nacked, and the action says
    so instead of claiming a retry that never reached the queue.
    """
    app = exporter_app(settings, "celery-jobmon-actions", task_send_sent_event=True,
                       task_publish_retry_policy=PUBLISH_RETRY_POLICY,
                       broker_connection_timeout=4)
    with app.connection_for_write() as connection:  # not connected: the URL's transport
        amqp = connection.transport.driver_type == "amqp"
    if amqp:
        app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                             "confirm_publish": True}
    return app


def make_results_app(settings: Settings) -> Celery | None:
    """The Celery app that reads ``--result-backend`` for the actions (short timeouts, see
    :func:`~exporter.celery_app.exporter_app`); ``None`` without a result backend.
    """
    if not settings.result_backend:
        return None
    return exporter_app(settings, "celery-jobmon-results", result_backend=True)


class CeleryBroker:
    """:class:`Broker` over a Celery app; ``inspect_timeout``: seconds to wait for workers;
    ``results``: the app reading the result backend (:func:`make_results_app`; ``None``: no
    backend, even when ``$CELERY_RESULT_BACKEND`` is set).
    """

    def __init__(self, app: Celery, inspect_timeout: float, results: Celery | None = None
                 ) -> None:
        self.app = app
        self.inspect_timeout = inspect_timeout
        self.results = results

    @property
    def has_result_backend(self) -> bool:
        """``--result-backend`` was given."""
        return self.results is not None

    def send(self, message: Outgoing, task_id: str) -> None:
        """``app.send_task`` by name to ``message.exchange`` (``None``: the default exchange
        ``""``) and ``message.routing_key`` (default: the queue's name), with ``declare=[]``:
        no queue or exchange is declared, so a queue declared with arguments is used as it is.

        Raises:
            BrokerUnavailable: the broker did not take the message.
            BrokerRefused: the broker refused it (its reason in ``broker_reason``).
            NotEligible: the arguments cannot be serialised (``not-serialisable``).

        """
        options: dict[str, Any] = {
            "exchange": message.exchange or "",
            "routing_key": message.routing_key or message.queue,
            "declare": [],
        }
        if message.priority is not None:
            options["priority"] = message.priority
        try:
            with broker_errors():
                self.app.send_task(message.task_name, args=message.args, kwargs=message.kwargs,
                                   task_id=task_id, queue=message.queue, **options)
        except kombu.exceptions.EncodeError as exc:
            raise NotEligible(f"the arguments cannot be serialised: {exc}",
                              reason="not-serialisable") from exc

    def check_queue(self, queue: str) -> QueueCheck | None:
        """RabbitMQ: a passive declare of ``queue`` (creates nothing; see
        :class:`~exporter.poll.amqp_queues.AmqpQueueReader`). Other brokers: ``None`` — a
        Redis queue is a list that the first message creates, so an empty queue and a missing
        one look the same.

        Raises:
            BrokerUnavailable: the broker did not answer.
            BrokerRefused: another channel-level refusal (e.g. 403 ACCESS_REFUSED).

        """
        # A connection of the app's pool (the one send_task publishes on): a bulk retry checks
        # one queue per execution, without a connection handshake each time.
        connection = self.app.pool.acquire(block=True)
        if connection.transport.driver_type != "amqp":
            connection.release()
            return None
        vhost = str(connection.virtual_host)
        reader = AmqpQueueReader(connection)
        try:
            with broker_errors():
                state = reader.declare(queue)
        finally:
            reader.close()  # closes its channel, returns the connection to the pool
        if state is None:
            return QueueCheck(queue, exists=False, messages=None, consumers=None, vhost=vhost)
        return QueueCheck(queue, exists=True, messages=sum(state.lengths.values()),
                          consumers=state.consumers, vhost=vhost)

    def revoke(self, task_id: str, *, terminate: bool, signal: str | None,
               workers: int | None) -> RevokeReplies:
        """``app.control.revoke`` with ``reply=True``: a broadcast to the workers online now,
        returning as soon as ``workers`` replied, else after the inspect timeout. A worker
        busy in a solo pool replies only after its task, so not in time.

        Raises:
            BrokerUnavailable: the broker did not take the broadcast.
            BrokerRefused: the broker refused it.

        """
        options: dict[str, Any] = {"terminate": True, "signal": signal or "SIGTERM"} \
            if terminate else {}
        with broker_errors():
            replies = self.app.control.revoke(task_id, reply=True, timeout=self.inspect_timeout,
                                              limit=workers or None, **options)
        return parse_revoke_replies(replies, self.inspect_timeout)

    def worker_pool(self, hostname: str) -> str | None:
        """``inspect stats`` of ``hostname`` alone (for the command line, which has no poll
        snapshot): its pool's ``-P`` name, ``None`` when it does not answer in time.

        Raises:
            BrokerUnavailable: the broker did not answer.

        """
        with broker_errors():
            reply = self.app.control.inspect(timeout=self.inspect_timeout,
                                             destination=[hostname], limit=1).stats()
        stats = parse_stats(reply).get(hostname)
        return stats.pool if stats is not None else None

    def inspect(self, call: InspectCall, workers: int | None) -> Mapping[str, Any]:
        """``inspect active`` or ``inspect scheduled``: ``{hostname: reply payload}``, as soon
        as ``workers`` replied, else after the inspect timeout (``{}``: nobody answered).

        Raises:
            BrokerUnavailable: the broker did not answer.

        """
        with broker_errors():
            inspector = self.app.control.inspect(timeout=self.inspect_timeout,
                                                 limit=workers or None)
            reply = inspector.active() if call == "active" else inspector.scheduled()
        return reply or {}

    def find_held(self, task_id: str, workers: int | None) -> HeldTask | None:
        """``inspect query_task``: returns as soon as ``workers`` replied, else after the
        inspect timeout.

        Raises:
            BrokerUnavailable: the broker did not answer.

        """
        with broker_errors():
            replies = self.app.control.inspect(
                timeout=self.inspect_timeout, limit=workers or None).query_task(task_id)
        for hostname, tasks in sorted((replies or {}).items()):
            entry = tasks.get(task_id) if isinstance(tasks, Mapping) else None
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] != "ready":
                info = entry[1] if isinstance(entry[1], Mapping) else {}
                name = info.get("name")
                return HeldTask(hostname, str(entry[0]), name if isinstance(name, str) else None)
        return None

    def pending(self, queue: str, offset: int, limit: int) -> list[PendingMessage]:
        """Peek at a Redis queue (:meth:`RedisQueueReader.pending_messages`).

        Raises:
            NotSupported: the broker is not Redis (RabbitMQ cannot show messages without
                taking them).
            BrokerUnavailable: Redis did not answer.

        """
        connection = self.app.connection_for_read()
        try:
            if connection.transport.driver_type != "redis":
                raise NotSupported(
                    f"waiting messages can be listed on Redis brokers only; this broker is "
                    f"{connection.transport.driver_type} (AMQP has no way to read a message "
                    "without taking it; use the RabbitMQ management UI)")
            reader = RedisQueueReader(connection)
            with broker_errors():
                return reader.pending_messages(queue, offset, limit)
        finally:
            connection.release()

    def stored_meta(self, task_id: str) -> Mapping[str, Any] | None:
        """``backend.get_task_meta`` (one read, not cached); ``None`` without a backend.

        Raises:
            BrokerUnavailable: the backend did not answer.

        """
        if self.results is None:
            return None
        with broker_errors("result backend"):
            meta: Mapping[str, Any] = self.results.backend.get_task_meta(task_id, cache=False)
        return meta
