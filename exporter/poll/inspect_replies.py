"""Pure parsers of Celery ``inspect`` replies into dataclasses (no I/O here).

Every ``inspect()`` call returns ``{hostname: payload}`` (``None`` when no worker answered in
time). The payloads are built by ``celery/worker/control.py``:

======================  =========================================================================
call                    payload per worker
======================  =========================================================================
``active``              list of ``Request.info()``: ``id``, ``name``, ``hostname``,
                        ``time_start`` (worker clock, seconds since the epoch), ``acknowledged``,
                        ``delivery_info`` {``exchange``, ``routing_key``, ``priority``,
                        ``redelivered``}, ``worker_pid``, ``args``/``kwargs`` (reprs when
                        ``safe=True``)
``reserved``            the same list, prefetched and not started (``time_start`` null)
``scheduled``           list of {``eta`` (ISO 8601), ``priority`` (the *timer* priority, not the
                        message's), ``request``: ``Request.info()``}
``stats``               dict: ``pool`` {``implementation`` (``module:Class`` of the pool,
                        e.g. ``celery.concurrency.prefork:TaskPool``), ``max-concurrency``,
                        ``processes`` [pids], ...},
                        ``rusage`` {``utime``, ``stime`` (seconds), ``maxrss`` (kilobytes on
                        Linux, bytes on macOS)}, ``total``, ``pid``, ``uptime``, ...
``active_queues``       list of ``Queue.as_dict(recurse=True)``: ``name``, ``exchange``
                        {``name``, ``type``, ...}, ``routing_key``, ...
======================  =========================================================================

Parsers never raise: an entry of the wrong shape is left out, and a worker whose payload is not
of the expected shape (e.g. ``{"error": "No such command"}``) is left out entirely, so it counts
as not having answered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.events.parse import as_int, as_number, parse_eta
from exporter.events.table import UNKNOWN

#: ``rusage.maxrss`` unit of Linux workers (kilobytes); macOS workers report bytes (scale 1).
MAXRSS_SCALE_LINUX = 1024
#: Celery's pool classes (``pool.implementation``) → the ``-P`` name (celery.concurrency.ALIASES).
POOL_NAMES = {
    "celery.concurrency.prefork:TaskPool": "prefork",
    "celery.concurrency.thread:TaskPool": "threads",
    "celery.concurrency.solo:TaskPool": "solo",
    "celery.concurrency.eventlet:TaskPool": "eventlet",
    "celery.concurrency.gevent:TaskPool": "gevent",
}


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One task a worker holds (``active``/``reserved`` entry, or ``scheduled`` ``request``).

    ``time_start`` is when it started (worker clock, seconds since the epoch; ``None`` unless
    running); ``exchange``/``routing_key``/``priority`` come from ``delivery_info``
    (``priority`` is the message priority, ``None`` when absent).
    """

    task_id: str
    name: str
    hostname: str
    time_start: float | None
    exchange: str | None
    routing_key: str | None
    priority: int | None


@dataclass(frozen=True, slots=True)
class ScheduledTask:
    """One ``scheduled`` entry: ``eta`` in seconds since the epoch (``None`` if unparseable)."""

    eta: float | None
    request: TaskInfo


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """The parts of ``inspect stats`` the exporter uses.

    ``pool_size``: ``pool.max-concurrency`` (else ``len(pool.processes)``, else ``None``);
    ``cpu_user``/``cpu_system``: ``rusage.utime``/``stime`` in seconds; ``max_rss_bytes``:
    ``rusage.maxrss`` times the scale given to :func:`parse_stats`. All concern the worker's main
    process (``getrusage(RUSAGE_SELF)``), not its pool children. ``pool``: the ``-P`` name of
    ``pool.implementation`` (``prefork``, ``threads``, ``solo``, ``eventlet``, ``gevent``; see
    :func:`pool_name`), ``None`` when absent.
    """

    pool_size: int | None
    processes: tuple[int, ...]
    cpu_user: float | None
    cpu_system: float | None
    max_rss_bytes: int | None
    pool: str | None = None


@dataclass(frozen=True, slots=True)
class ConsumedQueue:
    """One ``active_queues`` entry: queue ``name`` and its binding (``exchange`` name,
    ``routing_key``; ``None`` when absent).
    """

    name: str
    exchange: str | None
    routing_key: str | None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_task_info(entry: Any, hostname: str) -> TaskInfo | None:
    """Parse one ``Request.info()`` dict; ``None`` when it lacks a string ``id``.

    A missing ``name`` becomes ``unknown``; ``hostname`` is the replying worker (used when the
    entry has none).
    """
    if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
        return None
    delivery = entry.get("delivery_info")
    if not isinstance(delivery, Mapping):
        delivery = {}
    return TaskInfo(
        task_id=entry["id"],
        name=_str(entry.get("name")) or UNKNOWN,
        hostname=_str(entry.get("hostname")) or hostname,
        time_start=as_number(entry.get("time_start")),
        exchange=_str(delivery.get("exchange")),
        routing_key=_str(delivery.get("routing_key")),
        priority=as_int(delivery.get("priority")),
    )


def _per_worker(reply: Mapping[str, Any] | None, kind: type) -> dict[str, Any]:
    """The ``{hostname: payload}`` pairs whose payload is a ``kind``."""
    if not isinstance(reply, Mapping):
        return {}
    return {h: p for h, p in reply.items() if isinstance(h, str) and isinstance(p, kind)}


def parse_tasks(reply: Mapping[str, Any] | None) -> dict[str, tuple[TaskInfo, ...]]:
    """Parse an ``active`` or ``reserved`` reply into ``{hostname: (TaskInfo, ...)}``, one
    entry per task id (the first): a worker can hold a redelivered message twice (RabbitMQ)
    and list the same task id twice.
    """
    parsed: dict[str, tuple[TaskInfo, ...]] = {}
    for hostname, entries in _per_worker(reply, list).items():
        infos: dict[str, TaskInfo] = {}
        for entry in entries:
            info = parse_task_info(entry, hostname)
            if info is not None:
                infos.setdefault(info.task_id, info)
        parsed[hostname] = tuple(infos.values())
    return parsed


def parse_scheduled(reply: Mapping[str, Any] | None) -> dict[str, tuple[ScheduledTask, ...]]:
    """Parse a ``scheduled`` reply into ``{hostname: (ScheduledTask, ...)}``.

    The entry's own ``priority`` is the worker timer's priority and is ignored; the message
    priority is ``request.priority``. One entry per task id (the first): after a RabbitMQ
    redelivery a worker holds the same ETA task twice and lists it twice.
    """
    parsed: dict[str, tuple[ScheduledTask, ...]] = {}
    for hostname, entries in _per_worker(reply, list).items():
        tasks: dict[str, ScheduledTask] = {}
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            info = parse_task_info(entry.get("request"), hostname)
            if info is not None:
                tasks.setdefault(info.task_id,
                                 ScheduledTask(eta=parse_eta(entry.get("eta")), request=info))
        parsed[hostname] = tuple(tasks.values())
    return parsed


def pool_name(implementation: Any) -> str | None:
    """The ``-P`` name of a ``pool.implementation`` (``celery.concurrency.solo:TaskPool`` →
    ``solo``); another pool's implementation as it is; ``None`` for a non-string or empty one.
    """
    if not isinstance(implementation, str) or not implementation:
        return None
    return POOL_NAMES.get(implementation, implementation)


def parse_stats(reply: Mapping[str, Any] | None, maxrss_scale: int = MAXRSS_SCALE_LINUX
                ) -> dict[str, WorkerStats]:
    """Parse a ``stats`` reply into ``{hostname: WorkerStats}``.

    ``maxrss_scale`` converts ``rusage.maxrss`` to bytes: 1024 for Linux workers (kilobytes),
    1 for macOS workers (bytes).
    """
    parsed: dict[str, WorkerStats] = {}
    for hostname, stats in _per_worker(reply, Mapping).items():
        pool = stats.get("pool")
        pool = pool if isinstance(pool, Mapping) else {}
        rusage = stats.get("rusage")
        rusage = rusage if isinstance(rusage, Mapping) else {}
        raw_processes = pool.get("processes")
        processes = tuple(p for p in raw_processes if as_int(p) is not None) if isinstance(
            raw_processes, list) else ()
        size = as_int(pool.get("max-concurrency"))
        if size is None and processes:
            size = len(processes)
        maxrss = as_int(rusage.get("maxrss"))
        parsed[hostname] = WorkerStats(
            pool_size=size,
            processes=processes,
            cpu_user=as_number(rusage.get("utime")),
            cpu_system=as_number(rusage.get("stime")),
            max_rss_bytes=None if maxrss is None else maxrss * maxrss_scale,
            pool=pool_name(pool.get("implementation")),
        )
    return parsed


def parse_registered(reply: Mapping[str, Any] | None) -> set[str]:
    """The task names of a ``registered`` reply (``{hostname: ["app.add", ...]}``), every
    worker's together; an entry with attributes (``"app.add [rate_limit=10/s]"``) gives its
    first word.
    """
    names: set[str] = set()
    for entries in _per_worker(reply, list).values():
        for entry in entries:
            if isinstance(entry, str) and entry.split():
                names.add(entry.split()[0])
    return names


def parse_active_queues(reply: Mapping[str, Any] | None) -> dict[str, tuple[ConsumedQueue, ...]]:
    """Parse an ``active_queues`` reply into ``{hostname: (ConsumedQueue, ...)}``."""
    parsed: dict[str, tuple[ConsumedQueue, ...]] = {}
    for hostname, entries in _per_worker(reply, list).items():
        queues = []
        for entry in entries:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
                continue
            exchange = entry.get("exchange")
            exchange_name = (_str(exchange.get("name")) if isinstance(exchange, Mapping)
                             else _str(exchange))
            queues.append(ConsumedQueue(entry["name"], exchange_name,
                                        _str(entry.get("routing_key"))))
        parsed[hostname] = tuple(queues)
    return parsed


def queue_of(task: TaskInfo, consumed: Sequence[ConsumedQueue]) -> str:
    """The queue a worker took ``task`` from, or ``unknown``: never a guess.

    ``delivery_info`` names the exchange and routing key, not the queue. The default exchange
    (``""``, what ``apply_async(queue=...)`` uses) delivers to the queue named by the routing
    key; otherwise the worker's queue bound with that exchange and routing key, or its only
    queue.
    """
    if task.exchange == "" and task.routing_key:
        return task.routing_key
    bound = {q.name for q in consumed
             if q.exchange == task.exchange and q.routing_key == task.routing_key}
    if len(bound) == 1:
        return bound.pop()
    names = {q.name for q in consumed}
    if len(names) == 1:
        return names.pop()
    return UNKNOWN
