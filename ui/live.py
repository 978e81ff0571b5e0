"""What the workers hold now, asked when a page is rendered (``inspect active`` and ``inspect
scheduled``), for the Running and Scheduled pages.

The poller's snapshot keeps only counts per (name, queue), so a list of tasks needs its own
broadcast. It waits for as many replies as workers are up by their heartbeats (it returns as
soon as they answered), else for the whole ``--inspect-timeout``; with the events saying that
no worker is up, nobody is asked. Replies are parsed by the poller's own parsers
(:mod:`exporter.poll.inspect_replies`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery

from actions.context import ActionContext
from actions.errors import NotSupported, broker_errors
from exporter.poll.inspect_replies import ScheduledTask, TaskInfo, parse_scheduled, parse_tasks


@dataclass(frozen=True)
class Asked:
    """One broadcast's outcome: ``replies`` ``{hostname: parsed payload}``; ``asked`` is
    ``False`` when no worker was up by its heartbeats, so none was asked; ``timeout``: the
    seconds waited at most.
    """

    replies: Mapping[str, Any]
    asked: bool
    timeout: float


def _inspect(ctx: ActionContext, call: str) -> Asked:
    """Broadcast ``inspect <call>`` over the action services' Celery app.

    Raises:
        NotSupported: the broker connection is not a Celery app's (nothing to ask with).
        BrokerUnavailable / BrokerRefused: the broadcast failed.

    """
    app = getattr(ctx.broker, "app", None)
    timeout = float(getattr(ctx.broker, "inspect_timeout", 1.0))
    if not isinstance(app, Celery):
        raise NotSupported("this exporter has no Celery connection to ask the workers with")
    if ctx.live is not None and not ctx.workers_up_known():
        return Asked({}, asked=False, timeout=timeout)
    with broker_errors():
        reply = getattr(app.control.inspect(timeout=timeout, limit=ctx.workers_up()), call)()
    return Asked(reply or {}, asked=True, timeout=timeout)


def active_tasks(ctx: ActionContext) -> tuple[dict[str, tuple[TaskInfo, ...]], Asked]:
    """``inspect active``: ``{hostname: (TaskInfo, ...)}`` of the tasks each worker runs now
    (``time_start``: worker clock, epoch seconds), and the :class:`Asked` it came from.

    Raises:
        NotSupported / BrokerUnavailable / BrokerRefused: as :func:`_inspect`.

    """
    asked = _inspect(ctx, "active")
    return parse_tasks(asked.replies), asked


def scheduled_tasks(ctx: ActionContext
                    ) -> tuple[dict[str, tuple[ScheduledTask, ...]], Asked]:
    """``inspect scheduled``: ``{hostname: (ScheduledTask, ...)}`` — tasks a worker holds
    until their ETA (``eta``: epoch seconds) — and the :class:`Asked` it came from.

    Raises:
        NotSupported / BrokerUnavailable / BrokerRefused: as :func:`_inspect`.

    """
    asked = _inspect(ctx, "scheduled")
    return parse_scheduled(asked.replies), asked
