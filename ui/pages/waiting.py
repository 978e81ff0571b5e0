"""Waiting messages, per queue (``GET /ui/waiting``), and cancelling a waiting task.

- ``GET /waiting?queue=…&offset=…``: every queue of the poller's last round (length, the
  priority breakdown, oldest waiting age, consumers); for the chosen queue (default: the
  first with messages) on Redis, its messages in the order workers take them — position, task
  id, name, priority, ETA, arguments — :data:`PAGE_SIZE` a page from ``offset``
  (:func:`actions.reads.pending`, peeked, not consumed). RabbitMQ answers the counts and why
  its messages cannot be listed (AMQP cannot read a message without taking it).
- ``GET /waiting/cancel?task_id=…`` (operator): what is known of the task and a confirmation
  form. ``POST /waiting/cancel``: :func:`actions.cancel.cancel_task` (a revoke: workers drop
  the task when they get it), then its answer. The Scheduled page links here too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query
from starlette.requests import Request
from starlette.responses import Response

from actions import reads
from actions.cancel import cancel_task
from actions.errors import ActionError, NotSupported, history_errors
from actions.params import check_identifier
from actions.schemas import PendingPage, QueuesReport
from exporter.history import get_execution
from ui.access import actor, operator, ui_context, viewer
from ui.templating import render
from ui.users import User

router = APIRouter()
#: Messages listed per page.
PAGE_SIZE = 100
#: Highest offset a page may start at (a Redis list is read by index; deeper is not useful).
MAX_OFFSET = 1_000_000


def _chosen(queues: QueuesReport | None, wanted: str | None) -> str | None:
    if wanted:
        return wanted
    if queues is None or not queues.queues:
        return None
    busy = [q.name for q in queues.queues if q.length]
    return busy[0] if busy else queues.queues[0].name


@router.get("/waiting", include_in_schema=False)
def waiting(request: Request, user: Annotated[User, Depends(viewer)],
            queue: Annotated[str | None, Query(max_length=255)] = None,
            offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> Response:
    """Render the queues and the chosen queue's waiting messages."""
    ctx = ui_context(request).actions
    wanted = check_identifier(queue.strip() or None, "queue") if queue is not None else None
    queues: QueuesReport | None = None
    queues_error = None
    try:
        queues = reads.queues(ctx)
    except ActionError as exc:
        queues_error = exc.detail
    chosen = _chosen(queues, wanted)
    page: PendingPage | None = None
    unsupported = pending_error = None
    if chosen is not None:
        try:
            page = reads.pending(ctx, chosen, offset=offset, limit=PAGE_SIZE)
        except NotSupported as exc:
            unsupported = exc.detail
        except ActionError as exc:
            pending_error = exc.detail
    return render(request, "waiting.html", {
        "queues": queues, "queues_error": queues_error, "chosen": chosen, "page": page,
        "unsupported": unsupported, "pending_error": pending_error, "offset": offset,
        "page_size": PAGE_SIZE, "chosen_info": next(
            (q for q in queues.queues if q.name == chosen), None) if queues else None})


def _task_id(task_id: str) -> str:
    return check_identifier(task_id.strip(), "task_id") or task_id


@router.get("/waiting/cancel", include_in_schema=False)
def cancel_preview(request: Request, user: Annotated[User, Depends(operator)],
                   task_id: Annotated[str, Query(min_length=1, max_length=255)]) -> Response:
    """What is known of the task (live events, history) and the confirmation form."""
    ctx = ui_context(request).actions
    wanted = _task_id(task_id)
    known = ctx.known_task(wanted) if ctx.known_task is not None else None
    row = None
    if ctx.history is not None:
        with history_errors():
            row = get_execution(ctx.history, wanted)
    return render(request, "cancel_waiting.html", {"task_id": wanted, "known": known,
                                                   "row": row, "result": None})


@router.post("/waiting/cancel", include_in_schema=False)
def cancel(request: Request, user: Annotated[User, Depends(operator)],
           task_id: Annotated[str, Form(min_length=1, max_length=255)]) -> Response:
    """Revoke the task and show what was asked and who acknowledged."""
    result = cancel_task(ui_context(request).actions, _task_id(task_id), actor=actor(user))
    return render(request, "cancel_waiting.html", {"task_id": result.task_id,
                                                   "result": result}, status_code=202)
