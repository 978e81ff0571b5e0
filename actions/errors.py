"""Domain errors of the actions: what went wrong, in words a caller can act on.

The services (:mod:`.retry`, :mod:`.cancel`, :mod:`.reads`) raise these and nothing else for
expected failures; :mod:`.problems` turns them into RFC 9457 responses (one table, one place)
and the ``retry``/``cancel``/``tasks`` commands print them. Each class carries its HTTP status
and a problem ``slug`` so that the mapping is data, not if-chains.

Infrastructure errors are translated at the call site with :func:`broker_errors` and
:func:`history_errors`, so a broker or database outage becomes a 503, never a 500.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

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


@contextmanager
def broker_errors(what: str = "broker") -> Iterator[None]:
    """Turn broker connection failures inside the block into :class:`BrokerUnavailable`."""
    try:
        yield
    except BROKER_EXCEPTIONS as exc:
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
