"""Response and request bodies of the action API (pydantic), with units and sources.

Times are ISO 8601 in UTC (``2024-05-01T12:00:00.250000Z``); durations are float seconds and
say so in their name (``runtime_seconds``). ``null`` means "no event or reply said". The
services build these models from the history rows (:class:`exporter.history.Execution`), the
poll snapshot and the model snapshot; the ``retry``/``cancel``/``tasks`` commands print the same
models.

It is long because it is a table: one class per body of the API, each field with its
description, which the OpenAPI document shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from actions.errors import InvalidParameter
from actions.params import MAX_EPOCH, check_identifier, check_range, parse_instant
from exporter.history import Execution

#: Signals a running task may be terminated with (``cancel?terminate=true&signal=…``).
Signal = Literal["SIGTERM", "SIGINT", "SIGQUIT", "SIGKILL", "SIGUSR1"]
ArgumentSource = Literal["result_backend", "history_repr"]
T = TypeVar("T")


def utc(seconds: float | None) -> datetime | None:
    """Seconds since the epoch → aware UTC datetime (``None`` stays ``None``; so does a value
    outside years 1970..9999, which no real event carries).
    """
    if seconds is None or not math.isfinite(seconds) or not 0 <= seconds <= MAX_EPOCH:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


# -- tasks ------------------------------------------------------------------------------------


class TaskSummary(_Model):
    """One execution in a list (a ``task_execution`` row of the history)."""

    task_id: str = Field(description="Celery task id.")
    name: str | None = Field(description="Task name (task-sent / task-received).")
    state: str = Field(description="Celery state: PENDING, RECEIVED, STARTED, RETRY, "
                                   "SUCCESS, FAILURE, REVOKED, REJECTED, CANCELLED, LOST.")
    state_changed_at: datetime | None = Field(
        description="When the current state was set (timestamp of that event), UTC.")
    queue: str | None = Field(description="Queue it was sent to (task-sent `queue`, else "
                                          "`routing_key`).")
    hostname: str | None = Field(description="Worker node name (worker@host) that ran it last.")
    sent_at: datetime | None = Field(description="task-sent timestamp, UTC.")
    started_at: datetime | None = Field(description="task-started timestamp (latest attempt).")
    finished_at: datetime | None = Field(description="When it reached a final state, UTC.")
    runtime_seconds: float | None = Field(
        description="Seconds it ran: task-succeeded `runtime`; for failures finished − started.")
    retries: int = Field(description="Celery's own retry count (task `retries`).")
    exception_type: str | None = Field(
        description="Exception class the task last raised (task-failed, or task-retried: a "
                    "task that retried and then succeeded keeps it; the `exception_type` "
                    "filter selects FAILURE executions only).")
    manual_retry_count: int = Field(
        description="How often this execution was re-sent through the action API or CLI.")
    retry_of: str | None = Field(description="Task id this execution is a manual retry of.")

    @classmethod
    def from_execution(cls, row: Execution) -> TaskSummary:
        """The summary of a history row."""
        return cls(**_summary_fields(row))


def _summary_fields(row: Execution) -> dict[str, Any]:
    return {
        "task_id": row.task_id, "name": row.name, "state": row.state,
        "state_changed_at": utc(row.state_ts), "queue": row.queue, "hostname": row.hostname,
        "sent_at": utc(row.sent_at), "started_at": utc(row.started_at),
        "finished_at": utc(row.finished_at), "runtime_seconds": row.runtime,
        "retries": row.retries, "exception_type": row.exception_type,
        "manual_retry_count": row.manual_retry_count, "retry_of": row.retry_of,
    }


class CancelRequestInfo(_Model):
    """A cancel request of the audit trail and its outcome."""

    requested_at: datetime | None = Field(description="When it was sent (exporter clock).")
    actor: str = Field(description="api, or cli:<login>.")
    action: str | None = Field(description="revoke or terminate.")
    signal: str | None
    acknowledged_by: list[str] = Field(description="Workers that acknowledged it.")
    outcome: Literal["pending", "honoured", "not-honoured", "unknown"] = Field(
        description="pending until the task's row shows it; honoured: task-revoked came; "
                    "not-honoured: the task started after it or ran to its end; unknown: it "
                    "ended otherwise (REJECTED, LOST).")
    outcome_at: datetime | None = Field(description="When the outcome was recorded.")
    evidence: str | None = Field(description="What the outcome rests on.")


class TaskDetail(TaskSummary):
    """Everything the history knows about one execution, with its retry links."""

    routing_key: str | None = Field(description="Routing key of the message (task-sent).")
    exchange: str | None = Field(description="Exchange of the message (task-sent).")
    priority: int | None = Field(description="Message priority when an event carried it.")
    args: str | None = Field(description="Positional arguments as the event's repr (capped).")
    args_truncated: bool = Field(description="`args` was cut at --history-max-field-bytes.")
    kwargs: str | None = Field(description="Keyword arguments as the event's repr (capped).")
    kwargs_truncated: bool = Field(description="`kwargs` was cut.")
    eta: datetime | None = Field(description="ETA / countdown target, UTC.")
    expires: datetime | None = Field(description="Expiry time, UTC.")
    parent_id: str | None = Field(description="Task id of the parent task (canvas).")
    root_id: str | None = Field(description="Task id of the root of the workflow.")
    received_at: datetime | None = Field(description="task-received timestamp (latest).")
    worker_seen_at: datetime | None = Field(description="Newest worker event about it, UTC.")
    result: str | None = Field(description="Result repr (task-succeeded, capped).")
    result_truncated: bool = Field(description="`result` was cut.")
    exception_message: str | None = Field(description="Message of the last exception.")
    exception_message_truncated: bool = Field(description="`exception_message` was cut.")
    traceback: str | None = Field(description="Traceback of the last failure (capped).")
    traceback_truncated: bool = Field(description="`traceback` was cut.")
    exception_at: datetime | None = Field(description="When the last exception was raised.")
    revoke_reason: str | None = Field(description="expired, terminated or revoked.")
    revoke_signal: int | None = Field(description="Signal number a terminated task got.")
    created_by_action: str | None = Field(description="Action that created the row (retry).")
    updated_by_action: str | None = Field(description="Last action applied to it.")
    updated_at: datetime | None = Field(description="Exporter clock of the last row write.")
    state_source: str = Field(
        description="Where `state` came from: `events` (the task's own events), "
                    "`result_backend` or `workers` (a repair after its events were lost: the "
                    "stored result, `inspect query_task`; `state_changed_at` is then the "
                    "result's date_done or the running task's start).")
    manual_retries: list[str] = Field(
        description="Task ids sent as manual retries of this execution, oldest first.")
    cancel_requests: list[CancelRequestInfo] = Field(
        default_factory=list, description="Cancel requests made of it, oldest first, each "
                                          "with its outcome.")

    @classmethod
    def build(cls, row: Execution, manual_retries: list[str],
              cancel_requests: list[CancelRequestInfo] | None = None) -> TaskDetail:
        """The detail of a history row, the ids of its manual retries and its cancel
        requests.
        """
        return cls(
            **_summary_fields(row),
            routing_key=row.routing_key, exchange=row.exchange, priority=row.priority,
            args=row.args, args_truncated=row.args_truncated, kwargs=row.kwargs,
            kwargs_truncated=row.kwargs_truncated, eta=utc(row.eta), expires=utc(row.expires),
            parent_id=row.parent_id, root_id=row.root_id, received_at=utc(row.received_at),
            worker_seen_at=utc(row.worker_seen_at), result=row.result,
            result_truncated=row.result_truncated, exception_message=row.exception_message,
            exception_message_truncated=row.exception_message_truncated,
            traceback=row.traceback, traceback_truncated=row.traceback_truncated,
            exception_at=utc(row.exception_at), revoke_reason=row.revoke_reason,
            revoke_signal=row.revoke_signal, created_by_action=row.created_by_action,
            updated_by_action=row.updated_by_action, updated_at=utc(row.updated_at),
            state_source=row.state_source, manual_retries=manual_retries,
            cancel_requests=cancel_requests or [],
        )


class TaskPage(_Model):
    """A page of executions, newest state change first."""

    items: list[TaskSummary]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page.")


# -- statistics -------------------------------------------------------------------------------


class TaskStatistics(_Model):
    """Statistics of one task name over the finished executions of the window."""

    name: str | None = Field(description="Task name (null: rows without a name).")
    count: int = Field(description="Finished executions (any final state).")
    succeeded: int = Field(description="Of which SUCCESS.")
    failed: int = Field(description="Of which FAILURE.")
    revoked: int = Field(description="Of which REVOKED.")
    rejected: int = Field(description="Of which REJECTED.")
    lost: int = Field(description="Of which LOST (the worker died or the events were lost and "
                                  "the repair found no outcome).")
    success_ratio: float = Field(description="succeeded / count, 0..1.")
    failure_ratio: float = Field(description="failed / count, 0..1.")
    avg_runtime_seconds: float | None
    min_runtime_seconds: float | None
    max_runtime_seconds: float | None
    p95_runtime_seconds: float | None = Field(
        description="Nearest-rank 95th percentile: exact when p95_relative_error is 0, else "
                    "read from hourly histograms and within that relative error of the "
                    "true value either way.")
    p95_relative_error: float = Field(
        description="0: p95_runtime_seconds is exact; else its bound (0.0443: the true p95 is "
                    "between p95/1.0443 and p95×1.0443). Counts, ratios, avg, min and max "
                    "are always exact.")
    slow: bool = Field(description="Average runtime above --slow-threshold.")


class FailureGroupStatistics(_Model):
    """FAILURE executions of the window sharing an exception class."""

    exception_type: str = Field(description="Exception class, `unknown` when none was sent.")
    count: int
    last_seen: datetime | None = Field(description="finished_at of the newest, UTC.")
    sample_message: str | None = Field(description="Message of the newest failure.")
    sample_task_id: str
    sample_name: str | None


class TaskStatsReport(_Model):
    """Per-task statistics over executions that finished in ``[since, until)``."""

    window_seconds: float
    since: datetime
    until: datetime
    slow_threshold_seconds: float
    tasks: list[TaskStatistics]
    failures: list[FailureGroupStatistics] = Field(
        description="Failures grouped by exception class, most frequent first (top 20).")


# -- queues and workers -----------------------------------------------------------------------


class QueueInfo(_Model):
    """One broker queue as the poller read it last round, with the tasks workers hold."""

    name: str
    length: int = Field(description="Messages waiting (all priorities).")
    lengths_by_priority: dict[str, int] = Field(
        description="Redis: per priority step (`0`, `3`, `6`, `9`); RabbitMQ: `{\"\": n}`.")
    consumers: int | None = Field(description="RabbitMQ: consumer count; Redis: workers "
                                              "consuming it (inspect active_queues).")
    oldest_message_age_seconds: float | None = Field(
        description="Redis only: age of the oldest waiting message (from its task-sent time "
                    "or its ETA when later); null when unknown.")
    running: int = Field(description="Tasks of this queue running now (task events).")
    reserved: int = Field(description="Prefetched by workers, not started (inspect reserved).")
    scheduled: int = Field(description="Held by workers until their ETA (inspect scheduled).")


class QueuesReport(_Model):
    """Every queue the poller reads (``--queue`` and those workers consume)."""

    polled_at: datetime | None = Field(description="End of the poller round, UTC.")
    poll_age_seconds: float = Field(description="Seconds since that round ended.")
    lengths_read_at: datetime | None = Field(
        description="When the queues were read from the broker, UTC; earlier than `polled_at` "
                    "while the broker does not answer: the queues are then the last ones read "
                    "(stale). null when the broker's queues cannot be read.")
    lengths_age_seconds: float | None = Field(
        description="Seconds since `lengths_read_at`.")
    queues: list[QueueInfo]


class PendingMessageInfo(_Model):
    """A message waiting in a Redis queue (peeked, not consumed)."""

    position: int = Field(description="0-based place in consumption order.")
    task_id: str | None
    name: str | None
    priority: int | None = Field(description="Message priority property.")
    priority_step: int = Field(description="kombu priority list it waits in.")
    eta: datetime | None
    args: str | None = Field(description="Argument repr from the message headers (argsrepr).")
    kwargs: str | None = Field(description="Keyword argument repr (kwargsrepr).")


class PendingPage(_Model):
    """Waiting messages ``offset … offset+limit-1`` of a queue, in the order workers take them.
    Best effort: producers and workers acting meanwhile can shift a page.
    """

    queue: str
    offset: int
    limit: int
    messages: list[PendingMessageInfo]


class WorkerInfo(_Model):
    """A worker from its events (liveness) and the last inspect round (pool, resources)."""

    hostname: str = Field(description="Node name worker@host.")
    up: bool = Field(description="Heartbeats arrive (--worker-timeout).")
    active: int | None = Field(description="Running tasks (last heartbeat).")
    processed: int | None = Field(description="Tasks processed since it started (heartbeat).")
    last_heartbeat: datetime | None = Field(description="Worker clock of its last event, UTC.")
    pool: str | None = Field(
        default=None, description="inspect stats: the pool (-P): prefork, threads, solo, "
                                  "eventlet, gevent, or a custom pool's class; the last one "
                                  "reported (a busy solo worker answers nothing).")
    pool_size: int | None = Field(description="inspect stats: pool max-concurrency.")
    cpu_user_seconds: float | None = Field(description="inspect stats: rusage utime.")
    cpu_system_seconds: float | None = Field(description="inspect stats: rusage stime.")
    max_rss_bytes: int | None = Field(description="inspect stats: rusage maxrss in bytes.")


class WorkersReport(_Model):
    """Workers seen by their events, merged with the last inspect round."""

    workers: list[WorkerInfo]


class HeldTaskInfo(_Model):
    """A task a worker holds now, as it answered ``inspect active`` or ``inspect scheduled``."""

    hostname: str = Field(description="The worker holding it.")
    task_id: str
    name: str
    started_at: datetime | None = Field(
        description="active: when it started (worker clock), UTC; null for scheduled.")
    eta: datetime | None = Field(
        description="scheduled: when the worker runs it (ETA or countdown), UTC; null for "
                    "active, or an ETA the worker sent unparseable.")
    priority: int | None = Field(description="The message priority, null when it had none.")
    routing_key: str | None = Field(description="delivery_info routing key.")


class HeldTasksReport(_Model):
    """What the workers hold now, asked when the request came (``inspect``)."""

    asked: bool = Field(
        description="false: the task events know no worker up, so none was asked (tasks "
                    "empty); true: every worker up was asked, waiting up to --inspect-timeout.")
    tasks: list[HeldTaskInfo] = Field(
        description="active: oldest start first; scheduled: soonest ETA first.")
    unanswered: list[str] = Field(
        description="Workers up by their heartbeats that sent no reply within "
                    "--inspect-timeout (frozen, a busy solo pool, killed less than "
                    "--worker-timeout ago), sorted: what they hold is unknown and not in "
                    "tasks.")


# -- actions ----------------------------------------------------------------------------------


class OutgoingTask(_Model):
    """Exactly what a retry sends (or would send): a new message by task name."""

    task_name: str
    args: list[Any] = Field(description="Positional arguments (JSON).")
    kwargs: dict[str, Any] = Field(description="Keyword arguments (JSON).")
    queue: str | None = Field(description="Queue of the original execution.")
    routing_key: str | None = Field(description="The queue's name: with the default exchange "
                                                "it delivers to that queue.")
    exchange: str | None = Field(description="`\"\"`: the default exchange. Nothing is "
                                             "declared, so a queue declared with arguments "
                                             "(x-max-priority, quorum) is used as it is.")
    priority: int | None = Field(description="null: not known; the queue's default applies.")
    argument_source: ArgumentSource = Field(
        description="result_backend: the arguments the worker stored (result_extended); "
                    "history_repr: parsed from the event's argument repr.")


class QueueCheckInfo(_Model):
    """What the broker said of the queue a retry publishes to, just before it sent (or, on a
    dry run, instead of sending): RabbitMQ's answer to a passive declare.
    """

    queue: str
    exists: bool = Field(description="The queue exists (a missing one is a 409 instead).")
    messages: int | None = Field(description="Messages ready in it (not those being worked "
                                             "on).")
    consumers: int | None = Field(description="Consumers of it (0: the retry waits there).")


class RetryLinkInfo(_Model):
    """A manual retry already made: the new task's id and its state now."""

    task_id: str
    state: str | None = Field(description="Its Celery state now; null: its row is no longer "
                                          "in the history (pruned).")


class RetryResult(_Model):
    """A retry done (202) or planned (dry run, 200)."""

    task_id: str = Field(description="The failed execution.")
    dry_run: bool
    new_task_id: str | None = Field(description="Id of the new execution; null on a dry run.")
    sent: OutgoingTask
    queue_check: QueueCheckInfo | None = Field(
        default=None, description="The broker's answer about the queue (RabbitMQ); null when "
                                  "the broker cannot tell (Redis: a queue is a list the first "
                                  "message creates).")
    manual_retry_count: int = Field(
        description="Manual retries of the original after this call.")
    warnings: list[str] = Field(default_factory=list,
                                description="No consumer on the queue; already retried ("
                                            "naming the retry and its state); sent but "
                                            "something could not be recorded.")
    existing_retries: list[RetryLinkInfo] = Field(
        default_factory=list,
        description="Retries already made before this call: the task's newest manual retry, "
                    "that retry's newest retry, and so on (empty: never retried).")
    force_needed: bool = Field(
        default=False,
        description="The task was retried already: a real retry without force=true is refused "
                    "(409, reason already-retried), so that one job is not run twice.")


def _checked(check: Callable[[], T]) -> T:
    """``check()``; its :class:`InvalidParameter` becomes a validation error whose message is
    the parser's without the parameter's name (the error's ``loc`` names it).
    """
    try:
        return check()
    except InvalidParameter as exc:
        name = str(exc.extra.get("parameter", ""))
        raise PydanticCustomError("invalid_parameter",
                                  exc.detail.removeprefix(f"{name}: ")) from None


class BulkRetryFilter(_Model):
    """Which executions a bulk retry selects; all given criteria must match."""

    # strict: a JSON value of the wrong type is a 400 ("dry_run": "false" is not false).
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str | None = Field(default=None, min_length=1, max_length=255,
                             description="Exact task name.")
    exception_type: str | None = Field(default=None, min_length=1, max_length=255,
                                       description="Failed with this exact exception class "
                                                   "(`ValueError`).")
    queue: str | None = Field(default=None, min_length=1, max_length=255)
    since: float | Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="State changed at or after: ISO 8601 or epoch seconds.")
    until: float | Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="State changed before: ISO 8601 or epoch seconds.")
    include_revoked: bool = Field(default=False, description="Also REVOKED executions.")
    include_no_outcome: bool = Field(
        default=False,
        description="Also the executions that ended with no outcome: LOST (running on a worker "
                    "that went away) and CANCELLED (killed by their worker's cold shutdown). "
                    "Part or all of their work may be done; each such item carries the "
                    "warning.")
    include_retried: bool = Field(
        default=False,
        description="Also executions retried already (skipped by default with reason "
                    "already-retried: their retry carries the job on). Even so, one job gets "
                    "at most one new task per call: of a retry chain, only the newest selected "
                    "execution is sent.")
    dry_run: bool = Field(default=True, description="Only list what would be retried.")
    limit: int = Field(default=100, ge=1, le=1000,
                       description="At most this many executions, newest first.")

    @field_validator("name", "exception_type", "queue")
    @classmethod
    def _identifier(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _checked(lambda: check_identifier(value, str(info.field_name)))

    @field_validator("since", "until", mode="before")
    @classmethod
    def _instant_type(cls, value: Any) -> Any:
        # One readable error instead of one per member of the union (strict: no bool).
        if value is None or (isinstance(value, int | float | str) and not isinstance(value, bool)):
            return value
        raise PydanticCustomError("invalid_parameter",
                                  "an ISO 8601 time or epoch seconds (a string or a number)")

    @field_validator("since", "until")
    @classmethod
    def _instant(cls, value: float | str | None, info: ValidationInfo) -> float | str | None:
        # Checked with the other fields, so that one 400 lists every bad one; the service
        # parses them again. ``until`` also against a valid ``since`` (declared first).
        if value is None:
            return None
        instant = _checked(lambda: parse_instant(value, str(info.field_name)))
        since = info.data.get("since")
        if info.field_name == "until" and since is not None:
            _checked(lambda: check_range(parse_instant(since, "since"), instant))
        return value


class BulkRetryItem(_Model):
    """What happened to one selected execution."""

    task_id: str
    name: str | None = Field(default=None, description="The task's name (history).")
    exception_type: str | None = Field(
        default=None, description="The exception class it failed with (history).")
    outcome: Literal["retried", "would_retry", "skipped"]
    new_task_id: str | None = None
    reason: str | None = Field(default=None, description="Why it was skipped.")
    reason_code: str | None = Field(
        default=None, description="Why it was skipped, as a stable code: already-retried, "
                                  "state, max-manual-retries, arguments-unavailable, "
                                  "queue-missing, … (a problem's reason or slug).")
    existing_retries: list[RetryLinkInfo] = Field(
        default_factory=list, description="Retries already made of it (see RetryResult).")
    argument_source: ArgumentSource | None = None
    warnings: list[str] = Field(
        default_factory=list,
        description="What to check about one retried or to be retried (as a single retry's): "
                    "a LOST or CANCELLED execution may have done its work, its queue has no "
                    "consumer, ….")


class BulkRetryResult(_Model):
    """The selected executions (newest first) and the outcome of each."""

    dry_run: bool
    matched: int = Field(description="Executions selected (at most `limit`).")
    retried: int = Field(description="Sent (0 on a dry run).")
    skipped: int
    more: bool = Field(description="More executions match beyond `limit`.")
    items: list[BulkRetryItem]


class CancelResult(_Model):
    """A revoke broadcast to the workers (202): what was *asked* and who acknowledged it —
    not what it achieved. The outcome (honoured or not) is recorded in the history once the
    task's events show it (``GET /tasks/{id}``: ``cancel_requests``).
    """

    task_id: str
    action: Literal["revoke", "terminate"] = Field(
        description="What was broadcast: revoke (workers drop the task when they get it) or "
                    "terminate (also signal it if it runs). A request, not a result.")
    signal: Signal | None = Field(description="Signal asked for a running task.")
    previous_state: str = Field(description="State the task was known in.")
    state_source: Literal["history", "events", "workers", "queue"] = Field(
        description="Who told that state: the SQL history, the live task events, the "
                    "workers (inspect query_task), or the broker queue the message waits in "
                    "(Redis; sent before the exporter listened).")
    hostname: str | None = Field(
        default=None, description="Worker running the task (history task-started/received, "
                                  "else inspect query_task); null when not known or not "
                                  "running.")
    pool: str | None = Field(
        default=None, description="That worker's pool (inspect stats): what terminate can do "
                                  "depends on it (prefork: signals the task's process; solo: "
                                  "cannot interrupt it; threads: refused with 409).")
    workers_up: int | None = Field(
        default=None, description="Workers up by their heartbeats when the revoke was sent; "
                                  "null without task events (the command line).")
    acknowledged_by: list[str] = Field(
        default_factory=list, description="Workers that replied to the revoke within "
                                          "--inspect-timeout (they will drop the task).")
    terminated_by: list[str] = Field(
        default_factory=list, description="Workers that replied they signalled the task's "
                                          "process (terminate: the task was theirs).")
    refused_by: dict[str, str] = Field(
        default_factory=dict, description="Workers that replied with an error, and the error.")
    warnings: list[str] = Field(
        default_factory=list, description="What the answer cannot promise: no worker "
                                          "acknowledged (the revoke is lost), a pool that "
                                          "cannot interrupt the task, …")


class WorkflowRetry(_Model):
    """A manual retry of a workflow's execution, or of one of its retries (a retry is a new
    task with a root of its own: it is not in the tree itself).
    """

    task_id: str = Field(description="The retry's task id.")
    retry_of: str = Field(description="The task it retried: the node, or an earlier retry.")
    state: str | None = Field(description="Its Celery state now; null: its row was pruned.")
    sent_at: datetime | None = Field(description="When the retry was sent (audit trail), UTC.")


class WorkflowTask(_Model):
    """One execution in a workflow's tree, with the executions it sent."""

    task_id: str = Field(description="Celery task id.")
    name: str | None = Field(description="Task name.")
    state: str = Field(description="Celery state (as in the task list).")
    parent_id: str | None = Field(
        description="The execution that sent it (shown where the tree cannot: a task whose "
                    "parent is not in the history, or one nested deeper than 50 levels, which "
                    "continues at the top level).")
    runtime_seconds: float | None = Field(description="Seconds it ran (as in the task list).")
    sent_at: datetime | None = Field(description="task-sent timestamp, UTC.")
    started_at: datetime | None = Field(description="task-started timestamp (latest attempt).")
    finished_at: datetime | None = Field(description="When it reached a final state, UTC.")
    retries: int = Field(description="Celery's own retry count (celery.chord_unlock: how "
                                     "often it polled the chord's header).")
    group_id: str | None = Field(
        description="celery.chord_unlock only: the group (chord header) it waits for. No event "
                    "names the group of other tasks.")
    children: list[WorkflowTask] = Field(
        description="Executions it sent (parent_id), first sent first: a chain's next step, "
                    "a group's members (siblings), a chord's callback under the header task "
                    "that finished last or under celery.chord_unlock.")
    manual_retries: list[WorkflowRetry] = Field(
        default_factory=list,
        description="Its manual retries and theirs, first sent first: a step that failed and "
                    "was fixed by a retry shows that retry SUCCESS.")


class WorkflowTree(_Model):
    """The workflow a task belongs to: every execution with its root id, nested by parent."""

    task_id: str = Field(description="The task asked about.")
    root_id: str = Field(description="Root of the workflow (the task's root_id, else itself).")
    count: int = Field(description="Executions in `tasks` (all levels).")
    truncated: bool = Field(description="More executions of this root are in the history "
                                        "than the answer's bound (1000): those sent last are "
                                        "left out.")
    tasks: list[WorkflowTask] = Field(
        description="Top level: the root first, then executions whose parent is not in the "
                    "history (pruned, or sent before the history began).")


class Problem(_Model):
    """RFC 9457 problem details (``application/problem+json``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str = Field(description="URI identifying the problem type (about:blank: see status).")
    title: str
    status: int
    detail: str | None = None
    reason: str | None = Field(default=None,
                               description="409: stable code of why the task is not eligible "
                                           "or the broker refused.")
    broker_reason: str | None = Field(
        default=None, description="The broker's own words when it refused or closed the "
                                  "connection (`406 PRECONDITION_FAILED - …`).")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="400: every invalid parameter (`loc`, `msg`).")
