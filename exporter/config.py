"""Settings of `celery-jobmon serve`: named defaults, value parsers and one validated object.

Every option of the CLI ends up in :class:`Settings`. The defaults are module constants so that
``--help``, the README and the tests quote the same numbers. Parsers raise :class:`ValueError`
with a one-line message; the CLI turns that into an error naming the flag.

It is long because every option of ``serve`` has its default, its parser and its check here,
so that all invalid options are reported together.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from exporter.metrics.catalogue import LABEL_NAMES
from exporter.secrets import option_passwords, url_passwords

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_LISTEN = "0.0.0.0:9808"
DEFAULT_METRIC_PREFIX = "celery_"
#: Runtime buckets in seconds: 5 ms ... 1 h.
DEFAULT_RUNTIME_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)
#: Queue-wait buckets in seconds: 5 ms ... 1 h.
DEFAULT_QUEUE_WAIT_BUCKETS: tuple[float, ...] = DEFAULT_RUNTIME_BUCKETS
DEFAULT_MAX_TASKS_IN_MEMORY = 100_000
DEFAULT_MAX_TASK_NAMES = 1_000
DEFAULT_WORKER_TIMEOUT = 30.0
DEFAULT_WORKER_RETENTION = 24 * 3600.0
#: A worker clock this far (seconds) from the exporter's, either way, is logged as a warning.
DEFAULT_CLOCK_OFFSET_WARNING = 1.0
#: A solo-pool worker silent this long (seconds) while it may be running a task is down.
DEFAULT_SOLO_BUSY_TIMEOUT = 3600.0
#: RabbitMQ: how long an event may wait in the exporter's own event queue (Celery's default, 5 s,
#: silently drops events a busy consumer has not read yet).
DEFAULT_EVENT_QUEUE_TTL = 300.0
#: RabbitMQ: how long the exporter's event queue lives after the exporter went away.
DEFAULT_EVENT_QUEUE_EXPIRES = 3600.0
DEFAULT_INSPECT_INTERVAL = 15.0
DEFAULT_INSPECT_TIMEOUT = 2.0
DEFAULT_RECONNECT_MAX_INTERVAL = 30.0
#: An empty queue no worker consumes any more (and not given with --queue) is dropped after this
#: long; a queue holding messages never is.
DEFAULT_QUEUE_FORGET_AFTER = 600.0
#: Bytes of UTF-8 kept of args, kwargs, result, exception message and traceback.
DEFAULT_HISTORY_MAX_FIELD_BYTES = 4096
#: History rows older than this are pruned (0: keep for ever).
DEFAULT_HISTORY_RETENTION = 30 * 86400.0
#: Events the history writer may hold before it drops (successes first).
DEFAULT_HISTORY_QUEUE_SIZE = 20_000
#: A task whose average runtime is above this is flagged slow in the statistics.
DEFAULT_SLOW_THRESHOLD = 60.0
#: Seconds between two rounds of the repairer (lost events checked against the result backend
#: and the workers); also how long a task waits before its first check.
DEFAULT_REPAIR_INTERVAL = 5.0
#: Tasks the repairer checks per round at most.
DEFAULT_REPAIR_BATCH = 500
#: Manual retries (action API, ``celery-jobmon retry``) allowed per chain of executions.
DEFAULT_MAX_MANUAL_RETRIES = 3
#: Largest request body the action API reads (bytes); larger bodies are answered 413.
DEFAULT_API_MAX_BODY_BYTES = 64 * 1024
#: Seconds between two checks of the periodic entries (schedule sources and history read).
DEFAULT_PERIODIC_INTERVAL = 15.0
#: A periodic run not sent this many seconds after it was due is counted missed.
DEFAULT_PERIODIC_GRACE = 60.0
#: A workflow step waiting this many seconds behind an ended predecessor is stuck
#: (``--chord-stuck-after``).
DEFAULT_CHORD_STUCK_AFTER = 300.0
#: Shortest --periodic-grace: the history writes rows in batches, up to half a second late.
MIN_PERIODIC_GRACE = 1.0
#: RedBeat's default key prefix (its ``redbeat_key_prefix`` setting).
DEFAULT_REDBEAT_KEY_PREFIX = "redbeat:"
#: Shortest API token accepted (characters): a guessable token is worse than none.
MIN_API_TOKEN_CHARS = 16
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
#: Where the history writer runs (``--history-writer``): a child process of its own, or a
#: thread of the exporter's (:mod:`exporter.history.process`).
HISTORY_WRITERS = ("process", "thread")
#: Where the RabbitMQ fast path's pika reads (``--amqp-reader``): a child process or the event
#: thread.
AMQP_READERS = ("process", "thread")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_METRIC_PREFIX_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def parse_duration(text: str) -> float:
    """Parse a duration such as ``500ms``, ``30s``, ``5m``, ``24h``, ``7d`` or ``90`` (seconds).

    Returns:
        The duration in seconds (float, >= 0).

    Raises:
        ValueError: the text is not a number followed by an optional unit ms/s/m/h/d/w.

    """
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r} (examples: 30s, 5m, 24h, 7d)")
    number, unit = match.groups()
    return float(number) * _DURATION_UNITS[unit or "s"]


def parse_buckets(text: str) -> tuple[float, ...]:
    """Parse histogram bucket upper bounds in seconds: ``"0.01,0.1,1,10"``.

    Returns:
        A strictly increasing tuple of positive finite floats (``+Inf`` is added by the
        exposition, not here).

    Raises:
        ValueError: an entry is not a number, not positive, or the list is not increasing.

    """
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"invalid bucket list {text!r}: comma-separated seconds") from None
    if not values:
        raise ValueError("bucket list is empty")
    if any(not 0 < v < float("inf") for v in values):
        raise ValueError(f"invalid bucket list {text!r}: bounds must be positive and finite")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"invalid bucket list {text!r}: bounds must increase")
    return values


def parse_option_value(text: str) -> Any:
    """Turn a ``k=v`` option value into int, float, bool, str or a JSON object, as kombu
    expects.

    ``"3"`` → 3, ``"1.5"`` → 1.5, ``"true"``/``"false"`` → bool, ``{...}``/``[...]`` → the JSON
    value (nested options: ``sentinel_kwargs={"password":"..."}``), anything else stays a
    string.

    Raises:
        ValueError: a value starting with ``{`` or ``[`` is not JSON (the message does not
            repeat the value: it may hold a password).

    """
    if text[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError("a value starting with { or [ must be JSON") from None
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


#: The next entry of ``JOBMON_BROKER_TRANSPORT_OPTION``: ``key={``/``key=[`` (a JSON value
#: follows), else a run of non-blank characters.
_NEXT_ENTRY = re.compile(r"[^\s=]*=(?P<json>[\[{])|\S+")
_WORD = re.compile(r"\S+")


def split_transport_options(text: str) -> list[str]:
    """Split ``JOBMON_BROKER_TRANSPORT_OPTION`` into ``key=value`` entries: separated by
    whitespace, except inside a value that starts with ``{`` or ``[`` and is JSON — it runs to
    the end of the JSON (:meth:`json.JSONDecoder.raw_decode` finds it) — so that
    ``sep=: sentinel_kwargs={"password": "x", "socket_timeout": 1}`` is two entries. A value
    that starts like JSON but is not JSON is split on whitespace (and refused by
    :func:`parse_option_value`).
    """
    decoder = json.JSONDecoder()
    entries: list[str] = []
    position = 0
    while (match := _NEXT_ENTRY.search(text, position)) is not None:
        end = match.end()
        if match.group("json"):
            try:
                end = decoder.raw_decode(text, match.start("json"))[1]
            except ValueError:
                end = _WORD.match(text, match.start()).end()  # type: ignore[union-attr]
        entries.append(text[match.start():end])
        position = end
    return entries


def parse_transport_options(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse repeated ``--broker-transport-option key=value`` into kombu transport options.

    Returns:
        ``{key: typed value}``; a later key wins.

    Raises:
        ValueError: an entry has no ``=`` or an empty key.

    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"invalid transport option {pair!r}: key=value expected")
        try:
            options[key.strip()] = parse_option_value(value.strip())
        except ValueError as exc:
            raise ValueError(f"invalid transport option {key.strip()!r}: {exc}") from None
    return options


#: A Prometheus label name (the data model's rule); names starting with ``__`` are reserved.
_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Label names a ``--const-label`` may not take: the exporter's own (every family's labels,
#: ``hostname`` of ``--task-hostname-label``, histograms' ``le``) and those Prometheus and
#: the recording rules give a meaning (``job``, ``instance``, ``pod``: the rules merge
#: replicas ``without (instance, pod)``).
RESERVED_LABEL_NAMES = frozenset({*LABEL_NAMES, "hostname", "le", "quantile", "job",
                                  "instance", "pod"})


def parse_const_labels(texts: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Parse repeated ``--const-label KEY=VALUE`` into ``((key, value), ...)`` in the given
    order (checked by :func:`const_label_problems`).

    Raises:
        ValueError: an entry without ``=``.

    """
    pairs = []
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"invalid const label {text!r}: KEY=VALUE expected")
        pairs.append((key.strip(), value))
    return tuple(pairs)


def const_label_problems(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """Every problem of the ``--const-label`` pairs, one line each: a key that is no
    Prometheus label name, starts with ``__``, is given twice or is one of
    :data:`RESERVED_LABEL_NAMES`; an empty value (Prometheus drops the label then).
    """
    found: list[str] = []
    seen: set[str] = set()
    for key, value in pairs:
        if not _LABEL_NAME_RE.match(key) or key.startswith("__"):
            found.append(f"--const-label: {key!r} is no label name (letters, digits, "
                         "underscores; no leading digit, no leading __)")
        elif key in RESERVED_LABEL_NAMES:
            found.append(f"--const-label: {key!r} is a label the exporter or Prometheus "
                         f"already uses (not one of {', '.join(sorted(RESERVED_LABEL_NAMES))})")
        elif key in seen:
            found.append(f"--const-label: {key!r} given twice")
        elif not value:
            found.append(f"--const-label: {key!r} has an empty value")
        seen.add(key)
    return found


def parse_expectation(text: str) -> tuple[str, float]:
    """Parse ``--expect TASK=INTERVAL`` (``reports.nightly=24h``) into ``(task name, seconds)``.

    Raises:
        ValueError: no ``=``, an empty task name, or an interval that is not a positive
            duration (:func:`parse_duration`).

    """
    name, sep, interval = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"invalid expectation {text!r}: TASK=INTERVAL expected "
                         "(reports.nightly=24h)")
    try:
        seconds = parse_duration(interval)
    except ValueError as exc:
        raise ValueError(f"invalid expectation {text!r}: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"invalid expectation {text!r}: the interval must be positive")
    return name, seconds


def periodic_problems(settings: Settings) -> list[str]:
    """Every problem of the periodic-task options (``--app``, ``--redbeat-url``,
    ``--django-beat-url``, ``--beat-timezone``, ``--periodic-interval``/``--periodic-grace``).
    Messages never repeat a URL.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    found: list[str] = []
    if settings.beat_app is not None and not re.fullmatch(
            r"[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?", settings.beat_app):
        found.append("--app: MODULE:ATTRIBUTE of your Celery app, as for `celery -A` "
                     "(proj.celery:app)")
    if settings.redbeat_url is not None and not settings.redbeat_url.startswith(
            ("redis://", "rediss://", "unix://")):
        found.append("--redbeat-url: a redis://, rediss:// or unix:// URL (RedBeat's "
                     "redbeat_redis_url)")
    if settings.django_beat_url is not None:
        problem = history_url_problem(settings.django_beat_url)
        if problem:
            found.append(problem.replace("--history-url", "--django-beat-url"))
    try:
        ZoneInfo(settings.beat_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        found.append("--beat-timezone: an IANA time zone such as UTC or Europe/Paris")
    if settings.periodic_interval <= 0:
        found.append("--periodic-interval: greater than 0")
    if settings.periodic_grace < MIN_PERIODIC_GRACE:
        found.append(f"--periodic-grace: at least {MIN_PERIODIC_GRACE:g}s (the history writes "
                     "rows in batches, up to half a second after the event)")
    if settings.chord_stuck_after <= 0:
        found.append("--chord-stuck-after: greater than 0")
    return found


_BROKER_URL_HINT = "a URL such as redis://host:6379/0 or amqp://user@host//"
_HISTORY_URL_HINT = ("an SQLAlchemy URL such as sqlite:////var/lib/jobmon.db or "
                     "postgresql+psycopg://user@host/db")


def broker_url_problems(url: str) -> list[str]:
    """Why a broker URL, or an entry of a ``;`` failover list, cannot work: no
    ``scheme://``, a transport kombu does not know (or whose library is missing), a port that
    is not a number. Messages never repeat the URL: it may hold a password.
    """
    from kombu.transport import resolve_transport

    parts = url.split(";")
    found = []
    for number, part in enumerate(parts, 1):
        entry = f"entry {number} of the failover list: " if len(parts) > 1 else ""
        scheme, sep, _ = part.strip().partition("://")
        if not sep or not scheme:
            found.append(f"--broker-url: {entry}{_BROKER_URL_HINT}")
            continue
        transport, plus, variant = scheme.partition("+")
        if plus and not (transport == "sqla" or (transport in ("redis", "rediss")
                                                 and variant == "socket")):
            # kombu would take "redis+x://" as redis:// and ignore the rest.
            found.append(f"--broker-url: {entry}unknown scheme {scheme!r}: kombu takes `+` only "
                         "in redis+socket:// (a Unix socket) and sqla+<dialect>://")
            continue
        try:
            resolve_transport(transport)  # "sqla+postgresql": transport sqla
        except (KeyError, ImportError):
            found.append(f"--broker-url: {entry}unknown or unavailable transport {scheme!r} "
                         "(redis, rediss, sentinel, amqp, ...)")
            continue
        try:
            _ = urlsplit(part.strip()).port  # parsing it is the check
        except ValueError:
            found.append(f"--broker-url: {entry}the port is not a number from 0 to 65535")
    return found


def history_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a history database: not an SQLAlchemy URL, a port that is not a
    number, a dialect SQLAlchemy does not know. ``None`` when it may work (the database is
    only reached at start). The message never repeats the URL.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if "://" not in url:
        return f"--history-url: {_HISTORY_URL_HINT}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"--history-url: {_HISTORY_URL_HINT}"
    except ValueError:
        return "--history-url: the port is not a number from 0 to 65535"
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        return (f"--history-url: unknown database dialect {parsed.drivername!r} (sqlite, "
                "postgresql+psycopg, ...)")
    return None


def management_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the RabbitMQ management API (not ``http(s)://host[:port]``), or
    ``None``. The message never repeats the URL.
    """
    from exporter.poll.rabbitmq_management import queues_endpoint

    try:
        queues_endpoint(url, "/")
    except ValueError:
        return ("--rabbitmq-management-url: an http:// or https:// URL such as "
                "http://rabbitmq:15672 (credentials: the broker's unless given)")
    return None


def accept_content_problems(names: Iterable[str]) -> list[str]:
    """Content types (``--accept-content``) kombu has no serializer for."""
    from kombu.exceptions import SerializerNotInstalled
    from kombu.serialization import prepare_accept_content

    found = []
    for name in names:
        try:
            prepare_accept_content([name])
        except SerializerNotInstalled:
            found.append(f"--accept-content: no serializer for {name!r} (json, msgpack, yaml, "
                         "pickle; msgpack and yaml need their library)")
    return found


def parse_listen(text: str) -> tuple[str, int]:
    """Parse ``host:port`` (``[::1]:9808`` for IPv6) into ``(host, port)``.

    Raises:
        ValueError: no port, a port outside 0..65535, or an IPv6 host without brackets.

    """
    host, sep, port_text = text.rpartition(":")
    if (
        not sep
        or not (port_text.isascii() and port_text.isdigit())
        or not 0 <= int(port_text) <= 65535
        # "::1" would otherwise parse as host ":" port 1.
        or (":" in host and not (host.startswith("[") and host.endswith("]")))
    ):
        raise ValueError(f"invalid listen address {text!r}: host:port expected")
    return host.strip("[]") or "0.0.0.0", int(port_text)


@dataclass(frozen=True)
class Settings:
    """Everything `celery-jobmon serve` needs, validated (see :meth:`validate`).

    Durations are float seconds; bucket bounds are float seconds; ``transport_options`` is
    passed to kombu as ``broker_transport_options``.
    """

    broker_url: str = DEFAULT_BROKER_URL
    listen: tuple[str, int] = ("0.0.0.0", 9808)
    transport_options: Mapping[str, Any] = field(default_factory=dict)
    accept_content: tuple[str, ...] = ("json",)
    enable_events: bool = True
    log_level: str = "INFO"
    log_format: str = "text"
    metric_prefix: str = DEFAULT_METRIC_PREFIX
    runtime_buckets: tuple[float, ...] = DEFAULT_RUNTIME_BUCKETS
    queue_wait_buckets: tuple[float, ...] = DEFAULT_QUEUE_WAIT_BUCKETS
    max_tasks_in_memory: int = DEFAULT_MAX_TASKS_IN_MEMORY
    max_task_names: int = DEFAULT_MAX_TASK_NAMES
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT
    worker_retention: float = DEFAULT_WORKER_RETENTION
    #: Seconds a worker must have been down before its running tasks are counted lost
    #: (``None``: the worker timeout).
    task_lost_grace: float | None = None
    clock_offset_warning: float = DEFAULT_CLOCK_OFFSET_WARNING
    solo_busy_timeout: float = DEFAULT_SOLO_BUSY_TIMEOUT
    event_queue_ttl: float = DEFAULT_EVENT_QUEUE_TTL
    event_queue_expires: float = DEFAULT_EVENT_QUEUE_EXPIRES
    inspect_interval: float = DEFAULT_INSPECT_INTERVAL
    inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT
    reconnect_max_interval: float = DEFAULT_RECONNECT_MAX_INTERVAL
    redis_fast_path: bool = True
    amqp_fast_path: bool = True
    #: ``process`` or ``thread`` (:data:`AMQP_READERS`).
    amqp_reader: str = "process"
    #: Add the worker's ``hostname`` as a label to the event-derived task series
    #: (:data:`exporter.metrics.catalogue.HOSTNAME_LABELED`); off by default: one series per worker.
    task_hostname_label: bool = False
    #: ``(name, value)`` pairs every series on ``/metrics`` carries (``--const-label``), e.g.
    #: ``(("cluster", "eu-1"),)``: one exporter per broker, told apart in shared dashboards.
    const_labels: tuple[tuple[str, str], ...] = ()
    queues: tuple[str, ...] = ()
    queue_forget_after: float = DEFAULT_QUEUE_FORGET_AFTER
    #: RabbitMQ management API (``http://user:password@host:15672``) the poller lists the
    #: vhost's queues with; ``None``: queues are found over AMQP and from events only.
    rabbitmq_management_url: str | None = None
    history: bool = True
    history_url: str | None = None
    history_required: bool = False
    history_upgrade: bool = True
    history_max_field_bytes: int = DEFAULT_HISTORY_MAX_FIELD_BYTES
    history_retention: float = DEFAULT_HISTORY_RETENTION
    history_max_rows: int = 0
    history_queue_size: int = DEFAULT_HISTORY_QUEUE_SIZE
    #: ``process`` or ``thread`` (:data:`HISTORY_WRITERS`).
    history_writer: str = "process"
    #: Shell-style patterns of task names kept out of the history (``--history-exclude-task``).
    history_exclude_tasks: tuple[str, ...] = ()
    slow_threshold: float = DEFAULT_SLOW_THRESHOLD
    #: Check tasks left in progress by lost events against the result backend and the workers
    #: (:mod:`exporter.repair`).
    repair: bool = True
    repair_interval: float = DEFAULT_REPAIR_INTERVAL
    repair_batch: int = DEFAULT_REPAIR_BATCH
    #: Bearer token of the action API (``--api-token``, or read from ``--api-token-file``);
    #: ``None``: every ``/api`` request is answered 403.
    api_token: str | None = field(default=None, repr=False)
    max_manual_retries: int = DEFAULT_MAX_MANUAL_RETRIES
    #: Celery result backend URL the action API reads stored arguments from (retry).
    result_backend: str | None = None
    api_max_body_bytes: int = DEFAULT_API_MAX_BODY_BYTES
    #: Serve the action API on its own address (e.g. loopback only), apart from /metrics.
    api_listen: tuple[str, int] | None = None
    #: PEM certificate and key: serve HTTPS instead of HTTP (both servers).
    tls_cert: str | None = None
    tls_key: str | None = None
    #: The job browser's users file (``--ui-users-file``); ``None``: the UI is off.
    ui_users_file: str | None = None
    #: Signs the UI's session and CSRF cookies (read from ``--ui-session-secret-file``);
    #: ``None``: a random one made at start (sessions end at restart).
    ui_session_secret: str | None = field(default=None, repr=False)
    #: Grafana's base URL (``--grafana-url``): the UI links to the dashboards there.
    grafana_url: str | None = None
    #: The job browser's URL as users reach it (``--external-url``, e.g.
    #: ``https://jobmon.example.com/ui``): exported as ``celery_jobmon_ui_info{external_url}``
    #: so alerts and dashboards link to its pages.
    external_url: str | None = None
    #: Periodic entries from the user's Celery app ``beat_schedule`` (``--app module:attr``).
    beat_app: str | None = None
    #: Periodic entries from RedBeat's keys in this Redis (``--redbeat-url``).
    redbeat_url: str | None = None
    redbeat_key_prefix: str = DEFAULT_REDBEAT_KEY_PREFIX
    #: Periodic entries from django-celery-beat's tables (``--django-beat-url``, SQLAlchemy).
    django_beat_url: str | None = None
    #: ``(task name, seconds)``: tasks that must be sent at least that often (``--expect``).
    expect: tuple[tuple[str, float], ...] = ()
    #: Time zone of crontab entries read from RedBeat (the beat's ``timezone`` setting).
    beat_timezone: str = "UTC"
    periodic_interval: float = DEFAULT_PERIODIC_INTERVAL
    periodic_grace: float = DEFAULT_PERIODIC_GRACE
    #: Seconds a workflow step (a chord's callback, a chain's next task) may wait behind a
    #: predecessor that ended before it counts in ``celery_chords_stuck``.
    chord_stuck_after: float = DEFAULT_CHORD_STUCK_AFTER

    def secrets(self) -> set[str]:
        """Values that must never be logged or shown: URL passwords, password options, the
        API token.
        """
        found = url_passwords(self.broker_url) | option_passwords(self.transport_options)
        found |= url_passwords(self.result_backend or "")
        found |= url_passwords(self.rabbitmq_management_url or "")
        if self.api_token:
            found.add(self.api_token)
        if self.ui_session_secret:
            found.add(self.ui_session_secret)
        found |= url_passwords(self.redbeat_url or "") | url_passwords(self.django_beat_url or "")
        return found | url_passwords(self.history_url or "")

    def problems(self) -> list[str]:
        """Return every invalid setting as a one-line message (empty list: all valid)."""
        found: list[str] = []
        found.extend(broker_url_problems(self.broker_url))
        if self.log_level.upper() not in LOG_LEVELS:
            found.append(f"--log-level: one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            found.append(f"--log-format: one of {', '.join(LOG_FORMATS)}")
        if not _METRIC_PREFIX_RE.match(self.metric_prefix):
            found.append("--metric-prefix: letters, digits, underscores; no leading digit")
        found.extend(const_label_problems(self.const_labels))
        if self.max_tasks_in_memory < 1:
            found.append("--max-tasks-in-memory: at least 1")
        if self.max_task_names < 1:
            found.append("--max-task-names: at least 1")
        if self.worker_timeout <= 0:
            found.append("--worker-timeout: greater than 0")
        grace = self.worker_timeout if self.task_lost_grace is None else self.task_lost_grace
        if self.worker_retention < self.worker_timeout:
            found.append("--worker-retention: at least --worker-timeout")
        elif self.worker_retention < self.worker_timeout + max(grace, 0.0):
            # A worker forgotten before the grace ends would never have its tasks marked lost.
            found.append("--worker-retention: at least --worker-timeout + --task-lost-grace")
        if grace < 0:
            found.append("--task-lost-grace: 0 or more")
        if self.clock_offset_warning <= 0:
            found.append("--clock-offset-warning: greater than 0")
        if self.solo_busy_timeout < self.worker_timeout:
            found.append("--solo-busy-timeout: at least --worker-timeout")
        if self.event_queue_ttl <= 0 or self.event_queue_expires <= 0:
            found.append("--event-queue-ttl / --event-queue-expires: greater than 0")
        if self.reconnect_max_interval <= 0:
            found.append("--reconnect-max-interval: greater than 0")
        if self.history_max_field_bytes < 64:
            found.append("--history-max-field-bytes: at least 64")
        if self.history_retention < 0 or self.history_max_rows < 0:
            found.append("--history-retention / --history-max-rows: 0 (no limit) or more")
        if self.history_queue_size < 1:
            found.append("--history-queue-size: at least 1")
        if self.amqp_reader not in AMQP_READERS:
            found.append(f"--amqp-reader: one of {', '.join(AMQP_READERS)}")
        if self.history_writer not in HISTORY_WRITERS:
            found.append(f"--history-writer: one of {', '.join(HISTORY_WRITERS)}")
        if self.repair_interval <= 0:
            found.append("--repair-interval: greater than 0")
        if self.repair_batch < 1:
            found.append("--repair-batch: at least 1")
        if self.slow_threshold <= 0:
            found.append("--slow-threshold: greater than 0")
        history_problem = (history_url_problem(self.history_url)
                           if self.history_url is not None else None)
        if history_problem:
            found.append(history_problem)
        if self.queue_forget_after < 0:
            found.append("--queue-forget-after: 0 or more")
        management = self.rabbitmq_management_url
        management_problem = (management_url_problem(management)
                              if management is not None else None)
        if management_problem:
            found.append(management_problem)
        if self.inspect_interval <= 0 or self.inspect_timeout <= 0:
            found.append("--inspect-interval / --inspect-timeout: greater than 0")
        if not self.accept_content:
            found.append("--accept-content: at least one content type")
        found.extend(accept_content_problems(self.accept_content))
        found.extend(self._api_problems())
        found.extend(periodic_problems(self))
        return found

    def _api_problems(self) -> list[str]:
        found: list[str] = []
        token = self.api_token
        if token is not None and (len(token) < MIN_API_TOKEN_CHARS
                                  or any(ch.isspace() or not ch.isprintable() for ch in token)
                                  or not token.isascii()):
            found.append(f"--api-token: at least {MIN_API_TOKEN_CHARS} printable ASCII "
                         "characters without spaces (e.g. `openssl rand -hex 32`)")
        if self.max_manual_retries < 0:
            found.append("--max-manual-retries: 0 (no manual retry) or more")
        if self.result_backend is not None and "://" not in self.result_backend:
            found.append("--result-backend: a Celery result backend URL such as "
                         "redis://host:6379/1")
        if self.api_max_body_bytes < 1024:
            found.append("--api-max-body-bytes: at least 1024")
        if self.api_listen is not None and self.api_listen == self.listen:
            found.append("--api-listen: an address other than --listen")
        if (self.tls_cert is None) != (self.tls_key is None):
            found.append("--tls-cert / --tls-key: give both or neither")
        if self.ui_users_file is not None and not os.path.isfile(self.ui_users_file):
            found.append(f"--ui-users-file: no such file: {self.ui_users_file} (create it "
                         "with `celery-jobmon ui-user add NAME --users-file PATH`)")
        if self.ui_session_secret is not None and len(self.ui_session_secret) < 32:
            found.append("--ui-session-secret-file: at least 32 characters (e.g. "
                         "`openssl rand -hex 32`)")
        if self.grafana_url is not None and not self.grafana_url.startswith(
                ("http://", "https://")):
            found.append("--grafana-url: an http:// or https:// URL")
        if self.external_url is not None and not self.external_url.startswith(
                ("http://", "https://")):
            found.append("--external-url: an http:// or https:// URL")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path is not None and not os.path.isfile(path):
                found.append(f"{flag}: no such file: {path}")
        return found

    def validate(self) -> Settings:
        """Return ``self`` when valid.

        Raises:
            ValueError: with every problem, one per line.

        """
        found = self.problems()
        if found:
            raise ValueError("\n".join(found))
        return self
