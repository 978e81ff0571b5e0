"""One execution, and the two actions on it.

- ``GET /search?task_id=…``: the search box; redirects to the task's page.
- ``GET /tasks/{id}``: every history field (:func:`actions.reads.get_task`), arguments,
  result, the whole traceback, the retry chain (what it retried, its manual retries), the
  workflow it belongs to as a nested list (:func:`actions.workflow.get_workflow`), the audit
  trail, where its state came from, and what the live events say now.
- ``GET /tasks/{id}/retry`` (operator): the dry run of the retry — exactly what would be sent —
  with a confirmation form; an ineligible task gets the 409 page saying why. A task retried
  already shows its retries and their states, and its form must tick "send it again" (``force``):
  a retry confirmed from a page opened before the task was retried elsewhere is refused (409,
  ``already-retried``), so one job is not run twice.
  ``POST``: :func:`actions.retry.retry_task`, then its answer: the new task id, warnings. Each
  confirmation sends once (:mod:`ui.once`).
- ``GET /tasks/{id}/cancel`` (operator): the task's state and a confirmation form (terminate
  is offered for a running task only). ``POST``: :func:`actions.cancel.cancel_task`, then what
  was asked and who acknowledged — never that the task was stopped: its page shows the outcome
  once the workers' events say it.

The actor recorded in the audit trail is ``ui:<user>``.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from actions import reads
from actions.cancel import SIGNALS, cancel_task
from actions.params import check_identifier
from actions.retry import RETRIED_STATES, load_execution, retry_task
from actions.workflow import get_workflow
from ui import once
from ui.access import actor, operator, ui_context, viewer
from ui.queries import audit_trail
from ui.templating import href_for, render
from ui.users import User

router = APIRouter()
TaskId = Annotated[str, Query(max_length=255)]
#: States a cancel applies to without terminate (revoke: dropped before it runs).
WAITING = ("PENDING", "RECEIVED", "RETRY", "CANCELLED")


def _task_id(task_id: str) -> str:
    return check_identifier(task_id, "task_id") or task_id


@router.get("/search", include_in_schema=False)
def search(request: Request, user: Annotated[User, Depends(viewer)], task_id: TaskId
           ) -> Response:
    """Go to the page of ``task_id`` (surrounding spaces dropped).

    Raises:
        InvalidParameter: empty, longer than 255 characters or with control characters.

    """
    wanted = _task_id(task_id.strip())
    return RedirectResponse(href_for(request, "/tasks/" + quote(wanted, safe="")),
                            status_code=303)


@router.get("/tasks/{task_id:path}/retry", include_in_schema=False)
def retry_preview(request: Request, task_id: str, user: Annotated[User, Depends(operator)],
                  include_revoked: Annotated[bool, Query()] = False) -> Response:
    """Show what a retry would send (dry run) and ask for confirmation; a REVOKED task only
    with ``include_revoked`` (its page's Retry button sets it).
    """
    result = retry_task(ui_context(request).actions, _task_id(task_id), actor=actor(user),
                        dry_run=True, include_revoked=include_revoked)
    return render(request, "retry.html", {
        "result": result, "include_revoked": include_revoked,
        "once": once.issue(request, "retry:" + result.task_id)})


@router.post("/tasks/{task_id:path}/retry", include_in_schema=False)
def retry(request: Request, task_id: str, user: Annotated[User, Depends(operator)],
          include_revoked: Annotated[bool, Form()] = False, force: Annotated[bool, Form()] = False,
          token: Annotated[str | None, Form(alias="once", max_length=64)] = None) -> Response:
    """Retry the task and show the service's answer; a confirmation already used (the answer
    page reloaded, a double click) sends nothing and says so (409), and so does one of a task
    retried already without ``force`` (the 409 page names its retry).
    """
    wanted = _task_id(task_id)
    if not once.consume(request, "retry:" + wanted, token):
        load_execution(ui_context(request).actions, wanted)  # an unknown task: 404, not 409
        return render(request, "error.html", {
            "title": "Already sent", "status": 409,
            "detail": "This confirmation was used already (or is older than the last one "
                      "opened): nothing was sent again. The task's page lists its retries."},
            status_code=409)
    result = retry_task(ui_context(request).actions, wanted, actor=actor(user),
                        include_revoked=include_revoked, force=force)
    return render(request, "retry.html", {"result": result, "include_revoked": include_revoked},
                  status_code=202)


@router.get("/tasks/{task_id:path}/cancel", include_in_schema=False)
def cancel_preview(request: Request, task_id: str, user: Annotated[User, Depends(operator)]
                   ) -> Response:
    """Show the task's state and ask for confirmation (with terminate for a running task)."""
    row = load_execution(ui_context(request).actions, _task_id(task_id))
    return render(request, "cancel.html", {"row": row, "result": None, "signals": SIGNALS,
                                           "waiting": WAITING})


@router.post("/tasks/{task_id:path}/cancel", include_in_schema=False)
def cancel(request: Request, task_id: str, user: Annotated[User, Depends(operator)],
           terminate: Annotated[bool, Form()] = False,
           signal: Annotated[str | None, Form(max_length=16)] = None) -> Response:
    """Send the revoke (or terminate) and show what was asked and who acknowledged."""
    result = cancel_task(ui_context(request).actions, _task_id(task_id), actor=actor(user),
                         terminate=terminate, signal=signal if terminate else None)
    return render(request, "cancel.html", {"row": None, "result": result}, status_code=202)


@router.get("/tasks/{task_id:path}", include_in_schema=False)
def task(request: Request, task_id: str, user: Annotated[User, Depends(viewer)]) -> Response:
    """Render everything known about the execution."""
    ctx = ui_context(request).actions
    detail = reads.get_task(ctx, _task_id(task_id))
    live = ctx.known_task(detail.task_id) if ctx.known_task is not None else None
    return render(request, "task.html", {
        "task": detail, "audit": audit_trail(ctx.engine(), detail.task_id), "live": live,
        "waiting": WAITING, "retried": RETRIED_STATES,
        "workflow": get_workflow(ctx, detail.task_id)})
