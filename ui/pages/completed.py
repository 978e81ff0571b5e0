"""Succeeded executions (``GET /ui/completed``) with their run time, newest first.

Filters in the URL, as on the Failed page (:mod:`ui.filters`): ``name``, ``queue``, ``since``,
``until`` (the time the task succeeded); ``exception`` is not a filter here (a 400 page says
so). 50 a page, cursor pagination (``cursor``: the Next link's value, unchanged).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from actions.errors import InvalidParameter, history_errors
from exporter.history import InvalidCursor, list_executions
from ui.access import ui_context, viewer
from ui.filters import ListFilter, list_filter
from ui.templating import render
from ui.users import User

router = APIRouter()
PAGE_SIZE = 50


@router.get("/completed", include_in_schema=False)
def completed(request: Request, user: Annotated[User, Depends(viewer)],
              selected: Annotated[ListFilter, Depends(list_filter)],
              cursor: Annotated[str | None, Query(max_length=512)] = None) -> Response:
    """Render one page of succeeded executions.

    Raises:
        InvalidParameter: an ``exception`` filter, or a cursor this page did not give.

    """
    if selected.exception is not None:
        raise InvalidParameter("exception: completed executions raised nothing; filter by "
                               "exception on the Failed page", parameter="exception")
    try:
        with history_errors():
            page = list_executions(ui_context(request).actions.engine(), states=["SUCCESS"],
                                   name=selected.name, queue=selected.queue,
                                   since=selected.since, until=selected.until,
                                   limit=PAGE_SIZE, cursor=cursor or None)
    except InvalidCursor:
        raise InvalidParameter("cursor: not a cursor of this list (follow the Next link "
                               "unchanged)", parameter="cursor") from None
    return render(request, "completed.html", {
        "filter": selected, "rows": page.items, "next_cursor": page.next_cursor,
        "first_page": cursor is None})
