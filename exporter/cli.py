"""The ``celery-jobmon`` command line (click). Every option also reads ``JOBMON_<OPTION>``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from . import __version__
from . import config as c


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


def _option(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``click.option`` that also reads ``JOBMON_<FLAG>`` and shows defaults and env vars."""
    env = "JOBMON_" + decls[0].lstrip("-").split("/")[0].replace("-", "_").upper()
    kwargs.setdefault("envvar", env)
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(*decls, **kwargs)


def _seconds(value: float) -> str:
    """Show a default duration in its largest whole unit: 86400 → ``24h``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size * 2 and value % size == 0 and not (unit == "d" and value % 86400):
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def _buckets(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="celery-jobmon")
def main() -> None:
    """celery-jobmon: Prometheus metrics, history and actions for Celery."""


@main.command()
@_option("--broker-url", envvar=["JOBMON_BROKER_URL", "CELERY_BROKER_URL"],
         default=c.DEFAULT_BROKER_URL,
         help="Celery broker URL (redis://, rediss://, amqp://, sentinel://).")
@_option("--listen", type=LISTEN, default=c.DEFAULT_LISTEN,
         help="host:port of the HTTP server (/metrics, /healthz, /readyz).")
@_option("--broker-transport-option", "transport_options", multiple=True, metavar="KEY=VALUE",
         help="kombu transport option, repeatable (e.g. global_keyprefix=app1:). "
              "In the environment: several separated by spaces.")
@_option("--accept-content", default="json", show_default=True,
         help="Comma-separated content types accepted for event messages (json, msgpack, "
              "yaml, pickle).")
@_option("--enable-events/--no-enable-events", default=True,
         help="Ask workers to send task events every --inspect-interval (enable_events).")
@_option("--log-level", type=click.Choice(c.LOG_LEVELS, case_sensitive=False), default="INFO")
@_option("--log-format", type=click.Choice(c.LOG_FORMATS), default="text")
@_option("--metric-prefix", default=c.DEFAULT_METRIC_PREFIX, help="Prefix of every metric name.")
@_option("--runtime-buckets", type=BUCKETS, default=_buckets(c.DEFAULT_RUNTIME_BUCKETS),
         help="Upper bounds (seconds) of celery_task_runtime_seconds.")
@_option("--queue-wait-buckets", type=BUCKETS, default=_buckets(c.DEFAULT_QUEUE_WAIT_BUCKETS),
         help="Upper bounds (seconds) of celery_task_queue_wait_seconds.")
@_option("--max-tasks-in-memory", type=click.IntRange(min=1),
         default=c.DEFAULT_MAX_TASKS_IN_MEMORY,
         help="Capacity of the in-memory task index (least recently used tasks are evicted).")
@_option("--max-task-names", type=click.IntRange(min=1), default=c.DEFAULT_MAX_TASK_NAMES,
         help='Distinct task names kept as label values; more fold into name="other".')
@_option("--worker-timeout", type=DURATION, default=_seconds(c.DEFAULT_WORKER_TIMEOUT),
         help="A worker with no heartbeat for this long is reported down (worker_up 0).")
@_option("--worker-retention", type=DURATION, default=_seconds(c.DEFAULT_WORKER_RETENTION),
         help="How long a down worker's series stay (at 0) before they are dropped.")
@_option("--event-queue-ttl", type=DURATION, default=_seconds(c.DEFAULT_EVENT_QUEUE_TTL),
         help="RabbitMQ: message TTL of the exporter's event queue (Celery's default is 5s).")
@_option("--event-queue-expires", type=DURATION,
         default=_seconds(c.DEFAULT_EVENT_QUEUE_EXPIRES),
         help="RabbitMQ: the exporter's event queue is deleted after being unused this long.")
@_option("--inspect-interval", type=DURATION, default=_seconds(c.DEFAULT_INSPECT_INTERVAL),
         help="Seconds between two broadcast rounds (enable_events, inspect).")
@_option("--inspect-timeout", type=DURATION, default=_seconds(c.DEFAULT_INSPECT_TIMEOUT),
         help="How long to wait for workers' inspect replies.")
@_option("--reconnect-max-interval", type=DURATION,
         default=_seconds(c.DEFAULT_RECONNECT_MAX_INTERVAL),
         help="Longest wait between two broker connection attempts.")
@_option("--redis-fast-path/--no-redis-fast-path", default=True,
         help="On redis:// and rediss:// brokers, read events with redis-py directly "
              "(several times faster); off: Celery's kombu receiver, as on RabbitMQ.")
def serve(**options: Any) -> None:
    """Consume Celery events and serve Prometheus metrics on --listen."""
    from .app import serve as run
    from .logs import configure_logging

    try:
        settings = _settings(options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    run(settings)


def _settings(options: dict[str, Any]) -> c.Settings:
    pairs = list(options.pop("transport_options"))
    accept = tuple(part.strip() for part in options.pop("accept_content").split(",")
                   if part.strip())
    try:
        transport_options = c.parse_transport_options(pairs)
    except ValueError as exc:
        raise ValueError(f"--broker-transport-option: {exc}") from None
    return c.Settings(transport_options=transport_options, accept_content=accept,
                      **options).validate()
