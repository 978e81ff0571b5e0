"""What the workers hold now, asked when called: the tasks each runs (``inspect active``) and
those it keeps until their ETA (``inspect scheduled``), for the job browser's Running and
Scheduled pages and the API's ``GET /workers/active`` and ``/workers/scheduled``
(:func:`report`).

The poller's snapshot keeps only counts per (name, queue), so a list of tasks needs its own
broadcast (:meth:`actions.broker.Broker.inspect`). It waits for as many replies as workers are
up by their heartbeats (it returns as soon as they answered), else for the whole
``--inspect-timeout``; with the events saying that no worker is up, nobody is asked. A worker up
by its heartbeats that does not reply (frozen, busy in a solo pool, killed less than
``--worker-timeout`` ago) is named in :attr:`Held.unanswered`: what it holds is unknown, not
nothing. Replies are parsed by the poller's own parsers (:mod:`exporter.poll.inspect_replies`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from actions.broker import InspectCall
from actions.context import ActionContext
from actions.schemas import HeldTaskInfo, HeldTasksReport, utc
from exporter.poll.inspect_replies import ScheduledTask, TaskInfo, parse_scheduled, parse_tasks

T = TypeVar("T")
#: Said when the events know no worker that is up: nobody was asked.
NOBODY_ASKED = "No worker is up by its heartbeats, so none was asked."


@dataclass(frozen=True)
class Held(Generic[T]):
    """One broadcast's answer: ``by_worker`` ``{hostname: (item, ...)}``; ``asked`` is
    ``False`` when no worker was up by its heartbeats, so none was asked (``by_worker`` empty);
    ``unanswered``: the workers up by their heartbeats that sent no reply within the inspect
    timeout, sorted (always empty without task events: who should answer is not known).
    """

    by_worker: Mapping[str, tuple[T, ...]]
    asked: bool
    unanswered: tuple[str, ...] = ()


def unanswered_problem(hostnames: tuple[str, ...]) -> str:
    """The warning for workers up by their heartbeats that did not answer (``hostnames``
    not empty).

    Example: ``w1@h did not answer, though up by its heartbeats: what it holds is not shown.``
    """
    one = len(hostnames) == 1
    return (f"{', '.join(hostnames)} did not answer, though up by "
            f"{'its' if one else 'their'} heartbeats: what {'it holds' if one else 'they hold'} "
            "is not shown.")


def _ask(ctx: ActionContext, call: InspectCall,
         parse: Callable[[Mapping[str, Any]], dict[str, tuple[T, ...]]]) -> Held[T]:
    expected = ctx.hostnames_up()
    if expected is not None and not expected:
        return Held({}, asked=False)
    replies = ctx.broker.inspect(call, len(expected) if expected else None)
    unanswered = tuple(hostname for hostname in expected or () if hostname not in replies)
    return Held(parse(replies), asked=True, unanswered=unanswered)


def active_tasks(ctx: ActionContext) -> Held[TaskInfo]:
    """``inspect active``: the tasks each worker runs now (``time_start``: worker clock, epoch
    seconds).

    Raises:
        BrokerUnavailable / BrokerRefused: the broadcast failed.

    """
    return _ask(ctx, "active", parse_tasks)


def scheduled_tasks(ctx: ActionContext) -> Held[ScheduledTask]:
    """``inspect scheduled``: the tasks each worker holds until their ETA (``eta``: epoch
    seconds).

    Raises:
        BrokerUnavailable / BrokerRefused: the broadcast failed.

    """
    return _ask(ctx, "scheduled", parse_scheduled)


def report(ctx: ActionContext, call: InspectCall) -> HeldTasksReport:
    """The API's answer for ``inspect active`` (oldest start first) or ``inspect scheduled``
    (soonest ETA first); unknown times last, ties by task id.

    Raises:
        BrokerUnavailable / BrokerRefused: the broadcast failed.

    """
    #: (task, started, eta), and the time the list is ordered by.
    items: list[tuple[TaskInfo, float | None, float | None]]
    if call == "active":
        running = active_tasks(ctx)
        items = [(info, info.time_start, None) for tasks in running.by_worker.values()
                 for info in tasks]
        asked, unanswered = running.asked, running.unanswered
    else:
        waiting = scheduled_tasks(ctx)
        items = [(entry.request, None, entry.eta) for entries in waiting.by_worker.values()
                 for entry in entries]
        asked, unanswered = waiting.asked, waiting.unanswered

    def order(item: tuple[TaskInfo, float | None, float | None]) -> tuple[bool, float, str]:
        when = item[1] if call == "active" else item[2]
        return when is None, when or 0.0, item[0].task_id

    return HeldTasksReport(asked=asked, unanswered=list(unanswered), tasks=[
        HeldTaskInfo(hostname=info.hostname, task_id=info.task_id, name=info.name,
                     started_at=utc(started), eta=utc(eta), priority=info.priority,
                     routing_key=info.routing_key)
        for info, started, eta in sorted(items, key=order)])
