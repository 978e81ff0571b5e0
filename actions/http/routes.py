"""The action API: a FastAPI app mounted at ``/api/v1`` by ``serve``. Thin glue: each route
parses its parameters and calls one service function; errors become problems in
:mod:`actions.http.problems`.

======  ==================================  ======================================================
method  path (under /api/v1)                service → success status
======  ==================================  ======================================================
GET     /tasks                              :func:`reads.list_tasks` → 200
GET     /tasks/{task_id}                    :func:`reads.get_task` → 200
GET     /tasks/{task_id}/workflow           :func:`workflow.get_workflow` → 200
POST    /tasks/{task_id}/retry              :func:`retry.retry_task` → 202 (dry run: 200)
POST    /tasks/{task_id}/cancel             :func:`cancel.cancel_task` → 202
POST    /tasks/retry                        :func:`retry.bulk_retry` → 202 (dry run: 200)
GET     /stats/tasks                        :func:`reads.task_statistics` → 200
GET     /queues                             :func:`reads.queues` → 200
GET     /queues/{queue}/pending             :func:`reads.pending` → 200
GET     /workers                            :func:`reads.workers` → 200
GET     /workers/active                     :func:`held.report` (inspect active) → 200
GET     /workers/scheduled                  :func:`held.report` (inspect scheduled) → 200
GET     /openapi.json                       the OpenAPI 3.1 document
======  ==================================  ======================================================

Errors: 400 bad parameters, 401 no/wrong token, 403 no token configured, 404 unknown task,
409 not eligible or refused by the broker (with ``reason``), 413 body too large, 501 pending
messages on a non-Redis broker, 503 broker / history unavailable or history disabled.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Body, FastAPI, Path, Query, Response
from fastapi.openapi.utils import get_openapi

from actions import cancel, held, reads, retry, workflow
from actions.context import ActionContext
from actions.http.auth import API_ACTOR, BearerAuth
from actions.http.body_limit import BodyLimit
from actions.http.problems import MEDIA_TYPE, install
from actions.params import (
    IDENTIFIER_PATTERN,
    ParameterCheck,
    check_cursor,
    check_identifier,
    check_range,
    given,
    parse_states,
    parse_time,
    parse_window,
)
from actions.schemas import (
    BulkRetryFilter,
    BulkRetryResult,
    CancelResult,
    HeldTasksReport,
    PendingPage,
    Problem,
    QueuesReport,
    RetryResult,
    Signal,
    TaskDetail,
    TaskPage,
    TaskStatsReport,
    WorkersReport,
    WorkflowTree,
)
from exporter import __version__

PREFIX = "/api/v1"
_PROBLEM_TEXT = {
    400: "Invalid parameter (problem details list every one).",
    401: "No token, or the wrong one (`Authorization: Bearer <token>`).",
    403: "The action API has no token configured (JOBMON_API_TOKEN).",
    404: "No such task.",
    409: "The task is not eligible, or the broker refused (`Broker refused`: its words in "
         "`broker_reason`); `reason` says why.",
    413: "Request body above --api-max-body-bytes.",
    501: "Not possible on this broker (RabbitMQ).",
    503: "Broker unavailable or took nothing, history unavailable or disabled, or no poll "
         "round yet.",
}
_COMMON = (400, 401, 403)

TaskId = Annotated[str, Path(description="Celery task id.", pattern=IDENTIFIER_PATTERN,
                             max_length=255)]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1..1000.")]
Name = Annotated[str | None, Query(max_length=255, description="Exact task name.")]
QueueName = Annotated[str | None, Query(max_length=255, description="Exact queue name.")]
ExceptionType = Annotated[str | None, Query(
    max_length=255, description="Executions that failed with this exception class (exact "
                                "name, `ValueError`): state FAILURE only. A task that raised "
                                "it, retried itself and then succeeded is not listed.")]
Time = Annotated[str | None, Query(max_length=64, description="ISO 8601 (UTC when no offset) "
                                                              "or seconds since the epoch.")]


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": Problem, "description": _PROBLEM_TEXT[status]}
            for status in (*_COMMON, *statuses)}


def _optional_time(text: str | None, parameter: str) -> float | None:
    return None if not text else parse_time(text, parameter)


def _routes(api: FastAPI, ctx: ActionContext) -> None:
    @api.get("/tasks", response_model=TaskPage, responses=_responses(503),
             summary="List executions, newest state change first")
    def list_tasks(
        state: Annotated[list[str] | None, Query(
            max_length=40, description="Celery state(s), repeatable or comma-separated; any "
                                       "case; aliases failed, succeeded, running.")] = None,
        name: Name = None, queue: QueueName = None, exception_type: ExceptionType = None,
        since: Time = None, until: Time = None, limit: Limit = 50,
        cursor: Annotated[str | None, Query(max_length=512,
                                            description="next_cursor of the previous page.")
                          ] = None,
    ) -> TaskPage:
        check = ParameterCheck()  # a 400 names every bad parameter; empty ones are not given
        states = check(parse_states, state or ())
        names = [check(check_identifier, given(value), parameter) for value, parameter in (
            (name, "name"), (queue, "queue"), (exception_type, "exception_type"))]
        times = [check(_optional_time, value, parameter)
                 for value, parameter in ((since, "since"), (until, "until"))]
        check(check_range, times[0], times[1])
        page_after = check(check_cursor, given(cursor))
        check.done()
        return reads.list_tasks(
            ctx, states=states, name=names[0], queue=names[1], exception_type=names[2],
            since=times[0], until=times[1], limit=limit, cursor=page_after)

    @api.get("/tasks/{task_id}", response_model=TaskDetail, responses=_responses(404, 503),
             summary="One execution: timing, worker, error, traceback, retry links")
    def get_task(task_id: TaskId) -> TaskDetail:
        return reads.get_task(ctx, check_identifier(task_id, "task_id") or task_id)

    @api.get("/tasks/{task_id}/workflow", response_model=WorkflowTree,
             responses=_responses(404, 503),
             summary="The workflow (chain, group, chord) a task belongs to, as a tree")
    def get_workflow(task_id: TaskId) -> WorkflowTree:
        return workflow.get_workflow(ctx, check_identifier(task_id, "task_id") or task_id)

    @api.post("/tasks/retry", response_model=BulkRetryResult, status_code=202,
              responses={**_responses(413, 503), 200: {"model": BulkRetryResult,
                                                        "description": "Dry run."}},
              summary="Retry every failed execution matching a filter (dry run by default)")
    def bulk_retry(selection: Annotated[BulkRetryFilter, Body()], response: Response
                   ) -> BulkRetryResult:
        result = retry.bulk_retry(ctx, selection, actor=API_ACTOR)
        if result.dry_run:
            response.status_code = 200
        return result

    @api.post("/tasks/{task_id}/retry", response_model=RetryResult, status_code=202,
              responses={**_responses(404, 409, 413, 503),
                         200: {"model": RetryResult, "description": "Dry run: what would be "
                                                                    "sent."}},
              summary="Re-send a failed task with its original arguments as a new task")
    def retry_task(
        task_id: TaskId, response: Response,
        include_revoked: Annotated[bool, Query(description="Also retry a REVOKED task.")
                                   ] = False,
        dry_run: Annotated[bool, Query(description="Show what would be sent; send nothing.")
                           ] = False,
        force: Annotated[bool, Query(description="Send even if the task was retried already "
                                                 "(else 409, reason already-retried).")
                         ] = False,
    ) -> RetryResult:
        result = retry.retry_task(ctx, task_id, actor=API_ACTOR, dry_run=dry_run,
                                  include_revoked=include_revoked, force=force)
        if result.dry_run:
            response.status_code = 200
        return result

    @api.post("/tasks/{task_id}/cancel", response_model=CancelResult, status_code=202,
              responses=_responses(404, 409, 413, 503),
              summary="Revoke a waiting task; terminate a running one only with terminate=true")
    def cancel_task(
        task_id: TaskId,
        terminate: Annotated[bool, Query(description="Stop a running task with a signal.")
                             ] = False,
        signal: Annotated[Signal | None, Query(description="Signal for terminate "
                                                           "(default SIGTERM).")] = None,
    ) -> CancelResult:
        return cancel.cancel_task(ctx, task_id, actor=API_ACTOR, terminate=terminate,
                                  signal=signal)

    @api.get("/stats/tasks", response_model=TaskStatsReport, responses=_responses(503),
             summary="Per-task statistics and failure groups over a window")
    def stats(
        window: Annotated[str, Query(max_length=32, description="Duration: 30m, 1h, 7d, or "
                                                                "seconds.")] = "1h",
        name: Name = None,
    ) -> TaskStatsReport:
        check = ParameterCheck()
        check(parse_window, window)
        wanted = check(check_identifier, given(name), "name")
        check.done()
        return reads.task_statistics(ctx, window=window, name=wanted)

    @api.get("/queues", response_model=QueuesReport, responses=_responses(503),
             summary="Queue lengths by priority, consumers, oldest message age, held tasks")
    def queues() -> QueuesReport:
        return reads.queues(ctx)

    @api.get("/queues/{queue}/pending", response_model=PendingPage,
             responses=_responses(501, 503),
             summary="Peek at waiting messages (Redis only), in the order workers take them")
    def pending(
        queue: Annotated[str, Path(pattern=IDENTIFIER_PATTERN, max_length=255)],
        offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Skip this many.")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
    ) -> PendingPage:
        return reads.pending(ctx, check_identifier(queue, "queue") or queue, offset=offset,
                             limit=limit)

    @api.get("/workers", response_model=WorkersReport, responses=_responses(),
             summary="Workers: liveness, heartbeat counts, pool size, CPU and memory")
    def workers() -> WorkersReport:
        return reads.workers(ctx)

    @api.get("/workers/active", response_model=HeldTasksReport, responses=_responses(503),
             summary="Tasks the workers run now (inspect active, asked now)")
    def workers_active() -> HeldTasksReport:
        return held.report(ctx, "active")

    @api.get("/workers/scheduled", response_model=HeldTasksReport,
             responses=_responses(503),
             summary="Tasks the workers hold until their ETA (inspect scheduled, asked now)")
    def workers_scheduled() -> HeldTasksReport:
        return held.report(ctx, "scheduled")


def _problem_media_types(schema: dict[str, Any]) -> None:
    """Error responses are ``application/problem+json``; no 422 (validation is a 400)."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
            for status, response in responses.items():
                content = response.get("content", {})
                if status.isdigit() and int(status) >= 400 and "application/json" in content:
                    content[MEDIA_TYPE] = content.pop("application/json")
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)


def create_api(ctx: ActionContext, *, token: str | None, max_body_bytes: int,
               secrets: Iterable[str] = ()) -> FastAPI:
    """The ``/api/v1`` app: routes over ``ctx``, bearer auth with ``token`` (``None``: every
    request 403), bodies up to ``max_body_bytes``, problems with ``secrets`` masked.
    """
    api = FastAPI(
        title="celery-jobmon action API", version=__version__,
        description="Retry, cancel and inspect Celery tasks. Every request needs "
                    "`Authorization: Bearer <token>`. Times are ISO 8601 UTC; durations "
                    "are seconds. Errors are RFC 9457 problem details.",
        openapi_url="/openapi.json", docs_url=None, redoc_url=None,
    )
    install(api, secrets)
    _routes(api, ctx)

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version,
                                 description=api.description, routes=api.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearerAuth": []}]
            _problem_media_types(schema)
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    api.add_middleware(BearerAuth, token=token)  # added last: runs first
    return api
