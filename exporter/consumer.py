"""The event consumer thread: Celery events from the broker into the model.

It consumes the exporter's own event queue through Celery's :class:`EventReceiver` (same queue,
exchange and bindings as Flower or ``celery events``), decodes each message with kombu, and hands
the event dicts to :meth:`Model.process_many`. It never gives up: a lost broker connection is
re-established with kombu's capped backoff (``ensure_connection``: 1 s, then +2 s per attempt,
at most ``--reconnect-max-interval``), an undecodable message is counted and skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.events.receiver import EventReceiver
from kombu import Connection
from kombu.exceptions import ContentDisallowed
from kombu.utils.url import maybe_sanitize_url

from .model import Model

log = logging.getLogger(__name__)


class _Stopping(Exception):
    """Raised inside kombu's retry loop to leave it when the consumer is asked to stop."""


class _Receiver(EventReceiver):
    """Celery's receiver, with per-message error isolation and connection bookkeeping."""

    def __init__(self, connection: Connection, *, model: Model, consumer: EventConsumer,
                 **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self.model = model
        self.owner = consumer
        self.connections = 0

    def get_consumers(self, Consumer: Any, channel: Any) -> list[Any]:  # noqa: N803 (kombu API)
        return [Consumer(queues=[self.queue], callbacks=[self._receive], no_ack=True,
                         accept=self.accept, on_decode_error=self.on_decode_error)]

    def _receive(self, body: Any, message: Any) -> None:
        # Celery >= 4 may send a list of events in one message (buffered dispatchers).
        self.model.process_many(body if isinstance(body, list) else (body,))

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        reason = "content_disallowed" if isinstance(exc, ContentDisallowed) else "decode_error"
        self.model.count_malformed(reason)
        log.warning("event skipped reason=%s content_type=%s error=%s",
                    reason, message.content_type, type(exc).__name__)

    @contextmanager
    def establish_connection(self) -> Iterator[Connection]:
        with self.create_connection() as conn:
            conn.ensure_connection(
                self.on_connection_error, None,
                interval_start=1, interval_step=2,
                interval_max=self.owner.reconnect_max_interval,
                callback=self._check_stopping,
            )
            yield conn

    def _check_stopping(self) -> None:
        if self.should_stop:
            raise _Stopping()

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        self.model.set_broker_connected(False)
        log.warning("broker unreachable error=%s retry_in=%.0fs", type(exc).__name__, interval)
        self._check_stopping()

    def on_connection_revived(self) -> None:
        self.connections += 1

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any,
                         **kwargs: Any) -> None:
        self.model.set_broker_connected(True, reconnected=self.connections > 1)
        log.info("consuming events broker=%s reconnect=%s",
                 maybe_sanitize_url(connection.as_uri()), self.connections > 1)
        super().on_consume_ready(connection, channel, consumers, **kwargs)


class EventConsumer(threading.Thread):
    """Daemon thread that consumes Celery events into ``model`` until :meth:`stop`.

    Args:
        app: Celery app whose ``broker_url``/``broker_transport_options``/``event_queue_ttl``
            /``event_queue_expires`` say where and how to consume.
        model: receives every event (:meth:`Model.process_many`) and the connection state.
        accept: content types accepted for event messages (others are counted as
            ``content_disallowed``).
        reconnect_max_interval: the longest wait between two connection attempts, seconds.

    """

    def __init__(self, app: Celery, model: Model, *, accept: tuple[str, ...],
                 reconnect_max_interval: float) -> None:
        super().__init__(name="event-consumer", daemon=True)
        self.app = app
        self.model = model
        self.accept = accept
        self.reconnect_max_interval = reconnect_max_interval
        self._stopping = threading.Event()
        self._receiver: _Receiver | None = None

    def run(self) -> None:
        """Consume until stopped; every error leads to a reconnect, never to an exit."""
        with self.app.connection_for_read() as conn:
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
                except _Stopping:
                    break
                except errors as exc:
                    self.model.set_broker_connected(False)
                    log.warning("broker connection lost error=%s", type(exc).__name__)
                except Exception:
                    # A bug must not end event consumption: log it, back off, consume again.
                    self.model.set_broker_connected(False)
                    log.exception("event consumer error; reconnecting")
                    self._stopping.wait(1.0)
        self.model.set_broker_connected(False)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds for it."""
        self._stopping.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        if self.is_alive():
            self.join(timeout)
