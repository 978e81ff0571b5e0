"""The event consumer thread: Celery events from the broker into the model.

Three paths, one behaviour:

- **Redis fast path** (``redis://``/``rediss://`` with the default topic layout): subscribe to
  kombu's event topic with redis-py, read payloads in batches, decode them with
  :mod:`exporter.events.redis_stream`, and hand each batch to :meth:`Model.process_many` (one lock
  acquisition per batch). Reconnects back off exponentially (1 s, 2 s, 4 s … at most
  ``--reconnect-max-interval``); :meth:`EventConsumer.stop` interrupts the wait.
- **RabbitMQ fast path** (``amqp://``/``pyamqp://`` without TLS, see
  :mod:`exporter.events.amqp_stream`): the event queue Celery's receiver would declare,
  consumed with pika, messages read in batches and decoded like the Redis fast path's bodies;
  same reconnects and gap accounting as the Redis fast path. By default pika runs in a child
  process (:mod:`exporter.events.amqp_reader`, ``--amqp-reader process``): the frames are
  parsed off this thread's GIL, and the thread only decodes and applies the batches.
- **kombu path** (what the fast paths do not cover: Sentinel, TLS on RabbitMQ, others):
  Celery's :class:`EventReceiver` (same queue, exchange and bindings as Flower or
  ``celery events``); plain JSON bodies are decoded
  without kombu's per-message decoder set-up (:func:`decode_message`), the rest by kombu.
  Reconnects use kombu's capped backoff
  (``ensure_connection``: 1 s, then +2 s per attempt, at most ``--reconnect-max-interval``).

It never gives up and never exits on a broker error; an undecodable message is counted and
skipped. Losing a connection that was consuming is counted as an event gap: what the broker
published meanwhile is lost (Redis pub/sub keeps nothing; the exporter's RabbitMQ queue is
deleted with its last consumer); the warning logged then says so. Between messages (at least
once a second) the consumer calls :meth:`Model.tick`, so that time-driven state (tasks lost with
a worker that went away) moves on when no event arrives.

Why one module of this size: the three paths are one thread's alternatives and share its
reconnect loop, gap accounting, batching into the model and stop handling; the transports
themselves live apart (:mod:`~exporter.events.redis_stream`, :mod:`~exporter.events.amqp_stream`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika
import redis
from celery import Celery
from celery.events.receiver import EventReceiver
from kombu import Connection
from kombu.exceptions import ContentDisallowed

from exporter.events.amqp_reader import AmqpReaderProcess
from exporter.events.amqp_stream import (
    STREAM_ERRORS,
    AmqpEventStream,
    Delivered,
    amqp_parameters,
    event_queue,
)
from exporter.events.redis_stream import (
    RedisEventStream,
    accept_content,
    decode_body,
    decode_payload,
    fanout_pattern,
    redis_params,
)
from exporter.logs import Throttled, describe, tls_problem
from exporter.secrets import mask_url
from exporter.state.health import Health
from exporter.state.model import Model

log = logging.getLogger(__name__)

#: The warning logged when a consuming connection is lost (with the error class).
LOST_MESSAGE = ("broker connection lost error=%s; events published until the reconnect are "
                "lost (celery_jobmon_event_gaps_total)%s")
_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)
_REDIS_HINT = ("; Redis also closes a pub/sub client that reads too slowly "
               "(client-output-buffer-limit pubsub)")
#: Seconds between two probes of a broker that does not answer, during a reconnect wait.
PROBE_INTERVAL = 1.0


_JSON = "application/json"


def decode_message(message: Any, json_accepted: bool) -> Any:
    """The body of a kombu ``message``, exactly as kombu's ``message.decode()`` gives it.

    Plain JSON (``application/json`` accepted; the body a ``str`` — py-amqp decoded it by its
    content encoding — or UTF-8 bytes; no kombu ``__type__`` marker) is decoded with the
    standard library's shared decoder: kombu's own JSON decoding builds a decoder with an
    ``object_hook`` per message, which only acts on ``__type__`` objects. Everything else
    (kombu's typed JSON, bad JSON, other serializers, content types not accepted) goes
    through ``message.decode()``.

    Raises:
        kombu.exceptions.ContentDisallowed: the content type is not accepted.
        Exception: anything else undecodable (kombu's ``DecodeError``).

    """
    body = message.body
    if json_accepted and message.content_type == _JSON:
        if isinstance(body, str):
            plain = '"__type__"' not in body
        else:
            plain = message.content_encoding == "utf-8" and b'"__type__"' not in body
        if plain:
            try:
                return json.loads(body)
            except ValueError:
                pass  # kombu raises its own error for it
    return message.decode()


class _Stopping(Exception):
    """Raised inside kombu's retry loop to leave it when the consumer is asked to stop."""


class _Receiver(EventReceiver):
    """Celery's receiver, with per-message error isolation; connection bookkeeping is the
    owning :class:`EventConsumer`'s.
    """

    def __init__(self, connection: Connection, *, model: Model, consumer: EventConsumer,
                 **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.model = model
        self.owner = consumer
        self._json_accepted = _JSON in accept_content(self.accept)

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Any]:  # noqa: N803 (kombu API)
        # on_message: kombu hands over the message undecoded (decode_message does it).
        return [Consumer(queues=[self.queue], on_message=self._on_message, no_ack=True,
                         accept=self.accept, on_decode_error=self.on_decode_error)]

    def on_iteration(self) -> None:
        """Called by kombu's consume loop at least once a second: the model's housekeeping."""
        self.model.tick()

    def _on_message(self, message: Any) -> None:
        try:
            body = decode_message(message, self._json_accepted)
        except Exception as exc:
            self.owner.count_undecodable(exc)
            return
        # Celery >= 4 may send a list of events in one message (buffered dispatchers).
        self.owner.apply(body if isinstance(body, list) else [body])

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self.owner.count_undecodable(exc)

    @contextmanager
    def establish_connection(self) -> Iterator[Connection]:
        with self.create_connection() as conn:
            self.owner.ensure_connection(conn)
            yield conn

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        self.owner.on_connection_error(exc, interval)

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any,
                         **kwargs: Any) -> None:
        self.owner.on_consume_ready(connection.as_uri())
        super().on_consume_ready(connection, channel, consumers, **kwargs)


class EventConsumer(threading.Thread):
    """Daemon thread that consumes Celery events into ``model`` until :meth:`stop`.

    Args:
        app: Celery app whose ``broker_url``/``broker_transport_options``/``event_queue_ttl``
            /``event_queue_expires`` say where and how to consume.
        model: receives every event (:meth:`Model.process_many`).
        health: receives the connection state and the time spent applying each batch.
        accept: content types accepted for event messages (others are counted as
            ``content_disallowed``).
        reconnect_max_interval: the longest wait between two connection attempts, seconds.
        redis_fast_path: use the Redis fast path where :func:`fanout_pattern` allows it.
        amqp_fast_path: use the RabbitMQ fast path where :func:`amqp_parameters` allows it.
        amqp_reader: where the fast path's pika reads: ``process`` (a child process,
            :class:`~exporter.events.amqp_reader.AmqpReaderProcess`) or ``thread`` (this one).
        batch_size: most payloads read and processed together on the fast path.

    """

    def __init__(self, app: Celery, model: Model, health: Health, *, accept: tuple[str, ...],
                 reconnect_max_interval: float, redis_fast_path: bool = True,
                 amqp_fast_path: bool = True, amqp_reader: str = "process",
                 batch_size: int = 1000) -> None:
        super().__init__(name="event-consumer", daemon=True)
        self.app = app
        self.model = model
        self.health = health
        self.accept = accept
        self.reconnect_max_interval = reconnect_max_interval
        self.batch_size = batch_size
        self.amqp_reader = amqp_reader
        self._stopping = threading.Event()
        self._throttled = Throttled(log)
        self._receiver: _Receiver | None = None
        self._reader: AmqpReaderProcess | None = None
        self._connected_once = False
        url = app.conf.broker_read_url
        self.fast_path_pattern = fanout_pattern(
            url, app.conf.broker_transport_options or {}, app.conf.event_exchange,
        ) if redis_fast_path else None
        self.amqp_params: pika.ConnectionParameters | None = None
        if amqp_fast_path and not self.fast_path_pattern:
            with app.connection_for_read() as conn:  # nothing is opened: only read
                self.amqp_params = amqp_parameters(conn, url,
                                                   app.conf.broker_transport_options or {})

    @property
    def path(self) -> str:
        """``redis`` or ``amqp`` when a fast path is used, else ``kombu``."""
        if self.fast_path_pattern:
            return "redis"
        return "amqp" if self.amqp_params else "kombu"

    def apply(self, events: list[Any]) -> None:
        """Apply one batch of decoded events to the model and count the batch and the wall
        time it took (lock waits included) in the health.
        """
        started = time.perf_counter()
        self.model.process_many(events)
        self.health.record_batch(time.perf_counter() - started)

    def count_undecodable(self, exc: Exception) -> None:
        """Count a message that could not be decoded (``content_disallowed`` when its content
        type is not accepted, else ``decode_error``), report it to the health (``/readyz``
        shows it) and log it — without its body, at most once per reason every 5 minutes
        (a worker sending every event in a refused serializer would log one line per event).
        """
        if isinstance(exc, ContentDisallowed):
            reason = "content_disallowed"
            detail = (f"{describe(exc)}: workers send events in a content type not in "
                      f"--accept-content (JOBMON_ACCEPT_CONTENT, now {','.join(self.accept)});"
                      " set the workers' event_serializer to json, or add the type to "
                      "--accept-content if you trust every producer (pickle runs code)")
        else:
            reason, detail = "decode_error", f"{describe(exc)}: an event message could not be " \
                "decoded (a foreign publisher on the event exchange, or a broken serializer)"
        self.model.count_malformed(reason)
        self.health.report_problem(reason, detail)
        self._throttled.log(logging.WARNING, reason, "event skipped reason=%s: %s", reason,
                            detail)

    def ensure_connection(self, conn: Connection) -> None:
        """Block until ``conn`` is connected, with kombu's capped backoff.

        Raises:
            _Stopping: :meth:`stop` was called while waiting.

        """
        conn.ensure_connection(
            self.on_connection_error, None,
            interval_start=1, interval_step=2, interval_max=self.reconnect_max_interval,
            callback=self._check_stopping,
        )

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise _Stopping()

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        """Before each wait for a reconnect: mark disconnected, log, leave if stopping.

        A TLS failure (:func:`~exporter.logs.tls_problem`: the broker's certificate is not
        trusted, or no TLS at all) does not go away by retrying: it is logged once every 5
        minutes, naming the certificate problem and the fix, and shown by ``/readyz``
        (condition ``broker_tls``); other errors log a line per attempt.
        """
        self.health.set_broker_connected(False)
        problem = tls_problem(exc)
        if problem is None:
            log.warning("broker unreachable error=%s retry_in=%.0fs", describe(exc), interval)
        else:
            self.health.report_problem("broker_tls", problem)
            self._throttled.log(logging.WARNING, "broker_tls",
                                "broker TLS connection failed: %s", problem)
        self._check_stopping()

    def on_consume_ready(self, broker: str) -> None:
        """Consuming (again): mark connected; every connection after the first is a
        reconnect.
        """
        reconnected, self._connected_once = self._connected_once, True
        self.health.set_broker_connected(True, reconnected=reconnected)
        log.info("consuming events broker=%s reconnect=%s",
                 mask_url(broker), reconnected)

    def run(self) -> None:
        """Consume until stopped; every error leads to a reconnect, never to an exit."""
        if self.path == "amqp":
            log.info("event consumer path=amqp reader=%s", self.amqp_reader)
        else:
            log.info("event consumer path=%s", self.path)
        errors = 0
        while not self._stopping.is_set():
            try:
                if self.fast_path_pattern:
                    self._consume_redis(self.fast_path_pattern)
                elif self.amqp_params:
                    self._consume_amqp(self.amqp_params)
                else:
                    self._consume()
            except _Stopping:
                break
            except Exception:
                # A bug must not end event consumption: log it, pause (1 s, 2 s, 4 s … at
                # most --reconnect-max-interval), consume again.
                self.health.set_broker_connected(False)
                delay = min(self.reconnect_max_interval, 2.0 ** min(errors, 30))
                errors += 1
                log.exception("event consumer error; reconnecting retry_in=%.0fs", delay)
                self._stopping.wait(delay)
        self.health.set_broker_connected(False)

    def _consume(self) -> None:
        with self.app.connection_for_read() as conn:
            # The receiver opens a channel when it is built: connect first, with backoff.
            self.ensure_connection(conn)
            receiver = self._receiver = _Receiver(
                conn, model=self.model, consumer=self, app=self.app, accept=set(self.accept),
            )
            if self._stopping.is_set():
                receiver.should_stop = True
            errors = conn.connection_errors + conn.channel_errors
            while not receiver.should_stop:
                try:
                    if receiver.restart_limit.can_consume(1):
                        for _ in receiver.consume(limit=None):
                            pass
                    else:
                        self._stopping.wait(receiver.restart_limit.expected_time(1))
                except errors as exc:
                    self.health.set_broker_connected(False)
                    log.warning(LOST_MESSAGE, type(exc).__name__, "")

    def _consume_redis(self, pattern: str) -> None:
        with self.app.connection_for_read() as conn:
            stream = RedisEventStream(redis_params(conn), pattern)
        accept = accept_content(self.accept)
        try:
            while not self._stopping.is_set():
                self._connect_stream(stream, _REDIS_ERRORS)
                self.on_consume_ready(self.app.conf.broker_read_url)
                self._wakeup_workers()
                try:
                    while not self._stopping.is_set():
                        payloads = stream.read_batch(self.batch_size, timeout=1.0)
                        if payloads:
                            self._process_payloads(payloads, accept)
                        else:
                            self.model.tick()
                except _REDIS_ERRORS as exc:
                    self.health.set_broker_connected(False)
                    log.warning(LOST_MESSAGE, type(exc).__name__, _REDIS_HINT)
        finally:
            stream.close()

    def _consume_amqp(self, params: pika.ConnectionParameters) -> None:
        # One queue name for the consumer's life, as Celery's receiver keeps its node id.
        stream: AmqpEventStream | AmqpReaderProcess
        if self.amqp_reader == "process":
            stream = self._reader = AmqpReaderProcess(params, event_queue(self.app))
        else:
            stream = AmqpEventStream(params, event_queue(self.app))
        accept = accept_content(self.accept)
        try:
            while not self._stopping.is_set():
                self._connect_stream(stream, STREAM_ERRORS)
                self.on_consume_ready(self.app.conf.broker_read_url)
                self._wakeup_workers()
                try:
                    while not self._stopping.is_set():
                        delivered = stream.read_batch(timeout=1.0)
                        if delivered:
                            self._process_messages(delivered, accept)
                        else:
                            self.model.tick()
                except STREAM_ERRORS as exc:
                    self.health.set_broker_connected(False)
                    log.warning(LOST_MESSAGE, type(exc).__name__, "")
        finally:
            stream.close()

    def _connect_stream(self, stream: RedisEventStream | AmqpEventStream | AmqpReaderProcess,
                        errors: tuple[type[Exception], ...]) -> None:
        """Connect and subscribe ``stream`` (a fast path's), retrying on ``errors`` with
        capped exponential backoff: 1 s, 2 s, 4 s … at most ``reconnect_max_interval`` (each
        wait logged with its length).

        Raises:
            _Stopping: :meth:`stop` was called (the wait is interrupted at once).

        """
        failures = 0
        while True:
            self._check_stopping()
            try:
                stream.connect()
                return
            except errors as exc:
                failures += 1
                delay = min(self.reconnect_max_interval, 2.0 ** min(failures - 1, 30))
                self.on_connection_error(exc, delay)
                self._wait_to_reconnect(delay, exc, getattr(stream, "answers", None))

    def _wait_to_reconnect(self, delay: float, exc: BaseException,
                           answers: Callable[[], bool] | None) -> None:
        """Wait ``delay`` seconds before the next connection attempt, or until :meth:`stop`.

        When the broker did not answer at all (refused, timed out) and the stream can probe it
        (``answers``: its port accepts a connection), the wait ends as soon as it answers
        (probed every :data:`PROBE_INTERVAL`): the reconnect follows a restarted broker within
        about a second instead of at the end of a long backoff wait (a 16 s Redis outage was
        followed by 14.7 s of waiting). A broker that answers but refuses (TLS, authentication)
        is tried again after the full wait.
        """
        if answers is None or tls_problem(exc) is not None \
                or isinstance(exc, redis.AuthenticationError):
            self._stopping.wait(delay)
            return
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping.wait(min(PROBE_INTERVAL, left)) or answers():
                return

    def _process_payloads(self, payloads: list[bytes], accept: frozenset[str]) -> None:
        events: list[Any] = []
        for payload in payloads:
            try:
                events.extend(decode_payload(payload, accept))
            except Exception as exc:
                self.count_undecodable(exc)
        if events:
            self.apply(events)

    def _process_messages(self, delivered: list[Delivered], accept: frozenset[str]) -> None:
        events: list[Any] = []
        for body, content_type, content_encoding, compression in delivered:
            try:
                events.extend(decode_body(body, content_type, content_encoding, compression,
                                          accept))
            except Exception as exc:
                self.count_undecodable(exc)
        if events:
            self.apply(events)

    def _wakeup_workers(self) -> None:
        """Ask workers for a heartbeat now (as Celery's receiver does) so workers show up."""
        try:
            self.app.control.broadcast("heartbeat")
        except Exception as exc:
            log.warning("heartbeat broadcast failed error=%s", type(exc).__name__)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it; then kill the AMQP
        reader process if the thread is still busy with it (waiting for a child that
        connects to a broker that does not answer, say), so that no child outlives the
        exporter.
        """
        self._stopping.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        if self.is_alive():
            self.join(timeout)
        if self.is_alive() and self._reader is not None:
            self._reader.kill()
            self.join(1.0)
