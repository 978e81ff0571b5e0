"""The ``celery-jobmon`` command line (click). Every option also reads ``JOBMON_<OPTION>``."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__
from .options import BROKER_OPTIONS, DURATION, SERVE_OPTIONS, apply, option, settings_from


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
    from .history_setup import HistoryUnavailable
    from .logs import configure_logging

    settings = _validated(options)
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    try:
        run(settings)
    except HistoryUnavailable as exc:
        raise click.ClickException(str(exc)) from None


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


_HISTORY_URL = option("--history-url", default=None,
                      help="SQLAlchemy URL of the history database; default: the SQLite file "
                           "`serve` uses.")


def _history_engine(url: str | None) -> Any:
    from .history import create_history_engine, default_history_url

    try:
        return create_history_engine(url or default_history_url())
    except Exception as exc:
        raise click.ClickException(f"--history-url: {type(exc).__name__}: {exc}") from None


@main.group()
def db() -> None:
    """The history database's schema."""


@db.command("upgrade")
@_HISTORY_URL
def db_upgrade(history_url: str | None) -> None:
    """Migrate the history schema to the newest revision (what `serve` does at start)."""
    from .history import current_revision, safe_url, upgrade

    engine = _history_engine(history_url)
    try:
        upgrade(engine)
        click.echo(f"{safe_url(engine)}: schema at revision {current_revision(engine)}")
    except Exception as exc:
        raise click.ClickException(f"upgrade failed: {type(exc).__name__}: {exc}") from None
    finally:
        engine.dispose()


@main.group()
def history() -> None:
    """The SQL execution history."""


@history.command("prune")
@_HISTORY_URL
@option("--older-than", type=DURATION, default=None,
        help="Delete executions that finished (or last changed) longer ago than this.")
@option("--max-rows", type=click.IntRange(min=0), default=None,
        help="Keep only this many executions, newest first.")
@option("--dry-run/--no-dry-run", default=False, help="Count what would be deleted only.")
def history_prune(history_url: str | None, older_than: float | None, max_rows: int | None,
                  dry_run: bool) -> None:
    """Delete old executions by age and/or count (`serve` also does it every hour)."""
    from .history import prune

    if older_than is None and max_rows is None:
        raise click.UsageError("give --older-than, --max-rows or both")
    engine = _history_engine(history_url)
    try:
        count = prune(engine, older_than_seconds=older_than, max_rows=max_rows, dry_run=dry_run)
    except Exception as exc:
        raise click.ClickException(f"prune failed: {type(exc).__name__}: {exc}") from None
    finally:
        engine.dispose()
    click.echo(f"{'would delete' if dry_run else 'deleted'} {count} executions")
