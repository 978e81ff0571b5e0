"""Cancel a task: revoke it before it runs, or terminate it while it runs — only when asked.

The task's state comes from, in order: the live task events (the model's task index: the
freshest), the SQL history, and finally the workers themselves (``inspect query_task``: does a
worker hold it as active, reserved or scheduled?). Then:

============================================  ===============================================
state                                         outcome
============================================  ===============================================
PENDING, RECEIVED, RETRY, CANCELLED, or held  ``revoke``: workers drop it when they get it, or
as reserved/scheduled by a worker             at its ETA (``task-revoked``, row REVOKED)
STARTED (or held as active)                   409 ``running`` unless ``terminate``; then
                                              ``revoke(terminate=True, signal=…)``
SUCCESS, FAILURE, REVOKED, REJECTED, LOST     409 ``finished``
unknown everywhere                            404
============================================  ===============================================

A revoke is a broadcast to the workers online now; they keep the revoked ids in memory
(persisted across restarts only with the worker's ``--statedb``). The action is recorded in
the history's audit trail (:func:`exporter.history.record_action`) when the history is on.
"""

from __future__ import annotations

import logging
from typing import get_args

from actions.context import ActionContext
from actions.errors import InvalidParameter, NotEligible, TaskNotFound, history_errors
from actions.schemas import CancelResult, Signal
from exporter.events.table import TERMINAL_STATES
from exporter.history import get_execution, record_action
from exporter.logs import describe

log = logging.getLogger(__name__)

SIGNALS: tuple[str, ...] = get_args(Signal)
DEFAULT_SIGNAL = "SIGTERM"
#: Where a worker holds a task (``inspect query_task``) → the state it stands for.
HELD_STATE = {"active": "STARTED", "reserved": "RECEIVED", "scheduled": "RECEIVED"}


def check_signal(signal: str | None, terminate: bool) -> str | None:
    """The signal to terminate with: ``SIGTERM`` by default, one of :data:`SIGNALS`.

    Raises:
        InvalidParameter: an unknown signal, or a signal without ``terminate``.

    """
    if signal is None:
        return DEFAULT_SIGNAL if terminate else None
    name = signal.strip().upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if name not in SIGNALS:
        raise InvalidParameter(f"signal: one of {', '.join(SIGNALS)}", parameter="signal")
    if not terminate:
        raise InvalidParameter("signal: only with terminate=true", parameter="signal")
    return name


def _known_state(ctx: ActionContext, task_id: str) -> tuple[str, str] | None:
    """``(state, source)`` from the events, else the history; ``None`` when neither knows."""
    if ctx.known_task is not None:
        known = ctx.known_task(task_id)
        if known is not None:
            return known.state, "events"
    if ctx.history is not None:
        with history_errors():
            row = get_execution(ctx.history, task_id)
        if row is not None:
            return row.state, "history"
    return None


def cancel_task(ctx: ActionContext, task_id: str, *, actor: str, terminate: bool = False,
                signal: str | None = None) -> CancelResult:
    """Revoke ``task_id`` (terminating it when running and ``terminate`` is set).

    Returns:
        What was done: ``revoked`` or ``terminated``, the signal, the state it was in.

    Raises:
        InvalidParameter: bad ``signal``.
        TaskNotFound: no events, history row or worker know the task.
        NotEligible: ``finished`` (already in a final state) or ``running`` (no ``terminate``).
        BrokerUnavailable: the broadcast (or the workers query) could not be sent.
        HistoryUnavailable: the history database did not answer.

    """
    chosen = check_signal(signal, terminate)
    known = _known_state(ctx, task_id)
    if known is None:
        held = ctx.broker.find_held(task_id, ctx.workers_up())
        if held is None:
            where = "the history, the task events or any worker" if ctx.history is not None \
                else "the task events or any worker (the history is disabled)"
            raise TaskNotFound(f"task {task_id!r} is not known to {where}")
        known = HELD_STATE.get(held.where, "RECEIVED"), "workers"
    state, source = known
    if state in TERMINAL_STATES:
        raise NotEligible(f"the task already finished ({state}); there is nothing to cancel",
                          reason="finished", state=state)
    if state == "STARTED" and not terminate:
        raise NotEligible("the task is running; pass terminate=true (optionally with signal) "
                          "to stop it with a signal", reason="running", state=state)
    ctx.broker.revoke(task_id, terminate=terminate, signal=chosen)
    action = "terminated" if state == "STARTED" else "revoked"
    log.info("action=cancel task_id=%s outcome=%s signal=%s previous_state=%s actor=%s",
             task_id, action, chosen, state, actor)
    if ctx.history is not None:
        try:
            with history_errors():
                record_action(ctx.history, actor=actor, action="cancel", task_id=task_id,
                              detail={"outcome": action, "terminate": terminate,
                                      "signal": chosen, "previous_state": state},
                              at=ctx.clock())
        except Exception as exc:  # the revoke is out: report it, do not fail the request
            log.error("cancel sent but not recorded task_id=%s error=%s", task_id,
                      describe(exc))
    return CancelResult(task_id=task_id, action=action,  # type: ignore[arg-type]
                        signal=chosen if terminate else None,  # type: ignore[arg-type]
                        previous_state=state, state_source=source)  # type: ignore[arg-type]
