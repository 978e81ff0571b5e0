"""Failed executions (``GET /ui/failed``), grouped by exception, and bulk retry.

- ``GET /failed``: FAILURE executions newest first, 50 a page (cursor pagination), filtered
  by the URL (:mod:`ui.filters`), each with its exception class and the first line of its
  message; above them the failures of the range (default: the last 24 hours) grouped by
  exception class, each group a link to the list filtered by it.
- ``GET /failed/retry`` (operator): what a bulk retry of the filtered executions would do —
  :func:`actions.retry.bulk_retry` as a dry run: each execution would be retried or is
  skipped, and why — with a confirmation form. Executions retried already are skipped
  (``already-retried``) unless ``include_retried=true``, which the preview links to when it
  skipped some.
- ``POST /failed/retry`` (operator): the bulk retry itself, then what happened to each
  execution. The selection is made again at that moment, so it can differ from the preview;
  the answer lists what was actually done.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query
from starlette.requests import Request
from starlette.responses import Response

from actions.errors import InvalidParameter, history_errors
from actions.retry import bulk_retry
from actions.schemas import BulkRetryFilter
from exporter.history import InvalidCursor, failure_groups, list_executions
from ui import once
from ui.access import actor, operator, ui_context, viewer
from ui.filters import ListFilter, list_filter
from ui.templating import render
from ui.users import User

router = APIRouter()
PAGE_SIZE = 50
#: Failure groups shown, and the range they cover when the filter gives none (seconds).
GROUPS = 20
GROUP_WINDOW = 86400.0
#: Most executions one bulk retry selects (the API's default).
BULK_LIMIT = 100


def first_line(text: str | None) -> str:
    """The first non-blank line of an exception message (``""`` for none)."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


@router.get("/failed", include_in_schema=False)
def failed(request: Request, user: Annotated[User, Depends(viewer)],
           selected: Annotated[ListFilter, Depends(list_filter)],
           cursor: Annotated[str | None, Query(max_length=512)] = None) -> Response:
    """Render one page of failed executions and the failure groups."""
    context = ui_context(request)
    engine = context.actions.engine()
    since = selected.since if selected.since is not None else context.clock() - GROUP_WINDOW
    try:
        with history_errors():
            page = list_executions(engine, states=["FAILURE"], name=selected.name,
                                   queue=selected.queue, exception_type=selected.exception,
                                   since=selected.since, until=selected.until,
                                   limit=PAGE_SIZE, cursor=cursor or None)
            groups = failure_groups(engine, since=since, until=selected.until,
                                    name=selected.name, queue=selected.queue, limit=GROUPS)
    except InvalidCursor:
        raise InvalidParameter("cursor: not a cursor of this list (follow the Next link "
                               "unchanged)", parameter="cursor") from None
    return render(request, "failed.html", {
        "filter": selected, "rows": page.items, "next_cursor": page.next_cursor,
        "groups": groups, "groups_since": since, "first_line": first_line,
        "first_page": cursor is None,
    })


def _selection(selected: ListFilter, dry_run: bool, include_retried: bool,
               limit: int) -> BulkRetryFilter:
    return BulkRetryFilter(name=selected.name, queue=selected.queue,
                           exception_type=selected.exception, since=selected.since,
                           until=selected.until, dry_run=dry_run, limit=limit,
                           include_retried=include_retried)


#: ``limit`` of a bulk retry: how many failures at most, newest first (a bad one is a 400 page).
BulkLimit = Annotated[int, Query(ge=1, le=BULK_LIMIT)]


@router.get("/failed/retry", include_in_schema=False)
def bulk_preview(request: Request, user: Annotated[User, Depends(operator)],
                 selected: Annotated[ListFilter, Depends(list_filter)],
                 include_retried: Annotated[bool, Query()] = False,
                 limit: BulkLimit = BULK_LIMIT) -> Response:
    """The dry run of a bulk retry of the filtered failures (at most ``limit``, newest first),
    with the confirmation form.
    """
    result = bulk_retry(ui_context(request).actions,
                        _selection(selected, True, include_retried, limit), actor=actor(user))
    return render(request, "bulk_retry.html", {"filter": selected, "result": result,
                                               "include_retried": include_retried,
                                               "limit": limit,
                                               "once": once.issue(request, "bulk-retry")})


@router.post("/failed/retry", include_in_schema=False)
def bulk_confirm(request: Request, user: Annotated[User, Depends(operator)],
                 name: Annotated[str | None, Form(max_length=255)] = None,
                 queue: Annotated[str | None, Form(max_length=255)] = None,
                 exception: Annotated[str | None, Form(max_length=255)] = None,
                 since: Annotated[str | None, Form(max_length=64)] = None,
                 until: Annotated[str | None, Form(max_length=64)] = None,
                 include_retried: Annotated[bool, Form()] = False,
                 limit: Annotated[int, Form(ge=1, le=BULK_LIMIT)] = BULK_LIMIT,
                 token: Annotated[str | None, Form(alias="once", max_length=64)] = None
                 ) -> Response:
    """Retry the filtered failures (the filter posted by the preview's form) and show the
    outcome of each; a confirmation already used sends nothing and says so (409).
    """
    selected = list_filter(name, queue, exception, since, until)
    if not once.consume(request, "bulk-retry", token):
        return render(request, "error.html", {
            "title": "Already sent", "status": 409,
            "detail": "This confirmation was used already (or is older than the last preview "
                      "opened): nothing was sent again. Open the preview again to retry what "
                      "still fails."}, status_code=409)
    result = bulk_retry(ui_context(request).actions,
                        _selection(selected, False, include_retried, limit),
                        actor=actor(user))
    return render(request, "bulk_retry.html", {"filter": selected, "result": result,
                                               "include_retried": include_retried,
                                               "limit": limit})
