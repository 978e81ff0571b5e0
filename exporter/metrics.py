"""The catalogue: every metric family celery-jobmon exposes, in one place.

Names are given without the configurable prefix (``celery_`` by default); the collectors add it
once at start-up. A unit test checks every entry against Prometheus naming rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram", "info"]

TASK = ("name", "queue_name")


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: name (without prefix, counters end in ``_total``), type, labels.

    ``unit`` is the base unit in the name (``seconds``) or ``""``; ``source`` says where values
    come from (Celery event type, broker call, or the exporter itself).
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    unit: str
    source: str


def _lifecycle(event: str, verb: str) -> MetricSpec:
    return MetricSpec(
        f"task_{verb}_total", "counter", f"Tasks {verb}, counted from `{event}` events.",
        TASK, "", event,
    )


TASK_SENT = _lifecycle("task-sent", "sent")
TASK_RECEIVED = _lifecycle("task-received", "received")
TASK_STARTED = _lifecycle("task-started", "started")
TASK_SUCCEEDED = _lifecycle("task-succeeded", "succeeded")
TASK_FAILED = _lifecycle("task-failed", "failed")
TASK_RETRIED = _lifecycle("task-retried", "retried")
TASK_REVOKED = _lifecycle("task-revoked", "revoked")
TASK_REJECTED = _lifecycle("task-rejected", "rejected")
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
}

TASK_EXCEPTIONS = MetricSpec(
    "task_exceptions_total", "counter",
    "Failed tasks by exception class (the class name in the `exception` field of `task-failed`).",
    ("name", "exception"), "", "task-failed",
)
TASK_RUNTIME = MetricSpec(
    "task_runtime_seconds", "histogram",
    "Task run time: `runtime` of `task-succeeded` (state=SUCCESS); `task-failed` timestamp minus "
    "`task-started` timestamp (state=FAILURE).",
    ("name", "queue_name", "state"), "seconds", "task-succeeded, task-failed",
)
TASK_QUEUE_WAIT = MetricSpec(
    "task_queue_wait_seconds", "histogram",
    "Time from `task-sent` (or `task-received` when producers send no task-sent) or the ETA, "
    "whichever is later, to `task-started`; clamped at 0.",
    TASK, "seconds", "task-sent, task-received, task-started",
)
TASK_RUNNING = MetricSpec(
    "task_running", "gauge",
    "Tasks started and not finished yet, as seen in the events (task-started minus terminal "
    "events).",
    TASK, "", "task-started, task-succeeded/failed/retried/revoked/rejected",
)
WORKER_UP = MetricSpec(
    "worker_up", "gauge",
    "1 while the worker sends heartbeats, 0 after `worker-offline` or the worker timeout; the 0 "
    "stays for the worker retention.",
    ("hostname",), "", "worker-online, worker-heartbeat, worker-offline",
)
WORKER_TASKS_ACTIVE = MetricSpec(
    "worker_tasks_active", "gauge", "Tasks the worker is running (`active` of its heartbeat).",
    ("hostname",), "", "worker-heartbeat",
)
WORKER_LAST_HEARTBEAT = MetricSpec(
    "worker_last_heartbeat_timestamp_seconds", "gauge",
    "Worker clock time (`timestamp`) of the worker's last event, seconds since the epoch.",
    ("hostname",), "seconds", "worker-*",
)
WORKER_PROCESSED = MetricSpec(
    "worker_processed_total", "counter",
    "Tasks the worker processed since it started (`processed` of its heartbeat).",
    ("hostname",), "", "worker-heartbeat",
)

EVENTS_RECEIVED = MetricSpec(
    "jobmon_events_received_total", "counter", "Celery events received, by event type.",
    ("type",), "", "exporter",
)
EVENTS_MALFORMED = MetricSpec(
    "jobmon_events_malformed_total", "counter",
    "Events skipped because they could not be decoded or lacked required fields, by reason.",
    ("reason",), "", "exporter",
)
LAST_EVENT = MetricSpec(
    "jobmon_last_event_timestamp_seconds", "gauge",
    "Exporter clock time at which the last event was received, seconds since the epoch.",
    (), "seconds", "exporter",
)
BROKER_CONNECTED = MetricSpec(
    "jobmon_broker_connected", "gauge", "1 while the event consumer is connected to the broker.",
    (), "", "exporter",
)
BROKER_RECONNECTS = MetricSpec(
    "jobmon_broker_reconnects_total", "counter",
    "Times the event consumer connected to the broker again after losing the connection.",
    (), "", "exporter",
)
TASKS_IN_MEMORY = MetricSpec(
    "jobmon_tasks_in_memory", "gauge", "Tasks held in the in-memory task index.",
    (), "", "exporter",
)
TASK_INDEX_EVICTIONS = MetricSpec(
    "jobmon_task_index_evictions_total", "counter",
    "Tasks evicted from the task index because it reached --max-tasks-in-memory.",
    (), "", "exporter",
)
TASK_NAMES_FOLDED = MetricSpec(
    "jobmon_task_names_folded_total", "counter",
    "Distinct task names folded into name=\"other\" because --max-task-names was reached.",
    (), "", "exporter",
)
POLL_ERRORS = MetricSpec(
    "jobmon_poll_errors_total", "counter",
    "Failed broadcasts to workers (enable_events, inspect), by call.",
    ("call",), "", "exporter",
)
BUILD_INFO = MetricSpec(
    "jobmon_build", "info", "Versions of celery-jobmon, Celery and Python.",
    ("version", "celery_version", "python_version"), "", "exporter",
)

#: Every family, in exposition order.
CATALOGUE: tuple[MetricSpec, ...] = (
    *LIFECYCLE.values(), TASK_EXCEPTIONS, TASK_RUNTIME, TASK_QUEUE_WAIT, TASK_RUNNING,
    WORKER_UP, WORKER_TASKS_ACTIVE, WORKER_LAST_HEARTBEAT, WORKER_PROCESSED,
    EVENTS_RECEIVED, EVENTS_MALFORMED, LAST_EVENT, BROKER_CONNECTED, BROKER_RECONNECTS,
    TASKS_IN_MEMORY, TASK_INDEX_EVICTIONS, TASK_NAMES_FOLDED, POLL_ERRORS, BUILD_INFO,
)
