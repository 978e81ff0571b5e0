"""Per task name statistics (``GET /ui/statistics``) over the executions that finished in a
window: count, succeeded, failed, success ratio, average/min/max/95th percentile run time and
the slow flag (average above ``--slow-threshold``), from :func:`exporter.history.task_stats` —
the figures of the API's statistics, without its failure groups (the Failed page has them). A
95th percentile read from the hourly histograms (windows holding whole hours the history
writer has summed up) is marked ``≈`` and the bound is said under the table.

The URL carries everything: ``window`` (``1h`` default, ``30m``, ``7d``), ``name`` (one task),
``sort`` (a column of :data:`SORT_KEYS`) and ``order`` (``asc``/``desc``); the column headers
are links that sort, so no JavaScript is needed. Names without a value sort last either way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from actions.errors import history_errors
from actions.params import check_identifier, parse_window
from exporter.history import TaskStats, task_stats
from ui.access import ui_context, viewer
from ui.templating import render
from ui.users import User

router = APIRouter()
#: ``sort`` value → (column heading, the TaskStats field sorted by, default order).
SORT_KEYS: dict[str, tuple[str, str, str]] = {
    "name": ("Task", "name", "asc"),
    "count": ("Count", "count", "desc"),
    "failed": ("Failed", "failed", "desc"),
    "success": ("Success ratio", "success_ratio", "asc"),
    "avg": ("Avg", "avg_runtime", "desc"),
    "min": ("Min", "min_runtime", "desc"),
    "max": ("Max", "max_runtime", "desc"),
    "p95": ("p95", "p95_runtime", "desc"),
}
Sort = Literal["name", "count", "failed", "success", "avg", "min", "max", "p95"]
Order = Literal["asc", "desc"]


def sort_stats(tasks: list[TaskStats], sort: str, order: str) -> list[TaskStats]:
    """``tasks`` ordered by the :data:`SORT_KEYS` column ``sort`` (``asc``/``desc``), then by
    name; rows whose value is missing (no run time, no name) last in both orders.
    """
    attribute = SORT_KEYS[sort][1]
    present = [t for t in tasks if getattr(t, attribute) is not None]
    missing = [t for t in tasks if getattr(t, attribute) is None]
    present.sort(key=lambda t: t.name or "")
    present.sort(key=lambda t: getattr(t, attribute), reverse=order == "desc")
    return present + sorted(missing, key=lambda t: t.name or "")


@router.get("/statistics", include_in_schema=False)
def statistics(request: Request, user: Annotated[User, Depends(viewer)],
               window: Annotated[str, Query(max_length=16)] = "1h",
               name: Annotated[str | None, Query(max_length=255)] = None,
               sort: Sort = "count", order: Order | None = None) -> Response:
    """Render the statistics table, sorted as the URL asks.

    Raises:
        InvalidParameter: a bad window or name (``sort``/``order`` outside their values are
            refused by the route's validation: a 400 page too).

    """
    chosen = check_identifier(name.strip() or None, "name") if name is not None else None
    seconds = parse_window(window.strip())
    context = ui_context(request)
    until = context.clock()
    with history_errors():
        tasks = task_stats(context.actions.engine(), since=until - seconds, until=until,
                           name=chosen, slow_threshold=context.actions.slow_threshold)
    direction = order or SORT_KEYS[sort][2]
    query: dict[str, Any] = {"window": window.strip(), "name": chosen}
    return render(request, "statistics.html", {
        "since": until - seconds, "until": until,
        "slow_threshold": context.actions.slow_threshold,
        "tasks": sort_stats(tasks, sort, direction),
        "approximate": max((t.p95_relative_error for t in tasks), default=0.0),
        "sort": sort, "order": direction, "columns": SORT_KEYS, "query": query,
        "window": window.strip(), "name": chosen or ""})
