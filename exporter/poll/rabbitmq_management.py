"""The RabbitMQ management API, for the one thing AMQP cannot do: list a vhost's queues.

AMQP answers about a queue only when asked by name (a passive ``queue.declare``), so a queue
no worker consumes and no ``task-sent`` event named is invisible over AMQP. With
``--rabbitmq-management-url`` the poller also asks the management plugin's HTTP API
(``GET /api/queues/<vhost>?columns=name,messages_ready,consumers``) which queues of the
broker's vhost hold ready messages; their lengths are still read over AMQP (exact, while the
API's statistics lag by its collection interval, 5 s by default).

Credentials: the user and password of the management URL when it has them, else the
broker's. The user needs the ``monitoring`` (or ``management``) tag. The URL's password is a
secret: it is masked in logs like the broker's (:meth:`exporter.config.Settings.secrets`).

I/O is thin: :class:`ManagementApi` makes the request; URL and reply handling are pure
(:func:`queues_endpoint`, :func:`parse_queues`).
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from kombu import Connection

#: Seconds to wait for the management API's answer.
DEFAULT_TIMEOUT = 5.0
#: The columns asked for (the API leaves the others out: a smaller answer).
COLUMNS = ("name", "messages_ready", "consumers")


@dataclass(frozen=True, slots=True)
class ManagedQueue:
    """A queue as the management API lists it: ``messages_ready`` (waiting for a consumer)
    and ``consumers``, both ``0`` when the API leaves them out (a queue with no statistics
    yet).
    """

    name: str
    messages_ready: int
    consumers: int


def queues_endpoint(url: str, vhost: str) -> tuple[str, str | None, str | None]:
    """The queue-list URL of ``vhost`` under the management API at ``url`` (a path prefix such
    as ``/rabbitmq`` is kept), without credentials, and the user and password ``url`` holds.

    Returns:
        ``(endpoint, user or None, password or None)``.

    Raises:
        ValueError: ``url`` is not an ``http://`` or ``https://`` URL with a host.

    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an http:// or https:// URL such as http://rabbitmq:15672")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    path = f"{parts.path.rstrip('/')}/api/queues/{quote(vhost, safe='')}"
    endpoint = urlunsplit((parts.scheme, netloc, path, f"columns={','.join(COLUMNS)}", ""))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return endpoint, user, password


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_queues(payload: Any) -> list[ManagedQueue]:
    """The queues of a ``/api/queues/<vhost>`` answer (a JSON list of objects); entries
    without a string ``name`` are skipped, missing or invalid counts read as 0.

    Raises:
        ValueError: the answer is not a list.

    """
    if not isinstance(payload, list):
        raise ValueError("the management API did not answer a list of queues")
    return [ManagedQueue(entry["name"], _count(entry.get("messages_ready")),
                         _count(entry.get("consumers")))
            for entry in payload
            if isinstance(entry, dict) and isinstance(entry.get("name"), str)]


def waiting_queues(queues: Iterable[ManagedQueue]) -> set[str]:
    """Names of the queues with ready messages."""
    return {queue.name for queue in queues if queue.messages_ready > 0}


class ManagementApi:
    """Lists the queues of one vhost through the management API.

    Args:
        url: the API's base URL (``--rabbitmq-management-url``), credentials optional.
        vhost: the broker connection's virtual host.
        user, password: used when ``url`` has none (the broker's).
        timeout: seconds to wait for an answer.

    Raises:
        ValueError: ``url`` is not an http(s) URL (see :func:`queues_endpoint`).

    """

    def __init__(self, url: str, vhost: str, user: str | None = None,
                 password: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.endpoint, url_user, url_password = queues_endpoint(url, vhost)
        user = url_user if url_user is not None else user
        password = url_password if url_user is not None else password
        self._auth = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._auth = f"Basic {token}"
        self.timeout = timeout

    @classmethod
    def for_connection(cls, url: str, connection: Connection,
                       timeout: float = DEFAULT_TIMEOUT) -> ManagementApi:
        """The API of the vhost of a kombu AMQP ``connection``, with its credentials as the
        fallback.
        """
        return cls(url, connection.virtual_host or "/", connection.userid, connection.password,
                   timeout)

    def queues(self) -> list[ManagedQueue]:
        """Every queue of the vhost.

        Raises:
            urllib.error.HTTPError: the API refused (401 bad credentials, 404 unknown vhost).
            OSError: the API did not answer (connection refused, timeout).
            ValueError: the answer is not a JSON list.

        """
        request = urllib.request.Request(self.endpoint, headers={"Accept": "application/json"})
        if self._auth is not None:
            request.add_header("Authorization", self._auth)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return parse_queues(json.load(response))
