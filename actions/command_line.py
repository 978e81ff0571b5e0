"""What the ``retry`` and ``cancel`` commands exit with, and what they print on an error with
``--json``.

Exit status:

====  ==========================================================================================
0     done: the retry was sent (or its dry run shown); the revoke or terminate was acknowledged
      by at least one worker
1     refused or failed, nothing done: unknown task, not eligible, broker or history
      unavailable, a bad value
2     usage: an option or argument that cannot be parsed, or settings that do not fit together
      (nothing was run)
3     ``cancel`` only: the revoke was sent but no worker acknowledged it within
      ``--inspect-timeout``, so it may be lost (workers keep revokes in memory: one that starts
      later runs the task); the answer and its warning are printed as for 0
====  ==========================================================================================

With ``--json`` everything the command prints is JSON on stdout, as its success output is: an
error is the API's RFC 9457 problem document (``type``, ``title``, ``status``, ``detail``,
``reason`` …; see :mod:`actions.http.problems`), a usage error the API's 400 with
``errors: [{"loc": ["option" | "argument", name], "msg": …}]``. Without ``--json`` errors are
text on stderr (``Error: Unknown task (404): …``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:  # the command line imports this module at start: services load when run
    from actions.schemas import CancelResult

T = TypeVar("T")
#: Refused or failed: nothing was done.
EXIT_REFUSED = 1
#: ``cancel``: the revoke was sent and no worker acknowledged it.
EXIT_UNACKNOWLEDGED = 3
#: The table above, for the commands' ``--help`` (click keeps ``\b`` paragraphs as they are).
EXIT_HELP = (
    "\b\nExit status: 0 done (cancel: acknowledged by at least one worker); 1 refused or\n"
    "failed, nothing done (unknown task, not eligible, broker or history unavailable);\n"
    "2 options or arguments that cannot be used; 3 (cancel) sent, but no worker\n"
    "acknowledged the revoke: it may be lost. With --json, errors are JSON on stdout too\n"
    "(the API's problem document).")


def _print(document: dict[str, Any], code: int) -> NoReturn:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    raise click.exceptions.Exit(code)


def usage_problem(exc: click.ClickException) -> dict[str, Any]:
    """The API's 400 problem for a click error (``errors`` names the option or argument when
    click says which), e.g. ``{"type": "tag:…:invalid-parameter", "title": "Invalid
    parameter", "status": 400, "detail": "Missing argument 'TASK_ID'.", "errors": [{"loc":
    ["argument", "task_id"], "msg": "Missing argument 'TASK_ID'."}]}``.
    """
    from actions.http.problems import problem_body

    message = exc.format_message()
    param = getattr(exc, "param", None)
    errors = ([{"loc": [param.param_type_name, param.name], "msg": message}]
              if param is not None and param.name else [])
    return problem_body(400, "Invalid parameter", message, slug="invalid-parameter",
                        extra={"errors": errors or None})


class JsonErrors(click.Command):
    """A command with a ``--json`` flag (parameter ``as_json``): with it, click's own errors
    — unparseable options and arguments, missing ones, a :class:`click.ClickException` raised
    while running — are printed as JSON on stdout (:func:`usage_problem`) with click's exit
    status (2 for usage, else 1).
    """

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        """click's, with its usage errors as JSON when ``--json`` is among ``args``."""
        wants_json = "--json" in args
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            if not wants_json:
                raise
            _print(usage_problem(exc), exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        """click's, with a :class:`click.ClickException` as JSON under ``--json``."""
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            if not ctx.params.get("as_json"):
                raise
            _print(usage_problem(exc), exc.exit_code)


def json_refusals(work: Callable[[Any], T], as_json: bool, secrets: Iterable[str]
                  ) -> Callable[[Any], T]:
    """``work`` (a service call on the action context) whose
    :class:`~actions.errors.ActionError`, with ``as_json``, is printed as the API's problem
    document (``secrets`` masked) and exits :data:`EXIT_REFUSED`; without ``as_json``,
    ``work`` itself (the caller prints the error as text).
    """
    if not as_json:
        return work

    from actions.errors import ActionError
    from actions.http.problems import action_error_body
    from exporter.secrets import Redactor

    def run(ctx: Any) -> T:
        try:
            return work(ctx)
        except ActionError as exc:
            _print(action_error_body(exc, Redactor(secrets)), EXIT_REFUSED)

    return run


def exit_status(result: CancelResult) -> int:
    """0, or :data:`EXIT_UNACKNOWLEDGED` when no worker acknowledged the revoke."""
    return 0 if result.acknowledged_by else EXIT_UNACKNOWLEDGED
