"""Read endpoints' services: task detail and lists (history), statistics (history), queues and
workers (poll snapshot + model snapshot), waiting messages (Redis, peeked).

Nothing here writes, except that reading a task records the outcome of its cancel requests
once its row shows it (:func:`get_task`); every function returns the response model the API
and the CLI show.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone

import sqlalchemy.exc
from sqlalchemy import Table, select

from actions.context import ActionContext
from actions.errors import InvalidParameter, NotReady, TaskNotFound, history_errors
from actions.params import check_range, parse_window
from actions.schemas import (
    CancelRequestInfo,
    FailureGroupStatistics,
    PendingMessageInfo,
    PendingPage,
    QueueInfo,
    QueuesReport,
    TaskDetail,
    TaskPage,
    TaskStatistics,
    TaskStatsReport,
    TaskSummary,
    WorkerInfo,
    WorkersReport,
    utc,
)
from exporter.history import (
    InvalidCursor,
    failure_groups,
    get_execution,
    list_executions,
    task_stats,
)
from exporter.history.audit import cancel_requests, settle_cancels
from exporter.history.orm import ACTION_AUDIT
from exporter.history.queries import MAX_PAGE_SIZE
from exporter.logs import describe
from exporter.state.labels import TaskLabels

log = logging.getLogger(__name__)
_AUDIT: Table = ACTION_AUDIT  # type: ignore[assignment]
#: Failure groups listed by the statistics.
FAILURE_GROUPS = 20


def _manual_retries(ctx: ActionContext, task_id: str) -> list[str]:
    """New task ids of the manual retries of ``task_id``, oldest first, from the audit trail
    (indexed by task id; ``task_execution.retry_of`` is not).
    """
    query = (select(_AUDIT.c.detail)
             .where(_AUDIT.c.task_id == task_id, _AUDIT.c.action == "retry")
             .order_by(_AUDIT.c.at, _AUDIT.c.id))
    with ctx.engine().connect() as connection:
        details = connection.execute(query).scalars().all()
    return [d["new_task_id"] for d in details
            if isinstance(d, dict) and isinstance(d.get("new_task_id"), str)]


def _cancel_requests(ctx: ActionContext, task_id: str) -> list[CancelRequestInfo]:
    """The task's cancel requests with their outcomes, after recording any outcome its row
    now shows (:func:`~exporter.history.audit.settle_cancels`: requests made by the
    ``cancel`` command, or while no follow-up ran, are settled here).
    """
    engine = ctx.engine()
    try:
        settle_cancels(engine, at=ctx.clock(), task_id=task_id)
    except sqlalchemy.exc.SQLAlchemyError as exc:  # a read-only replica: show what is known
        log.warning("cancel outcome not recorded task_id=%s error=%s", task_id, describe(exc))
    return [CancelRequestInfo(
        requested_at=utc(r.at), actor=r.actor, action=r.detail.get("requested"),
        signal=r.detail.get("signal"), acknowledged_by=list(r.detail.get("acknowledged_by")
                                                            or []),
        outcome=r.outcome,  # type: ignore[arg-type]
        outcome_at=utc(r.outcome_at), evidence=r.evidence)
        for r in cancel_requests(engine, task_id)]


def get_task(ctx: ActionContext, task_id: str) -> TaskDetail:
    """Everything the history knows about ``task_id``, its manual retries and its cancel
    requests with their outcomes.

    Raises:
        TaskNotFound: not in the history. HistoryDisabled / HistoryUnavailable.

    """
    engine = ctx.engine()
    with history_errors():
        row = get_execution(engine, task_id)
        if row is None:
            raise TaskNotFound(f"no task {task_id!r} in the history (unknown, or pruned)")
        retries = _manual_retries(ctx, task_id)
        cancels = _cancel_requests(ctx, task_id)
    return TaskDetail.build(row, retries, cancels)


def list_tasks(ctx: ActionContext, *, states: list[str] | None = None, name: str | None = None,
               queue: str | None = None, since: float | None = None, until: float | None = None,
               limit: int = 50, cursor: str | None = None,
               exception_type: str | None = None) -> TaskPage:
    """One page of executions, newest state change first (see
    :func:`exporter.history.list_executions`); ``since``/``until`` in epoch seconds;
    ``exception_type``: executions that failed (FAILURE) with that exception class.

    Raises:
        InvalidParameter: a cursor this API did not return, a limit outside 1..1000, or
            ``until`` not after ``since``. HistoryDisabled / HistoryUnavailable.

    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidParameter(f"limit: between 1 and {MAX_PAGE_SIZE}", parameter="limit")
    check_range(since, until)
    engine = ctx.engine()
    try:
        with history_errors():
            page = list_executions(engine, states=states, name=name, queue=queue, since=since,
                                   until=until, limit=limit, cursor=cursor,
                                   exception_type=exception_type)
    except InvalidCursor:
        raise InvalidParameter("cursor: not a cursor this API returned (pass next_cursor "
                               "unchanged)", parameter="cursor") from None
    return TaskPage(items=[TaskSummary.from_execution(row) for row in page.items],
                    next_cursor=page.next_cursor)


def task_statistics(ctx: ActionContext, *, window: str = "1h", name: str | None = None
                    ) -> TaskStatsReport:
    """Per task name statistics and failure groups of executions that finished in the last
    ``window`` (``1h``, ``30m``, ``7d``).

    Raises:
        InvalidParameter: a bad window. HistoryDisabled / HistoryUnavailable.

    """
    seconds = parse_window(window)
    until = ctx.clock()
    since = until - seconds
    engine = ctx.engine()
    with history_errors():
        stats = task_stats(engine, since=since, until=until, name=name,
                           slow_threshold=ctx.slow_threshold)
        groups = failure_groups(engine, since=since, until=until, name=name,
                                limit=FAILURE_GROUPS)
    return TaskStatsReport(
        window_seconds=seconds, since=datetime.fromtimestamp(since, tz=timezone.utc),
        until=datetime.fromtimestamp(until, tz=timezone.utc),
        slow_threshold_seconds=ctx.slow_threshold,
        tasks=[TaskStatistics(
            name=s.name, count=s.count, succeeded=s.succeeded, failed=s.failed,
            revoked=s.revoked, rejected=s.rejected, lost=s.lost,
            success_ratio=s.success_ratio, failure_ratio=s.failure_ratio,
            avg_runtime_seconds=s.avg_runtime, min_runtime_seconds=s.min_runtime,
            max_runtime_seconds=s.max_runtime, p95_runtime_seconds=s.p95_runtime,
            p95_relative_error=s.p95_relative_error, slow=s.slow,
        ) for s in stats],
        failures=[FailureGroupStatistics(
            exception_type=g.exception_type, count=g.count, last_seen=utc(g.last_seen),
            sample_message=g.sample_message, sample_task_id=g.sample_task_id,
            sample_name=g.sample_name,
        ) for g in groups],
    )


def queues(ctx: ActionContext) -> QueuesReport:
    """Every queue of the poller's last round with its lengths, consumers, oldest message age,
    and the tasks of that queue running (events) or held by workers (inspect).

    Raises:
        NotReady: the poller has not finished a round yet.

    """
    snapshot = ctx.poll_latest()
    if snapshot is None:
        raise NotReady("the poller has not finished its first round yet; retry in a few "
                       "seconds (--inspect-interval)")
    now = ctx.clock()
    running: dict[str, int] = {}
    if ctx.live is not None:
        for labels, count in ctx.live.running().items():
            running[labels.queue_name] = running.get(labels.queue_name, 0) + count

    reserved, scheduled = snapshot.reserved, snapshot.scheduled
    read_at = snapshot.queues_read_at
    return QueuesReport(
        polled_at=utc(snapshot.taken_at), poll_age_seconds=max(0.0, now - snapshot.taken_at),
        lengths_read_at=None if read_at is None else utc(read_at),
        lengths_age_seconds=None if read_at is None else max(0.0, now - read_at),
        queues=[QueueInfo(
            name=q.name, length=sum(q.lengths.values()), lengths_by_priority=dict(q.lengths),
            consumers=q.consumers,
            oldest_message_age_seconds=None if q.waiting_since is None
            else max(0.0, now - q.waiting_since),
            running=running.get(q.name, 0), reserved=_held(reserved, q.name),
            scheduled=_held(scheduled, q.name),
        ) for q in snapshot.queues],
    )


def _held(counts: Mapping[TaskLabels, int], queue: str) -> int:
    """Tasks of ``queue`` in ``{(name, queue_name): n}``."""
    return sum(n for labels, n in counts.items() if labels.queue_name == queue)


def pending(ctx: ActionContext, queue: str, *, offset: int = 0, limit: int = 100) -> PendingPage:
    """Waiting messages of ``queue`` (Redis), ``offset`` … ``offset+limit-1`` in the order
    workers take them, without consuming them.

    Raises:
        InvalidParameter: negative offset, limit outside 1..1000.
        NotSupported: the broker is not Redis. BrokerUnavailable.

    """
    if offset < 0:
        raise InvalidParameter("offset: 0 or more", parameter="offset")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidParameter(f"limit: between 1 and {MAX_PAGE_SIZE}", parameter="limit")
    messages = ctx.broker.pending(queue, offset, limit)
    return PendingPage(queue=queue, offset=offset, limit=limit, messages=[
        PendingMessageInfo(position=offset + i, task_id=m.task_id, name=m.name,
                           priority=m.priority, priority_step=m.step, eta=utc(m.eta),
                           args=m.args_repr, kwargs=m.kwargs_repr)
        for i, m in enumerate(messages)])


def workers(ctx: ActionContext) -> WorkersReport:
    """Workers seen by their events (liveness, heartbeat counts), merged by hostname with the
    poller's last ``inspect stats`` (pool size, CPU, memory) and the pool each worker last
    reported (kept while a busy solo worker answers nothing); a worker only inspect knows is
    reported up (it answered).
    """
    seen = {w.hostname: w for w in (ctx.live.worker_states() if ctx.live else ())}
    snapshot = ctx.poll_latest()
    polled = {w.hostname: w for w in (snapshot.workers if snapshot is not None else ())}
    pools = snapshot.pools if snapshot is not None else {}
    result = []
    for hostname in sorted(set(seen) | set(polled)):
        event, stats = seen.get(hostname), polled.get(hostname)
        result.append(WorkerInfo(
            hostname=hostname, up=event.up if event is not None else True,
            active=event.active if event is not None else None,
            processed=event.processed if event is not None else None,
            last_heartbeat=utc(event.last_heartbeat) if event is not None else None,
            pool=pools.get(hostname),
            pool_size=stats.pool_size if stats else None,
            cpu_user_seconds=stats.cpu_user if stats else None,
            cpu_system_seconds=stats.cpu_system if stats else None,
            max_rss_bytes=stats.max_rss_bytes if stats else None,
        ))
    return WorkersReport(workers=result)
