"""What the poller saw in one round: an immutable :class:`PollSnapshot`, and the pure functions
that build it from parsed inspect replies and queue readings.

The poller thread builds one snapshot per round and publishes it with a single attribute
assignment; the poll collector only reads it (no lock needed: the object never changes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from exporter.poll.inspect_replies import (
    ConsumedQueue,
    ScheduledTask,
    TaskInfo,
    WorkerStats,
    queue_of,
)
from exporter.state.labels import TaskLabels

T = TypeVar("T")

#: ``priority`` label value of brokers that give no per-priority breakdown (RabbitMQ over
#: AMQP). Prometheus treats an empty label value as an absent label, so
#: ``sum by (queue_name) (celery_queue_length)`` works the same on both brokers.
NO_PRIORITY = ""
#: ``sent_time(task_id)``: when the task was sent (``task-sent`` timestamp, seconds since the
#: epoch), or ``None`` when unknown. The app passes the model's task-index lookup.
SentTime = Callable[[str], float | None]


@dataclass(frozen=True, slots=True)
class QueueState:
    """One broker queue as read this round.

    ``lengths``: priority label → waiting messages (Redis: ``"0"``, ``"3"``, ``"6"``, ``"9"``
    with the default steps; RabbitMQ: ``{NO_PRIORITY: n}``). ``consumers``: the broker's
    consumer count (RabbitMQ) or ``None`` when the broker cannot tell (Redis; the poller then
    counts the workers consuming it). ``waiting_since``: seconds since the epoch from which the
    oldest waiting message counts as waiting (its task-sent time, or its ETA when later);
    ``None`` when unknown, so no age is reported.
    """

    name: str
    lengths: Mapping[str, int]
    consumers: int | None = None
    waiting_since: float | None = None


#: Workers whose pool :attr:`PollSnapshot.pools` remembers, at most (the newest answers).
MAX_REMEMBERED_POOLS = 4096


@dataclass(frozen=True, slots=True)
class WorkerPollState:
    """Per-worker values of ``inspect stats`` (see
    :class:`~exporter.poll.inspect_replies.WorkerStats`); ``pool``: its ``-P`` name.
    """

    hostname: str
    pool_size: int | None
    cpu_user: float | None
    cpu_system: float | None
    max_rss_bytes: int | None
    pool: str | None = None


@dataclass(frozen=True)
class PollSnapshot:
    """One poller round, frozen.

    ``taken_at``: exporter clock (seconds since the epoch) when the round ended; ``duration``:
    seconds the round took. ``reserved``/``scheduled``: ``{TaskLabels(name, queue_name): tasks}``
    over all workers; ``earliest_eta``: ``{name: ETA seconds since the epoch}``;
    ``oldest_running_start``: ``{name: time_start}`` of the oldest running task (worker clock);
    ``inspect_timeouts``: ``{hostname: rounds}`` since start (cumulative); ``pools``:
    ``{hostname: pool}`` (``-P`` name) of every worker that ever answered ``inspect stats``,
    kept after it stops answering — a solo worker answers nothing while it runs a task, and
    that is when a cancel needs its pool (:func:`remembered_pools`); ``queues_read_at``: when
    ``queues`` were read from the broker (exporter clock; ``None``: no queue reader) — while
    the broker does not answer, ``queues`` are the last ones read and this stays behind
    ``taken_at`` (stale, not dropped: a queue alert keeps its data); ``other_keyprefixes``: the
    ``global_keyprefix`` values of kombu bindings on Redis that are not the exporter's (``None``:
    not looked for: not Redis, or before the first look); every other field is this round's
    view.
    """

    taken_at: float
    duration: float
    queues: tuple[QueueState, ...] = ()
    reserved: Mapping[TaskLabels, int] = field(default_factory=dict)
    scheduled: Mapping[TaskLabels, int] = field(default_factory=dict)
    earliest_eta: Mapping[str, float] = field(default_factory=dict)
    oldest_running_start: Mapping[str, float] = field(default_factory=dict)
    workers: tuple[WorkerPollState, ...] = ()
    inspect_timeouts: Mapping[str, int] = field(default_factory=dict)
    pools: Mapping[str, str] = field(default_factory=dict)
    queues_read_at: float | None = None
    other_keyprefixes: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Carried(Generic[T]):
    """A worker's parsed payload for one inspect call; ``missed`` rounds it did not answer."""

    value: T
    missed: int = 0


def carry_over(previous: Mapping[str, Carried[T]], reply: Mapping[str, T] | None
               ) -> dict[str, Carried[T]]:
    """Merge this round's parsed reply of one inspect call with the last round's values.

    A worker in ``reply`` gets its new value. A worker that answered last round but is missing
    now keeps its previous value for this one round (``missed`` 1), then is dropped. ``reply``
    ``None`` (the call itself failed) carries every value the same way.

    Returns:
        ``{hostname: Carried}``.

    """
    current: dict[str, Carried[T]] = {
        hostname: Carried(carried.value, 1)
        for hostname, carried in previous.items()
        if carried.missed == 0 and (reply is None or hostname not in reply)
    }
    for hostname, value in (reply or {}).items():
        current[hostname] = Carried(value)
    return current


def task_gauges(
    active: Mapping[str, Iterable[TaskInfo]],
    reserved: Mapping[str, Iterable[TaskInfo]],
    scheduled: Mapping[str, Iterable[ScheduledTask]],
    queues: Mapping[str, Iterable[ConsumedQueue]],
    label: Callable[[str], str] = str,
) -> tuple[dict[TaskLabels, int], dict[TaskLabels, int], dict[str, float], dict[str, float]]:
    """Aggregate per-worker task lists into the task gauges.

    ``queues`` is each worker's ``active_queues`` (resolves ``delivery_info`` to a queue name,
    see :func:`~exporter.poll.inspect_replies.queue_of`); ``label`` maps a task name to its label
    value.

    Counts are of distinct task ids: a task id two workers list (a redelivered message the
    first still holds) counts once, for the first worker in the reply.

    Returns:
        ``(reserved {(name, queue_name): n}, scheduled {(name, queue_name): n},
        earliest ETA {name: seconds since the epoch}, oldest running start {name: time_start})``.

    """
    reserved_counts: dict[TaskLabels, int] = {}
    scheduled_counts: dict[TaskLabels, int] = {}
    earliest: dict[str, float] = {}
    oldest: dict[str, float] = {}
    counted: set[str] = set()
    for hostname, tasks in reserved.items():
        consumed = tuple(queues.get(hostname, ()))
        for task in tasks:
            if task.task_id in counted:
                continue
            counted.add(task.task_id)
            key = TaskLabels(label(task.name), queue_of(task, consumed))
            reserved_counts[key] = reserved_counts.get(key, 0) + 1
    counted.clear()
    for hostname, entries in scheduled.items():
        consumed = tuple(queues.get(hostname, ()))
        for entry in entries:
            if entry.request.task_id in counted:
                continue
            counted.add(entry.request.task_id)
            name = label(entry.request.name)
            key = TaskLabels(name, queue_of(entry.request, consumed))
            scheduled_counts[key] = scheduled_counts.get(key, 0) + 1
            if entry.eta is not None and entry.eta < earliest.get(name, float("inf")):
                earliest[name] = entry.eta
    for tasks in active.values():
        for task in tasks:
            name = label(task.name)
            if task.time_start is not None and task.time_start < oldest.get(name, float("inf")):
                oldest[name] = task.time_start
    return reserved_counts, scheduled_counts, earliest, oldest


def worker_states(stats: Mapping[str, WorkerStats]) -> tuple[WorkerPollState, ...]:
    """One :class:`WorkerPollState` per worker of a parsed ``stats`` reply, sorted by name."""
    return tuple(
        WorkerPollState(hostname, s.pool_size, s.cpu_user, s.cpu_system, s.max_rss_bytes,
                        s.pool)
        for hostname, s in sorted(stats.items())
    )


def remembered_pools(previous: PollSnapshot | None, stats: Mapping[str, WorkerStats]
                     ) -> dict[str, str]:
    """The previous round's ``pools`` updated with this round's ``stats`` answers (a worker
    restarted with another ``-P`` gets its new pool), the newest
    :data:`MAX_REMEMBERED_POOLS` kept.
    """
    pools = dict(previous.pools) if previous is not None else {}
    for hostname, worker in sorted(stats.items()):
        if worker.pool is not None:
            pools.pop(hostname, None)  # re-insert: the newest answers come last
            pools[hostname] = worker.pool
    excess = len(pools) - MAX_REMEMBERED_POOLS
    return dict(list(pools.items())[excess:]) if excess > 0 else pools


def consumer_counts(queues: Mapping[str, Iterable[ConsumedQueue]]) -> dict[str, int]:
    """``{queue name: number of workers consuming it}`` from ``active_queues`` replies."""
    counts: dict[str, int] = {}
    for consumed in queues.values():
        for name in {q.name for q in consumed}:
            counts[name] = counts.get(name, 0) + 1
    return counts
