"""RabbitMQ fast path: read Celery events from the exporter's event queue with pika.

Celery's receiver reads events through kombu and py-amqp, which parses each message frame by
frame (three frames and nine ``recv`` calls per event message); pika reads the socket in large
chunks and parses the frames of many messages at once, and the bodies are decoded with
:func:`~exporter.events.redis_stream.decode_body` (orjson for plain JSON, kombu's own
deserialisers for the rest). On the event workload that takes about a third of the CPU per
event of Celery's counting receiver (``benchmarks/amqp_clients.py``).

The queue is declared as Celery's own receiver declares it (:func:`event_queue` builds it with
:class:`celery.events.receiver.EventReceiver` itself): ``<event_queue_prefix>.<node id>``,
auto-delete unless ``event_queue_durable``, ``event_queue_exclusive``, ``x-message-ttl`` and
``x-expires`` from ``event_queue_ttl``/``event_queue_expires``, bound with ``#`` to the
``event_exchange`` topic exchange. Messages are consumed without acknowledgements, as Celery's
receiver does.

Settings this path does not reproduce make :func:`amqp_parameters` return ``None``; the
consumer then uses the kombu path: failover URL lists (``amqp://a;amqp://b``), TLS
(``amqps://``, ``broker_use_ssl``), login methods other than PLAIN/AMQPLAIN, transport options
other than the retry and publish ones in :data:`_NEUTRAL_OPTIONS`, and every other transport
(``librabbitmq://``, Redis, SQS …).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pika
import pika.exceptions
from kombu import Connection, Queue
from kombu.transport.base import to_rabbitmq_queue_arguments
from pika.adapters.utils.connection_workflow import AMQPConnectorException

if TYPE_CHECKING:
    from celery import Celery

#: Transport options that change nothing about how events are consumed.
_NEUTRAL_OPTIONS = frozenset({
    "max_retries", "interval_start", "interval_step", "interval_max", "confirm_publish",
})
_SCHEMES = frozenset({"amqp", "pyamqp"})
_LOGIN_METHODS = frozenset({None, "", "PLAIN", "AMQPLAIN"})

#: A message as read: ``(body, content type, content encoding, compression header)``, what
#: :func:`~exporter.events.redis_stream.decode_body` needs.
Delivered = tuple[bytes, str | None, str | None, str | None]

#: Errors meaning the connection or channel is gone (and with it, an auto-delete queue), or
#: could not be made: pika's own, a socket's, and those of pika's connection workflow that
#: ``BlockingConnection`` raises as they are (a broker that accepts the connection but never
#: answers the AMQP handshake: ``AMQPConnectorStackTimeout``).
STREAM_ERRORS: tuple[type[Exception], ...] = (pika.exceptions.AMQPError, OSError,
                                              AMQPConnectorException)

# pika logs an ERROR for every connection it loses ("Unexpected connection close detected");
# the consumer logs the loss itself, once, with what it means (events lost, a gap counted).
logging.getLogger("pika").setLevel(logging.CRITICAL)


def amqp_parameters(connection: Connection, url: str,
                    options: Mapping[str, Any]) -> pika.ConnectionParameters | None:
    """Parameters for pika connecting where and as kombu's py-amqp transport connects for
    ``connection`` (built from ``url``; nothing is opened here), or ``None`` when the fast path
    does not reproduce the settings (see the module's docstring): then kombu is used.

    Host (default ``localhost``), port (default 5672), vhost (default ``/``), user and password
    (default guest/guest), heartbeat (none on the connection Celery's ``connection_for_read``
    builds, as for its receiver) and the connect timeout (``broker_connection_timeout``, 4 s)
    come from the kombu connection.
    """
    if ";" in url or urlsplit(url).scheme not in _SCHEMES:
        return None
    if set(options) - _NEUTRAL_OPTIONS or connection.ssl:
        return None
    if connection.login_method not in _LOGIN_METHODS:
        return None
    return pika.ConnectionParameters(
        host=connection.hostname or "localhost",
        port=connection.port or 5672,
        virtual_host=connection.virtual_host or "/",
        credentials=pika.PlainCredentials(connection.userid or "guest",
                                          connection.password or "guest"),
        heartbeat=int(connection.heartbeat or 0),
        socket_timeout=connection.connect_timeout or 4.0,
        connection_attempts=1,
        client_properties={"connection_name": "celery-jobmon events"},
    )


def event_queue(app: Celery, node_id: str | None = None) -> Queue:
    """The event queue Celery's own receiver would declare for ``app`` (name
    ``<event_queue_prefix>.<node_id>``, a new id when ``None``; exchange, durability,
    exclusivity, message TTL and expiry from the app's ``event_*`` settings), taken from an
    :class:`EventReceiver` built without a channel (nothing is opened).
    """
    # Imported here: the reader process (exporter.events.amqp_reader) imports this module and
    # needs no Celery (9 MB of its memory).
    from celery.events.receiver import EventReceiver

    receiver = EventReceiver(None, app=app, node_id=node_id or str(uuid.uuid4()))
    return receiver.queue


def queue_arguments(queue: Queue) -> dict[str, Any]:
    """The ``x-*`` arguments kombu's py-amqp transport declares ``queue`` with, e.g.
    ``{"x-message-ttl": 60000, "x-expires": 60000}`` (TTL and expiry in milliseconds).
    """
    q: Any = queue  # kombu sets these attributes from its attrs table: untyped
    return dict(to_rabbitmq_queue_arguments(
        q.queue_arguments or {}, expires=q.expires, message_ttl=q.message_ttl,
        max_length=q.max_length, max_length_bytes=q.max_length_bytes,
        max_priority=q.max_priority,
    ))


class AmqpEventStream:
    """One connection consuming the event queue; reads the messages delivered so far in
    batches.

    Args:
        params: where and how to connect (:func:`amqp_parameters`).
        queue: the event queue and its exchange (:func:`event_queue`).

    Errors (:data:`STREAM_ERRORS`) are not retried here: a lost connection means events were
    lost (the auto-delete queue went with it), so the caller must notice and count it.

    """

    def __init__(self, params: pika.ConnectionParameters, queue: Queue) -> None:
        self.params = params
        self.queue = queue
        self._connection: pika.BlockingConnection | None = None
        self._delivered: list[Delivered] = []
        self._cancelled = False

    def connect(self) -> None:
        """Connect, declare the exchange and the queue as Celery's receiver does, bind it
        and start consuming (no acknowledgements).

        Raises:
            pika.exceptions.AMQPError: connecting, declaring or consuming failed (e.g. a
                queue of the same name declared with other arguments).
            OSError: the socket failed.

        """
        self.close()
        self._cancelled = False
        connection = pika.BlockingConnection(self.params)
        self._connection = connection
        channel = connection.channel()
        queue: Any = self.queue  # kombu's entity attributes are untyped
        exchange = queue.exchange
        assert exchange is not None and queue.name is not None
        channel.exchange_declare(exchange.name, exchange_type=exchange.type,
                                 durable=exchange.durable, auto_delete=exchange.auto_delete,
                                 arguments=exchange.arguments or None)
        channel.queue_declare(queue.name, durable=queue.durable, exclusive=queue.exclusive,
                              auto_delete=queue.auto_delete,
                              arguments=queue_arguments(queue) or None)
        channel.queue_bind(queue.name, exchange.name, routing_key=queue.routing_key)
        channel.add_on_cancel_callback(self._on_cancel)
        channel.basic_consume(queue.name, self._on_message, auto_ack=True)

    def _on_cancel(self, _method: Any) -> None:
        self._cancelled = True

    def _on_message(self, _channel: Any, _method: Any, properties: pika.BasicProperties,
                    body: bytes) -> None:
        headers = properties.headers
        self._delivered.append((body, properties.content_type, properties.content_encoding,
                                headers.get("compression") if headers else None))

    def read_batch(self, timeout: float = 1.0) -> list[Delivered]:
        """The messages delivered now (:data:`Delivered`, in order), waiting up to
        ``timeout`` seconds for the first; ``[]`` when none came. One batch is what pika read
        from the socket at once (many messages when the queue holds a backlog).

        Raises:
            pika.exceptions.ConsumerCancelled: the broker cancelled the consumer
                (``Basic.Cancel``: the event queue was deleted — ``rabbitmqctl delete_queue``,
                the management UI, a policy); raised once what was delivered before it has
                been returned. The connection stays open but nothing more comes: the caller
                must connect again (which declares the queue again).
            pika.exceptions.AMQPError: the connection or the channel was lost.
            OSError: the socket failed.

        """
        connection = self._connection
        if connection is None:
            raise pika.exceptions.ConnectionWrongStateError("not connected")
        if not self._cancelled:
            connection.process_data_events(time_limit=timeout)
        delivered, self._delivered = self._delivered, []
        if self._cancelled and not delivered:
            raise pika.exceptions.ConsumerCancelled(
                "the broker cancelled the event consumer: its queue was deleted")
        return delivered

    def close(self) -> None:
        """Close the connection (idempotent; an already broken one is dropped)."""
        connection, self._connection = self._connection, None
        self._delivered = []
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except STREAM_ERRORS:
                pass
