"""The in-memory model: what the events said, kept as plain counts under one lock.

The event consumer calls :meth:`Model.process_many` with decoded event dicts; ``/metrics`` calls
:meth:`Model.snapshot` at scrape time and renders the frozen :class:`ModelSnapshot`
(:mod:`exporter.metrics.exposition`). Nothing here
does I/O.

Which event sets what (the handler table ``_HANDLERS``):

======================  =====================================================================
event                   effect
======================  =====================================================================
task-sent               index: name, queue (``queue`` field, else ``routing_key``), sent time,
                        ETA, retries; ``task_sent_total`` +1
task-received           index: name, received time, worker; queue from the worker's queues
                        when still unknown (see "held events" below); ``task_received_total`` +1
task-started            ``task_started_total`` +1, running +1, queue-wait observed
task-succeeded          ``task_succeeded_total`` +1, runtime (``runtime`` field) observed
task-failed             ``task_failed_total`` +1, exceptions +1, runtime (finished − started)
task-retried/revoked/   their counter +1; the execution ends (running −1 if it was running)
rejected/cancelled      (``task-cancelled``, Celery ≥ 5.5: the worker killed the task when it
                        shut down cold or lost its broker connection; it runs again only if
                        acks_late, when the broker delivers it anew)
worker-*                worker table (liveness, active, processed); a worker's task events
                        keep a worker already heard from alive too
======================  =====================================================================

Held events: the producer's ``task-sent`` and the worker's events travel separately, and a
worker's ``task-received`` (which does not name the queue) often overtakes the ``task-sent``
that does; a short task can even finish first. When a ``task-received`` comes for a task whose
queue is unknown (no event of it yet, and its worker does not consume exactly one queue), the
task's events are *held* — that one and every later one but ``task-sent`` — until its
``task-sent`` arrives or :data:`HOLD_SECONDS` pass, then applied in arrival order (counters,
gauges, history): the task counts under its queue, not under ``unknown``, whichever order its
events arrive in. The cost is that a held task shows up to :data:`HOLD_SECONDS` late. Celery
sends ``task-sent`` only with ``task_send_sent_event``: while the exporter has seen none and a
hold expired without one, it stops holding (such tasks count under ``unknown`` or the worker's
only queue at once), and starts again with the first ``task-sent``.

Bad input never stops the thread; what cannot be used is counted in ``events_malformed`` by
reason and skipped:

- an event :func:`~exporter.events.parse.check_event` refuses (reason from the check);
- a task event already applied — same task id, type and ``timestamp`` as the one the task
  record holds for that type (sent, received, started, or the latest state) — is a ``duplicate``
  (a retried task sends its events again, with new timestamps: those count); so is a second
  ``task-succeeded``/``task-failed`` for a task that already succeeded or failed (Celery sends
  ``task-failed`` twice for a hard time limit: from the timeout handler and from the pool);
- a handler that raises (a bug) costs that one event (``handler_error``).

A ``timestamp`` further than :data:`~exporter.events.table.MAX_CLOCK_SKEW` from the exporter's clock
at receipt (1970, 2100) is replaced by the receipt time before anything uses it, so it can
neither freeze a task's state nor feed a negative or decades-long duration.

Lost tasks: when a worker has been down (``worker-offline``, or no heartbeat for
``worker_timeout``) for longer than ``task_lost_grace`` seconds, every task the model still
sees running on it (started there, no terminal event) is *lost*: it leaves the running gauge,
counts in ``task_lost_total{name,queue_name}``, takes the state ``LOST`` and a synthetic
``task-lost`` record goes to the history sink (the row becomes LOST), stamped with the later of
the worker's last event and the task's last state change (worker clock), so a real terminal
event that turns up later still wins. Tasks warmed from the history as STARTED count as
running, and their worker is expected to speak within the same time: one that never does died
while the exporter was down, and its tasks are lost too. A worker that comes back as a new
process under the same name (``worker-online`` with ``processed`` 0) loses the tasks of the
previous one at once (:mod:`exporter.state.workers`: restarts).

Repairs (:mod:`exporter.repair`): the repairer thread asks the model which tasks are in
progress (:meth:`Model.in_progress`, after an event gap or on a worker whose heartbeats show
missed events: :meth:`Model.take_missed_workers`), checks them against the result backend and
the workers, and hands back what it learned as a :class:`~exporter.repair.findings.Finding`
(:meth:`Model.apply_repair`). A finding that moves the task on (by the same state order as
events) is applied like the events that were lost: the lifecycle counters the task has not
counted yet move (``task-received`` and ``task-started`` when no such event was seen, then its
end; a failure's exception class too; no run time or queue wait, which no source knows), the
running gauge follows, and a synthetic event with ``state_source`` goes to the history. The
event types a repair counted are remembered on the task record: the real event, should it still
arrive, goes to the history but is not counted again (``events_malformed{reason="repaired"}``);
a ``task-retried`` starts a new execution and forgets them.

Why one module of this size: the handler table, the state order, duplicate detection, the
held events of a task whose ``task-sent`` is late and the lost-task scan all act on the same
task record under the same lock, and each handler reads only in the light of the others; the
per-label numbers (:mod:`~exporter.state.task_series`), the index
(:mod:`~exporter.state.task_index`), the name ceiling (:mod:`~exporter.state.names`), workers
and the exporter's health live apart.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from exporter.events.parse import MalformedEvent, check_event, exception_class, parse_eta
from exporter.events.table import (
    EVENT_STATE,
    MAX_CLOCK_SKEW,
    STATE_STAGE,
    TASK_EVENT_TYPES,
    TASK_LOST,
    TERMINAL_STATES,
    UNKNOWN,
    state_order,
)
from exporter.state.histogram import HistogramValue
from exporter.state.labels import (
    AnyRuntimeLabels,
    AnyTaskLabels,
    ExceptionLabels,
    TaskLabels,
    WorkerTaskLabels,
)
from exporter.state.names import TaskNames
from exporter.state.task_index import TaskIndex, TaskRecord
from exporter.state.task_series import TaskSeries
from exporter.state.workers import WorkerState, WorkerTable
from exporter.state.workflows import WorkflowTracker

if TYPE_CHECKING:
    from exporter.history import UnfinishedTask
    from exporter.repair.findings import Finding

log = logging.getLogger(__name__)
#: How long the events of a task whose task-sent has not arrived yet are held (seconds).
HOLD_SECONDS = 2.0
#: Task names whose history exclusion is remembered (then the memory starts again).
_EXCLUDE_MEMORY = 10_000
#: How often (exporter clock, seconds) the event path looks for workers gone with tasks.
LOST_CHECK_INTERVAL = 1.0
#: Queue names from task-sent routing kept for the poller (the most recently used).
MAX_SENT_QUEUES = 1_000

#: Event type → the task record's timestamp it sets; an event whose ``timestamp`` equals the
#: recorded one is a duplicate delivery. The other task events compare with ``state_ts``.
_TIMESTAMP_SLOT = {"task-sent": "sent", "task-received": "received", "task-started": "started"}
#: Terminal reports counted once per execution, and the states they leave.
_FINISH_TYPES = frozenset({"task-succeeded", "task-failed"})
_FINISHED = frozenset(EVENT_STATE[event_type] for event_type in _FINISH_TYPES)
#: The task events a hold keeps (task-sent is what ends a hold); also the task events a
#: worker sends (task-sent is the producer's): signs of the worker's life.
_HOLDABLE = _WORKER_TASK_EVENTS = TASK_EVENT_TYPES - {"task-sent"}
#: A repaired state → the event type that would have set it (its counter, its history record).
_REPAIR_EVENT = {"SUCCESS": "task-succeeded", "FAILURE": "task-failed",
                 "REVOKED": "task-revoked", "STARTED": "task-started",
                 "RECEIVED": "task-received"}
#: States that mean a worker received the task / started it.
_RECEIVED_BY = frozenset({"RECEIVED", "STARTED", "SUCCESS", "FAILURE"})
_STARTED_BY = frozenset({"STARTED", "SUCCESS", "FAILURE"})


@dataclass(frozen=True)
class ModelSnapshot:
    """An immutable copy of the model at one instant (``taken_at``, exporter clock).

    ``lifecycle`` maps a task event type (``task-sent`` …) to ``{(name, queue_name): count}``;
    ``exceptions`` is ``{(name, exception): count}``; ``runtime`` is
    ``{(name, queue_name, state): HistogramValue}``; ``queue_wait`` and ``running`` are keyed by
    ``(name, queue_name)``; ``lost`` is ``{(name, queue_name): count}`` of tasks lost with
    their worker. Keys are the typed labels of :mod:`exporter.state.labels`: with
    ``hostname_label`` every task key carries the worker ``hostname`` too, so read them by
    field name. The remaining fields count the events themselves (received by type, malformed
    by reason, last receipt and lag) and the task index (size, evictions, folded names).
    """

    taken_at: float
    lifecycle: Mapping[str, Mapping[AnyTaskLabels, int]]
    exceptions: Mapping[ExceptionLabels, int]
    runtime: Mapping[AnyRuntimeLabels, HistogramValue]
    queue_wait: Mapping[AnyTaskLabels, HistogramValue]
    running: Mapping[AnyTaskLabels, int]
    workers: tuple[WorkerState, ...]
    events_received: Mapping[str, int]
    events_malformed: Mapping[str, int]
    last_event: float | None
    event_lag: float | None
    tasks_in_memory: int
    task_index_evictions: int
    task_names_folded: int
    lost: Mapping[AnyTaskLabels, int] = field(default_factory=dict)


class TaskSummary(NamedTuple):
    """A task as the events left it: Celery ``state``, ``name`` and ``queue`` label values."""

    state: str
    name: str
    queue: str


class Model:
    """Counts, histograms, in-flight tasks and workers built from Celery events.

    Args:
        runtime_buckets: upper bounds (seconds) of ``task_runtime_seconds``.
        queue_wait_buckets: upper bounds (seconds) of ``task_queue_wait_seconds``.
        max_tasks: capacity of the task index (``--max-tasks-in-memory``).
        max_task_names: distinct task names kept as labels; more fold into ``other``.
        worker_timeout / worker_retention: seconds, see :mod:`exporter.state.workers`.
        clock_offset_warning: seconds of worker clock offset beyond which a warning is logged
            (``--clock-offset-warning``; default: never).
        solo_busy_timeout: seconds a solo-pool worker may stay silent (running a task) before
            it is down (``--solo-busy-timeout``; ``None``: ``worker_timeout``).
        workflows: receives every applied task event, repair and lost task with the task's
            name label (:meth:`~exporter.state.workflows.WorkflowTracker.observe`; stuck
            chords).
        workflows: receives every applied task event with the task's name label
            (:meth:`~exporter.state.workflows.WorkflowTracker.observe`; stuck chords).
        history_exclude: shell-style patterns of task names whose events do not go to
            ``history`` (``--history-exclude-task``); the name is the event's ``name``, else
            the one the task index holds.
        task_lost_grace: seconds a worker must have been down before the tasks it was running
            are marked lost (``None``: ``worker_timeout``); see the module docs.
        clock: returns the exporter's time in seconds since the epoch (injected for tests).
        history: receives every well-formed event (``HistoryWriter.submit``: non-blocking).
        hostname_label: task series but ``task-sent`` counts are keyed
            ``(name, queue_name, hostname)`` — the worker that received or started the task,
            ``unknown`` if none did — instead of ``(name, queue_name)``
            (``--task-hostname-label``).

    """

    def __init__(
        self,
        *,
        runtime_buckets: tuple[float, ...],
        queue_wait_buckets: tuple[float, ...],
        max_tasks: int,
        max_task_names: int,
        worker_timeout: float,
        worker_retention: float,
        clock: Callable[[], float] = time.time,
        history: Callable[[dict], None] | None = None,
        task_lost_grace: float | None = None,
        hostname_label: bool = False,
        clock_offset_warning: float = float("inf"),
        solo_busy_timeout: float | None = None,
        history_exclude: Iterable[str] = (),
        workflows: WorkflowTracker | None = None,
    ) -> None:
        self.lock = threading.Lock()
        self.clock = clock
        self._history = history
        self._workflows = workflows
        patterns = [fnmatch.translate(pattern) for pattern in history_exclude]
        self._excluded = re.compile("|".join(patterns)).match if patterns else None
        self._excluded_names: dict[str, bool] = {}
        self.index = TaskIndex(max_tasks)
        self.workers = WorkerTable(worker_timeout, worker_retention, clock_offset_warning,
                                   solo_busy_timeout)
        self.series = TaskSeries(runtime_buckets, queue_wait_buckets)
        self._hostname_label = hostname_label
        self.names = TaskNames(max_task_names)
        self._worker_queues: dict[str, tuple[str, ...]] = {}
        self._held: OrderedDict[str, _Hold] = OrderedDict()
        self._holding = True
        self._sent_queues: OrderedDict[str, None] = OrderedDict()
        self._events_received: dict[str, int] = {}
        self._events_malformed: dict[str, int] = {}
        self._last_event: float | None = None
        self._event_lag: float | None = None
        self._evictions = 0
        self._lost_grace = worker_timeout if task_lost_grace is None else task_lost_grace
        self._next_lost_check = float("-inf")
        self._missed_workers: set[str] = set()

    # -- input ---------------------------------------------------------------------------

    def process_many(self, events: Iterable[Any], received_at: float | None = None) -> None:
        """Apply decoded event dicts in order; a malformed one is counted and skipped.

        ``received_at`` is the exporter time the message arrived (default: the clock); it is
        stored in each event as ``local_received``, and an implausible ``timestamp`` is replaced
        by it (see the module docs). Never raises for bad input.
        """
        now = self.clock() if received_at is None else received_at
        with self.lock:
            last_timestamp = None
            for event in events:
                try:
                    event_type = check_event(event)
                except MalformedEvent as exc:
                    self._count_malformed_locked(exc.reason)
                    continue
                timestamp = event["timestamp"]
                if abs(timestamp - now) > MAX_CLOCK_SKEW:
                    event["original_timestamp"] = timestamp
                    event["timestamp"] = timestamp = now
                event["local_received"] = now
                if event_type in _HOLDABLE and (
                        (self._held and event["uuid"] in self._held)
                        or (event_type == "task-received" and self._holds(event))):
                    self._hold(event_type, event, now)
                    continue
                if self._apply(event_type, event, now):
                    last_timestamp = timestamp
                if event_type == "task-sent" and self._held and event["uuid"] in self._held:
                    self._release(event["uuid"])
            if last_timestamp is not None:
                self._last_event = now
                self._event_lag = now - last_timestamp
            if self._held:
                self._expire_holds(now)
            self._check_lost(now)

    def tick(self) -> None:
        """Housekeeping the passing of time calls for when no event arrives: apply the held
        events whose hold expired, and mark the tasks of workers gone for longer than
        ``task_lost_grace`` as lost (at most once per :data:`LOST_CHECK_INTERVAL`). The
        consumer calls it from its idle loop.
        """
        with self.lock:
            now = self.clock()
            if self._held:
                self._expire_holds(now)
            self._check_lost(now)

    def warm(self, tasks: Iterable[UnfinishedTask]) -> int:
        """Fill the task index from the history's unfinished executions (exporter start), so
        a ``task-failed`` arriving after a restart still joins to its name and queue.

        Every warmed task is a first sighting of its labels (its ``succeeded``, ``failed``,
        ``retried``, ``lost`` counters and histograms exist at 0, as after a live
        ``task-received``; see :meth:`~exporter.state.task_series.TaskSeries.sight`). A task
        warmed as STARTED counts as running again (``task_running``: the "running now"
        figure must not read 0 while it runs), and its worker is *expected*: if that worker
        sends no event within ``worker_timeout`` + ``task_lost_grace`` of the start (it died
        while the exporter was down), the task is lost like any other. Returns how many records
        were added.
        """
        added = 0
        with self.lock:
            now = self.clock()
            for task in tasks:
                if self.index.peek(task.task_id) is not None:
                    continue
                record, evicted = self.index.get_or_create(task.task_id)
                if evicted is not None:
                    self._forget(evicted)
                record.name = self.names.label(task.name) if task.name else UNKNOWN
                record.queue = task.queue or UNKNOWN
                if task.queue:
                    self._note_queue(task.queue)
                record.routing_key = task.routing_key
                record.hostname = task.hostname
                record.sent, record.received = task.sent_at, task.received_at
                record.started, record.eta = task.started_at, task.eta
                record.retries = task.retries
                times = [t for t in (task.sent_at, task.received_at, task.started_at) if t]
                if task.state in STATE_STAGE and times:
                    record.state, record.state_ts = task.state, max(times)
                # First sighting, as the live task-received: its end is an increase() away.
                # Only sent, under the hostname label, it has no worker to key them by yet.
                if record.hostname is not None or not self._hostname_label:
                    self.series.sight(self._labels(record, "task-received"))
                if record.state == "STARTED" and record.running is None:
                    record.running = self._labels(record, "task-started")
                    self.series.add_running(record.running, 1)
                    if record.hostname:
                        self.workers.expect(record.hostname, now)
                added += 1
        return added

    # -- repair (exporter.repair) --------------------------------------------------------------

    def in_progress(self, hostnames: Iterable[str | None] | None = None) -> list[str]:
        """Ids of the tasks the index holds in progress (not in a terminal state), least
        recently used first; with ``hostnames``, only those whose worker is one of them
        (``None`` among them: tasks no worker was seen with yet). A scan of the tasks in
        progress under the lock (about 10 ms for 100,000): the repairer calls it once per
        event gap or per worker with missed events, never the event path.
        """
        wanted = None if hostnames is None else set(hostnames)
        with self.lock:
            return [task_id for task_id, record in self.index.in_progress()
                    if wanted is None or record.hostname in wanted]

    def take_missed_workers(self) -> set[str]:
        """Workers whose heartbeats confirmed missed ``task-started`` events since the previous
        call (see :mod:`exporter.state.workers`); the set is emptied.
        """
        with self.lock:
            found, self._missed_workers = self._missed_workers, set()
            return found

    def task_states(self, task_ids: Iterable[str]) -> dict[str, str]:
        """``{task id: state}`` of the given tasks the index holds (absent: not held, e.g.
        evicted); does not refresh their LRU position.
        """
        with self.lock:
            peek = self.index.peek
            return {task_id: record.state for task_id in task_ids
                    if (record := peek(task_id)) is not None}

    def apply_repair(self, finding: Finding) -> bool:
        """Apply what a source of truth said of a task (see the module docs: repairs); return
        whether it changed the task. Nothing changes when the index no longer holds the task,
        when it has ended already, or when its state is the finding's or as far along (state
        order of :func:`~exporter.events.table.state_order`: an end always beats a state in
        progress). A finding without a timestamp (a reserved task) is stamped with the task's
        own last state change; one further than ``MAX_CLOCK_SKEW`` from the exporter's clock
        with the exporter's clock.

        Raises:
            KeyError: ``finding.state`` is not one a repair sets (SUCCESS, FAILURE, REVOKED,
                STARTED, RECEIVED).

        """
        event_type = _REPAIR_EVENT[finding.state]
        with self.lock:
            task_id = finding.task_id
            if self._held and task_id in self._held:
                self._release(task_id)  # what the events said first
            record = self.index.peek(task_id)
            if record is None or record.state in TERMINAL_STATES:
                return False
            now = self.clock()
            timestamp = finding.timestamp
            if timestamp is None:
                timestamp = record.state_ts if record.state_ts is not None else now
            elif abs(timestamp - now) > MAX_CLOCK_SKEW:
                timestamp = now
            state = finding.state
            if state == record.state or (record.state_ts is not None and state_order(
                    state, timestamp) <= state_order(record.state, record.state_ts)):
                return False  # nothing was lost: the events said as much already
            self._repair_labels(record, finding)
            counted = {event_type}
            # After task-retried, nothing of the next attempt was seen yet.
            fresh = record.state == "RETRY"
            if state in _RECEIVED_BY:
                counted.add("task-received")
                if record.received is None or fresh:
                    self._count("task-received", record)
            if state in _STARTED_BY:
                counted.add("task-started")
                if record.started is None or fresh:
                    labels = self._count("task-started", record)
                    if state == "STARTED" and record.running is None:
                        record.started = finding.timestamp
                        record.running = labels
                        self.series.add_running(labels, 1)
            if state in TERMINAL_STATES:
                self._count(event_type, record)
                if state == "FAILURE":
                    self.series.count_exception(ExceptionLabels(record.name, exception_class(
                        finding.exception, finding.traceback)))
                self._end_execution(record)
            record.state, record.state_ts = state, timestamp
            record.repaired = record.repaired | counted
            if state in TERMINAL_STATES:
                self._move_to_finished(task_id)
            repaired = _repair_record(finding, event_type, timestamp, record, now)
            if self._history is not None and not (
                    self._excluded is not None and self._name_excluded(record.name)):
                self._history(repaired)
            if self._workflows is not None:  # a step whose events were lost moves on too
                self._workflows.observe(event_type, repaired, record.name, self.names.label)
            return True

    def label_name(self, name: str) -> str:
        """The label value for task ``name``: itself, or ``other`` once ``max_task_names``
        distinct names are kept; shared with the poller so both sources agree.
        """
        with self.lock:
            return self.names.label(name)

    def set_registered_names(self, names: Iterable[str]) -> None:
        """Add task names workers registered (``inspect registered``, the poller): they take
        label slots before names no worker registered (:mod:`exporter.state.names`).
        """
        with self.lock:
            self.names.set_registered(names)

    def count_malformed(self, reason: str) -> None:
        """Count a message the consumer could not even decode (``reason``: label value)."""
        with self.lock:
            self._count_malformed_locked(reason)

    def set_worker_pools(self, pools: Mapping[str, str]) -> None:
        """Record each worker's pool (``{hostname: pool}`` from ``inspect stats``, the poller):
        a solo worker is silent, not down, while it runs a task (:mod:`exporter.state.workers`).
        """
        with self.lock:
            self.workers.set_pools(pools)

    def set_worker_queues(self, queues: Mapping[str, Iterable[str]]) -> None:
        """Record which queues each worker consumes (``inspect active_queues`` reply, by
        hostname); a worker consuming exactly one queue lets ``task-received`` name it.
        """
        frozen = {hostname: tuple(names) for hostname, names in queues.items()}
        with self.lock:
            self._worker_queues.update(frozen)

    # -- output --------------------------------------------------------------------------

    def sent_queues(self) -> tuple[str, ...]:
        """Queue names of ``task-sent`` routing (``queue``, else ``routing_key``) and of the
        warmed executions, the :data:`MAX_SENT_QUEUES` most recent: the poller reads these
        queues too (a backlog nobody consumes).
        """
        with self.lock:
            return tuple(self._sent_queues)

    def sent_time(self, task_id: str) -> float | None:
        """``task-sent`` timestamp of an indexed task (seconds since the epoch), ``None`` when
        unknown; does not create a record nor refresh its LRU position (the poller's lookup for
        the age of waiting messages).
        """
        with self.lock:
            record = self.index.peek(task_id)
            return None if record is None else record.sent

    def release_held(self) -> None:
        """Apply every held event now, as if each hold had expired (module docs: held events):
        at shutdown, so that what arrived reaches the counters and the history.
        """
        with self.lock:
            while self._held:
                self._release(next(iter(self._held)))

    def held_events(self) -> int:
        """How many events are held for their task's ``task-sent`` (module docs: held events):
        received, not yet counted in ``events_received`` nor applied.
        """
        with self.lock:
            return sum(len(hold.events) for hold in self._held.values())

    def running(self) -> dict[AnyTaskLabels, int]:
        """Tasks running per label set (``task_running``), copied without the rest of a
        snapshot (the action API's queue report).
        """
        with self.lock:
            return self.series.copy_running()

    def worker_states(self) -> tuple[WorkerState, ...]:
        """Every worker at the exporter's clock now (as in a snapshot, without the series)."""
        with self.lock:
            return tuple(self.workers.states(self.clock()))

    def task_summary(self, task_id: str) -> TaskSummary | None:
        """What the events said of a task — state, name, queue — or ``None`` when the index
        does not hold it; does not refresh its LRU position.
        """
        with self.lock:
            record = self.index.peek(task_id)
            if record is None:
                return None
            return TaskSummary(record.state, record.name, record.queue)

    def snapshot(self) -> ModelSnapshot:
        """Copy everything under the lock and return it frozen (see :class:`ModelSnapshot`)."""
        with self.lock:
            now = self.clock()
            if self._held:
                self._expire_holds(now)
            self._check_lost(now, force=True)
            return ModelSnapshot(
                taken_at=now,
                **self.series.copy()._asdict(),
                workers=tuple(self.workers.states(now)),
                events_received=dict(self._events_received),
                events_malformed=dict(self._events_malformed),
                last_event=self._last_event,
                event_lag=self._event_lag,
                tasks_in_memory=len(self.index),
                task_index_evictions=self._evictions,
                task_names_folded=self.names.folded_total,
            )

    # -- helpers (lock held) ---------------------------------------------------------------

    def _state_of(self, task_id: str) -> str | None:
        """The state the index holds for ``task_id`` (``None``: not held); for the workflow
        tracker, which keeps only tasks in workflows.
        """
        record = self.index.peek(task_id)
        return record.state if record is not None else None

    def _count_malformed_locked(self, reason: str) -> None:
        self._events_malformed[reason] = self._events_malformed.get(reason, 0) + 1

    def _skip_reason(self, task_id: str, event_type: str, timestamp: float) -> str | None:
        """Why a task event is not applied: ``duplicate`` (already applied, see the module
        docs), ``repaired`` (a repair counted it for this execution when it was lost), or
        ``None``: apply it. One index lookup, on the event path.
        """
        record = self.index.peek(task_id)
        if record is None:
            return None
        if event_type in _FINISH_TYPES and record.state in _FINISHED:
            return "duplicate"  # a second report of an execution's end
        slot = _TIMESTAMP_SLOT.get(event_type)
        if slot is not None:
            if getattr(record, slot) == timestamp:
                return "duplicate"
        elif record.state_ts == timestamp and record.state == EVENT_STATE[event_type]:
            return "duplicate"  # retried, revoked, rejected, cancelled: reported again
        if record.repaired and event_type in record.repaired:
            return "repaired"
        return None

    def _repair_labels(self, record: TaskRecord, finding: Finding) -> None:
        """Fill what the record does not know (name, queue, worker) from ``finding``."""
        if finding.name and record.name == UNKNOWN:
            record.name = self.names.label(finding.name)
        if finding.queue and record.queue == UNKNOWN:
            record.queue = finding.queue
            self._note_queue(finding.queue)
        if finding.hostname:
            record.hostname = finding.hostname

    def _kept_out(self, event_type: str, event: dict) -> bool:
        """Whether a task event's task is kept out of the history (``history_exclude``)."""
        if event_type not in TASK_EVENT_TYPES:
            return False
        name = event.get("name")
        if not name:
            record = self.index.peek(event["uuid"])
            name = record.name if record is not None else None
        return isinstance(name, str) and bool(name) and self._name_excluded(name)

    def _name_excluded(self, name: str) -> bool:
        excluded = self._excluded_names.get(name)
        if excluded is None:
            assert self._excluded is not None
            if len(self._excluded_names) >= _EXCLUDE_MEMORY:
                self._excluded_names.clear()
            excluded = self._excluded_names[name] = self._excluded(name) is not None
        return excluded

    def _check_lost(self, now: float, force: bool = False) -> None:
        if not force and now < self._next_lost_check:
            return
        self._next_lost_check = now + LOST_CHECK_INTERVAL
        for hostname, last_timestamp in self.workers.gone(now, self._lost_grace):
            self._mark_lost(hostname, last_timestamp, now)

    def _mark_lost(self, hostname: str, last_timestamp: float, now: float,
                   why: str = "gone") -> None:
        """End every execution the model sees running on ``hostname`` as LOST (see the module
        docs); ``why`` the worker's tasks are lost, for the log: ``gone`` or ``restarted``. A
        scan of the index, once per worker disappearance or restart.
        """
        lost = [(task_id, record) for task_id, record in self.index
                if record.running is not None and record.hostname == hostname]
        for task_id, record in lost:
            labels = record.running
            assert labels is not None
            timestamp = max(last_timestamp, record.state_ts or last_timestamp)
            record.state, record.state_ts = "LOST", timestamp
            self._end_execution(record)
            self._move_to_finished(task_id)
            self.series.count_lost(labels)
            lost_record = {"type": TASK_LOST, "uuid": task_id, "timestamp": timestamp,
                           "hostname": hostname, "local_received": now}
            if self._history is not None and not (
                    self._excluded is not None and self._name_excluded(record.name)):
                self._history(lost_record)
            if self._workflows is not None:
                self._workflows.observe(TASK_LOST, lost_record, record.name, self.names.label)
        if lost:
            log.warning("worker %s with running tasks hostname=%s lost=%d", why, hostname,
                        len(lost))

    def _note_queue(self, queue: str) -> None:
        self._sent_queues[queue] = None
        self._sent_queues.move_to_end(queue)
        if len(self._sent_queues) > MAX_SENT_QUEUES:
            self._sent_queues.popitem(last=False)

    def _forget(self, evicted: TaskRecord) -> None:
        """Undo what a record evicted from the index contributed; count the eviction when the
        task had not finished (its later events will not join to its name and queue).
        """
        if evicted.state not in TERMINAL_STATES:
            self._evictions += 1
        self._end_execution(evicted)

    def _record(self, event: dict) -> TaskRecord:
        """The index record of the event's task (created when new); every task handler starts
        here.
        """
        record, evicted = self.index.get_or_create(event["uuid"])
        if evicted is not None:
            self._forget(evicted)
        name = event.get("name")
        if name and record.name == UNKNOWN:
            record.name = self.names.label(name)
        return record

    def _apply(self, event_type: str, event: dict, now: float) -> bool:
        """Apply one checked event: skip a duplicate or repaired one (counted), else count it,
        hand it to the history and run its handler; return whether the handler ran.
        """
        if event_type in TASK_EVENT_TYPES:
            skip = self._skip_reason(event["uuid"], event_type, event["timestamp"])
            if skip is not None:
                self._count_malformed_locked(skip)
                if skip == "repaired" and self._history is not None and not (
                        self._excluded is not None and self._kept_out(event_type, event)):
                    self._history(event)  # counted by a repair; the history takes its details
                return False
        self._events_received[event_type] = self._events_received.get(event_type, 0) + 1
        if event_type in _WORKER_TASK_EVENTS:
            hostname = event.get("hostname")
            if isinstance(hostname, str):
                self.workers.note_task_event(hostname, now)
        if self._history is not None and not (
                self._excluded is not None and self._kept_out(event_type, event)):
            self._history(event)
        try:
            _HANDLERS[event_type](self, event_type, event, now)
        except Exception:
            # A bug in a handler must cost one event, not the batch or the thread.
            self._count_malformed_locked("handler_error")
            log.exception("event handler failed type=%s", event_type)
        if self._workflows is not None and event_type in TASK_EVENT_TYPES:
            record = self.index.peek(event["uuid"])
            self._workflows.observe(event_type, event, record.name if record else UNKNOWN,
                                    self.names.label, self._state_of)
        return True

    def _holds(self, event: dict) -> bool:
        """Whether a ``task-received`` starts a hold (see the module docs): its task is new
        (no ``task-sent`` nor any other event yet) and its worker does not consume exactly one
        queue.
        """
        if not self._holding or self.index.peek(event["uuid"]) is not None:
            return False
        hostname = event.get("hostname")
        return not (isinstance(hostname, str)
                    and len(self._worker_queues.get(hostname, ())) == 1)

    def _hold(self, event_type: str, event: dict, now: float) -> None:
        hold = self._held.get(event["uuid"])
        if hold is None:
            hold = self._held[event["uuid"]] = _Hold(now + HOLD_SECONDS)
        hold.events.append((event_type, event, now))

    def _release(self, task_id: str) -> None:
        """Apply a task's held events, in the order they arrived."""
        for event_type, event, received_at in self._held.pop(task_id).events:
            self._apply(event_type, event, received_at)

    def _expire_holds(self, now: float) -> None:
        """Apply the held events of tasks whose ``task-sent`` did not come in time; with no
        ``task-sent`` ever seen, stop holding (see the module docs).
        """
        held = self._held
        while held:
            task_id, hold = next(iter(held.items()))
            if hold.deadline > now:
                return
            self._release(task_id)
            if not self._events_received.get("task-sent"):
                self._holding = False

    def _labels(self, record: TaskRecord, event_type: str) -> AnyTaskLabels:
        """The labels ``record`` counts under for ``event_type``: with the hostname label,
        every event but ``task-sent`` carries the worker; task-sent is the producer's event (no
        worker has the task yet, whatever order the events arrive in), so task_sent_total keeps
        (name, queue_name) only.
        """
        if self._hostname_label and event_type != "task-sent":
            return WorkerTaskLabels(record.name, record.queue, record.hostname or UNKNOWN)
        return TaskLabels(record.name, record.queue)

    def _count(self, event_type: str, record: TaskRecord) -> AnyTaskLabels:
        labels = self._labels(record, event_type)
        # With the hostname label, task-sent's labels key none of the other families.
        self.series.count(event_type, labels, first_sighting=not (
            self._hostname_label and event_type == "task-sent"))
        return labels

    def _set_state(self, record: TaskRecord, event_type: str, timestamp: float) -> bool:
        """Move ``record`` to the event's state unless it already holds a later one by
        :func:`~exporter.events.table.state_order` (stage first, then timestamp, then
        precedence: clock skew between producer and worker cannot undo an end); return whether
        the state changed.
        """
        state = EVENT_STATE[event_type]
        held = record.state_ts
        # state_order's comparison, without building two tuples per event (the hot path):
        # the stage first; timestamps and precedence only within one stage.
        if held is not None:
            stage, held_stage = STATE_STAGE[state], STATE_STAGE.get(record.state, -1)
            if stage < held_stage or (stage == held_stage and state_order(
                    state, timestamp) < state_order(record.state, held)):
                return False
        record.state = state
        record.state_ts = timestamp
        return True

    def _end_execution(self, record: TaskRecord) -> None:
        if record.running is not None:
            # The labels it was counted under: a late task-sent/received may have changed
            # the record's name or queue since task-started.
            labels, record.running = record.running, None
            self.series.add_running(labels, -1)

    # -- handlers (lock held) --------------------------------------------------------------

    def _on_sent(self, event_type: str, event: dict, now: float) -> None:
        record = self._record(event)
        self._holding = True
        queue = event.get("queue") or event.get("routing_key")
        if queue:
            record.queue = queue
            self._note_queue(queue)
        record.routing_key = event.get("routing_key") or record.routing_key
        record.sent = event["timestamp"]
        record.eta = parse_eta(event.get("eta"))
        record.retries = event.get("retries") or 0
        self._set_state(record, event_type, event["timestamp"])
        self._count(event_type, record)

    def _on_received(self, event_type: str, event: dict, now: float) -> None:
        record = self._record(event)
        hostname = event.get("hostname")
        record.hostname = hostname if isinstance(hostname, str) else record.hostname
        if record.queue == UNKNOWN and record.hostname:
            queues = self._worker_queues.get(record.hostname, ())
            if len(queues) == 1:
                record.queue = queues[0]
        record.received = event["timestamp"]
        eta = parse_eta(event.get("eta"))
        if eta is not None:
            record.eta = eta
        record.retries = event.get("retries") or record.retries
        self._set_state(record, event_type, event["timestamp"])
        self._count(event_type, record)

    def _on_started(self, event_type: str, event: dict, now: float) -> None:
        record = self._record(event)
        hostname = event.get("hostname")
        if isinstance(hostname, str) and hostname:
            record.hostname = hostname  # where it runs: a lost worker takes it with it
            self.workers.count_started(hostname)
        timestamp = event["timestamp"]
        labels = self._count(event_type, record)
        record.started = timestamp
        if self._set_state(record, event_type, timestamp) and record.running is None:
            record.running = labels
            self.series.add_running(labels, 1)
        base = record.sent if record.sent is not None else record.received
        if base is not None:
            if record.eta is not None and record.eta > base:
                base = record.eta
            self.series.observe_queue_wait(labels, max(0.0, timestamp - base))

    def _on_succeeded(self, event_type: str, event: dict, now: float) -> None:
        record = self._record(event)
        labels = self._count(event_type, record)
        runtime = event.get("runtime")
        if runtime is not None:
            self.series.observe_runtime(labels, "SUCCESS", max(0.0, runtime))
        self._finish(record, event_type, event)

    def _on_failed(self, event_type: str, event: dict, now: float) -> None:
        record = self._record(event)
        labels = self._count(event_type, record)
        self.series.count_exception(ExceptionLabels(
            record.name, exception_class(event.get("exception"), event.get("traceback"))))
        if record.started is not None:
            runtime = max(0.0, event["timestamp"] - record.started)
            self.series.observe_runtime(labels, "FAILURE", runtime)
        self._finish(record, event_type, event)

    def _on_ended(self, event_type: str, event: dict, now: float) -> None:
        record = self._record(event)
        self._count(event_type, record)
        if event_type == "task-retried":
            record.repaired = frozenset()  # the next attempt's events are new
        self._finish(record, event_type, event)

    def _finish(self, record: TaskRecord, event_type: str, event: dict) -> None:
        if self._set_state(record, event_type, event["timestamp"]):
            self._end_execution(record)
            if record.state in TERMINAL_STATES:
                self._move_to_finished(event["uuid"])

    def _move_to_finished(self, task_id: str) -> None:
        """Move the task to the index's finished tasks (first to be evicted)."""
        evicted = self.index.finish(task_id)
        if evicted is not None:
            self._forget(evicted)

    def _on_worker(self, event_type: str, event: dict, now: float) -> None:
        if self.workers.update(event_type, event, now):
            self._missed_workers.add(event["hostname"])
        for hostname, last_timestamp in self.workers.take_restarts():
            self._mark_lost(hostname, last_timestamp, now, "restarted")


@dataclass(slots=True)
class _Hold:
    """A task's held events: ``(event type, event, exporter receive time)`` in arrival order,
    applied at the latest at ``deadline`` (exporter clock, seconds since the epoch).
    """

    deadline: float
    events: list[tuple[str, dict, float]] = field(default_factory=list)


def _repair_record(finding: Finding, event_type: str, timestamp: float, record: TaskRecord,
                   now: float) -> dict[str, Any]:
    """The history record of a repair: shaped like the Celery event that was lost
    (``event_type``), with ``state_source`` naming where it came from
    (:func:`exporter.history.merge.record_from_event`).
    """
    event: dict[str, Any] = {
        "type": event_type, "uuid": finding.task_id, "timestamp": timestamp,
        "local_received": now, "state_source": finding.source,
    }
    fields = {"name": finding.name, "hostname": finding.hostname or record.hostname,
              "queue": finding.queue, "args": finding.args, "kwargs": finding.kwargs,
              "retries": finding.retries, "result": finding.result,
              "exception": finding.exception, "traceback": finding.traceback}
    event.update((key, value) for key, value in fields.items() if value is not None)
    if finding.revoke_reason in ("terminated", "expired"):
        event[finding.revoke_reason] = True  # as task-revoked says it (revoke_reason column)
    return event


_HANDLERS: dict[str, Callable[[Model, str, dict, float], None]] = {
    "task-sent": Model._on_sent,
    "task-received": Model._on_received,
    "task-started": Model._on_started,
    "task-succeeded": Model._on_succeeded,
    "task-failed": Model._on_failed,
    "task-retried": Model._on_ended,
    "task-revoked": Model._on_ended,
    "task-rejected": Model._on_ended,
    "task-cancelled": Model._on_ended,
    "worker-online": Model._on_worker,
    "worker-heartbeat": Model._on_worker,
    "worker-offline": Model._on_worker,
}
