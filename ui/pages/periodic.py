"""Periodic entries (``GET /ui/periodic``): each entry of the schedule sources the exporter
reads (``--app``, ``--redbeat-url``, ``--django-beat-url``, ``--expect``) with its schedule,
when its next run is due, when the last one was sent, started and succeeded, how the last
finished run ended and how many due runs were never sent — the periodic tracker's latest
check (:class:`~exporter.periodic.tracker.PeriodicSnapshot`), the numbers ``/metrics``
exports. Nothing is read at render time.

``?entry=NAME`` shows that entry alone (the periodic alerts link there).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from actions.params import check_identifier
from ui.access import ui_context, viewer
from ui.templating import render
from ui.users import User

router = APIRouter()
#: Said when no tracker runs: how to start one.
HOW_TO_ENABLE = ("No periodic entry is watched: start serve with a schedule source — "
                 "--app module:app (its beat_schedule), --redbeat-url, --django-beat-url or "
                 "--expect TASK=INTERVAL — and the SQL history on (the runs are read from it).")


@router.get("/periodic", include_in_schema=False)
def periodic(request: Request, user: Annotated[User, Depends(viewer)],
             entry: Annotated[str | None, Query(max_length=255)] = None) -> Response:
    """Render the periodic entries of the tracker's latest check (or say why there are none).

    Raises:
        InvalidParameter: ``entry`` with control characters (a 400 page).

    """
    context = ui_context(request)
    wanted = check_identifier(entry.strip() or None, "entry") if entry is not None else None
    latest = context.periodic_latest
    snapshot = latest() if latest is not None else None
    entries = () if snapshot is None else tuple(
        e for e in snapshot.entries if wanted is None or e.entry == wanted)
    return render(request, "periodic.html", {
        "tracking": latest is not None, "snapshot": snapshot, "entries": entries,
        "entry": wanted, "now": context.clock(), "how_to_enable": HOW_TO_ENABLE,
        "down": sorted(name for name, up in (snapshot.sources.items() if snapshot else ())
                       if not up)})
