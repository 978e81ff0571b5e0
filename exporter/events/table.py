"""The event table: Celery's event types, the state each one puts a task in, and the order of
states. Shared by the model (:mod:`exporter.state.model`), the history's merge rules
(:mod:`exporter.history.merge`), its queries and the action services, so that "which states are
finished" has one answer.
"""

from __future__ import annotations

from collections.abc import Mapping

TASK_EVENT_TYPES = frozenset({
    "task-sent", "task-received", "task-started", "task-succeeded", "task-failed",
    "task-retried", "task-revoked", "task-rejected", "task-cancelled",
})
WORKER_EVENT_TYPES = frozenset({"worker-online", "worker-heartbeat", "worker-offline"})
KNOWN_TYPES = TASK_EVENT_TYPES | WORKER_EVENT_TYPES

UNKNOWN = "unknown"

#: The type of the synthetic record the model sends to the history for a task lost with its
#: worker (no Celery event has it).
TASK_LOST = "task-lost"
#: Where a task's state came from (the history's ``state_source``, the repair counters'
#: ``source``): its own Celery events, the result backend (a repair after lost events), or the
#: workers' ``inspect query_task`` replies (a repair of a task still reserved or running).
SOURCE_EVENTS = "events"
SOURCE_RESULT_BACKEND = "result_backend"
SOURCE_WORKERS = "workers"
STATE_SOURCES = (SOURCE_EVENTS, SOURCE_RESULT_BACKEND, SOURCE_WORKERS)
#: Event type → the Celery state it puts the task in (shared by the model and the history).
EVENT_STATE: Mapping[str, str] = {
    "task-sent": "PENDING",
    "task-received": "RECEIVED",
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
    "task-revoked": "REVOKED",
    "task-rejected": "REJECTED",
    "task-cancelled": "CANCELLED",
    TASK_LOST: "LOST",
}
#: Every state a task can have, in precedence order: when two events of one stage carry the
#: same timestamp, the state later here wins.
STATES = ("PENDING", "RECEIVED", "STARTED", "RETRY", "CANCELLED", "REJECTED", "LOST",
          "REVOKED", "FAILURE", "SUCCESS")
STATE_PRECEDENCE: Mapping[str, int] = {state: rank for rank, state in enumerate(STATES)}
#: How far along its execution a state puts a task: 0 the producer published it (``task-sent``,
#: the producer's clock), 1 a worker holds it (received, started, retried, cancelled: the
#: worker's clock), 2 it ended (succeeded, failed, revoked, rejected, lost).
STATE_STAGE: Mapping[str, int] = {
    "PENDING": 0, "RECEIVED": 1, "STARTED": 1, "RETRY": 1, "CANCELLED": 1,
    "REJECTED": 2, "LOST": 2, "REVOKED": 2, "FAILURE": 2, "SUCCESS": 2,
}


def state_order(state: str, timestamp: float) -> tuple[int, float, int]:
    """The key that orders two states of one task: the greater key is the task's state.

    Timestamps come from different hosts (``task-sent`` from the producer, the rest from the
    worker) and are not comparable across them: a worker whose clock is 20 ms behind the
    producer's sends a ``task-succeeded`` that looks older than the ``task-sent``. So a later
    stage (:data:`STATE_STAGE`) wins whatever the timestamps say — a finished task never shows
    an earlier state —, and only within a stage, where the events come from one worker as a
    rule, does the newer ``timestamp`` win, then :data:`STATE_PRECEDENCE` at equal timestamps.
    Celery's own event state (``celery.events.state.Task``) orders by precedence, not by
    timestamps, for the same reason. Unknown states order first.

    A retried task whose next attempt starts on a worker whose clock is behind the one that
    retried it shows RETRY until that attempt ends (stage 1 on two hosts: the one case the
    timestamps still decide).
    """
    return STATE_STAGE.get(state, -1), timestamp, STATE_PRECEDENCE.get(state, -1)
#: Largest believable distance between an event's ``timestamp`` and the exporter's clock at
#: receipt, seconds. Beyond it (a producer clock at 1970, a typo'd year 2100) the timestamp is
#: replaced by the receipt time: durations, state order and history times stay sane. Larger
#: than any delivery delay the exporter itself allows (RabbitMQ event queue TTL: 5 min).
MAX_CLOCK_SKEW = 86400.0
#: States after which a task sends no more events of its own: its execution is over (a
#: retried task comes back under its id as a new execution; a cancelled one is delivered again).
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST"})
#: Every other state, in precedence order: the task may still run or finish.
UNFINISHED_STATES = tuple(state for state in STATES if state not in TERMINAL_STATES)
