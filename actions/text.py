"""Readable text of the action results, for the ``retry``, ``cancel`` and ``tasks`` commands
(``--json`` prints the API's JSON instead).

Examples::

    retried 3f2c… as 9a41…: examples.tasks.fail_value('x') → queue b (arguments: result_backend)
    would send examples.tasks.add(1, 2) → queue a (arguments: history_repr)
    asked to revoke 3f2c… (was RECEIVED, known from events): acknowledged by w1@h
    STATE    CHANGED (UTC)        NAME                     QUEUE  TASK ID        EXCEPTION
    FAILURE  2024-05-01 12:00:03  examples.tasks.fail_key  b      5d1e…          KeyError
"""

from __future__ import annotations

from datetime import datetime

from actions.schemas import CancelResult, OutgoingTask, RetryResult, TaskPage


def call_text(message: OutgoingTask) -> str:
    """``name(arg, …, key=value)`` with Python reprs."""
    parts = [repr(a) for a in message.args]
    parts += [f"{k}={v!r}" for k, v in message.kwargs.items()]
    routing = f" → queue {message.queue}"
    if message.routing_key and message.routing_key != message.queue:
        routing += f" (routing key {message.routing_key})"
    if message.priority is not None:
        routing += f", priority {message.priority}"
    return f"{message.task_name}({', '.join(parts)}){routing}"


def retry_text(result: RetryResult) -> str:
    """One line for a retry or its dry run, plus any warnings."""
    source = f"(arguments: {result.sent.argument_source})"
    if result.dry_run:
        line = f"would send {call_text(result.sent)} {source}"
    else:
        line = f"retried {result.task_id} as {result.new_task_id}: {call_text(result.sent)} " \
               f"{source}"
    return "\n".join([line, *(f"warning: {w}" for w in result.warnings)])


def cancel_text(result: CancelResult) -> str:
    """One line for a cancel — what was asked and who acknowledged it — plus any warnings."""
    how = f" with {result.signal}" if result.signal else ""
    on = f" on {result.hostname} ({result.pool or 'pool unknown'})" if result.hostname else ""
    acknowledged = ", ".join(result.acknowledged_by) or "no worker"
    line = (f"asked to {result.action} {result.task_id}{how}{on} (was "
            f"{result.previous_state}, known from {result.state_source}): acknowledged by "
            f"{acknowledged}")
    return "\n".join([line, *(f"warning: {w}" for w in result.warnings)])


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def tasks_text(page: TaskPage) -> str:
    """An aligned table of executions and, when there is more, how to get the next page."""
    rows = [("STATE", "CHANGED (UTC)", "NAME", "QUEUE", "TASK ID", "EXCEPTION")]
    rows += [(t.state, _time(t.state_changed_at), t.name or "-", t.queue or "-", t.task_id,
              t.exception_type or "") for t in page.items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    if not page.items:
        lines = ["no executions match"]
    if page.next_cursor:
        lines.append(f"more: --cursor {page.next_cursor}")
    return "\n".join(lines)
