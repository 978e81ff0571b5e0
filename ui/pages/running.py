"""Tasks running now (``GET /ui/running``) and terminating one.

- ``GET /running``: the executions the task events left STARTED (history; dropped when the
  live events already say otherwise) merged by task id with what the workers run now
  (``inspect active``, :mod:`actions.held`): name, id, worker, start, age, where it was seen and
  the worker's pool. A source that cannot answer shows its reason in its place.
- ``GET /running/terminate?task_id=…`` (operator): what terminate would do on that worker's
  pool (:data:`actions.cancel.TERMINATE_BY_POOL`) and a confirmation form with the signal.
- ``POST /running/terminate`` (operator): :func:`actions.cancel.cancel_task` with
  ``terminate``; its answer — who acknowledged, who signalled, its warnings — or its refusal
  (a threads pool cannot stop a task: 409 page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query
from starlette.requests import Request
from starlette.responses import Response

from actions import held
from actions.cancel import DEFAULT_SIGNAL, SIGNALS, TERMINATE_BY_POOL, cancel_task
from actions.context import ActionContext
from actions.errors import ActionError, history_errors
from actions.params import check_identifier
from exporter.history import list_executions
from ui.access import actor, operator, ui_context, viewer
from ui.live import live_page
from ui.templating import render
from ui.users import User

router = APIRouter()
#: Most STARTED executions read from the history for the page.
HISTORY_LIMIT = 500


@dataclass
class RunningTask:
    """One running task as the page shows it: ``started`` epoch seconds (worker clock) or
    ``None``; ``seen_by``: ``events`` (the history the task events wrote) and/or ``workers``
    (``inspect active``); ``pool``: the worker's ``-P`` name if known; ``refusal``: why
    terminate cannot stop it (threads pool), else ``None``.
    """

    task_id: str
    name: str | None
    hostname: str | None
    started: float | None
    seen_by: list[str] = field(default_factory=list)
    pool: str | None = None
    refusal: str | None = None


def _pool_note(pool: str | None, hostname: str | None) -> str | None:
    refused, text = TERMINATE_BY_POOL.get(pool or "", (False, ""))
    return text.format(hostname=hostname) if refused else None


def running_tasks(ctx: ActionContext) -> tuple[list[RunningTask], list[str]]:
    """The running tasks, oldest start first, and the reasons of sources that did not answer.

    History rows in STARTED whose task the live events know in another state (finished
    since; the history is written in batches) are left out.
    """
    found: dict[str, RunningTask] = {}
    problems: list[str] = []
    try:
        with history_errors():
            page = list_executions(ctx.engine(), states=["STARTED"], limit=HISTORY_LIMIT)
        if page.next_cursor is not None:
            problems.append(f"History: more than {HISTORY_LIMIT} executions are STARTED; the "
                            f"{HISTORY_LIMIT} that started last are shown.")
        for row in page.items:
            known = ctx.known_task(row.task_id) if ctx.known_task is not None else None
            if known is not None and known.state != "STARTED":
                continue
            found[row.task_id] = RunningTask(row.task_id, row.name, row.hostname,
                                             row.started_at, ["events"])
    except ActionError as exc:
        problems.append(f"History: {exc.detail}")
    try:
        active = held.active_tasks(ctx)
        if not active.asked:
            problems.append(f"Workers: {held.NOBODY_ASKED}")
        if active.unanswered:
            problems.append(f"Workers: {held.unanswered_problem(active.unanswered)}")
        for tasks in active.by_worker.values():
            for info in tasks:
                task = found.setdefault(info.task_id, RunningTask(
                    info.task_id, info.name, info.hostname, info.time_start))
                task.seen_by.append("workers")
                task.hostname = info.hostname
                task.started = info.time_start if info.time_start is not None else task.started
    except ActionError as exc:
        problems.append(f"Workers: {exc.detail}")
    snapshot = ctx.poll_latest()
    pools = snapshot.pools if snapshot is not None else {}
    for task in found.values():
        task.pool = pools.get(task.hostname or "")
        task.refusal = _pool_note(task.pool, task.hostname)
    ordered = sorted(found.values(), key=lambda t: (t.started is None, t.started or 0.0,
                                                    t.task_id))
    return ordered, problems


@router.get("/running", include_in_schema=False)
def running(request: Request, user: Annotated[User, Depends(viewer)]) -> Response:
    """Render the running tasks."""
    return live_page(request, "running.html", running_tasks)


def _task_id(task_id: str) -> str:
    return check_identifier(task_id.strip(), "task_id") or task_id


@router.get("/running/terminate", include_in_schema=False)
def terminate_preview(request: Request, user: Annotated[User, Depends(operator)],
                      task_id: Annotated[str, Query(min_length=1, max_length=255)]
                      ) -> Response:
    """What terminating ``task_id`` would do, with the confirmation form."""
    wanted = _task_id(task_id)
    tasks, problems = running_tasks(ui_context(request).actions)
    task = next((t for t in tasks if t.task_id == wanted), None)
    return render(request, "terminate.html", {
        "task_id": wanted, "task": task, "problems": problems, "result": None,
        "signals": SIGNALS, "default_signal": DEFAULT_SIGNAL,
        "note": TERMINATE_BY_POOL.get(task.pool or "", (False, ""))[1].format(
            hostname=task.hostname) if task is not None else ""})


@router.post("/running/terminate", include_in_schema=False)
def terminate(request: Request, user: Annotated[User, Depends(operator)],
              task_id: Annotated[str, Form(min_length=1, max_length=255)],
              signal: Annotated[str, Form(max_length=16)] = DEFAULT_SIGNAL) -> Response:
    """Terminate the task and show the service's answer."""
    result = cancel_task(ui_context(request).actions, _task_id(task_id), actor=actor(user),
                         terminate=True, signal=signal)
    return render(request, "terminate.html", {"task_id": result.task_id, "result": result},
                  status_code=202)
