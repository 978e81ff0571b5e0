"""The ``celery-jobmon`` command line (click). Every option also reads ``JOBMON_<OPTION>``."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__
from .options import BROKER_OPTIONS, SERVE_OPTIONS, apply, option, settings_from


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="celery-jobmon")
def main() -> None:
    """celery-jobmon: Prometheus metrics, history and actions for Celery."""


def _validated(options: dict[str, Any]) -> Any:
    try:
        return settings_from(options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@apply(BROKER_OPTIONS + SERVE_OPTIONS)
def serve(**options: Any) -> None:
    """Consume Celery events and serve Prometheus metrics on --listen."""
    from .app import serve as run
    from .logs import configure_logging

    settings = _validated(options)
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    run(settings)


@main.command()
@apply(BROKER_OPTIONS)
@option("--app", "app_ref", metavar="MODULE:ATTR", default=None,
        help="Your Celery app (as for `celery -A`), to check task_send_sent_event, "
             "result_backend and result_extended.")
@option("--listen-seconds", type=float, default=5.0,
        help="How long to listen for events from the workers.")
def check(app_ref: str | None, listen_seconds: float, **options: Any) -> None:
    """Tell what is missing for the metrics, with a fix for each problem.

    Exits 0 only when the broker is reachable, at least one worker answers and worker events
    arrive with task events on.
    """
    from .check import exit_code, format_results, run_checks
    from .logs import configure_logging

    settings = _validated(options)
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    results = run_checks(settings, app_ref=app_ref, listen_seconds=listen_seconds)
    click.echo(format_results(results))
    sys.exit(exit_code(results))
