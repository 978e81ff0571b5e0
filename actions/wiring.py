"""Build an :class:`~actions.context.ActionContext` from settings and the parts of a running
exporter: ``serve`` passes its model, poller and history engine; the ``retry``, ``cancel`` and
``tasks`` commands pass only a history engine.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery
from sqlalchemy.engine import Engine

from actions.broker import CeleryBroker, make_action_app, make_results_app
from actions.context import ActionContext, KnownTask
from actions.follow_up import CancelFollowUp
from exporter.config import Settings
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


def action_context(
    settings: Settings,
    *,
    history: Engine | None,
    app: Celery | None = None,
    model: Model | None = None,
    poll_latest: Callable[[], PollSnapshot | None] | None = None,
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

    """
    broker = CeleryBroker(app or make_action_app(settings), settings.inspect_timeout,
                          make_results_app(settings))
    return ActionContext(
        broker=broker, history=history, max_manual_retries=settings.max_manual_retries,
        slow_threshold=settings.slow_threshold,
        poll_latest=poll_latest or (lambda: None),
        live=model,
        known_task=known_task_lookup(model) if model is not None else None,
        follow_up=CancelFollowUp(history) if history is not None and model is not None
        else None,
    )
