"""Retry failed executions: re-send by task name with the original arguments and routing, as
a new task id linked to the old one.

Eligibility (each refusal is :class:`~actions.errors.NotEligible` with a ``reason``):

- ``state``: the execution is FAILURE, LOST (running on a worker that went away) or
  CANCELLED (killed by its worker's cold shutdown: ``task-cancelled``) — REVOKED too with
  ``include_revoked``. LOST and CANCELLED ended with no outcome: the answer warns that an
  ``acks_late`` task may be delivered again by the broker under its own id
  (:data:`NO_OUTCOME_WARNING`);
- ``max-manual-retries``: the manual retries already made in its whole chain — those before it
  (``retry_of`` links), those made of it and those made after it, forced ones included — are
  under ``--max-manual-retries``: retrying the retry of a retry counts, and ``force`` on an
  older execution of the chain cannot send one more;
- ``name-unknown`` / ``queue-unknown``: no event said the task's name or queue (the result
  backend's stored ``queue`` is used when the history has none);
- ``arguments-unavailable``: see :mod:`actions.arguments`;
- ``already-retried`` (a real retry only, unless ``force``): the execution was retried already
  (:mod:`actions.retry_links`: the audit trail's retries, or ``manual_retry_count`` > 0). Its
  retry carries the job on — retry that one if it failed; sending this one again would run the
  job twice (a ``charge`` charged twice), e.g. from a stale page. A dry run answers with a
  warning naming the retry and its state (``its retry 9a41… SUCCEEDED``) and ``force_needed``.

Bulk retry skips an execution retried already (``already-retried``) unless the request has
``include_retried``, and sends at most one new task per job and call: when a retry and the
execution it retried are both selected, only the newest is sent.

Where it goes: the original queue, by name — published to the default exchange with the
queue's name as routing key and nothing declared, so a RabbitMQ queue declared with arguments
(``x-max-priority``, quorum) receives it as it is. Before sending (and on a dry run, instead of
sending) the broker is asked about that queue (:meth:`~actions.broker.Broker.check_queue`,
RabbitMQ only): a queue that does not exist is :class:`~actions.errors.BrokerRefused`
``queue-missing`` (a message published there would be dropped silently); one without consumers
is sent with a warning.

A retry publishes first and records afterwards (:func:`exporter.history.record_retry`: the new
row's ``retry_of``, the old row's ``manual_retry_count``, an audit row with the actor): a
message that could not be sent is never recorded as sent. If the recording fails, the answer
still says what was sent, with a warning.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import sqlalchemy.exc

from actions.arguments import resolve_arguments
from actions.broker import Outgoing
from actions.context import ActionContext
from actions.errors import (
    BrokerRefused,
    BrokerUnavailable,
    NotEligible,
    TaskNotFound,
    history_errors,
)
from actions.params import parse_instant
from actions.retry_links import MAX_LINE, RetryLink, describe_line, retries_of, retry_line
from actions.schemas import (
    BulkRetryFilter,
    BulkRetryItem,
    BulkRetryResult,
    OutgoingTask,
    QueueCheckInfo,
    RetryLinkInfo,
    RetryResult,
)
from exporter.history import Execution, get_execution, list_executions, record_action, record_retry
from exporter.logs import describe

log = logging.getLogger(__name__)

_PAGE = 1000
#: The exchange a retry publishes to: AMQP's default exchange routes by queue name.
DEFAULT_EXCHANGE = ""


@dataclass(frozen=True)
class RetryPlan:
    """An eligible execution, exactly what retrying it sends, and the retries already made of
    it (:func:`actions.retry_links.retry_line`; empty when never retried).
    """

    row: Execution
    message: OutgoingTask
    line: list[RetryLink]

    @property
    def retried(self) -> bool:
        """It was retried already (a retry in the audit trail, or ``manual_retry_count``)."""
        return bool(self.line) or self.row.manual_retry_count > 0

    def retried_text(self) -> str:
        """``already retried: its retry R1 SUCCEEDED`` (or the count when the audit trail
        names no retry).
        """
        if self.line:
            return f"already retried: {describe_line(self.line)}"
        return (f"already retried {self.row.manual_retry_count} time(s) (the audit trail names "
                "no retry)")

    def existing(self) -> list[RetryLinkInfo]:
        """:attr:`line` as the API shows it."""
        return [RetryLinkInfo(task_id=link.task_id, state=link.state) for link in self.line]


def load_execution(ctx: ActionContext, task_id: str) -> Execution:
    """The history row of ``task_id``.

    Raises:
        HistoryDisabled / HistoryUnavailable: no history, or it did not answer.
        TaskNotFound: no such task in the history.

    """
    engine = ctx.engine()
    with history_errors():
        row = get_execution(engine, task_id)
    if row is None:
        raise TaskNotFound(f"no task {task_id!r} in the history (unknown, or pruned)")
    return row


def _retries_in_chain(ctx: ActionContext, row: Execution) -> int:
    """The manual retries made in ``row``'s whole chain, counted up to the limit
    (``--max-manual-retries``).

    The chain is the tree of retries around ``row``: its first execution is found by following
    ``retry_of`` upwards (a pruned row ends the walk, its id still known), then every manual
    retry made from it, from those retries and so on (forced ones too, so several retries of one
    execution all count) is read from the audit trail (:func:`~actions.retry_links.retries_of`,
    one query per generation, at most :data:`~actions.retry_links.MAX_LINE` generations). The
    retries before ``row`` plus its own ``manual_retry_count`` bound the answer from below, for
    retries the audit trail does not name.

    Raises:
        HistoryUnavailable: the history did not answer.

    """
    first, seen = row.task_id, {row.task_id}
    current: Execution | None = row
    while (current is not None and current.retry_of is not None
           and current.retry_of not in seen and len(seen) <= MAX_LINE):
        first = current.retry_of
        seen.add(first)
        with history_errors():
            current = get_execution(ctx.engine(), first)
    before = len(seen) - 1
    used, generation, known = 0, [first], {first}
    for _ in range(MAX_LINE):
        if not generation or used >= ctx.max_manual_retries:
            break
        with history_errors():
            links = retries_of(ctx.engine(), generation)
        generation = [link.task_id for task_id in generation for link in links.get(task_id, ())
                      if link.task_id not in known]
        known.update(generation)
        used += len(generation)
    return max(used, before + row.manual_retry_count)


#: States a retry takes without ``include_revoked``: a failure, and the two endings with no
#: outcome (the job may or may not have done its work).
RETRIED_STATES = ("FAILURE", "LOST", "CANCELLED")
#: The warning of a retry of a LOST or CANCELLED execution (``{state}`` filled in).
NO_OUTCOME_WARNING = (
    "the task is {state}: it ended with no outcome, and part of its work may be done. If it is "
    "acks_late, the broker delivers it again by itself under the same id (RabbitMQ at once, "
    "Redis after its visibility_timeout, 1 hour by default): retry it only if that did not "
    "happen, or if running it twice is safe")


def plan_retry(ctx: ActionContext, task_id: str, *, include_revoked: bool = False) -> RetryPlan:
    """Check that ``task_id`` may be retried and work out what to send.

    Raises:
        TaskNotFound, HistoryDisabled, HistoryUnavailable: see :func:`load_execution`.
        NotEligible: with ``reason`` (module docs).
        BrokerUnavailable: the result backend did not answer (nothing is sent).

    """
    row = load_execution(ctx, task_id)
    allowed = (*RETRIED_STATES, "REVOKED") if include_revoked else RETRIED_STATES
    if row.state not in allowed:
        hint = (" (add include_revoked=true to retry a REVOKED task)"
                if row.state == "REVOKED" else "")
        raise NotEligible(f"the task is {row.state}: only FAILURE, LOST and CANCELLED tasks "
                          f"are retried{hint}", reason="state", state=row.state)
    used = _retries_in_chain(ctx, row)
    if used >= ctx.max_manual_retries:
        raise NotEligible(
            f"{used} manual retries were already made in this task's chain; the limit "
            f"is {ctx.max_manual_retries} (--max-manual-retries)", reason="max-manual-retries")
    if not row.name:
        raise NotEligible("the task's name is unknown (no task-sent or task-received event was "
                          "seen)", reason="name-unknown")
    arguments = resolve_arguments(row, ctx.broker.stored_meta
                                  if ctx.broker.has_result_backend else None)
    queue = row.queue or arguments.queue
    if not queue:
        raise NotEligible("the task's queue is unknown: producers need task_send_sent_event="
                          "True (or workers result_extended=True)", reason="queue-unknown")
    message = OutgoingTask(
        task_name=row.name, args=arguments.args, kwargs=arguments.kwargs, queue=queue,
        routing_key=queue, exchange=DEFAULT_EXCHANGE, priority=row.priority,
        argument_source=arguments.source,  # type: ignore[arg-type]
    )
    line: list[RetryLink] = []
    if row.manual_retry_count > 0:
        with history_errors():
            line = retry_line(ctx.engine(), row.task_id)
    return RetryPlan(row, message, line)


def _refuse_retried(plan: RetryPlan, force_hint: str) -> NotEligible:
    """The 409 of a real retry of an execution retried already, without ``force``;
    ``force_hint`` says how to send it anyway.
    """
    end = plan.line[-1] if plan.line else None
    advice = (f"; retry {end.task_id} instead, which continues the chain"
              if end is not None and end.state in ("FAILURE", "REVOKED") else "")
    return NotEligible(
        f"this task was {plan.retried_text()}. Sending it again would run the job once more"
        f"{advice}; {force_hint}.", reason="already-retried",
        existing_retries=[link.model_dump() for link in plan.existing()])


def check_destination(ctx: ActionContext, queue: str) -> tuple[QueueCheckInfo | None, list[str]]:
    """Ask the broker about the queue a retry publishes to (RabbitMQ: passive declare).

    Returns:
        ``(what the broker said, warnings)``: ``None`` when the broker cannot tell (Redis); a
        warning when nobody consumes the queue.

    Raises:
        BrokerRefused: ``queue-missing``, or another refusal with the broker's reason.
        BrokerUnavailable: the broker did not answer.

    """
    check = ctx.broker.check_queue(queue)
    if check is None:
        return None, []
    if not check.exists:
        raise BrokerRefused(
            f"RabbitMQ has no queue {queue!r} in vhost {check.vhost!r} (404 NOT_FOUND to a "
            "passive declare): a retry published there would be dropped. Start a worker that "
            "declares it, then retry.", reason="queue-missing")
    warnings = [] if check.consumers else [
        f"no consumer on queue {queue!r} now: the retry waits there until a worker consumes it"]
    return QueueCheckInfo(queue=queue, exists=True, messages=check.messages,
                          consumers=check.consumers), warnings


def _record(ctx: ActionContext, plan: RetryPlan, new_id: str, actor: str) -> list[str]:
    detail = {"task_name": plan.message.task_name, "queue": plan.message.queue,
              "argument_source": plan.message.argument_source}
    for attempt in (1, 2):
        try:
            with history_errors():
                record_retry(ctx.engine(), original_id=plan.row.task_id, new_id=new_id,
                             actor=actor, detail=detail, at=ctx.clock())
            return []
        except sqlalchemy.exc.IntegrityError:
            # The writer inserted the new row at the same instant; the second call links it.
            if attempt == 2:
                break
        except Exception as exc:  # the message is out: say so instead of failing the request
            log.error("retry sent but not recorded task_id=%s new_task_id=%s error=%s",
                      plan.row.task_id, new_id, describe(exc))
            return [f"sent, but not recorded in the history: {describe(exc)}"]
    return ["sent, but not recorded in the history: the new row could not be linked"]


def retry_task(ctx: ActionContext, task_id: str, *, actor: str, include_revoked: bool = False,
               dry_run: bool = False, force: bool = False,
               force_hint: str = "force=true (--force) sends it anyway") -> RetryResult:
    """Retry one execution (or, with ``dry_run``, show exactly what would be sent).

    ``force``: send even when the execution was retried already; ``force_hint``: how the
    caller's user asks for that, in the refusal (a bulk retry's ``include_retried``).

    Returns:
        The new task id (``None`` on a dry run), the message, what the broker said of the
        queue (:func:`check_destination`), the manual retry count after, warnings (one naming
        the existing retry and its state), the retries already made and ``force_needed``.

    Raises:
        TaskNotFound, NotEligible, HistoryDisabled, HistoryUnavailable: see :func:`plan_retry`;
            NotEligible ``already-retried`` for a real retry of a retried task without
            ``force`` (its ``existing_retries`` member lists the retries).
        BrokerRefused: the queue does not exist, or the broker refused the message (409).
        BrokerUnavailable: the broker did not answer or take the message (503).
        Nothing is recorded after either.

    """
    with ctx.retry_lock:
        plan = plan_retry(ctx, task_id, include_revoked=include_revoked)
        m = plan.message
        if plan.retried and not dry_run and not force:
            raise _refuse_retried(plan, force_hint)
        queue_check, warnings = check_destination(ctx, m.queue or "")
        if plan.row.state in ("LOST", "CANCELLED"):
            warnings.insert(0, NO_OUTCOME_WARNING.format(state=plan.row.state))
        if plan.retried:
            warnings.insert(0, plan.retried_text())
        if dry_run:
            return RetryResult(task_id=task_id, dry_run=True, new_task_id=None, sent=m,
                               queue_check=queue_check,
                               manual_retry_count=plan.row.manual_retry_count,
                               warnings=warnings, existing_retries=plan.existing(),
                               force_needed=plan.retried)
        new_id = str(uuid.uuid4())
        ctx.broker.send(Outgoing(m.task_name, m.args, m.kwargs, m.queue, m.routing_key,
                                 m.exchange, m.priority), new_id)
        warnings += _record(ctx, plan, new_id, actor)
    log.info("action=retry task_id=%s new_task_id=%s name=%s queue=%s source=%s actor=%s",
             task_id, new_id, m.task_name, m.queue, m.argument_source, actor)
    return RetryResult(task_id=task_id, dry_run=False, new_task_id=new_id, sent=m,
                       queue_check=queue_check,
                       manual_retry_count=plan.row.manual_retry_count + 1, warnings=warnings,
                       existing_retries=plan.existing(), force_needed=plan.retried)


def select_for_bulk(ctx: ActionContext, selection: BulkRetryFilter
                    ) -> tuple[list[Execution], bool]:
    """The executions a bulk retry selects — FAILURE; LOST and CANCELLED with
    ``include_no_outcome``; REVOKED with ``include_revoked`` — newest first, at most
    ``selection.limit``.

    Returns:
        ``(rows, more)``: ``more`` is true when more executions match than ``limit``.

    ``selection`` was checked when it was built (:class:`~actions.schemas.BulkRetryFilter`'s
    validators: identifiers, times, ``until`` after ``since``), so a bad one is a 400 listing
    every bad field before anything is read.

    Raises:
        HistoryDisabled / HistoryUnavailable.

    """
    since = None if selection.since is None else parse_instant(selection.since, "since")
    until = None if selection.until is None else parse_instant(selection.until, "until")
    states = ["FAILURE", *(("LOST", "CANCELLED") if selection.include_no_outcome else ()),
              *(("REVOKED",) if selection.include_revoked else ())]
    engine = ctx.engine()
    matched: list[Execution] = []
    cursor: str | None = None
    while True:
        with history_errors():
            page = list_executions(engine, states=states, name=selection.name,
                                   queue=selection.queue, since=since, until=until,
                                   exception_type=selection.exception_type, limit=_PAGE,
                                   cursor=cursor)
        matched += page.items
        if len(matched) > selection.limit:
            return matched[:selection.limit], True
        cursor = page.next_cursor
        if cursor is None:
            return matched, False


def superseded_in(ctx: ActionContext, rows: list[Execution]) -> dict[str, str]:
    """Selected executions whose retry chain goes on with another selected execution: each
    such task id → the newer one's task id (found by walking every selected row's ``retry_of``
    links up, at most :data:`~actions.retry_links.MAX_LINE` steps).

    Raises:
        HistoryUnavailable: the database failed.

    """
    selected = {row.task_id: row for row in rows}
    superseded: dict[str, str] = {}
    for row in rows:
        current, steps = row, 0
        while current.retry_of is not None and steps < MAX_LINE:
            steps += 1
            parent = selected.get(current.retry_of)
            if parent is not None:
                superseded.setdefault(parent.task_id, row.task_id)
            else:
                with history_errors():
                    parent = get_execution(ctx.engine(), current.retry_of)
                if parent is None:
                    break
            current = parent
    return superseded


def _bulk_item(ctx: ActionContext, row: Execution, selection: BulkRetryFilter, actor: str
               ) -> BulkRetryItem:
    """Retry (or plan) one selected execution; an already-retried one without
    ``include_retried`` is skipped, on a dry run as on a real one.

    Raises:
        BrokerUnavailable: the broker did not answer.

    """
    try:
        result = retry_task(ctx, row.task_id, actor=actor, dry_run=selection.dry_run,
                            include_revoked=selection.include_revoked,
                            force=selection.include_retried,
                            force_hint="include_retried: true sends it")
    except (NotEligible, TaskNotFound, BrokerRefused) as exc:
        return BulkRetryItem(task_id=row.task_id, outcome="skipped", reason=exc.detail,
                             reason_code=exc.extra.get("reason") or exc.slug,
                             existing_retries=exc.extra.get("existing_retries") or [])
    if result.force_needed and not selection.include_retried:
        return BulkRetryItem(task_id=row.task_id, outcome="skipped",
                             reason=f"{result.warnings[0]} (include_retried: true sends it)",
                             reason_code="already-retried",
                             existing_retries=result.existing_retries)
    return BulkRetryItem(
        task_id=row.task_id, outcome="would_retry" if selection.dry_run else "retried",
        new_task_id=result.new_task_id, argument_source=result.sent.argument_source,
        existing_retries=result.existing_retries, warnings=result.warnings)


def bulk_retry(ctx: ActionContext, selection: BulkRetryFilter, *, actor: str
               ) -> BulkRetryResult:
    """Retry (or, by default, list) every execution the filter selects.

    Each one is checked like a single retry; an ineligible one, or one the broker refuses (its
    queue is missing), is ``skipped`` with the reason and its ``reason_code``. One retried
    already is skipped (``already-retried``, naming its retry and that retry's state) unless
    ``include_retried``; with it, an execution whose retry chain goes on with another selected
    one is still skipped (:func:`superseded_in`): one job, at most one new task per call. When
    the broker stops answering, the rest are skipped without being tried.

    Raises:
        HistoryDisabled, HistoryUnavailable: see :func:`select_for_bulk`.

    """
    rows, more = select_for_bulk(ctx, selection)
    superseded = superseded_in(ctx, rows) if selection.include_retried else {}
    items: list[BulkRetryItem] = []
    broker_down: str | None = None
    for row in rows:
        item: BulkRetryItem
        if broker_down is not None:
            item = BulkRetryItem(task_id=row.task_id, outcome="skipped",
                                 reason=f"not tried: {broker_down}",
                                 reason_code=BrokerUnavailable.slug)
        elif row.task_id in superseded:
            item = BulkRetryItem(
                task_id=row.task_id, outcome="skipped", reason_code="already-retried",
                reason=f"already retried: its retry chain goes on with "
                       f"{superseded[row.task_id]}, selected in this call")
        else:
            try:
                item = _bulk_item(ctx, row, selection, actor)
            except BrokerUnavailable as exc:
                broker_down = exc.detail
                item = BulkRetryItem(task_id=row.task_id, outcome="skipped",
                                     reason=exc.detail, reason_code=exc.slug)
        # What each one is, for the preview: name and exception from the history.
        items.append(item.model_copy(update={"name": row.name,
                                             "exception_type": row.exception_type}))
    retried = sum(1 for item in items if item.outcome == "retried")
    if not selection.dry_run and ctx.history is not None:
        try:
            with history_errors():
                record_action(ctx.history, actor=actor, action="bulk-retry", detail={
                    "filter": selection.model_dump(exclude_none=True), "matched": len(rows),
                    "retried": retried}, at=ctx.clock())
        except Exception as exc:
            log.error("bulk retry not recorded error=%s", describe(exc))
    return BulkRetryResult(
        dry_run=selection.dry_run, matched=len(rows), retried=retried,
        skipped=sum(1 for item in items if item.outcome == "skipped"), more=more, items=items)
