"""Tasks held by workers until their ETA or countdown (``GET /ui/scheduled``): ``inspect
scheduled`` asked when the page is rendered (:mod:`actions.held`) — ETA, time left, name, id,
worker, message priority — soonest first, each with a link to cancel it (a revoke: the worker
drops it at its ETA).

One row per task: on Redis a message still unacknowledged after the broker's
``visibility_timeout`` (one hour by default) is delivered again, so an ETA further away than
that ends up held by several workers, and each runs it at its ETA. Such a row names every
worker holding it and says so, as ``celery_task_scheduled`` counts it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from actions import held
from actions.context import ActionContext
from actions.errors import ActionError
from exporter.poll.inspect_replies import ScheduledTask
from ui.access import viewer
from ui.live import live_page
from ui.users import User

router = APIRouter()


@dataclass(frozen=True)
class ScheduledRow:
    """One held task: ``hostnames`` every worker holding it, sorted (more than one: each
    will run it); ``eta`` epoch seconds, the earliest any of them holds it for (``None``:
    none sent one parseable); name and priority as the first worker (by hostname) has them.
    """

    task_id: str
    name: str
    hostnames: tuple[str, ...]
    eta: float | None
    priority: int | None


def scheduled_rows(ctx: ActionContext) -> tuple[list[ScheduledRow], list[str]]:
    """The held tasks, one row each, soonest ETA first (unknown ETAs last), and why the
    workers could not be asked, or which did not answer, if so.
    """
    try:
        scheduled = held.scheduled_tasks(ctx)
    except ActionError as exc:
        return [], [exc.detail]
    problems = [] if scheduled.asked else [held.NOBODY_ASKED]
    if scheduled.unanswered:
        problems.append(held.unanswered_problem(scheduled.unanswered))
    holders: dict[str, list[tuple[str, ScheduledTask]]] = {}
    for hostname, entries in sorted(scheduled.by_worker.items()):
        for entry in entries:
            holders.setdefault(entry.request.task_id, []).append((hostname, entry))
    rows = []
    for task_id, held_by in holders.items():
        first = held_by[0][1].request
        etas = [entry.eta for _, entry in held_by if entry.eta is not None]
        rows.append(ScheduledRow(task_id, first.name, tuple(h for h, _ in held_by),
                                 min(etas) if etas else None, first.priority))
    rows.sort(key=lambda r: (r.eta is None, r.eta or 0.0, r.task_id))
    return rows, problems


@router.get("/scheduled", include_in_schema=False)
def scheduled(request: Request, user: Annotated[User, Depends(viewer)]) -> Response:
    """Render the tasks workers hold until their ETA."""
    return live_page(request, "scheduled.html", scheduled_rows)
