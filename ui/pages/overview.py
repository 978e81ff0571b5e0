"""The overview (``GET /ui/``): executions by state over the last hour and day (history),
slow tasks of the last hour (average runtime of the executions that ended in it above
``--slow-threshold``) and executions running
for over an hour (what ``CeleryTaskStuck`` alerts on; history), queues with their priority
breakdown and oldest waiting age (the poller's last round), workers up, down and busy (events +
inspect), and links to the Grafana dashboards.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from actions import reads
from actions.errors import ActionError
from exporter.history import STATES
from ui.access import viewer
from ui.queries import long_running, slow_tasks, state_counts
from ui.templating import render
from ui.users import User

router = APIRouter()
#: The windows of the state counts: (label, seconds).
WINDOWS = (("last hour", 3600.0), ("last day", 86400.0))
#: The Grafana dashboards the overview links to: (title, path under --grafana-url).
DASHBOARDS = (("Celery overview", "/d/celery-jobmon-overview"),
              ("Celery task", "/d/celery-jobmon-task"))
#: Running longer than this (seconds) is listed as stuck: CeleryTaskStuck's threshold.
STUCK_AFTER = 3600.0


@router.get("/", include_in_schema=False)
def overview(request: Request, user: Annotated[User, Depends(viewer)]) -> Response:
    """Render the overview; a source that cannot answer (no history, no poll round yet)
    shows its reason in its place instead of failing the page.
    """
    context = request.app.state.ui
    ctx = context.actions
    now = context.clock()
    counts: list[tuple[str, dict[str, int]]] = []
    counts_error = None
    slow, stuck = [], []
    try:
        engine = ctx.engine()
        counts = [(label, state_counts(engine, now - window)) for label, window in WINDOWS]
        slow = slow_tasks(engine, now - 3600, ctx.slow_threshold)
        stuck = long_running(engine, now - STUCK_AFTER)
    except ActionError as exc:
        counts_error = exc.detail
    queues, queues_error = None, None
    try:
        queues = reads.queues(ctx)
    except ActionError as exc:
        queues_error = exc.detail
    workers = reads.workers(ctx).workers
    shown_states = [state for state in STATES
                    if any(by_state.get(state) for _, by_state in counts)]
    return render(request, "overview.html", {
        "counts": counts, "counts_error": counts_error, "states": shown_states,
        "queues": queues, "queues_error": queues_error, "workers": workers,
        "workers_up": sum(1 for w in workers if w.up),
        "workers_busy": sum(1 for w in workers if w.up and (w.active or 0) > 0),
        "dashboards": DASHBOARDS, "slow": slow, "slow_threshold": ctx.slow_threshold,
        "stuck": stuck, "stuck_after": STUCK_AFTER, "now": now,
    })
