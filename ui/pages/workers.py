"""Workers (``GET /ui/workers``): each worker the events or the poller know — up or down by its
heartbeats, pool (``-P``) and concurrency, tasks active and processed (heartbeats), CPU time
and peak memory of its main process (``inspect stats`` rusage), last heartbeat and its age —
from :func:`actions.reads.workers`, the API's own report. Nothing is asked at render time.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from actions import reads
from ui.access import ui_context, viewer
from ui.templating import render
from ui.users import User

router = APIRouter()


def mebibytes(value: int | None) -> str:
    """Bytes as ``12.3 MiB`` (``—`` for ``None``)."""
    return "—" if value is None else f"{value / 1048576:.1f} MiB"


@router.get("/workers", include_in_schema=False)
def workers(request: Request, user: Annotated[User, Depends(viewer)]) -> Response:
    """Render the workers, up ones first, then by name."""
    context = ui_context(request)
    report = reads.workers(context.actions)
    snapshot = context.actions.poll_latest()
    rows = sorted(report.workers, key=lambda w: (not w.up, w.hostname))
    return render(request, "workers.html", {
        "workers": rows, "now": context.clock(), "mebibytes": mebibytes,
        "polled_at": snapshot.taken_at if snapshot is not None else None,
        "up": sum(1 for w in rows if w.up)})
