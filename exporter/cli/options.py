"""Options of the ``celery-jobmon`` commands (click): every option also reads ``JOBMON_<OPTION>``;
defaults come from :mod:`exporter.config` and show in ``--help``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from exporter import config as c


class _Parsed(click.ParamType):
    """A click type backed by one of the pure parsers in :mod:`exporter.config`."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self._parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Parsed("duration", c.parse_duration)
BUCKETS = _Parsed("buckets", c.parse_buckets)
LISTEN = _Parsed("host:port", c.parse_listen)


def option(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``click.option`` that also reads ``JOBMON_<FLAG>`` and shows defaults and env vars."""
    env = "JOBMON_" + decls[0].lstrip("-").split("/")[0].replace("-", "_").upper()
    kwargs.setdefault("envvar", env)
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*decls, **kwargs)


def seconds(value: float) -> str:
    """Show a default duration in its largest whole unit: 86400 → ``24h``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size * 2 and value % size == 0 and not (unit == "d" and value % 86400):
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def buckets_text(values: tuple[float, ...]) -> str:
    """Show bucket bounds as the comma-separated text ``--*-buckets`` accepts."""
    return ",".join(f"{v:g}" for v in values)


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class TransportOption(click.ParamType):
    """A ``KEY=VALUE`` transport option; the environment variable holds several, split by
    :func:`~exporter.config.split_transport_options` (not at the spaces of a JSON value).
    """

    name = "KEY=VALUE"

    def split_envvar_value(self, rv: str) -> list[str]:
        """The entries of the environment variable's value."""
        return c.split_transport_options(rv)

#: Options of every command that talks to the broker (serve, check, retry, cancel):
#: the broker, how to read it, logging.
BROKER_OPTIONS: list[Decorator] = [
    option("--broker-url", envvar=["JOBMON_BROKER_URL", "CELERY_BROKER_URL"],
           default=c.DEFAULT_BROKER_URL,
           help="Celery broker URL (redis://, rediss://, amqp://, sentinel://)."),
    option("--broker-transport-option", "transport_options", multiple=True,
           type=TransportOption(),
           help="kombu transport option, repeatable (e.g. global_keyprefix=app1:). "
                "In the environment: several separated by spaces (a JSON value may hold "
                "spaces)."),
    option("--accept-content", default="json", show_default=True,
           help="Comma-separated content types accepted for event messages (json, msgpack, "
                "yaml, pickle)."),
    option("--enable-events/--no-enable-events", default=True,
           help="Ask workers to send task events every --inspect-interval (enable_events)."),
    option("--log-level", type=click.Choice(c.LOG_LEVELS, case_sensitive=False), default="INFO"),
    option("--log-format", type=click.Choice(c.LOG_FORMATS), default="text"),
    option("--inspect-timeout", type=DURATION, default=seconds(c.DEFAULT_INSPECT_TIMEOUT),
           help="How long to wait for workers' inspect replies."),
]

#: Options of the commands that act on tasks (``serve``'s action API, ``retry``).
RETRY_OPTIONS: list[Decorator] = [
    option("--max-manual-retries", type=click.IntRange(min=0), default=c.DEFAULT_MAX_MANUAL_RETRIES,
           help="Manual retries (API or `celery-jobmon retry`) allowed per task and the retries "
                "made from it."),
    option("--result-backend", default=None,
           help="Celery result backend URL (redis://host:6379/1) to read a failed task's real "
                "arguments from, when workers store them (result_extended=True)."),
]

#: Options of ``serve`` (with :data:`RETRY_OPTIONS`: the action API retries too).
SERVE_OPTIONS: list[Decorator] = [
    option("--listen", type=LISTEN, default=c.DEFAULT_LISTEN,
           help="host:port of the HTTP server (/metrics, /healthz, /readyz)."),
    option("--metric-prefix", default=c.DEFAULT_METRIC_PREFIX, help="Prefix of every metric name."),
    option("--runtime-buckets", type=BUCKETS, default=buckets_text(c.DEFAULT_RUNTIME_BUCKETS),
           help="Upper bounds (seconds) of celery_task_runtime_seconds."),
    option("--queue-wait-buckets", type=BUCKETS, default=buckets_text(c.DEFAULT_QUEUE_WAIT_BUCKETS),
           help="Upper bounds (seconds) of celery_task_queue_wait_seconds."),
    option("--max-tasks-in-memory", type=click.IntRange(min=1),
           default=c.DEFAULT_MAX_TASKS_IN_MEMORY,
           help="Capacity of the in-memory task index; finished tasks are kept up to a quarter "
                "of it and evicted first (least recently used)."),
    option("--max-task-names", type=click.IntRange(min=1), default=c.DEFAULT_MAX_TASK_NAMES,
           help='Distinct task names kept as label values; more fold into name="other".'),
    option("--worker-timeout", type=DURATION, default=seconds(c.DEFAULT_WORKER_TIMEOUT),
           help="A worker with no heartbeat for this long is reported down (worker_up 0)."),
    option("--worker-retention", type=DURATION, default=seconds(c.DEFAULT_WORKER_RETENTION),
           help="How long a down worker's series stay (at 0) before they are dropped."),
    option("--task-hostname-label/--no-task-hostname-label", default=False,
           help="Add the worker's hostname as a label to the task counters, histograms, "
                "running and lost series (one series per worker: mind the cardinality)."),
    option("--const-label", "const_labels", multiple=True, metavar="KEY=VALUE",
           help="Label every series on /metrics carries, e.g. cluster=eu-1 (repeatable; one "
                "exporter per broker, told apart in shared dashboards and rules). In the "
                "environment: several separated by spaces."),
    option("--task-lost-grace", type=DURATION, default=None,
           show_default="--worker-timeout",
           help="A task still running on a worker that has been down this long is counted "
                "lost (celery_task_lost_total) and its history row becomes LOST."),
    option("--solo-busy-timeout", type=DURATION,
           default=seconds(c.DEFAULT_SOLO_BUSY_TIMEOUT),
           help="A worker of the solo pool sends nothing while it runs a task: it is reported "
                "silent (celery_worker_silent 1, still up) until quiet this long, then down. "
                "Set it to the longest time limit of its tasks."),
    option("--clock-offset-warning", type=DURATION,
           default=seconds(c.DEFAULT_CLOCK_OFFSET_WARNING),
           help="Log a warning when a worker's clock has been this far from the exporter's "
                "for 5s (celery_worker_clock_offset_seconds), either way."),
    option("--event-queue-ttl", type=DURATION, default=seconds(c.DEFAULT_EVENT_QUEUE_TTL),
           help="RabbitMQ: message TTL of the exporter's event queue (Celery's default is 5s)."),
    option("--event-queue-expires", type=DURATION,
           default=seconds(c.DEFAULT_EVENT_QUEUE_EXPIRES),
           help="RabbitMQ: the exporter's event queue is deleted after being unused this long."),
    option("--inspect-interval", type=DURATION, default=seconds(c.DEFAULT_INSPECT_INTERVAL),
           help="Seconds between two broadcast rounds (enable_events, inspect)."),
    option("--reconnect-max-interval", type=DURATION,
           default=seconds(c.DEFAULT_RECONNECT_MAX_INTERVAL),
           help="Longest wait between two broker connection attempts."),
    option("--queue", "queues", multiple=True, metavar="NAME",
           help="Queue whose length is always reported, consumed or not (repeatable); queues "
                "that workers consume are found by inspect. In the environment: "
                "space-separated."),
    option("--queue-forget-after", type=DURATION, default=seconds(c.DEFAULT_QUEUE_FORGET_AFTER),
           help="An empty queue no worker consumes any more, and not given with --queue, is "
                "dropped after this long (a queue holding messages never is)."),
    option("--rabbitmq-management-url", default=None, metavar="URL",
           help="RabbitMQ management API (http://user:password@rabbitmq:15672; credentials: "
                "the broker's unless given) to list the vhost's queues, so that a queue holding "
                "messages that no worker consumes and no task-sent event named is shown. "
                "RabbitMQ brokers only."),
    option("--redis-fast-path/--no-redis-fast-path", default=True,
           help="On redis:// and rediss:// brokers, read events with redis-py directly "
                "(several times faster); off: Celery's kombu receiver."),
    option("--amqp-fast-path/--no-amqp-fast-path", default=True,
           help="On amqp:// and pyamqp:// brokers (no TLS, no failover list), consume the "
                "event queue with pika (a third of the CPU per event); off: Celery's kombu "
                "receiver."),
    option("--amqp-reader", type=click.Choice(c.AMQP_READERS), default="process",
           help="Where the RabbitMQ fast path's pika reads and parses the frames: a child "
                "process of its own (off the event thread's core; about 35 MB more memory) "
                "or the event thread. Fast path only (kombu reads in the event thread)."),
    option("--history/--no-history", default=True,
           help="Keep the SQL execution history (timing, arguments, errors of every task)."),
    option("--history-url", default=None,
           help="SQLAlchemy URL of the history database (postgresql+psycopg://user@host/db); "
                "default: a SQLite file under $XDG_DATA_HOME/celery-jobmon/."),
    option("--history-required/--no-history-required", default=False,
           help="Exit when the history database cannot be opened at start (default: run with "
                "metrics only, with a warning)."),
    option("--history-upgrade/--no-history-upgrade", default=True,
           help="Migrate the history schema at start (off: refuse a schema that is behind; "
                "run `celery-jobmon db upgrade`)."),
    option("--history-max-field-bytes", type=click.IntRange(min=64),
           default=c.DEFAULT_HISTORY_MAX_FIELD_BYTES,
           help="UTF-8 bytes kept of args, kwargs, result, exception message and traceback."),
    option("--history-retention", type=DURATION, default=seconds(c.DEFAULT_HISTORY_RETENTION),
           help="History rows older than this are pruned every hour (0: keep)."),
    option("--history-max-rows", type=click.IntRange(min=0), default=0,
           help="Keep at most this many history rows, newest first (0: no limit)."),
    option("--history-queue-size", type=click.IntRange(min=1),
           default=c.DEFAULT_HISTORY_QUEUE_SIZE,
           help="Events the history writer holds while the database is slow or down; beyond "
                "it, successes are dropped first and failures last."),
    option("--history-writer", type=click.Choice(c.HISTORY_WRITERS), default="process",
           help="Run the history writer in a child process of its own (a core of its own in a "
                "burst; 60-70 MB more memory) or in a thread of the exporter."),
    option("--history-exclude-task", "history_exclude_tasks", multiple=True,
           metavar="PATTERN",
           help="Task names (shell-style pattern, e.g. 'celery.*' for Celery's built-in tasks "
                "such as celery.chord_unlock) kept out of the history; metrics still count "
                "them (repeatable; in the environment: space-separated)."),
    option("--slow-threshold", type=DURATION, default=seconds(c.DEFAULT_SLOW_THRESHOLD),
           help="Per-task statistics flag a task whose average runtime is above this."),
    option("--repair/--no-repair", default=True,
           help="Check tasks left in progress by lost events (event gaps, missed events, a "
                "restart) against --result-backend and the workers (inspect query_task), and "
                "repair counters and history from what they say."),
    option("--repair-interval", type=DURATION, default=seconds(c.DEFAULT_REPAIR_INTERVAL),
           help="Seconds between two repair rounds; a task waits this long before its first "
                "check."),
    option("--repair-batch", type=click.IntRange(min=1), default=c.DEFAULT_REPAIR_BATCH,
           help="Tasks checked per repair round at most."),
    option("--api-token", default=None, show_default=False,
           help="Bearer token every /api/v1 request must send (Authorization: Bearer TOKEN); "
                "without one the action API answers 403. Prefer the environment variable or "
                "--api-token-file: a flag shows in the process list."),
    option("--api-token-file", default=None, metavar="PATH",
           help="Read the API token from this file (surrounding whitespace stripped), e.g. a "
                "mounted secret."),
    *RETRY_OPTIONS,
    option("--api-max-body-bytes", type=click.IntRange(min=1024),
           default=c.DEFAULT_API_MAX_BODY_BYTES,
           help="Largest request body the action API reads; larger ones are answered 413."),
    option("--api-listen", type=LISTEN, default=None, metavar="HOST:PORT",
           help="Serve the action API and the job browser (/ui/) on their own address (e.g. "
                "127.0.0.1:9809), apart from /metrics; default: under /api/v1 and /ui on "
                "--listen."),
    option("--tls-cert", default=None, metavar="PATH",
           help="PEM certificate: serve HTTPS (with --tls-key) on --listen and --api-listen."),
    option("--tls-key", default=None, metavar="PATH", help="PEM private key for --tls-cert."),
    option("--app", "beat_app", default=None, metavar="MODULE:ATTR",
           help="Watch the periodic entries of your Celery app's beat_schedule (imported as "
                "`celery -A` does; off by default: your code is not imported)."),
    option("--redbeat-url", default=None, metavar="URL",
           help="Watch the periodic entries RedBeat keeps in this Redis (redis://host/0)."),
    option("--redbeat-key-prefix", default=c.DEFAULT_REDBEAT_KEY_PREFIX,
           help="RedBeat's redbeat_key_prefix."),
    option("--django-beat-url", default=None, metavar="URL",
           help="Watch the periodic tasks of django-celery-beat in this database (SQLAlchemy "
                "URL of the Django project's database)."),
    option("--expect", "expect", multiple=True, metavar="TASK=INTERVAL",
           help="A task that must be sent at least every INTERVAL, e.g. reports.nightly=24h "
                "(repeatable; in the environment: space-separated)."),
    option("--beat-timezone", default="UTC",
           help="Time zone of the crontab entries read from RedBeat (the beat's timezone "
                "setting)."),
    option("--periodic-interval", type=DURATION, default=seconds(c.DEFAULT_PERIODIC_INTERVAL),
           help="Seconds between two checks of the periodic entries (sources and history)."),
    option("--periodic-grace", type=DURATION, default=seconds(c.DEFAULT_PERIODIC_GRACE),
           help="A periodic run not sent this long after it was due is counted missed."),
    option("--chord-stuck-after", type=DURATION, default=seconds(c.DEFAULT_CHORD_STUCK_AFTER),
           help="A chord's callback (or a chain's next task) that has not started this long "
                "after its predecessor ended counts in celery_chords_stuck."),
    option("--ui-users-file", default=None, metavar="PATH",
           help="Turn the job browser (/ui/) on with the users in this file (name:role:hash "
                "lines; `celery-jobmon ui-user add`). Without it /ui/ answers 403."),
    option("--ui-session-secret-file", default=None, metavar="PATH",
           help="Read the key that signs the UI's session and CSRF cookies from this file; "
                "default: a random key made at start (sessions end at a restart and differ "
                "between replicas)."),
    option("--grafana-url", default=None, metavar="URL",
           help="Grafana's base URL (https://grafana.example.com): the UI links to the "
                "celery-jobmon dashboards there."),
    option("--external-url", default=None, metavar="URL",
           help="The job browser's URL as users reach it (https://jobmon.example.com/ui): "
                "exported as celery_jobmon_ui_info{external_url}, which the alerts and the "
                "Grafana tables read to link to its pages."),
]


def apply(decorators: list[Decorator]) -> Decorator:
    """One decorator applying ``decorators`` so they show in ``--help`` in list order."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return decorate


def settings_from(options: dict[str, Any]) -> c.Settings:
    """Build validated :class:`~exporter.config.Settings` from click's parsed options.

    Raises:
        ValueError: every invalid setting, one per line, each naming its flag.

    """
    file_problems = [problem for problem in (_read_token_file(options),
                                             _read_ui_secret_file(options)) if problem]
    pairs = list(options.pop("transport_options"))
    try:
        options["const_labels"] = c.parse_const_labels(options.pop("const_labels", ()))
    except ValueError as exc:
        raise ValueError(f"--const-label: {exc}") from None
    try:
        options["expect"] = tuple(c.parse_expectation(text) for text in options.pop("expect", ()))
    except ValueError as exc:
        raise ValueError(f"--expect: {exc}") from None
    for name in ("queues", "history_exclude_tasks"):
        if name in options:
            options[name] = tuple(options[name])
    accept = tuple(part.strip() for part in options.pop("accept_content").split(",")
                   if part.strip())
    try:
        transport_options = c.parse_transport_options(pairs)
    except ValueError as exc:
        raise ValueError(f"--broker-transport-option: {exc}") from None
    settings = c.Settings(transport_options=transport_options, accept_content=accept, **options)
    if file_problems:
        raise ValueError("\n".join([*settings.problems(), *file_problems]))
    return settings.validate()


def _read_token_file(options: dict[str, Any]) -> str | None:
    """Replace ``api_token_file`` in ``options`` by the token read from it.

    Returns:
        A one-line problem naming the flag, or ``None``.

    """
    path = options.pop("api_token_file", None)
    if path is None:
        return None
    if options.get("api_token"):
        return "--api-token / --api-token-file: give one, not both"
    try:
        with open(path, encoding="utf-8") as file:
            options["api_token"] = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        return f"--api-token-file: cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
    return None


def _read_ui_secret_file(options: dict[str, Any]) -> str | None:
    """Replace ``ui_session_secret_file`` in ``options`` by ``ui_session_secret`` read from it
    (surrounding whitespace stripped).

    Returns:
        A one-line problem naming the flag, or ``None``.

    """
    path = options.pop("ui_session_secret_file", None)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            options["ui_session_secret"] = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        return (f"--ui-session-secret-file: cannot read {path}: "
                f"{getattr(exc, 'strerror', None) or exc}")
    return None
