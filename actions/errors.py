"""Domain errors of the actions: what went wrong, in words a caller can act on.

The services (:mod:`.retry`, :mod:`.cancel`, :mod:`.reads`) raise these and nothing else for
expected failures; :mod:`.problems` turns them into RFC 9457 responses (one table, one place)
and the ``retry``/``cancel``/``tasks`` commands print them. Each class carries its HTTP status
and a problem ``slug`` so that the mapping is data, not if-chains.

Infrastructure errors are translated at the call site with :func:`broker_errors` and
:func:`history_errors`, so a broker or database outage becomes a 503, never a 500, and a broker
that refuses an operation becomes a 409 or 503 with the broker's own words:

==========================================  ==============================================
the broker's answer                         error
==========================================  ==============================================
AMQP channel error (404 NOT_FOUND, 406      :class:`BrokerRefused` (409), ``reason``
PRECONDITION_FAILED, 403 ACCESS_REFUSED,    ``broker-refused``, ``broker_reason`` the reply
405 RESOURCE_LOCKED)                        text: this request cannot succeed as it is
AMQP connection error (320                  :class:`BrokerUnavailable` (503) with the reply
CONNECTION_FORCED, 530 NOT_ALLOWED, …),     text: the broker closed the connection or took
a publish the broker nacked                 nothing; trying again later may work
Redis error reply: OOM, READONLY, LOADING,  :class:`BrokerUnavailable` (503)
BUSY, MASTERDOWN, CLUSTERDOWN, MISCONF,
NOREPLICAS, TRYAGAIN
any other Redis error reply (WRONGTYPE, …)  :class:`BrokerRefused` (409)
unreachable (sockets, kombu                 :class:`BrokerUnavailable` (503)
``OperationalError``, timeouts)
==========================================  ==============================================
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import amqp.exceptions
import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc

from exporter.logs import describe


class ActionError(Exception):
    """Base of the expected failures. ``detail``: one human-readable sentence or two;
    ``extra``: machine-readable members added to the problem document (e.g. ``reason``).
    """

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "error"
    title: ClassVar[str] = "Error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: Mapping[str, Any] = extra


class InvalidParameter(ActionError):
    """A parameter that cannot be used (400)."""

    status, slug, title = 400, "invalid-parameter", "Invalid parameter"


class TaskNotFound(ActionError):
    """The task id is unknown to the history (and to the workers, for cancel) (404)."""

    status, slug, title = 404, "task-not-found", "Unknown task"


class NotEligible(ActionError):
    """The task exists but the action does not apply to it now (409). ``reason`` (in
    ``extra``) is a stable code: ``state``, ``max-manual-retries``, ``arguments-unavailable``,
    ``running``, ``finished``, ``not-serialisable``.
    """

    status, slug, title = 409, "not-eligible", "Task not eligible"


class BrokerRefused(ActionError):
    """The broker answered and refused the operation (409): a queue that does not exist
    (``reason`` ``queue-missing``), or any other refusal (``reason`` ``broker-refused``, with
    ``broker_reason``: the broker's reply text, e.g. ``PRECONDITION_FAILED - inequivalent arg
    'x-max-priority' for queue 'prio' …``). Nothing was sent.
    """

    status, slug, title = 409, "broker-refused", "Broker refused"


class NotSupported(ActionError):
    """The broker cannot do this (501): e.g. peeking at waiting messages on RabbitMQ."""

    status, slug, title = 501, "not-supported", "Not supported by this broker"


class BrokerUnavailable(ActionError):
    """The broker (or the result backend) did not answer (503)."""

    status, slug, title = 503, "broker-unavailable", "Broker unavailable"


class HistoryDisabled(ActionError):
    """The SQL history is off or could not be opened at start (503)."""

    status, slug, title = 503, "history-disabled", "History disabled"


class HistoryUnavailable(ActionError):
    """The history database did not answer (503)."""

    status, slug, title = 503, "history-unavailable", "History database unavailable"


class NotReady(ActionError):
    """The poller has not finished its first round yet (503); retry in a few seconds."""

    status, slug, title = 503, "not-ready", "Not ready"


#: Exceptions of an unreachable broker or result backend (kombu wraps most in
#: ``OperationalError``; redis-py and sockets raise their own).
BROKER_EXCEPTIONS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError, redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError, ConnectionError, socket.timeout, TimeoutError, OSError,
)
#: Exceptions of an unreachable or failing history database.
HISTORY_EXCEPTIONS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError, sqlalchemy.exc.TimeoutError,
)


#: Redis error replies that describe the server's condition, not the request: worth trying
#: again later (503). redis-py raises its own class for some (and drops their code from the
#: message); the others are recognised by their code. Any other error reply is a refusal of
#: the request (409).
REDIS_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError, redis.exceptions.MasterDownError,
    redis.exceptions.ClusterDownError,
)
REDIS_TRANSIENT_CODES = ("BUSY", "MISCONF", "NOREPLICAS")


def _reply_text(exc: BaseException) -> str:
    """The broker's words: an AMQP error's ``reply_text`` with its code and name (``406
    PRECONDITION_FAILED - inequivalent arg …``), else the exception's message.
    """
    text = getattr(exc, "reply_text", None)
    if isinstance(exc, amqp.exceptions.AMQPError) and text:
        code = getattr(exc, "reply_code", None)
        return f"{code} {text}" if code and not str(text).startswith(str(code)) else str(text)
    return describe(exc)


#: What a broker says in its own words about a request, possibly wrapped by kombu in an
#: ``OperationalError`` (its publish retry policy re-raises what the transport raised).
_BROKER_WORDS: tuple[type[BaseException], ...] = (
    amqp.exceptions.ChannelError, amqp.exceptions.ConnectionError,
    amqp.exceptions.MessageNacked, redis.exceptions.ResponseError,
)
#: The reason given when RabbitMQ nacks a publish (publisher confirms): it took nothing.
NACK_REASON = ("the broker nacked the message: it did not enqueue it (a queue full with "
               "x-overflow reject-publish, or an internal error)")


def _broker_words(exc: BaseException) -> BaseException | None:
    """``exc`` or the first exception it was raised from (``__cause__``/``__context__``, five
    links at most) that carries the broker's own answer (:data:`_BROKER_WORDS`); else ``None``.
    """
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None or isinstance(seen, _BROKER_WORDS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _translate(exc: BaseException, what: str) -> ActionError:
    """The problem for ``exc`` (one of :data:`_BROKER_WORDS`), see :func:`broker_errors`."""
    if isinstance(exc, amqp.exceptions.ChannelError):
        reason = _reply_text(exc)
        return BrokerRefused(f"the {what} refused it: {reason}", reason="broker-refused",
                             broker_reason=reason)
    if isinstance(exc, amqp.exceptions.MessageNacked):
        return BrokerUnavailable(f"the {what} took nothing: {NACK_REASON}",
                                 broker_reason=NACK_REASON)
    if isinstance(exc, amqp.exceptions.ConnectionError):
        reason = _reply_text(exc)
        return BrokerUnavailable(f"the {what} took nothing: {reason}",
                                 broker_reason=reason or None)
    reason = str(exc)
    if (isinstance(exc, REDIS_TRANSIENT_ERRORS)
            or reason.split(" ", 1)[0] in REDIS_TRANSIENT_CODES):
        return BrokerUnavailable(f"the {what} took nothing: {reason}", broker_reason=reason)
    return BrokerRefused(f"the {what} refused it: {reason}", reason="broker-refused",
                         broker_reason=reason)


@contextmanager
def broker_errors(what: str = "broker") -> Iterator[None]:
    """Translate what the broker (or result backend, ``what``) raises inside the block: a
    refusal becomes :class:`BrokerRefused`, an outage or a nacked publish
    :class:`BrokerUnavailable` (see the module's table). The broker's own answer is found
    inside kombu's ``OperationalError`` too, so the problem names it.
    """
    try:
        yield
    except _BROKER_WORDS as exc:
        raise _translate(exc, what) from exc
    except BROKER_EXCEPTIONS as exc:
        inner = _broker_words(exc)
        if inner is not None:
            raise _translate(inner, what) from exc
        raise BrokerUnavailable(f"the {what} did not answer ({describe(exc)})") from exc


@contextmanager
def history_errors() -> Iterator[None]:
    """Turn database failures inside the block into :class:`HistoryUnavailable`."""
    try:
        yield
    except HISTORY_EXCEPTIONS as exc:
        original = getattr(exc, "orig", None) or exc
        raise HistoryUnavailable(
            f"the history database failed ({describe(original)[:200]})") from exc
