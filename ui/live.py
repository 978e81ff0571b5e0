"""The route shape of the pages that show what the workers hold now (Running, Scheduled):
build the rows from the action services' context — the services ask the workers
(:mod:`actions.held`) — and render them with the reasons of the sources that did not answer
and the clock's time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from actions.context import ActionContext
from ui.access import ui_context
from ui.templating import render

#: Builds a page's rows: ``(rows, reasons a source did not answer)``.
Rows = Callable[[ActionContext], tuple[Sequence[Any], list[str]]]


def live_page(request: Request, template: str, rows: Rows) -> Response:
    """Render ``template`` with ``rows``, ``problems`` (from ``rows``) and ``now`` (the UI's
    clock, epoch seconds).
    """
    context = ui_context(request)
    found, problems = rows(context.actions)
    return render(request, template, {"rows": found, "problems": problems,
                                      "now": context.clock()})
