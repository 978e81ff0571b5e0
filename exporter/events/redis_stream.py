"""Redis fast path: read Celery events straight from kombu's pub/sub topic with redis-py.

On Redis, Celery publishes every event with ``PUBLISH`` to a topic kombu derives from the event
exchange (``<global_keyprefix>/<db>.celeryev/<routing key>``). Celery's own receiver decodes
each message through several kombu layers (~0.1 ms per event); here the same bytes are read in
batches from one subscribed socket (hiredis parser) and decoded with orjson, falling back to
kombu's own deserialisers for anything but plain JSON. :func:`decode_payload` must give the
same bodies kombu gives; a differential test holds it to that.

Settings this path does not reproduce (Sentinel, failover URL lists, unknown transport options)
make :func:`fanout_pattern` return ``None``; the consumer then uses the kombu path. Where it
connects, and how (credentials, database, TLS), comes from the kombu ``Connection`` the workers
would build from the same URL (:func:`redis_params`), so every form kombu accepts works here too
(``rediss://…?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs=…``, ``required``, ``none`` …).
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
from kombu import Connection
from kombu.compression import decompress
from kombu.serialization import loads as kombu_loads
from kombu.serialization import prepare_accept_content
from redis.backoff import NoBackoff
from redis.retry import Retry

hiredis: Any
try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis comes with redis[hiredis]
    hiredis = None

#: Transport options that do not change how events are published or read over pub/sub.
_NEUTRAL_OPTIONS = frozenset({
    "global_keyprefix", "fanout_prefix", "fanout_patterns", "visibility_timeout",
    "priority_steps", "sep", "queue_order_strategy", "max_connections", "socket_timeout",
    "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
    "retry_on_timeout", "health_check_interval", "polling_interval", "brpop_timeout",
    "unacked_key", "unacked_index_key", "unacked_mutex_key", "unacked_mutex_expire",
    "unacked_restore_limit", "client_name", "ack_emulation", "interval_start",
    "interval_step", "interval_max", "max_retries",
})
_JSON = "application/json"
_KOMBU_JSON_MARKER = b'"__type__"'
#: 19 digits in a row (found as 19 zeros once every digit is mapped to 0: one C pass, several
#: times cheaper than a regex) may be an integer outside 64 bits, which orjson turns into a
#: float where kombu's JSON keeps it exact; such a body (rare: an id in an argument repr) goes
#: to kombu.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19
#: Bytes read from the pub/sub socket at once (about 1,000 event messages).
_READ_SIZE = 1 << 20


def fanout_pattern(url: str, options: Mapping[str, Any], exchange: str) -> str | None:
    """The ``PSUBSCRIBE`` pattern kombu's Redis transport uses for ``exchange``, or ``None``.

    Mirrors ``kombu.transport.redis.Channel``: ``keyprefix_fanout`` is ``/{db}.`` (or the
    ``fanout_prefix`` string, or empty when ``fanout_prefix`` is false), the consumer's
    routing key ``#`` becomes ``*`` when ``fanout_patterns`` is on, and ``global_keyprefix``
    is prepended to the channel. ``None`` when the URL is not a single ``redis://``/``rediss://``
    URL or an option outside :data:`_NEUTRAL_OPTIONS` is set.
    """
    if ";" in url or urlsplit(url).scheme not in ("redis", "rediss"):
        return None
    if set(options) - _NEUTRAL_OPTIONS:
        return None
    path = urlsplit(url).path.strip("/")
    db = int(path) if path.isdigit() else 0
    fanout_prefix = options.get("fanout_prefix", True)
    if not fanout_prefix:
        keyprefix = ""
    else:
        keyprefix = fanout_prefix if isinstance(fanout_prefix, str) else "/{db}."
    topic = options.get("global_keyprefix", "") + keyprefix.format(db=db) + exchange
    return topic + "/*" if options.get("fanout_patterns", True) else topic


def redis_params(connection: Connection) -> dict[str, Any]:
    """redis-py keyword arguments connecting where and as kombu's Redis transport connects for
    ``connection`` (built from the broker URL; nothing is opened here).

    Mirrors ``kombu.transport.redis.Channel._connparams``: host (default 127.0.0.1), port
    (default 6379), user, password and database (the URL path, default 0) from the connection;
    on ``rediss://`` the TLS settings kombu parsed from the URL query (``ssl_cert_reqs`` as an
    ``ssl.VerifyMode`` — kombu maps ``CERT_REQUIRED``/``required``… —, ``ssl_ca_certs``,
    ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``…), or kombu's own default without
    them (``ssl_cert_reqs`` ``CERT_NONE``, with kombu's warning). Returns e.g.
    ``{"host": "10.0.0.5", "port": 6380, "username": None, "password": "…", "db": 3,
    "ssl": True, "ssl_cert_reqs": VerifyMode.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"}``.

    Raises:
        ValueError: the database in the URL path is not a number (kombu refuses it too).

    """
    path = str(connection.virtual_host or "").strip("/")
    params: dict[str, Any] = {
        "host": connection.hostname or "127.0.0.1",
        "port": connection.port or 6379,
        "username": connection.userid,
        "password": connection.password,
        "db": int(path) if path else 0,
    }
    if isinstance(connection.ssl, Mapping):
        params.update(connection.ssl, ssl=True)
    return params


def decode_payload(data: bytes, accept: frozenset[str]) -> list[Any]:
    """Decode one pub/sub payload (kombu's JSON envelope) into the event bodies it carries.

    The envelope is ``{"body": <base64>, "content-type", "content-encoding", "headers",
    "properties": {"body_encoding": "base64", ...}}``; the body may be compressed (header
    ``compression``). Returns a list: one body, or the bodies of a batched message (Celery
    sends a list when its dispatcher buffers events). ``accept`` holds MIME types as
    :func:`accept_content` returns them.

    Raises:
        kombu.exceptions.ContentDisallowed: the content type is not accepted.
        Exception: anything else undecodable (bad envelope, bad base64, bad body).

    """
    try:
        envelope = orjson.loads(data)
    except orjson.JSONDecodeError:
        envelope = kombu_loads(data, _JSON, "utf-8")
    body = envelope["body"]
    properties = envelope.get("properties") or {}
    headers = envelope.get("headers") or {}
    content_type = envelope.get("content-type")
    if properties.get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return decode_body(body, content_type, envelope.get("content-encoding"),
                       headers.get("compression"), accept)


def decode_body(body: bytes, content_type: str | None, content_encoding: str | None,
                compression: str | None, accept: frozenset[str]) -> list[Any]:
    """Decode one message body (as published: maybe compressed) into the event bodies it
    carries, exactly as kombu's ``Message.decode()`` would (a differential test per broker
    holds this path to that).

    Plain JSON is parsed with orjson; kombu's typed JSON (``__type__``), integers that may not
    fit 64 bits, JSON orjson refuses (NaN, 1e400) and every other serializer go through kombu's
    own deserialisers. ``compression`` is the ``compression`` header (kombu's name, e.g.
    ``application/x-gzip``), ``accept`` MIME types as :func:`accept_content` returns them.
    Returns a list: one body, or the bodies of a batched message (Celery sends a list when its
    dispatcher buffers events).

    Raises:
        kombu.exceptions.ContentDisallowed: the content type is not accepted.
        Exception: anything else undecodable (bad compression, bad body).

    """
    if compression:
        body = decompress(body, compression)
    decoded: Any
    if (content_type == _JSON and _JSON in accept and _KOMBU_JSON_MARKER not in body
            and _LONG_DIGIT_RUN not in body.translate(_DIGITS_TO_ZERO)):
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            # NaN, 1e400: leave the edge cases to the JSON kombu would use.
            decoded = kombu_loads(body, content_type, content_encoding, accept=accept)
    else:
        decoded = kombu_loads(body, content_type, content_encoding, accept=accept)
    return decoded if isinstance(decoded, list) else [decoded]


def accept_content(names: Iterable[str]) -> frozenset[str]:
    """MIME types for serializer names or types (``json`` → ``application/json``)."""
    return frozenset(prepare_accept_content(list(names)))


class RedisEventStream:
    """One pub/sub connection subscribed to the event topic; reads payloads in batches.

    Args:
        params: where and how to connect (:func:`redis_params`).
        pattern: from :func:`fanout_pattern`.
        socket_timeout: seconds a connect or a read may block.

    Errors from redis-py (``redis.ConnectionError``, ``redis.TimeoutError``) are not retried
    here: a disconnect means events were lost, so the caller must notice and count it.

    """

    def __init__(self, params: Mapping[str, Any], pattern: str,
                 socket_timeout: float = 10.0) -> None:
        self.pattern = pattern
        self._client = redis.Redis(
            **params, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0,
        )
        self._pubsub: Any = None
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._confirmed = False
        self._pending: list[bytes] = []

    def connect(self) -> None:
        """Open the connection (redis-py: TLS, AUTH) and ``PSUBSCRIBE`` the pattern; waits for
        the confirmation.

        Once subscribed, the connection only carries pushed messages, so its socket is read in
        large chunks and parsed with hiredis directly: redis-py's per-message path (a poll()
        and several calls per message) costs more than all the rest together. From the
        ``PSUBSCRIBE`` on, only this reader touches the socket (two parsers on one stream
        would split messages). Without hiredis or an accessible socket, redis-py's path is
        used.

        Raises:
            redis.ConnectionError: connecting or subscribing failed.

        """
        self.close()
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(self.pattern)  # sends only; the reply is still on the socket
        self._pubsub = pubsub
        sock = getattr(pubsub.connection, "_sock", None)
        if hiredis is not None and isinstance(sock, socket.socket):
            self._sock, self._reader = sock, hiredis.Reader()
            deadline = time.monotonic() + 10.0
            while not self._confirmed:
                self._pending.extend(self._read_socket(max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= deadline and not self._confirmed:
                    self.close()
                    raise redis.ConnectionError("no psubscribe confirmation")
            return
        confirmation = pubsub.parse_response(block=False, timeout=10.0)
        if not confirmation or confirmation[0] != b"psubscribe":
            self.close()
            raise redis.ConnectionError(f"no psubscribe confirmation: {confirmation!r}")

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether the server accepts a TCP connection now (within ``timeout`` seconds): a
        cheap probe between reconnect attempts, so that a reconnect follows a restarted Redis
        at once instead of at the end of a long backoff wait.
        """
        params = self._client.connection_pool.connection_kwargs
        try:
            socket.create_connection((params["host"], params["port"]), timeout).close()
        except OSError:
            return False
        return True

    def read_batch(self, max_messages: int = 1000, timeout: float = 1.0) -> list[bytes]:
        """Return the payloads available now, waiting up to ``timeout`` seconds for the first;
        ``[]`` when none came. At most ``max_messages`` on redis-py's path; one socket read's
        worth (up to 1 MiB) on the direct path.

        Raises:
            redis.ConnectionError: the connection was lost (e.g. Redis closed it because the
                pub/sub output buffer limit was hit).

        """
        pubsub = self._pubsub
        if pubsub is None:
            raise redis.ConnectionError("not connected")
        if self._sock is not None:
            if self._pending:
                pending, self._pending = self._pending, []
                return pending
            return self._read_socket(timeout)
        payloads: list[bytes] = []
        response = pubsub.parse_response(block=False, timeout=timeout)
        while response is not None:
            if response[0] == b"pmessage":
                payloads.append(response[3])
            if len(payloads) >= max_messages:
                break
            response = pubsub.parse_response(block=False, timeout=0)
        return payloads

    def _read_socket(self, timeout: float) -> list[bytes]:
        sock, reader = self._sock, self._reader
        assert sock is not None and reader is not None
        sock.settimeout(timeout)
        try:
            data = sock.recv(_READ_SIZE)
        except TimeoutError:
            return []
        except OSError as exc:
            raise redis.ConnectionError(f"pub/sub read failed: {exc}") from exc
        if not data:
            raise redis.ConnectionError("the server closed the pub/sub connection")
        reader.feed(data)
        payloads = []
        reply = reader.gets()
        while reply is not False:
            if isinstance(reply, list) and reply:
                kind = reply[0]
                if kind == b"pmessage" and len(reply) == 4:
                    payloads.append(reply[3])
                elif kind == b"psubscribe":
                    self._confirmed = True
            elif isinstance(reply, hiredis.ReplyError):
                raise redis.ConnectionError(f"server error on pub/sub: {reply}")
            reply = reader.gets()
        return payloads

    def close(self) -> None:
        """Close the pub/sub connection (idempotent)."""
        self._sock = self._reader = None
        self._confirmed, self._pending = False, []
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            finally:
                self._pubsub = None
