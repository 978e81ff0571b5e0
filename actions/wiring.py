"""Build an :class:`~actions.context.ActionContext` from settings and the parts of a running
exporter: ``serve`` passes its model, poller and history engine; the ``retry``, ``cancel`` and
``tasks`` commands pass only a history engine, and ``cancel`` a reading of the queues in place
of the poller's (:func:`queues_read_once`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from celery import Celery
from sqlalchemy.engine import Engine

from actions.broker import CeleryBroker, make_action_app, make_results_app
from actions.context import ActionContext, KnownTask
from actions.errors import broker_errors
from actions.follow_up import CancelFollowUp
from exporter.config import Settings
from exporter.poll.queue_tracker import is_celery_internal
from exporter.poll.redis_queues import RedisQueueReader
from exporter.poll.snapshot import PollSnapshot
from exporter.state.model import Model


def known_task_lookup(model: Model) -> Callable[[str], KnownTask | None]:
    """Task id → what the model's task index says (state, name, queue), without marking the
    entry as used (:meth:`Model.task_summary`).
    """

    def lookup(task_id: str) -> KnownTask | None:
        summary = model.task_summary(task_id)
        return None if summary is None else KnownTask(*summary)

    return lookup


def queues_read_once(app: Celery, configured: Sequence[str],
                     clock: Callable[[], float] = time.time
                     ) -> Callable[[], PollSnapshot | None]:
    """A ``poll_latest`` for a command, which runs no poller: a snapshot holding only the
    waiting queues, read from the broker at the first call and the same one afterwards (the
    command acts once). The queues are ``configured`` (``--queue``) first, then every queue
    bound in Redis (kombu's binding sets, found as the poller finds them:
    :meth:`RedisQueueReader.find_queues`), Celery's own event and control queues left out;
    each with its lengths per priority step (``LLEN``), so that the cancel service can look
    for a task among their waiting messages (:func:`actions.cancel.cancel_task`).

    Returns:
        The callable; it gives ``None`` on a broker other than Redis (RabbitMQ cannot show a
        waiting message without taking it: nothing to search).

    Raises (from the callable):
        BrokerUnavailable / BrokerRefused: Redis did not answer (not kept: a next call
            tries again).

    """
    read: list[PollSnapshot | None] = []

    def latest() -> PollSnapshot | None:
        if not read:
            read.append(_read_queues(app, configured, clock))
        return read[0]

    return latest


def _read_queues(app: Celery, configured: Sequence[str], clock: Callable[[], float]
                 ) -> PollSnapshot | None:
    """One reading of the queues (see :func:`queues_read_once`)."""
    connection = app.connection_for_read()
    if connection.transport.driver_type != "redis":
        connection.release()
        return None
    reader = RedisQueueReader(connection)
    started = clock()
    try:
        with broker_errors():
            found = sorted(q for q in reader.find_queues() if not is_celery_internal(q))
            names = list(dict.fromkeys([*configured, *found]))
            states = reader.read(names) if names else {}
    finally:
        reader.close()
    now = clock()
    return PollSnapshot(taken_at=now, duration=now - started,
                        queues=tuple(states[name] for name in names), queues_read_at=now)


def action_context(
    settings: Settings,
    *,
    history: Engine | None,
    app: Celery | None = None,
    model: Model | None = None,
    poll_latest: Callable[[], PollSnapshot | None] | None = None,
    search_queues: bool = False,
) -> ActionContext:
    """The context of the action services.

    Args:
        settings: broker, result backend, limits (``max_manual_retries``, ``slow_threshold``,
            ``inspect_timeout``).
        history: history engine, ``None`` when disabled.
        app: the actions' Celery app (default: :func:`make_action_app`).
        model: the running model (workers, running tasks, task index), if any: ``serve``.
            With a model and a history, cancel requests are followed until their outcome is
            recorded (:class:`~actions.follow_up.CancelFollowUp`); the commands, whose process
            ends at once, leave that to ``serve`` and to reads of the task.
        poll_latest: the poller's :meth:`~exporter.poll.poller.Poller.latest`, if any.
        search_queues: without a poller (the ``cancel`` command), read the queues once when
            first asked (:func:`queues_read_once`: ``settings.queues`` and those bound in
            Redis), so that a cancel finds a task that only waits in a queue.

    """
    app = app or make_action_app(settings)
    broker = CeleryBroker(app, settings.inspect_timeout, make_results_app(settings))
    if poll_latest is None and search_queues:
        poll_latest = queues_read_once(app, settings.queues)
    return ActionContext(
        broker=broker, history=history, max_manual_retries=settings.max_manual_retries,
        slow_threshold=settings.slow_threshold,
        poll_latest=poll_latest or (lambda: None),
        live=model,
        known_task=known_task_lookup(model) if model is not None else None,
        follow_up=CancelFollowUp(history) if history is not None and model is not None
        else None,
    )
