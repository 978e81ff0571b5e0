"""Tasks held by workers until their ETA or countdown (``GET /ui/scheduled``): ``inspect
scheduled`` asked when the page is rendered (:mod:`actions.held`) — ETA, time left, name, id,
worker, message priority — soonest first, each with a link to cancel it (a revoke: the worker
drops it at its ETA).
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
from ui.access import viewer
from ui.live import live_page
from ui.users import User

router = APIRouter()


@dataclass(frozen=True)
class ScheduledRow:
    """One held task: ``eta`` epoch seconds (``None``: the worker sent none parseable)."""

    task_id: str
    name: str
    hostname: str
    eta: float | None
    priority: int | None


def scheduled_rows(ctx: ActionContext) -> tuple[list[ScheduledRow], list[str]]:
    """The held tasks, soonest ETA first (unknown ETAs last), and why the workers could not
    be asked, if so.
    """
    try:
        scheduled = held.scheduled_tasks(ctx)
    except ActionError as exc:
        return [], [exc.detail]
    problems = [] if scheduled.asked else [held.NOBODY_ASKED]
    rows = [ScheduledRow(entry.request.task_id, entry.request.name, hostname, entry.eta,
                         entry.request.priority)
            for hostname, entries in scheduled.by_worker.items() for entry in entries]
    rows.sort(key=lambda r: (r.eta is None, r.eta or 0.0, r.task_id))
    return rows, problems


@router.get("/scheduled", include_in_schema=False)
def scheduled(request: Request, user: Annotated[User, Depends(viewer)]) -> Response:
    """Render the tasks workers hold until their ETA."""
    return live_page(request, "scheduled.html", scheduled_rows)
