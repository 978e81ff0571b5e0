"""The catalogue: every metric family celery-jobmon exposes, in one place.

Each entry says what the family is (name without the configurable prefix, type, help, label
names, unit, where the values come from) and how to read its samples from the snapshot of its
source (``read``). The families are grouped by source, in exposition order: :data:`MODEL`
(task events, :class:`~exporter.state.model.ModelSnapshot`), :data:`HEALTH` (the exporter
itself, :class:`~exporter.state.health.HealthSnapshot`), :data:`POLL` (inspect and broker
queue reads, :class:`~exporter.poll.snapshot.PollSnapshot`), :data:`HISTORY` (the history
writer, :class:`~exporter.history.writer.HistoryStats`), :data:`PERIODIC` (the periodic
tracker, :class:`~exporter.periodic.tracker.PeriodicSnapshot`), :data:`WORKFLOWS` (the workflow
tracker, :class:`~exporter.state.workflows.WorkflowSnapshot`) and :data:`SCRAPE` (each source's
success and duration at this scrape). Adding a metric touches this file and the code that
counts it; the renderers (:mod:`exporter.metrics.exposition`,
:mod:`exporter.metrics.collectors`) only iterate. A unit test checks every entry against
Prometheus naming rules.

It is long because it is a table: one entry per family, each with its help text and reader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Kind = Literal["counter", "gauge", "histogram", "info"]
#: ``read(snapshot, now)`` → ``{label values: value}`` (value: a number, or a frozen
#: :class:`~exporter.state.histogram.HistogramValue` for histograms), or ``None`` when the
#: family is absent from this scrape (a value not known yet); ``now`` is the exporter clock at
#: scrape, seconds since the epoch (for ages). Label values are in ``labels`` order.
Reader = Callable[[Any, float], Mapping[tuple[str, ...], Any] | None]

TASK = ("name", "queue_name")


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: name (without prefix, counters end in ``_total``), type, labels.

    ``unit`` is the base unit in the name (``seconds``) or ``""``; ``source`` says where values
    come from (Celery event type, broker call, or the exporter itself); ``read`` (required)
    takes the samples out of the source's snapshot (:data:`Reader`).
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    unit: str
    source: str
    read: Reader = field(compare=False, repr=False)


# -- readers: how a family's samples come out of its source's snapshot ------------------------

def _field(attribute: str) -> Reader:
    """The snapshot's mapping ``attribute`` as it is (keys are already label-value tuples)."""
    return lambda snapshot, now: getattr(snapshot, attribute)


def _by_key(attribute: str) -> Reader:
    """``{key: n}`` of the snapshot's ``attribute`` as one-label samples ``{(key,): n}``."""
    return lambda snapshot, now: {(key,): n for key, n in getattr(snapshot, attribute).items()}


def _scalar(attribute: str) -> Reader:
    """The snapshot's number ``attribute`` as the one unlabelled sample (a bool becomes 0 or
    1); the family is absent while the value is ``None``.
    """
    def read(snapshot: Any, now: float) -> Mapping[tuple[str, ...], float] | None:
        value = getattr(snapshot, attribute)
        if value is None:
            return None
        return {(): float(value) if isinstance(value, bool) else value}
    return read


def _per_worker(attribute: str) -> Reader:
    """``attribute`` of each worker in the snapshot's ``workers`` as ``{(hostname,): value}``,
    workers for which it is ``None`` left out (a bool becomes 0 or 1).
    """
    def read(snapshot: Any, now: float) -> Mapping[tuple[str, ...], float]:
        return {(w.hostname,): float(v) if isinstance(v, bool) else v for w in snapshot.workers
                if (v := getattr(w, attribute)) is not None}
    return read


def _lifecycle(event: str, verb: str) -> MetricSpec:
    return MetricSpec(
        f"task_{verb}_total", "counter", f"Tasks {verb}, counted from `{event}` events.",
        TASK, "", event, read=lambda snapshot, now: snapshot.lifecycle[event],
    )


TASK_SENT = _lifecycle("task-sent", "sent")
TASK_RECEIVED = _lifecycle("task-received", "received")
TASK_STARTED = _lifecycle("task-started", "started")
TASK_SUCCEEDED = _lifecycle("task-succeeded", "succeeded")
TASK_FAILED = _lifecycle("task-failed", "failed")
TASK_RETRIED = _lifecycle("task-retried", "retried")
TASK_REVOKED = _lifecycle("task-revoked", "revoked")
TASK_REJECTED = _lifecycle("task-rejected", "rejected")
TASK_CANCELLED = MetricSpec(
    "task_cancelled_total", "counter",
    "Executions their worker killed when it shut down cold or lost its broker connection, "
    "counted from `task-cancelled` events (Celery 5.5 and later): they leave task_running "
    "without an outcome and run again only if the task is acks_late (the broker delivers it "
    "anew).",
    TASK, "", "task-cancelled", read=lambda snapshot, now: snapshot.lifecycle["task-cancelled"],
)
#: Event type → lifecycle counter it increments.
LIFECYCLE = {
    "task-sent": TASK_SENT,
    "task-received": TASK_RECEIVED,
    "task-started": TASK_STARTED,
    "task-succeeded": TASK_SUCCEEDED,
    "task-failed": TASK_FAILED,
    "task-retried": TASK_RETRIED,
    "task-revoked": TASK_REVOKED,
    "task-rejected": TASK_REJECTED,
    "task-cancelled": TASK_CANCELLED,
}

TASK_EXCEPTIONS = MetricSpec(
    "task_exceptions_total", "counter",
    "Failed tasks by exception class (the class name in the `exception` field of `task-failed`).",
    ("name", "exception"), "", "task-failed", read=_field("exceptions"),
)
TASK_RUNTIME = MetricSpec(
    "task_runtime_seconds", "histogram",
    "Task run time: `runtime` of `task-succeeded` (state=SUCCESS); `task-failed` timestamp minus "
    "`task-started` timestamp (state=FAILURE).",
    ("name", "queue_name", "state"), "seconds", "task-succeeded, task-failed",
    read=_field("runtime"),
)
TASK_QUEUE_WAIT = MetricSpec(
    "task_queue_wait_seconds", "histogram",
    "Time from `task-sent` (or `task-received` when producers send no task-sent) or the ETA, "
    "whichever is later, to `task-started`; clamped at 0.",
    TASK, "seconds", "task-sent, task-received, task-started", read=_field("queue_wait"),
)
TASK_RUNNING = MetricSpec(
    "task_running", "gauge",
    "Tasks started and not finished yet, as seen in the events (task-started minus terminal "
    "events).",
    TASK, "", "task-started, task-succeeded/failed/retried/revoked/rejected",
    read=_field("running"),
)
TASK_LOST = MetricSpec(
    "task_lost_total", "counter",
    "Tasks that were running on a worker that went away (worker-offline, or no heartbeat for "
    "the worker timeout) and stayed away for the lost grace period, without a terminal event: "
    "killed with their worker (SIGKILL, OOM kill, host lost). Their history row becomes LOST.",
    TASK, "", "worker liveness + task-started (exporter)", read=_field("lost"),
)
WORKER_UP = MetricSpec(
    "worker_up", "gauge",
    "1 while the worker sends heartbeats, 0 after `worker-offline` or the worker timeout; the 0 "
    "stays for the worker retention.",
    ("hostname",), "", "worker-online, worker-heartbeat, worker-offline",
    read=_per_worker("up"),
)
WORKER_TASKS_ACTIVE = MetricSpec(
    "worker_tasks_active", "gauge", "Tasks the worker is running (`active` of its heartbeat).",
    ("hostname",), "", "worker-heartbeat", read=_per_worker("active"),
)
WORKER_LAST_HEARTBEAT = MetricSpec(
    "worker_last_heartbeat_timestamp_seconds", "gauge",
    "Worker clock time (`timestamp`) of the worker's last event, seconds since the epoch.",
    ("hostname",), "seconds", "worker-*", read=_per_worker("last_heartbeat"),
)
WORKER_CLOCK_OFFSET = MetricSpec(
    "worker_clock_offset_seconds", "gauge",
    "Exporter clock at receipt minus the worker's event `timestamp`, the lowest of its last 16 "
    "worker events (the least transport delay: a shorter backlog does not move it): positive "
    "when the worker's clock is behind the exporter's, negative when ahead; includes that "
    "event's transport delay (milliseconds when healthy).",
    ("hostname",), "seconds", "worker-* (timestamp, receipt time)",
    read=_per_worker("clock_offset"),
)
WORKER_SILENT = MetricSpec(
    "worker_silent", "gauge",
    "1 while a worker of the solo pool (inspect stats) has been silent past the worker timeout "
    "but not past --solo-busy-timeout: busy with a task (a solo worker sends no heartbeat and "
    "no event while it runs one) or dead, it cannot tell; worker_up stays 1 meanwhile.",
    ("hostname",), "", "worker-* (silence), inspect stats (pool)", read=_per_worker("silent"),
)
WORKER_MISSED_TASK_EVENTS = MetricSpec(
    "worker_missed_task_events_total", "counter",
    "`task-started` events of the worker that never reached the exporter: the increase of "
    "`processed` in its heartbeats (counted by Celery with each task-started) minus the "
    "task-started events seen from it, since its first heartbeat; every missed start is also "
    "a missed end, so the task counters are short by as much until repaired.",
    ("hostname",), "", "worker-heartbeat (processed), task-started",
    read=_per_worker("missed_task_events"),
)
WORKER_PROCESSED = MetricSpec(
    "worker_processed_total", "counter",
    "Tasks the worker processed since it started (`processed` of its heartbeat).",
    ("hostname",), "", "worker-heartbeat", read=_per_worker("processed"),
)

EVENTS_RECEIVED = MetricSpec(
    "jobmon_events_received_total", "counter", "Celery events received, by event type.",
    ("type",), "", "exporter", read=_by_key("events_received"),
)
EVENTS_MALFORMED = MetricSpec(
    "jobmon_events_malformed_total", "counter",
    "Events skipped because they could not be decoded, lacked required fields or were "
    "duplicates of an event already applied, by reason.",
    ("reason",), "", "exporter", read=_by_key("events_malformed"),
)
LAST_EVENT = MetricSpec(
    "jobmon_last_event_timestamp_seconds", "gauge",
    "Exporter clock time at which the last event was received, seconds since the epoch.",
    (), "seconds", "exporter", read=_scalar("last_event"),
)
BROKER_CONNECTED = MetricSpec(
    "jobmon_broker_connected", "gauge", "1 while the event consumer is connected to the broker.",
    (), "", "exporter", read=_scalar("broker_connected"),
)
BROKER_RECONNECTS = MetricSpec(
    "jobmon_broker_reconnects_total", "counter",
    "Times the event consumer connected to the broker again after losing the connection.",
    (), "", "exporter", read=_scalar("broker_reconnects"),
)
EVENT_GAPS = MetricSpec(
    "jobmon_event_gaps_total", "counter",
    "Times a consuming event connection was lost: events published until the reconnect are "
    "missing from every count.",
    (), "", "exporter", read=_scalar("event_gaps"),
)
EVENT_LAG = MetricSpec(
    "jobmon_event_lag_seconds", "gauge",
    "Exporter clock at receipt minus the `timestamp` of the last event processed: grows when "
    "the consumer falls behind (includes clock skew between hosts).",
    (), "seconds", "exporter", read=_scalar("event_lag"),
)
EVENT_BATCHES = MetricSpec(
    "jobmon_event_batches_total", "counter",
    "Batches of events applied to the model (one per broker message on the kombu path).",
    (), "", "exporter", read=_scalar("event_batches"),
)
EVENT_PROCESSING = MetricSpec(
    "jobmon_event_processing_seconds_total", "counter",
    "Wall time spent applying events to the model; its rate near 1 means the consumer is "
    "saturated.",
    (), "seconds", "exporter", read=_scalar("event_processing_seconds"),
)
TASKS_IN_MEMORY = MetricSpec(
    "jobmon_tasks_in_memory", "gauge", "Tasks held in the in-memory task index.",
    (), "", "exporter", read=_scalar("tasks_in_memory"),
)
TASK_INDEX_EVICTIONS = MetricSpec(
    "jobmon_task_index_evictions_total", "counter",
    "Unfinished tasks evicted from the task index because it reached --max-tasks-in-memory "
    "(their later events join to name/queue unknown).",
    (), "", "exporter", read=_scalar("task_index_evictions"),
)
TASK_NAMES_FOLDED = MetricSpec(
    "jobmon_task_names_folded_total", "counter",
    "Distinct task names folded into name=\"other\" because --max-task-names was reached.",
    (), "", "exporter", read=_scalar("task_names_folded"),
)
POLL_ERRORS = MetricSpec(
    "jobmon_poll_errors_total", "counter",
    "Failed poller calls (broadcasts to workers, broker queue reads), by call: enable_events, "
    "active_queues, active, reserved, scheduled, stats, queue_lengths, queue_discovery.",
    ("call",), "", "exporter", read=_by_key("poll_errors"),
)
REPAIRS = MetricSpec(
    "jobmon_repairs_total", "counter",
    "Tasks whose state a repair took from a source of truth after their events were lost (an "
    "event gap, missed events, a restart), by the state set (SUCCESS, FAILURE, REVOKED from "
    "the result backend; STARTED, RECEIVED from the workers) and the source. The lifecycle "
    "counters moved with them at repair time.",
    ("state", "source"), "", "result backend, inspect query_task (exporter repairer)",
    read=_field("repairs"),
)
REPAIR_UNRESOLVED = MetricSpec(
    "jobmon_repair_unresolved_tasks", "gauge",
    "Tasks left in progress by lost events whose outcome no source knows: the model says a "
    "worker had them but none holds them and the result backend has no outcome (or there is no "
    "result backend). Their counters and history rows stay as the events left them.",
    (), "", "exporter repairer", read=_scalar("repair_unresolved"),
)
REPAIR_PENDING = MetricSpec(
    "jobmon_repair_pending_tasks", "gauge",
    "Tasks the repairer still has to check (or check again) after lost events.",
    (), "", "exporter repairer", read=_scalar("repair_pending"),
)
REPAIR_SOURCE_ERRORS = MetricSpec(
    "jobmon_repair_source_errors_total", "counter",
    "Failed calls to a repair source (result_backend, workers); the source is asked again "
    "after a backoff.",
    ("source",), "", "exporter repairer", read=_by_key("repair_errors"),
)
BUILD_INFO = MetricSpec(
    "jobmon_build", "info", "Versions of celery-jobmon, Celery and Python.",
    ("version", "celery_version", "python_version"), "", "exporter",
    read=lambda snapshot, now: {
        tuple(snapshot.build[key] for key in ("version", "celery_version", "python_version")):
        1.0},
)
UI_INFO = MetricSpec(
    "jobmon_ui", "info",
    "Where the job browser is reached (--external-url): alerts and dashboards link to its "
    "pages with it; absent when not set.",
    ("external_url",), "", "exporter",
    read=lambda snapshot, now: None if snapshot.external_url is None
    else {(snapshot.external_url,): 1.0},
)

#: Families read from the model's snapshot (task events), in exposition order.
MODEL: tuple[MetricSpec, ...] = (
    *LIFECYCLE.values(), TASK_EXCEPTIONS, TASK_RUNTIME, TASK_QUEUE_WAIT, TASK_RUNNING, TASK_LOST,
    WORKER_UP, WORKER_TASKS_ACTIVE, WORKER_LAST_HEARTBEAT, WORKER_PROCESSED, WORKER_CLOCK_OFFSET,
    WORKER_MISSED_TASK_EVENTS, WORKER_SILENT,
    EVENTS_RECEIVED, EVENTS_MALFORMED, LAST_EVENT, EVENT_LAG, TASKS_IN_MEMORY,
    TASK_INDEX_EVICTIONS, TASK_NAMES_FOLDED,
)
#: Families read from the exporter's health snapshot, in exposition order.
HEALTH: tuple[MetricSpec, ...] = (
    BROKER_CONNECTED, BROKER_RECONNECTS, EVENT_GAPS, EVENT_BATCHES, EVENT_PROCESSING,
    POLL_ERRORS, REPAIRS, REPAIR_UNRESOLVED, REPAIR_PENDING, REPAIR_SOURCE_ERRORS, BUILD_INFO,
    UI_INFO,
)

# -- from the poller (inspect broadcasts, broker queue reads) -----------------------------------

QUEUE_LENGTH = MetricSpec(
    "queue_length", "gauge",
    "Messages waiting in a broker queue. Redis: LLEN of each priority sub-list, priority = the "
    "kombu priority step (0, 3, 6, 9 by default); RabbitMQ: message_count of a passive "
    "queue.declare (ready messages), priority=\"\" (no per-priority breakdown). Messages "
    "prefetched by workers are not here (see task_reserved / task_scheduled). A queue is shown "
    "while given with --queue, consumed, or holding messages (found from Redis bindings, the "
    "RabbitMQ management API or task-sent routing); an empty queue nobody consumes goes "
    "after --queue-forget-after.",
    ("queue_name", "priority"), "", "Redis LLEN, AMQP queue.declare(passive=True)",
    read=lambda snapshot, now: {(q.name, priority): n for q in snapshot.queues
                                for priority, n in q.lengths.items()},
)
QUEUE_CONSUMERS = MetricSpec(
    "queue_consumers", "gauge",
    "Consumers of a queue. RabbitMQ: consumer_count of a passive queue.declare; Redis (which "
    "cannot tell): workers whose `inspect active_queues` reply lists the queue. "
    "consumers == 0 while length > 0: messages wait and nobody takes them.",
    ("queue_name",), "", "AMQP queue.declare(passive=True), inspect active_queues",
    read=lambda snapshot, now: {(q.name,): q.consumers for q in snapshot.queues
                                if q.consumers is not None},
)
QUEUE_OLDEST_MESSAGE_AGE = MetricSpec(
    "queue_oldest_message_age_seconds", "gauge",
    "Age of the oldest waiting message (Redis only): now minus its `task-sent` time (or ETA, "
    "whichever is later), for the oldest message of each priority sub-list, the largest. Absent "
    "when the send time of those messages is unknown (no task-sent event seen).",
    ("queue_name",), "seconds", "Redis LRANGE (message headers) + task-sent events",
    read=lambda snapshot, now: {(q.name,): max(0.0, now - q.waiting_since)
                                for q in snapshot.queues if q.waiting_since is not None},
)
TASK_RESERVED = MetricSpec(
    "task_reserved", "gauge",
    "Tasks prefetched by workers and not started (`inspect reserved`), all workers together.",
    TASK, "", "inspect reserved", read=_field("reserved"),
)
TASK_SCHEDULED = MetricSpec(
    "task_scheduled", "gauge",
    "Tasks held by workers until their ETA/countdown (`inspect scheduled`), all workers.",
    TASK, "", "inspect scheduled", read=_field("scheduled"),
)
TASK_SCHEDULED_EARLIEST_ETA = MetricSpec(
    "task_scheduled_earliest_eta_timestamp_seconds", "gauge",
    "Earliest ETA among the scheduled tasks of this name, seconds since the epoch.",
    ("name",), "seconds", "inspect scheduled (eta)", read=_by_key("earliest_eta"),
)
TASK_OLDEST_RUNNING = MetricSpec(
    "task_oldest_running_seconds", "gauge",
    "Exporter clock at scrape minus `time_start` (worker clock) of the oldest running task of "
    "this name (stuck jobs).",
    ("name",), "seconds", "inspect active (time_start)",
    read=lambda snapshot, now: {(name,): max(0.0, now - start)
                                for name, start in snapshot.oldest_running_start.items()},
)
WORKER_POOL_SIZE = MetricSpec(
    "worker_pool_size", "gauge",
    "Pool size of the worker: `pool.max-concurrency` of `inspect stats` (else the number of "
    "pool processes).",
    ("hostname",), "", "inspect stats (pool)", read=_per_worker("pool_size"),
)
WORKER_CPU_USER = MetricSpec(
    "worker_cpu_user_seconds_total", "counter",
    "User CPU time of the worker's main process (`rusage.utime`; pool children not included).",
    ("hostname",), "seconds", "inspect stats (rusage)", read=_per_worker("cpu_user"),
)
WORKER_CPU_SYSTEM = MetricSpec(
    "worker_cpu_system_seconds_total", "counter",
    "System CPU time of the worker's main process (`rusage.stime`).",
    ("hostname",), "seconds", "inspect stats (rusage)", read=_per_worker("cpu_system"),
)
WORKER_MAX_RSS = MetricSpec(
    "worker_max_rss_bytes", "gauge",
    "Peak resident set size of the worker's main process (`rusage.maxrss`, kilobytes on Linux, "
    "converted to bytes).",
    ("hostname",), "bytes", "inspect stats (rusage)", read=_per_worker("max_rss_bytes"),
)
INSPECT_TIMEOUTS = MetricSpec(
    "inspect_timeouts_total", "counter",
    "Poll rounds in which a worker that answered before did not answer one of the inspect "
    "calls in time; its previous values are kept for one round.",
    ("hostname",), "", "inspect (missing replies)", read=_by_key("inspect_timeouts"),
)
POLL_AGE = MetricSpec(
    "jobmon_poll_age_seconds", "gauge",
    "Seconds since the poller's last completed round (inspect + queue lengths).",
    (), "seconds", "exporter",
    read=lambda snapshot, now: {(): max(0.0, now - snapshot.taken_at)},
)
QUEUE_LENGTHS_AGE = MetricSpec(
    "jobmon_queue_lengths_age_seconds", "gauge",
    "Seconds since the queue series (queue_length, queue_consumers, "
    "queue_oldest_message_age_seconds) were read from the broker. While the broker does not "
    "answer they keep their last values and this grows (stale, not dropped); absent when the "
    "broker's queues cannot be read at all.",
    (), "seconds", "exporter",
    read=lambda snapshot, now: None if snapshot.queues_read_at is None
    else {(): max(0.0, now - snapshot.queues_read_at)},
)
REDIS_OTHER_KEYPREFIXES = MetricSpec(
    "jobmon_redis_other_keyprefixes", "gauge",
    "Number of other global_keyprefix values under which Redis holds kombu queue bindings "
    "(workers configured with a prefix the exporter was not given: their queues read 0 and "
    "their events never arrive; /readyz names the prefixes). Redis only, checked at queue "
    "discovery (every minute).",
    (), "", "Redis SCAN of *_kombu.binding.*",
    read=lambda snapshot, now: None if snapshot.other_keyprefixes is None
    else {(): float(len(snapshot.other_keyprefixes))},
)
POLL_DURATION = MetricSpec(
    "jobmon_poll_duration_seconds", "gauge",
    "How long the poller's last round took (all broadcasts and queue reads).",
    (), "seconds", "exporter", read=_scalar("duration"),
)
#: Families read from the poller's latest snapshot, in exposition order.
POLL: tuple[MetricSpec, ...] = (
    QUEUE_LENGTH, QUEUE_CONSUMERS, QUEUE_OLDEST_MESSAGE_AGE, TASK_RESERVED, TASK_SCHEDULED,
    TASK_SCHEDULED_EARLIEST_ETA, TASK_OLDEST_RUNNING, WORKER_POOL_SIZE, WORKER_CPU_USER,
    WORKER_CPU_SYSTEM, WORKER_MAX_RSS, INSPECT_TIMEOUTS, POLL_AGE, QUEUE_LENGTHS_AGE,
    REDIS_OTHER_KEYPREFIXES, POLL_DURATION,
)

# -- the history writer (rendered by exporter.metrics.history_collector.HistoryCollector)

HISTORY_ENABLED = MetricSpec(
    "jobmon_history_enabled", "gauge",
    "1 when the SQL history is written; 0 when it is off or could not be opened at start.",
    (), "", "exporter", read=lambda stats, now: {(): float(stats is not None)},
)
HISTORY_ROWS_WRITTEN = MetricSpec(
    "jobmon_history_rows_written_total", "counter", "History rows inserted or changed.",
    (), "", "history writer", read=_scalar("rows_written"),
)
HISTORY_WRITE_ERRORS = MetricSpec(
    "jobmon_history_write_errors_total", "counter",
    "Failed history batch writes (each retry counts); rows are kept and retried with backoff.",
    (), "", "history writer", read=_scalar("write_errors"),
)
HISTORY_QUEUE_DEPTH = MetricSpec(
    "jobmon_history_queue_depth", "gauge", "Events waiting in the history writer's queue.",
    (), "", "history writer", read=_scalar("queue_depth"),
)
HISTORY_PENDING_ROWS = MetricSpec(
    "jobmon_history_pending_rows", "gauge", "Merged history rows not written yet.",
    (), "", "history writer", read=_scalar("pending_rows"),
)
HISTORY_DROPPED = MetricSpec(
    "jobmon_history_dropped_total", "counter",
    "Events or rows the history could not keep, by reason (queue full: successes first, "
    "failures last; invalid; rejected by the database; stopped; held by a writer process "
    "that exited).",
    ("reason",), "", "history writer", read=_by_key("dropped"),
)
HISTORY_LAST_WRITE = MetricSpec(
    "jobmon_history_last_write_timestamp_seconds", "gauge",
    "Exporter clock time of the last committed history batch, seconds since the epoch.",
    (), "seconds", "history writer", read=_scalar("last_write_ts"),
)
HISTORY_CONSECUTIVE_FAILURES = MetricSpec(
    "jobmon_history_consecutive_write_failures", "gauge",
    "Failed history write attempts since the last success, or history writer processes "
    "that exited in a row (0: healthy).",
    (), "", "history writer", read=_scalar("consecutive_failures"),
)
HISTORY_ROWS_PRUNED = MetricSpec(
    "jobmon_history_rows_pruned_total", "counter",
    "History rows deleted by retention (--history-retention, --history-max-rows).",
    (), "", "history writer", read=_scalar("rows_pruned"),
)
HISTORY_PRUNE_ERRORS = MetricSpec(
    "jobmon_history_prune_errors_total", "counter", "Failed periodic retention runs.",
    (), "", "history writer", read=_scalar("prune_errors"),
)
#: Families read from the history writer's stats, in exposition order.
HISTORY: tuple[MetricSpec, ...] = (
    HISTORY_ENABLED, HISTORY_ROWS_WRITTEN, HISTORY_WRITE_ERRORS, HISTORY_QUEUE_DEPTH,
    HISTORY_PENDING_ROWS, HISTORY_DROPPED, HISTORY_LAST_WRITE, HISTORY_CONSECUTIVE_FAILURES,
    HISTORY_ROWS_PRUNED, HISTORY_PRUNE_ERRORS,
)

# -- periodic entries (rendered by exporter.metrics.collectors.PeriodicCollector) ---------------

ENTRY = ("entry", "task")


def _per_entry(attribute: str) -> Reader:
    """``attribute`` of each entry of a :class:`~exporter.periodic.tracker.PeriodicSnapshot` as
    ``{(entry, task): value}``, entries for which it is ``None`` left out.
    """
    return lambda snapshot, now: {(e.entry, e.task): float(v) for e in snapshot.entries
                                  if (v := getattr(e, attribute)) is not None}


#: The states a periodic entry's last outcome is one of (Celery's terminal states).
PERIODIC_OUTCOMES = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST")

PERIODIC_NEXT_RUN = MetricSpec(
    "periodic_task_next_run_timestamp_seconds", "gauge",
    "When the entry's next run is due by its schedule (Celery's schedule classes), after the "
    "newest run the history knows; in the past: late.",
    ENTRY, "seconds", "schedule source + history", read=_per_entry("next_run"),
)
PERIODIC_LAST_SENT = MetricSpec(
    "periodic_task_last_sent_timestamp_seconds", "gauge",
    "When the entry's newest run was sent (task-sent, else task-received), from the history.",
    ENTRY, "seconds", "history", read=_per_entry("last_sent"),
)
PERIODIC_LAST_STARTED = MetricSpec(
    "periodic_task_last_started_timestamp_seconds", "gauge",
    "When a run of the entry last started (task-started), from the history.",
    ENTRY, "seconds", "history", read=_per_entry("last_started"),
)
PERIODIC_LAST_SUCCEEDED = MetricSpec(
    "periodic_task_last_succeeded_timestamp_seconds", "gauge",
    "When a run of the entry last succeeded (task-succeeded), from the history.",
    ENTRY, "seconds", "history", read=_per_entry("last_succeeded"),
)
PERIODIC_MISSED = MetricSpec(
    "periodic_task_missed_runs_total", "counter",
    "Runs due by the entry's schedule that were not sent within --periodic-grace, counted "
    "since the exporter started.",
    ENTRY, "", "schedule source + history", read=_per_entry("missed"),
)
PERIODIC_LAST_OUTCOME = MetricSpec(
    "periodic_task_last_outcome", "gauge",
    "1 for the state the entry's newest finished run ended in, 0 for the other terminal "
    "states; absent before any run finished.",
    (*ENTRY, "state"), "", "history",
    read=lambda snapshot, now: {(e.entry, e.task, state): float(state == e.last_outcome)
                                for e in snapshot.entries if e.last_outcome is not None
                                for state in PERIODIC_OUTCOMES},
)
PERIODIC_SOURCE_UP = MetricSpec(
    "jobmon_periodic_source_up", "gauge",
    "1 when the schedule source (app, redbeat, django, expect) was read at the last periodic "
    "check; 0: its entries are those read last.",
    ("source",), "", "exporter",
    read=lambda snapshot, now: {(name,): float(up) for name, up in snapshot.sources.items()},
)
PERIODIC_LAST_CHECK = MetricSpec(
    "jobmon_periodic_last_check_timestamp_seconds", "gauge",
    "When the periodic tracker last read the schedule and the history (the time its counts "
    "are judged at), seconds since the epoch.",
    (), "seconds", "exporter", read=lambda snapshot, now: {(): snapshot.taken_at},
)
#: Families read from the periodic tracker's latest snapshot, in exposition order.
PERIODIC: tuple[MetricSpec, ...] = (
    PERIODIC_NEXT_RUN, PERIODIC_LAST_SENT, PERIODIC_LAST_STARTED, PERIODIC_LAST_SUCCEEDED,
    PERIODIC_MISSED, PERIODIC_LAST_OUTCOME, PERIODIC_SOURCE_UP, PERIODIC_LAST_CHECK,
)

# -- workflows (rendered from exporter.state.workflows.WorkflowSnapshot) ------------------------

WORKFLOWS_IN_PROGRESS = MetricSpec(
    "workflows_in_progress", "gauge",
    "Workflows (roots with two or more tasks in memory: chains, chords, tasks that sent "
    "others) with a task not ended yet.",
    (), "", "task events (root_id, parent_id)",
    read=lambda snapshot, now: {(): snapshot.in_progress},
)
CHORDS_STUCK = MetricSpec(
    "chords_stuck", "gauge",
    "Tasks waiting longer than --chord-stuck-after behind a predecessor that ended (a chord's "
    "callback after its header, a chain's next step: the events cannot tell them apart), by "
    "the waiting task's name.",
    ("name",), "", "task events (parent_id, task-started)", read=_field("stuck"),
)
CHORD_UNLOCK_RETRIES = MetricSpec(
    "chord_unlock_retries_total", "counter",
    "task-retried of celery.chord_unlock (it polls a chord's header about once a second until "
    "the header is ready), by the chord callback's name.",
    ("name",), "", "task-retried", read=_field("chord_unlock_retries"),
)
WORKFLOW_STEPS = MetricSpec(
    "jobmon_workflow_tasks_in_memory", "gauge",
    "Tasks the workflow tracker holds (bounded, least recently seen forgotten first).",
    (), "", "exporter", read=lambda snapshot, now: {(): snapshot.steps_in_memory},
)
WORKFLOW_EVICTIONS = MetricSpec(
    "jobmon_workflow_task_evictions_total", "counter",
    "Tasks the workflow tracker forgot to stay within its bound.",
    (), "", "exporter", read=lambda snapshot, now: {(): snapshot.evictions},
)
#: Families read from the workflow tracker's snapshot, in exposition order.
WORKFLOWS: tuple[MetricSpec, ...] = (
    WORKFLOWS_IN_PROGRESS, CHORDS_STUCK, CHORD_UNLOCK_RETRIES, WORKFLOW_STEPS,
    WORKFLOW_EVICTIONS,
)

# -- each source of /metrics at this scrape (node_exporter's node_scrape_collector_*) ----------

SCRAPE_SUCCESS = MetricSpec(
    "jobmon_scrape_collector_success", "gauge",
    "1 when the source (model, health, poll, history, periodic, workflows) rendered its "
    "families at this "
    "scrape; 0 when it failed: its families are missing from this scrape and the exporter log "
    "says why.",
    ("collector",), "", "exporter",
    read=lambda report, now: {(name,): float(ok) for name, (ok, _) in report.items()},
)
SCRAPE_DURATION = MetricSpec(
    "jobmon_scrape_collector_duration_seconds", "gauge",
    "Time the source took to render its families at this scrape.",
    ("collector",), "seconds", "exporter",
    read=lambda report, now: {(name,): seconds for name, (_, seconds) in report.items()},
)
#: Families of the scrape report (``{collector: (success, seconds)}``), in exposition order.
SCRAPE: tuple[MetricSpec, ...] = (SCRAPE_SUCCESS, SCRAPE_DURATION)

#: Every family, in exposition order.
CATALOGUE: tuple[MetricSpec, ...] = (*MODEL, *HEALTH, *POLL, *HISTORY, *PERIODIC, *WORKFLOWS,
                                     *SCRAPE)
#: Every label name the catalogue's families use.
LABEL_NAMES: frozenset[str] = frozenset(label for spec in CATALOGUE for label in spec.labels)

#: Families that take a ``hostname`` label (after ``queue_name``) with
#: ``--task-hostname-label``: the task series built from events of the worker (not
#: ``task_sent_total``: the producer sends it before any worker has the task).
HOSTNAME_LABELED: tuple[MetricSpec, ...] = (
    *(spec for spec in LIFECYCLE.values() if spec is not TASK_SENT), TASK_RUNTIME,
    TASK_QUEUE_WAIT, TASK_RUNNING, TASK_LOST,
)


def with_hostname(spec: MetricSpec) -> MetricSpec:
    """``spec`` with ``hostname`` inserted after ``queue_name`` in its labels
    (``(name, queue_name, state)`` → ``(name, queue_name, hostname, state)``).
    """
    at = spec.labels.index("queue_name") + 1
    return replace(spec, labels=(*spec.labels[:at], "hostname", *spec.labels[at:]))
