"""The ``celery-jobmon`` command line (click). Every option also reads ``JOBMON_<OPTION>``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from actions.command_line import EXIT_HELP, JsonErrors
from exporter import __version__
from exporter import config as c
from exporter.cli.options import (
    BROKER_OPTIONS,
    DURATION,
    LISTEN,
    RETRY_OPTIONS,
    SERVE_OPTIONS,
    apply,
    option,
    settings_from,
)
from exporter.logs import describe


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="celery-jobmon")
def main() -> None:
    """celery-jobmon: Prometheus metrics, history and actions for Celery."""


def _validated(options: dict[str, Any]) -> Any:
    """The validated settings of a command's options.

    Raises:
        click.UsageError: naming every invalid option.

    """
    try:
        return settings_from(options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _configured(options: dict[str, Any]) -> Any:
    """:func:`_validated`, with logging set up as the settings say (level, format, secrets)."""
    from exporter.logs import configure_logging

    settings = _validated(options)
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    return settings


@main.command()
@apply(BROKER_OPTIONS + SERVE_OPTIONS)
def serve(**options: Any) -> None:
    """Consume Celery events and serve Prometheus metrics on --listen."""
    from exporter.app import serve as run
    from exporter.history.setup import HistoryUnavailable
    from exporter.logs import configure_logging
    from ui.users import UsersFileError

    settings = _validated(options)
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    try:
        run(settings)
    except HistoryUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except UsersFileError as exc:
        raise click.ClickException(f"--ui-users-file: {exc}") from None


@main.command()
@apply(BROKER_OPTIONS)
@option("--app", "app_ref", metavar="MODULE:ATTR", default=None,
        help="Your Celery app (as for `celery -A`), to check task_send_sent_event, "
             "result_backend and result_extended.")
@option("--listen-seconds", type=float, default=5.0,
        help="How long to listen for events from the workers.")
@option("--history/--no-history", default=True,
        help="Check that the history database accepts writes (off: the row says skipped).")
@option("--history-url", default=None,
        help="SQLAlchemy URL of the history database, as for `serve`; default: the SQLite "
             "file `serve` uses.")
def check(app_ref: str | None, listen_seconds: float, **options: Any) -> None:
    """Tell what is missing for the metrics, with a fix for each problem.

    Exits 0 only when the broker is reachable, at least one worker answers and worker events
    arrive with task events on.
    """
    import logging

    from exporter.cli.check import history_probe, run_checks
    from exporter.cli.check_rows import exit_code, format_results
    from exporter.logs import configure_logging

    settings = _validated(options)
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    # Alembic logs its plugin setup at INFO when imported: not news for the user.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    results = run_checks(settings, app_ref=app_ref, listen_seconds=listen_seconds,
                         history_check=history_probe(settings) if settings.history else None)
    click.echo(format_results(results))
    sys.exit(exit_code(results))


def _arg(*decls: str, **kwargs: Any) -> Any:
    """An option of one invocation (what to act on, how): no environment variable, so a stray
    ``JOBMON_QUEUE`` (a ``serve`` setting) or ``JOBMON_TERMINATE`` cannot change an action.
    """
    kwargs.setdefault("show_default", True)
    return click.option(*decls, **kwargs)


_HISTORY_URL = option("--history-url", default=None,
                      help="SQLAlchemy URL of the history database; default: the SQLite file "
                           "`serve` uses.")


def _history_engine(url: str | None) -> Any:
    """The history engine for ``--history-url``; a URL that cannot work is a usage error (exit
    2, naming the flag, never repeating the URL).
    """
    from exporter.config import history_url_problem
    from exporter.history import create_history_engine, default_history_url

    problem = history_url_problem(url) if url is not None else None
    if problem:
        raise click.BadParameter(problem.removeprefix("--history-url: "),
                                 param_hint="'--history-url'")
    try:
        return create_history_engine(url or default_history_url())
    except Exception as exc:
        raise click.ClickException(f"--history-url: {describe(exc)}") from None


_CREATED_BY_SERVE = ("check --history-url (JOBMON_HISTORY_URL); `serve` creates it when it "
                     "starts with that URL")


def _existing_history(url: str | None) -> str:
    """The history URL for a command that reads or deletes rows (``tasks``, ``history prune``):
    ``url`` or the default SQLite file, checked to hold a history before use, so that a wrong
    ``--history-url`` is named as such instead of failing on a missing table, and no SQLite
    file is created by opening it (SQLite creates a missing file on connect).

    Raises:
        click.BadParameter: the URL cannot work (as :func:`_history_engine`).
        click.ClickException: the SQLite file does not exist, the database has no history
            schema (what to do is in the message), or it cannot be read (exit 1).

    """
    from exporter.history import current_revision, default_history_url

    engine = _history_engine(url)  # the usage errors of a URL that cannot work; opens nothing
    where = "the database of --history-url"
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "",
                                                                                 ":memory:"):
        where = str(engine.url.database)
        if not os.path.exists(where):
            raise click.ClickException(f"no history database at {where}: {_CREATED_BY_SERVE}")
    try:
        revision = current_revision(engine)
    except Exception as exc:
        raise click.ClickException(f"cannot read the history database: {describe(exc)}"
                                   ) from None
    finally:
        engine.dispose()
    if revision is None:
        raise click.ClickException(f"no history in {where} (no schema): {_CREATED_BY_SERVE}, "
                                   "or `celery-jobmon db upgrade`")
    return url or default_history_url()


@main.group()
def db() -> None:
    """The history database's schema."""


@db.command("upgrade")
@_HISTORY_URL
def db_upgrade(history_url: str | None) -> None:
    """Migrate the history schema to the newest revision (what `serve` does at start)."""
    from exporter.history import current_revision, safe_url, upgrade

    engine = _history_engine(history_url)
    try:
        upgrade(engine)
        click.echo(f"{safe_url(engine)}: schema at revision {current_revision(engine)}")
    except Exception as exc:
        raise click.ClickException(f"upgrade failed: {describe(exc)}") from None
    finally:
        engine.dispose()


@main.group()
def history() -> None:
    """The SQL execution history."""


@history.command("prune")
@_HISTORY_URL
@option("--older-than", type=DURATION, default=None, envvar="JOBMON_HISTORY_RETENTION",
        help="Delete executions that finished (or last changed) longer ago than this; 0: no "
             "age limit (as serve's --history-retention).")
@option("--max-rows", type=click.IntRange(min=0), default=None, envvar="JOBMON_HISTORY_MAX_ROWS",
        help="Keep only this many executions, newest first; 0: no row limit (as serve's "
             "--history-max-rows).")
@_arg("--dry-run/--no-dry-run", default=False, help="Count what would be deleted only.")
def history_prune(history_url: str | None, older_than: float | None, max_rows: int | None,
                  dry_run: bool) -> None:
    """Delete old executions by age and/or count, as `serve` does every hour with
    --history-retention and --history-max-rows (whose environment variables these limits read).
    """
    from exporter.history import prune

    if not older_than and not max_rows:
        raise click.UsageError(
            "nothing to prune: give --older-than or --max-rows above 0 (0 is no limit, as for "
            "serve's --history-retention and --history-max-rows)")
    engine = _history_engine(_existing_history(history_url))
    try:
        count = prune(engine, older_than_seconds=older_than or None, max_rows=max_rows or None,
                      dry_run=dry_run)
    except Exception as exc:
        raise click.ClickException(f"prune failed: {describe(exc)}") from None
    finally:
        engine.dispose()
    click.echo(f"{'would delete' if dry_run else 'deleted'} {count} executions")


# -- actions: the same services as the HTTP API --------------------------------------------

_JSON = _arg("--json", "as_json", is_flag=True, default=False,
               help="Print the API's JSON instead of text.")


def _actor() -> str:
    """``cli:<login>``: who is recorded in the audit trail for a command-line action."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (container without a passwd entry)
        return "cli"


def _run_action(settings: Any, history_url: str | None, work: Any, render: Any,
                as_json: bool, search_queues: bool = False, http_status: bool = True) -> None:
    """Build the action context, run ``work(ctx)``, print ``render(result)`` or its JSON; an
    action error exits 1 with ``Error: <title> (<status>, <reason>): <detail>`` (secrets
    masked; without the HTTP status when ``http_status`` is false).
    ``search_queues``: the context reads the waiting queues when asked (cancel).
    """
    from actions.errors import ActionError
    from actions.wiring import action_context
    from exporter.secrets import Redactor

    engine = _history_engine(history_url)
    ctx = action_context(settings, history=engine, search_queues=search_queues)
    redact = Redactor(settings.secrets())
    try:
        result = work(ctx)
    except ActionError as exc:
        said = [str(exc.status)] if http_status else []
        said += [exc.extra["reason"]] if exc.extra.get("reason") else []
        title = f"{exc.title} ({', '.join(said)})" if said else exc.title
        raise click.ClickException(redact(f"{title}: {exc.detail}")) from None
    finally:
        engine.dispose()
        ctx.broker.app.close()  # type: ignore[attr-defined]
    click.echo(result.model_dump_json(indent=2) if as_json else render(result))


@main.command(cls=JsonErrors, epilog=EXIT_HELP)
@click.argument("task_id")
@apply(BROKER_OPTIONS + RETRY_OPTIONS)
@_HISTORY_URL
@_arg("--dry-run/--no-dry-run", default=False,
        help="Show exactly what would be sent (name, arguments, queue); send nothing.")
@_arg("--include-revoked/--no-include-revoked", default=False,
        help="Also retry a REVOKED task (default: FAILURE only).")
@_arg("--force/--no-force", default=False,
        help="Send even if the task was retried already (default: refuse, naming its retry).")
@_JSON
def retry(task_id: str, dry_run: bool, include_revoked: bool, force: bool, as_json: bool,
          **options: Any) -> None:
    """Re-send a failed task with its original arguments as a new task (as the API's
    POST /api/v1/tasks/TASK_ID/retry). Exits 1 when the task is unknown or not eligible.
    """
    from actions.command_line import json_refusals
    from actions.retry import retry_task
    from actions.text import retry_text

    settings = _configured(options)
    _run_action(settings, settings.history_url, json_refusals(lambda ctx: retry_task(
        ctx, task_id, actor=_actor(), dry_run=dry_run, include_revoked=include_revoked,
        force=force), as_json, settings.secrets()),
        retry_text, as_json)


@main.command(cls=JsonErrors, epilog=EXIT_HELP)
@click.argument("task_id")
@apply(BROKER_OPTIONS)
@_HISTORY_URL
@_arg("--terminate/--no-terminate", default=False,
        help="Stop the task with a signal if it is running (default: refuse).")
@_arg("--signal", "signal_name", default=None, metavar="SIGNAL",
        help="Signal for --terminate: SIGTERM (default), SIGINT, SIGQUIT, SIGKILL, SIGUSR1.")
@_arg("--queue", "queues", multiple=True, metavar="NAME",
        help="Redis: a queue to look for the task in when no event, history row or worker "
             "knows it (repeatable); the queues bound in Redis are searched after these.")
@_JSON
def cancel(task_id: str, terminate: bool, signal_name: str | None, as_json: bool,
           **options: Any) -> None:
    """Revoke a waiting or scheduled task; a running one only with --terminate (as the API's
    POST /api/v1/tasks/TASK_ID/cancel). A task only waiting in a Redis queue (sent before any
    event was heard) is found there: --queue and the queues bound in Redis. Prints what was
    asked and which workers acknowledged, with warnings. Exits 1 when the task is unknown or
    finished, or its worker's pool cannot stop it (threads); 3 when no worker acknowledged.
    """
    from actions.cancel import cancel_task
    from actions.command_line import exit_status, json_refusals
    from actions.text import cancel_text

    settings = _configured(options)
    answers: list[Any] = []

    def work(ctx: Any) -> Any:
        answers.append(cancel_task(ctx, task_id, actor=_actor(), terminate=terminate,
                                   signal=signal_name))
        return answers[-1]

    _run_action(settings, settings.history_url, json_refusals(work, as_json, settings.secrets()),
                cancel_text, as_json, search_queues=True)
    click.get_current_context().exit(exit_status(answers[-1]))


@main.command()
@_HISTORY_URL
@_arg("--state", "states", multiple=True, metavar="STATE",
        help="Celery state (failed, succeeded, running, PENDING, …); repeatable or "
             "comma-separated.")
@_arg("--name", default=None, help="Exact task name.")
@_arg("--queue", default=None, help="Exact queue name.")
@_arg("--exception-type", default=None, metavar="CLASS",
        help="Executions that failed (FAILURE) with this exception class, e.g. KeyError.")
@_arg("--since", default=None, help="State changed at or after: ISO 8601 or epoch seconds.")
@_arg("--until", default=None, help="State changed before: ISO 8601 or epoch seconds.")
@_arg("--limit", type=click.IntRange(1, 1000), default=20, help="Rows per page.")
@_arg("--cursor", default=None, help="Next page: the cursor the previous page printed.")
@_JSON
def tasks(history_url: str | None, states: tuple[str, ...], name: str | None,
          queue: str | None, exception_type: str | None, since: str | None,
          until: str | None, limit: int, cursor: str | None, as_json: bool) -> None:
    """List executions from the history, newest state change first (as the API's
    GET /api/v1/tasks).
    """
    from actions import reads
    from actions.params import check_identifier, parse_states, parse_time
    from actions.text import tasks_text
    from exporter.config import Settings

    def work(ctx: Any) -> Any:
        return reads.list_tasks(
            ctx, states=parse_states(states), name=check_identifier(name, "name"),
            queue=check_identifier(queue, "queue"),
            exception_type=check_identifier(exception_type, "exception_type"),
            since=parse_time(since, "since") if since is not None else None,
            until=parse_time(until, "until") if until is not None else None,
            limit=limit, cursor=cursor)

    history_url = _existing_history(history_url)
    settings = Settings(history_url=history_url)
    _run_action(settings, history_url, work, tasks_text, as_json, http_status=False)


@main.command()
@option("--listen", type=LISTEN, default="127.0.0.1:9808", metavar="HOST:PORT",
        help="Address of /metrics, the API and the pages (loopback by default).")
@option("--log-level", type=click.Choice(c.LOG_LEVELS, case_sensitive=False), default="WARNING")
def demo(listen: tuple[str, int], log_level: str) -> None:
    """Run the whole product on this machine with nothing installed: an in-memory broker, a
    worker, a producer of demo tasks, the exporter, the history and the API (Ctrl-C ends it).
    """
    from exporter.demo import run_demo

    run_demo(listen, log_level.upper())


# -- the job browser's users ---------------------------------------------------------------

@main.group("ui-user")
def ui_user() -> None:
    """Users of the job browser (/ui/): the file `serve --ui-users-file` reads."""


@ui_user.command("add")
@click.argument("name")
@_arg("--role", type=click.Choice(["viewer", "operator"]), default="viewer",
      help="viewer: read the pages; operator: also retry and cancel.")
@option("--users-file", envvar="JOBMON_UI_USERS_FILE", required=True, metavar="PATH",
        help="The users file (created with mode 0600 when missing, its directory with mode "
             "0700).")
@_arg("--password-stdin", is_flag=True, default=False,
      help="Read the password from the first line of standard input instead of a prompt.")
def ui_user_add(name: str, role: str, users_file: str, password_stdin: bool) -> None:
    """Add user NAME (or replace its role and password) with an argon2 hash of the password,
    asked twice at the prompt or read from standard input.
    """
    from ui.users import UsersFileError, add_user, missing_directories

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.UsageError("the password needs at least 8 characters")
    created = missing_directories(users_file)
    try:
        new = add_user(users_file, name, role, password)
    except UsersFileError as exc:
        raise click.ClickException(f"{users_file}: {exc}") from None
    if created:
        click.echo(f"created {', '.join(created)} (mode 0700)")
    click.echo(f"{'added' if new else 'replaced'} {name} ({role}) in {users_file}")
