"""Cancel a task: revoke it before it runs, or terminate it while it runs — only when asked.

The task's state comes from, in order: the live task events (the model's task index: the
freshest), the SQL history, and finally the workers themselves (``inspect query_task``: does a
worker hold it as active, reserved or scheduled?). Then:

============================================  ===============================================
state                                         outcome
============================================  ===============================================
PENDING, RECEIVED, RETRY, CANCELLED, or held  ``revoke``: workers drop it when they get it, or
as reserved/scheduled by a worker             at its ETA (``task-revoked``, row REVOKED)
STARTED (or held as active)                   409 ``running`` unless ``terminate``; then it
                                              depends on the pool of the worker running it
                                              (:data:`TERMINATE_BY_POOL`)
SUCCESS, FAILURE, REVOKED, REJECTED, LOST     409 ``finished``
unknown to those, waiting in a Redis queue    ``revoke`` (PENDING, from ``queue``): sent before
                                              the exporter listened, it is in no event or row
unknown everywhere                            404
============================================  ===============================================

The answer says what was asked and who acknowledged it — never that the task was revoked or
terminated: a revoke is a broadcast to the workers online now, waited for up to
``--inspect-timeout``. Workers keep revoked ids in memory (across their restarts only with
``--statedb``) and hand them to workers that start while they run (mingle); a revoke no worker
acknowledged is lost, and the answer says so. The exporter does not re-send it when a worker
comes online: a starting worker takes its first messages from the queue before its
``worker-online`` event can reach the exporter (measured here: a revoke sent the moment
``worker-online`` arrived still let 9 of 12 waiting tasks run), so a re-send would look like a
remedy and mostly not be one.

The request is recorded in the history's audit trail (action ``cancel``, with the
acknowledgements); its outcome is recorded apart once the task's row shows it
(:mod:`actions.follow_up`, :func:`exporter.history.audit.settle_cancels`). The row itself turns
REVOKED only through the workers' ``task-revoked`` event.
"""

from __future__ import annotations

import logging
from typing import Any, get_args

from actions.broker import HeldTask, RevokeReplies
from actions.context import ActionContext
from actions.errors import (
    InvalidParameter,
    NotEligible,
    NotSupported,
    TaskNotFound,
    history_errors,
)
from actions.schemas import CancelResult, Signal
from exporter.events.table import TERMINAL_STATES
from exporter.history import Execution, get_execution, record_action
from exporter.history.audit import CANCEL
from exporter.logs import describe

log = logging.getLogger(__name__)

SIGNALS: tuple[str, ...] = get_args(Signal)
DEFAULT_SIGNAL = "SIGTERM"
#: Where a worker holds a task (``inspect query_task``) → the state it stands for.
HELD_STATE = {"active": "STARTED", "reserved": "RECEIVED", "scheduled": "RECEIVED"}

#: What ``revoke(terminate=True)`` does to a running task, by the pool (``-P``) of the worker
#: running it (celery/concurrency): ``(refused, text)`` — a refusal's reason (409, nothing is
#: sent) or a warning added to the answer; ``{hostname}`` is filled in. Prefork signals the
#: pool process running the task: no entry, nothing to say.
TERMINATE_BY_POOL: dict[str, tuple[bool, str]] = {
    "threads": (True, "the task runs on {hostname}, whose pool is threads (-P threads): "
                      "Celery's threads pool cannot stop a running task (the worker would log "
                      "NotImplementedError and the task would run to its end). Nothing was "
                      "sent."),
    "solo": (False, "{hostname} runs the solo pool (-P solo): it reads control messages only "
                    "between tasks, so the running task cannot be interrupted; it runs to its "
                    "end, and the revoke is read afterwards"),
    "eventlet": (False, "{hostname} runs the eventlet pool: the task's green thread is killed; "
                        "the signal is not sent"),
    "gevent": (False, "{hostname} runs the gevent pool: the task's greenlet is killed; the "
                      "signal is not sent"),
}
#: The prefork pool: the one pool whose terminate sends ``signal`` to the task's process.
SIGNALLING_POOL = "prefork"


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


def _history_row(ctx: ActionContext, task_id: str) -> Execution | None:
    if ctx.history is None:
        return None
    with history_errors():
        return get_execution(ctx.history, task_id)


def _known_state(ctx: ActionContext, task_id: str, row: Execution | None
                 ) -> tuple[str, str] | None:
    """``(state, source)`` from the events, else the history; ``None`` when neither knows."""
    if ctx.known_task is not None:
        known = ctx.known_task(task_id)
        if known is not None:
            return known.state, "events"
    if row is not None:
        return row.state, "history"
    return None


#: Waiting messages read per page when looking for a task in the queues.
QUEUE_PAGE = 1000
#: Waiting messages read at most, over all queues, when looking for a task: a search of that
#: many took 1.6-4.0 s here (Redis on loopback, a loaded 2-core machine) — what a cancel of a
#: task no source knows adds before its 404.
MAX_WAITING_SCAN = 100_000


def _waiting_in(ctx: ActionContext, task_id: str) -> str | None:
    """The queue where ``task_id`` waits, read from the broker (Redis; the queues the poller
    reads that held messages at its last round — for the ``cancel`` command, which has no
    poller, ``--queue`` and the queues bound in Redis, read when first asked
    (:func:`actions.wiring.queues_read_once`) — each in the order workers take them, up to
    :data:`MAX_WAITING_SCAN` messages in all), or ``None``: not found, no poll round yet, or a
    broker whose messages cannot be read without taking them (RabbitMQ).

    Raises:
        BrokerUnavailable: the broker did not answer.

    """
    snapshot = ctx.poll_latest()
    if snapshot is None:
        return None
    budget = MAX_WAITING_SCAN
    for queue in snapshot.queues:
        offset, length = 0, sum(queue.lengths.values())
        while offset < length and budget > 0:
            size = min(QUEUE_PAGE, budget)
            try:
                page = ctx.broker.pending(queue.name, offset, size)
            except NotSupported:
                return None
            if any(message.task_id == task_id for message in page):
                return queue.name
            if not page:
                break
            offset += size
            budget -= size
    return None


def _pool_of(ctx: ActionContext, hostname: str) -> str | None:
    """The worker's pool: the poller's memory (``serve``), else ``inspect stats`` to it."""
    snapshot = ctx.poll_latest()
    if snapshot is not None and hostname in snapshot.pools:
        return snapshot.pools[hostname]
    return ctx.broker.worker_pool(hostname)


def _terminate_warnings(ctx: ActionContext, hostname: str | None
                        ) -> tuple[str | None, list[str]]:
    """The pool of the worker running the task and what terminate will do there.

    Raises:
        NotEligible: ``pool-cannot-terminate`` (threads).

    """
    if hostname is None:
        return None, ["the worker running the task is not known (no event or worker said), "
                      "so neither is its pool: prefork signals the task, solo cannot "
                      "interrupt it, threads cannot stop it"]
    pool = _pool_of(ctx, hostname)
    if pool is None:
        return None, [f"the pool of {hostname} is not known (no inspect stats reply): prefork "
                      "signals the task, solo cannot interrupt it, threads cannot stop it"]
    refused, text = TERMINATE_BY_POOL.get(pool, (False, ""))
    if refused:
        raise NotEligible(text.format(hostname=hostname), reason="pool-cannot-terminate",
                          hostname=hostname, pool=pool)
    if pool != SIGNALLING_POOL and not text:
        text = f"{hostname} runs a pool Celery does not ship ({pool}): terminate may do nothing"
    return pool, [text.format(hostname=hostname)] if text else []


def _silent_solo_workers(ctx: ActionContext, replies: RevokeReplies) -> list[str]:
    """Solo-pool workers the events know (up or not: a busy one sends no heartbeat) that did
    not acknowledge: each may be busy with a task, this one included, and read the revoke
    only after it.
    """
    snapshot = ctx.poll_latest()
    if snapshot is None or ctx.live is None:
        return []
    known = {worker.hostname for worker in ctx.live.worker_states()}
    return sorted(h for h, pool in snapshot.pools.items()
                  if pool == "solo" and h in known and h not in replies.acknowledged)


def _ack_warnings(replies: RevokeReplies, workers_up: int | None, hostname: str | None,
                  terminate: bool, silent_solo: list[str]) -> list[str]:
    """What the acknowledgements (or their absence) mean for the task."""
    waited = f"{replies.waited:g} s"
    warnings = [f"{worker} refused the revoke: {error}"
                for worker, error in replies.refused.items()]
    if silent_solo and hostname not in silent_solo:
        warnings.append(
            f"solo-pool workers did not acknowledge ({', '.join(silent_solo)}): a solo worker "
            "reads control messages only between tasks, so one busy with a task reads the "
            "revoke after it; if this task is the one it runs, it cannot be interrupted and "
            "runs to its end (a solo worker sends its task's events only after it, so the "
            "task may look waiting meanwhile)")
    if not replies.acknowledged:
        if workers_up == 0 and not silent_solo:
            warnings.append(
                f"no worker acknowledged the revoke within {waited}, and no worker is up by "
                "its heartbeats: the revoke is lost. A worker keeps a revoke only once it "
                "received it (in memory; across its restarts with --statedb; handed to workers "
                "that start while it runs, unless they run --without-mingle), so a worker "
                "started later will run this task. The exporter does not re-send revokes to "
                "workers that come online: a starting worker takes its first messages before "
                "its worker-online event can reach the exporter (README: Cancel a task).")
        else:
            up = "an unknown number of" if workers_up is None else str(workers_up)
            warnings.append(
                f"no worker acknowledged the revoke within {waited} ({up} up by their "
                "heartbeats): a worker that gets it later (a busy solo worker, after its task) "
                "drops the task if it has not run it yet; if no worker gets it, it is lost and "
                "a worker started later runs the task")
    elif terminate and hostname is not None and hostname not in replies.terminated \
            and hostname in replies.acknowledged:
        warnings.append(f"{hostname} acknowledged but does not hold the task any more (it "
                        "may have finished meanwhile)")
    return warnings


def cancel_task(ctx: ActionContext, task_id: str, *, actor: str, terminate: bool = False,
                signal: str | None = None) -> CancelResult:
    """Revoke ``task_id`` (terminating it when running and ``terminate`` is set) and say what
    will really happen.

    Returns:
        What was asked (``revoke``/``terminate``), the state it was in, the worker and pool
        running it, who acknowledged within ``--inspect-timeout``, and warnings.

    Raises:
        InvalidParameter: bad ``signal``.
        TaskNotFound: no events, history row, waiting message or worker know the task.
        NotEligible: ``finished`` (already in a final state), ``running`` (no
            ``terminate``), ``pool-cannot-terminate`` (its worker runs the threads pool).
        BrokerUnavailable / BrokerRefused: the broadcast (or a workers query) failed.
        HistoryUnavailable: the history database did not answer.

    """
    chosen = check_signal(signal, terminate)
    row = _history_row(ctx, task_id)
    known = _known_state(ctx, task_id, row)
    held: HeldTask | None = None
    if known is None and _waiting_in(ctx, task_id) is not None:
        known = "PENDING", "queue"
    if known is None:
        held = ctx.broker.find_held(task_id, ctx.workers_up())
        if held is None:
            where = "the history, the task events, the queues or any worker" \
                if ctx.history is not None \
                else "the task events, the queues or any worker (the history is disabled)"
            raise TaskNotFound(f"task {task_id!r} is not known to {where}")
        known = HELD_STATE.get(held.where, "RECEIVED"), "workers"
    state, source = known
    if state in TERMINAL_STATES:
        raise NotEligible(f"the task already finished ({state}); there is nothing to cancel",
                          reason="finished", state=state)
    if state == "STARTED" and not terminate:
        raise NotEligible("the task is running; pass terminate=true (optionally with signal) "
                          "to stop it with a signal", reason="running", state=state)
    hostname: str | None = None
    pool: str | None = None
    warnings: list[str] = []
    if state == "STARTED":
        hostname = row.hostname if row is not None and row.hostname else None
        if hostname is None:
            held = held or ctx.broker.find_held(task_id, ctx.workers_up())
            hostname = held.hostname if held is not None else None
        pool, warnings = _terminate_warnings(ctx, hostname)
    workers_up = ctx.workers_up_known()
    replies = ctx.broker.revoke(task_id, terminate=terminate, signal=chosen,
                                workers=workers_up or None)
    warnings += _ack_warnings(replies, workers_up, hostname, terminate,
                              _silent_solo_workers(ctx, replies))
    action = "terminate" if terminate else "revoke"
    log.info("action=cancel task_id=%s requested=%s signal=%s previous_state=%s hostname=%s "
             "pool=%s acknowledged=%s actor=%s", task_id, action, chosen, state, hostname, pool,
             ",".join(replies.acknowledged) or "none", actor)
    result = CancelResult(
        task_id=task_id, action=action, signal=chosen if terminate else None,  # type: ignore[arg-type]
        previous_state=state, state_source=source,  # type: ignore[arg-type]
        hostname=hostname, pool=pool, workers_up=workers_up,
        acknowledged_by=list(replies.acknowledged), terminated_by=list(replies.terminated),
        refused_by=dict(replies.refused), warnings=warnings)
    _record(ctx, result, row, actor)
    return result


def _record(ctx: ActionContext, result: CancelResult, row: Execution | None, actor: str
            ) -> None:
    """The request in the audit trail (what was asked, who acknowledged: no outcome), and the
    follow-up that records its outcome; a failure is logged, not raised (the revoke is out).
    """
    if ctx.history is None:
        return
    detail: dict[str, Any] = {
        "requested": result.action, "signal": result.signal,
        "previous_state": result.previous_state, "state_source": result.state_source,
        "started_at": row.started_at if row is not None else None,
        "hostname": result.hostname, "pool": result.pool, "workers_up": result.workers_up,
        "acknowledged_by": result.acknowledged_by, "terminated_by": result.terminated_by,
        "refused_by": result.refused_by, "warnings": result.warnings,
    }
    try:
        with history_errors():
            record_action(ctx.history, actor=actor, action=CANCEL,
                          task_id=result.task_id, detail=detail, at=ctx.clock())
    except Exception as exc:
        log.error("cancel sent but not recorded task_id=%s error=%s", result.task_id,
                  describe(exc))
        return
    if ctx.follow_up is not None:
        ctx.follow_up.watch()
