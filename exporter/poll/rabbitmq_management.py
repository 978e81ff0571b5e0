"""The RabbitMQ management API, for the one thing AMQP cannot do: list a vhost's queues.

AMQP answers about a queue only when asked by name (a passive ``queue.declare``), so a queue
no worker consumes and no ``task-sent`` event named is invisible over AMQP. With
``--rabbitmq-management-url`` the poller also asks the management plugin's HTTP API
(``GET /api/queues/<vhost>?columns=name``) for the names of the broker vhost's queues; their
lengths are read over AMQP, every round: exact, while the API's message counts lag by its
statistics interval (5 s by default; a queue declared a moment ago has none yet).

Credentials: the user and password of the management URL when it has them, else the
broker's. The user needs the ``monitoring`` (or ``management``) tag. The URL's password is a
secret: it is masked in logs like the broker's (:meth:`exporter.config.Settings.secrets`).

I/O is thin: :class:`ManagementApi` makes the request; URL and reply handling are pure
(:func:`queues_endpoint`, :func:`parse_queue_names`).
"""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from kombu import Connection

#: Seconds to wait for the management API's answer.
DEFAULT_TIMEOUT = 5.0
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
    endpoint = urlunsplit((parts.scheme, netloc, path, "columns=name", ""))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return endpoint, user, password


def parse_queue_names(payload: Any) -> set[str]:
    """The queue names of a ``/api/queues/<vhost>`` answer (a JSON list of objects); entries
    without a string ``name`` are skipped.

    Raises:
        ValueError: the answer is not a list.

    """
    if not isinstance(payload, list):
        raise ValueError("the management API did not answer a list of queues")
    return {entry["name"] for entry in payload
            if isinstance(entry, dict) and isinstance(entry.get("name"), str)}


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

    def queue_names(self) -> set[str]:
        """The names of every queue of the vhost.

        Raises:
            urllib.error.HTTPError: the API refused (401 bad credentials, 404 unknown vhost).
            OSError: the API did not answer (connection refused, timeout).
            ValueError: the answer is not a JSON list.

        """
        request = urllib.request.Request(self.endpoint, headers={"Accept": "application/json"})
        if self._auth is not None:
            request.add_header("Authorization", self._auth)
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return parse_queue_names(json.load(response))
