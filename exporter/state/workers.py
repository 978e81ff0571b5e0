"""Worker liveness from ``worker-*`` events: up, timed out, gone.

A worker is up while its last ``worker-online``/``worker-heartbeat`` — or, once it has sent
one, its last task event (:meth:`WorkerTable.note_task_event`) — arrived (exporter clock,
``local_received``) less than ``timeout`` seconds ago and it did not send ``worker-offline``.
After that it is reported down (``up`` 0) until ``retention`` seconds after it was last seen,
then forgotten, so a "worker down" alert has a long time to fire and see the 0.

A worker is *down since* its ``worker-offline`` arrived, or since ``timeout`` seconds after its
last event. :meth:`WorkerTable.gone` reports each worker once when it has been down for longer
than a grace period (the model then marks the tasks it was running as lost); a worker that
sends an event again is up and may be reported again later.

Each worker's clock offset as the exporter sees it is positive when the worker's clock is behind
the exporter's. Each ``worker-*`` event gives a sample: exporter clock at receipt minus the
event's ``timestamp`` (the worker's clock), that is the offset plus the event's transport delay —
milliseconds on a healthy broker, seconds for events read late (the exporter paused, or working
through a burst). The delay is never negative, so the lowest of the worker's latest
:data:`OFFSET_SAMPLES` samples is the offset with the least delay in it (the filter NTP uses):
a backlog shorter than that window leaves the figure alone, where a moving average followed
it; a clock stepped back shows once the window holds only later samples, one stepped forward at
once (a worker restarted as a new process starts a new window). Beyond ``offset_warning``
seconds either way for :data:`OFFSET_WARNING_AFTER` seconds of
the exporter's clock, a warning is logged: a backlog read back in a burst (every sample of it
received within a moment) passes before it would be; a clock offset lasts. Then again every
:data:`OFFSET_WARNING_INTERVAL` seconds while it lasts, or at once when the offset has moved by
more than ``offset_warning`` since the last warning (a clock stepped, a restart with another).

Missed events: a worker's heartbeat carries ``processed``, the number of tasks it accepted since
its process started — Celery counts a task there exactly when it sends its ``task-started``
(``Request.on_accepted``). From a worker's first heartbeat on (the baseline), the increase of
``processed`` minus the ``task-started`` events the exporter saw from it is the number of its
``task-started`` events that never arrived (a consumer gap, a Redis subscriber cut off, a
RabbitMQ message expired). A heartbeat can overtake a ``task-started`` sent just before it, so
only the shortfall already there at the previous heartbeat is counted (events later than a
heartbeat interval are missed); a ``processed`` lower than before is a worker restart: a new
baseline. Counted once: the total only grows.

Restarts: a worker killed and started again under the same name (systemd ``Restart=``, a pod
restarted with a fixed ``-n``) within the timeout never looks down, so the tasks its previous
process was running would stay running for ever. Its new process sends ``worker-online`` with
``processed`` 0 — it has started no task — so every task the model still sees running under that
name was another process's: :meth:`WorkerTable.take_restarts` reports the worker, and the model
marks them lost at once. A ``worker-online`` after a broker reconnection (Celery sends one) comes
from the process that started those tasks, with ``processed`` above 0: nothing is marked. Two
live workers sharing a name (Celery warns: ``DuplicateNodenameWarning``) defeat this, as they
defeat every per-worker figure.

Silent solo workers: Celery's solo pool runs a task in the worker's only thread, so while it
runs the worker sends nothing at all — no heartbeat, and even that task's ``task-received`` and
``task-started`` wait in its buffer until the task ends — and answers no inspect call. Busy and
dead look the same from outside. A worker the poller knows runs the solo pool
(:meth:`WorkerTable.set_pools`) is therefore *silent* rather than down while it has been quiet
for more than ``timeout`` but less than ``solo_timeout`` (``--solo-busy-timeout``: set it to the
longest time limit of its tasks): ``worker_up`` stays 1, ``worker_silent`` says 1, and its tasks
are not lost yet. Beyond ``solo_timeout`` it is down like any other.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
#: How many of a worker's latest ``worker-*`` events its clock offset is the lowest sample of:
#: about 30 s of Celery's heartbeats (one every 2 s). The help of the metric (exporter.metrics.
#: catalogue) and the README say 16.
OFFSET_SAMPLES = 16
#: Seconds (exporter clock) a worker's offset must stay beyond the threshold before a warning.
OFFSET_WARNING_AFTER = 5.0
#: Seconds (exporter clock) between two clock-offset warnings about one worker, unless its
#: offset moved by more than the threshold since the last one.
OFFSET_WARNING_INTERVAL = 600.0


@dataclass(slots=True)
class _WorkerRecord:
    last_seen: float
    last_timestamp: float
    offline: bool = False
    active: int | None = None
    processed: int | None = None
    gone_reported: bool = False
    offset_samples: deque[float] = field(default_factory=lambda: deque(maxlen=OFFSET_SAMPLES))
    #: Since when (exporter clock) the offset is beyond the threshold; the last warning's time
    #: and offset.
    offset_beyond_since: float | None = None
    offset_warned: tuple[float, float] | None = None
    #: False for a worker only expected (:meth:`WorkerTable.expect`), not heard from yet.
    heard: bool = True
    #: ``processed`` at the baseline (first heartbeat, or the worker's restart), and the
    #: ``task-started`` events seen from it since; the shortfall at the previous heartbeat.
    processed_base: int | None = None
    processed_last: int = 0
    started_seen: int = 0
    shortfall: int = 0
    #: Celery pool name from ``inspect stats`` (``solo``, ``prefork``, …), ``None``: unknown.
    pool: str | None = None
    #: Missed ``task-started`` events counted for earlier baselines, and for this one.
    missed_before: int = 0
    missed: int = 0


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One worker as rendered: ``hostname`` (``worker@host``), ``up`` (bool), ``active`` and
    ``processed`` from its last heartbeat (``None`` before the first heartbeat),
    ``last_heartbeat`` (worker clock ``timestamp`` of its last event, seconds since the epoch),
    ``clock_offset`` (seconds the worker's clock is behind the exporter's: the lowest of its
    latest samples, see the module docs),
    ``missed_task_events`` (its ``task-started`` events that never arrived) and ``silent`` (a
    solo worker quiet past the timeout, still counted up); see the module docs.
    """

    hostname: str
    up: bool
    active: int | None
    processed: int | None
    last_heartbeat: float
    clock_offset: float | None = None
    missed_task_events: int = 0
    silent: bool = False


class WorkerTable:
    """Workers by hostname. Not thread-safe: the model holds its lock while it uses the table."""

    def __init__(self, timeout: float, retention: float,
                 offset_warning: float = float("inf"), solo_timeout: float | None = None) -> None:
        self.timeout = timeout
        # Never longer than the retention: a worker is forgotten then.
        self.solo_timeout = timeout if solo_timeout is None else min(
            max(timeout, solo_timeout), retention)
        self.retention = retention
        self.offset_warning = offset_warning
        self._workers: dict[str, _WorkerRecord] = {}
        self._restarts: list[tuple[str, float]] = []

    def update(self, event_type: str, event: dict, now: float) -> int:
        """Apply a checked ``worker-*`` event received at ``now`` (exporter clock, seconds);
        return how many missed ``task-started`` events it confirmed (0 mostly: see the module
        docs), so the model can have that worker's tasks checked.

        The clock offset takes the event's ``original_timestamp`` when the model replaced an
        implausible ``timestamp`` by the receipt time (the real offset, not 0).
        """
        hostname = event["hostname"]
        record = self._workers.get(hostname)
        if record is None:
            record = self._workers[hostname] = _WorkerRecord(now, event["timestamp"])
        elif event_type == "worker-online" and event.get("processed") == 0:
            # A process that has started no task yet, under a name known before: what ran
            # there was another process's (see the module docs: restarts), and so were the
            # clock samples (it may run on another host).
            self._restarts.append((hostname, record.last_timestamp))
            record.offset_samples.clear()
        record.last_seen = now
        record.last_timestamp = event["timestamp"]
        record.heard = True
        record.offset_samples.append(now - event.get("original_timestamp", event["timestamp"]))
        self._check_offset(hostname, record, now)
        record.offline = event_type == "worker-offline"
        record.gone_reported = False
        if event.get("active") is not None:
            record.active = event["active"]
        processed = event.get("processed")
        if processed is None:
            return 0
        record.processed = processed
        return self._count_missed(record, processed)

    def note_task_event(self, hostname: str, now: float) -> None:
        """A task event from worker ``hostname`` (any but ``task-sent``, the producer's)
        arrived at ``now`` (exporter clock): like Celery's own ``events.State``, take it as a
        sign of life. A worker that sends task events but no heartbeats — Celery workers can
        stop heartbeating after a broker restart while they keep working — stays up instead
        of being reported down with its running tasks lost. Only a worker heard from before
        (a ``worker-*`` event) and not offline is refreshed: one that never heartbeats
        (``--without-heartbeat``) would otherwise show up while busy and down when idle.
        ``last_heartbeat`` keeps the time of its last ``worker-*`` event.
        """
        record = self._workers.get(hostname)
        if record is not None and record.heard and not record.offline and now > record.last_seen:
            record.last_seen = now
            record.gone_reported = False

    def take_restarts(self) -> list[tuple[str, float]]:
        """Workers that came online as a new process under a known name since the last call,
        as ``(hostname, timestamp of the previous process's last event)`` (worker clock; 0 for
        a worker only expected); see the module docs.
        """
        restarts, self._restarts = self._restarts, []
        return restarts

    def set_pools(self, pools: Mapping[str, str]) -> None:
        """Record each known worker's pool (``{hostname: pool}``, from ``inspect stats``)."""
        for hostname, pool in pools.items():
            record = self._workers.get(hostname)
            if record is not None:
                record.pool = pool

    def _timeout(self, record: _WorkerRecord) -> float:
        """Seconds of silence after which the worker is down (longer for a solo pool)."""
        return self.solo_timeout if record.pool == "solo" else self.timeout

    def count_started(self, hostname: str) -> None:
        """Count a ``task-started`` event from ``hostname`` (see the module docs: missed
        events); before the worker's first heartbeat there is no baseline to count against.
        """
        record = self._workers.get(hostname)
        if record is not None and record.processed_base is not None:
            record.started_seen += 1

    @staticmethod
    def _count_missed(record: _WorkerRecord, processed: int) -> int:
        """Update the missed count from a heartbeat's ``processed``; return its increase."""
        newly = 0
        if record.processed_base is None or processed < record.processed_last:
            # First heartbeat, or the worker restarted (its count starts again): new baseline.
            record.missed_before += record.missed
            record.processed_base, record.started_seen = processed, 0
            record.shortfall = record.missed = 0
        else:
            shortfall = processed - record.processed_base - record.started_seen
            confirmed = min(shortfall, record.shortfall)
            if confirmed > record.missed:
                newly = confirmed - record.missed
                record.missed = confirmed
            record.shortfall = shortfall
        record.processed_last = processed
        return newly

    def expect(self, hostname: str, now: float) -> None:
        """Expect an event from ``hostname`` from ``now`` on (exporter clock): a worker the
        history says was running a task when the exporter started. It is not rendered until
        it speaks; if it never does, :meth:`gone` reports it like a worker that stopped at
        ``now`` (with 0 as its last timestamp: the tasks' own times stamp their loss).
        """
        if hostname not in self._workers:
            self._workers[hostname] = _WorkerRecord(now, 0.0, heard=False)

    def gone(self, now: float, grace: float) -> list[tuple[str, float]]:
        """Workers down for more than ``grace`` seconds at ``now`` and not reported yet, as
        ``(hostname, timestamp of its last event)`` (worker clock); each is reported once per
        disappearance.
        """
        found = []
        for hostname, record in self._workers.items():
            if record.gone_reported:
                continue
            down_since = record.last_seen if record.offline else (
                record.last_seen + self._timeout(record))
            if now - down_since > grace:
                record.gone_reported = True
                found.append((hostname, record.last_timestamp))
        return found

    def states(self, now: float) -> list[WorkerState]:
        """Render every worker at ``now``; forget those last seen more than ``retention`` ago."""
        expired = [h for h, r in self._workers.items() if now - r.last_seen > self.retention]
        for hostname in expired:
            del self._workers[hostname]
        states = []
        for hostname, record in self._workers.items():
            if not record.heard:
                continue
            quiet = now - record.last_seen
            up = not record.offline and quiet <= self._timeout(record)
            states.append(WorkerState(
                hostname=hostname,
                up=up,
                # A worker that is gone runs nothing, whatever its last heartbeat said.
                active=record.active if up else 0,
                processed=record.processed,
                last_heartbeat=record.last_timestamp,
                clock_offset=min(record.offset_samples, default=None),
                missed_task_events=record.missed_before + record.missed,
                silent=up and quiet > self.timeout,
            ))
        return states

    def _check_offset(self, hostname: str, record: _WorkerRecord, now: float) -> None:
        """Log the clock-offset warning when it is due (see the module docs)."""
        offset = min(record.offset_samples)
        if abs(offset) <= self.offset_warning:
            record.offset_beyond_since = None
            return
        if record.offset_beyond_since is None:
            record.offset_beyond_since = now
        if now - record.offset_beyond_since < OFFSET_WARNING_AFTER:
            return
        warned = record.offset_warned
        if warned is not None and now - warned[0] < OFFSET_WARNING_INTERVAL and abs(
                offset - warned[1]) <= self.offset_warning:
            return
        record.offset_warned = (now, offset)
        # Events all read late (a backlog longer than the window) look like a clock behind.
        samples = len(record.offset_samples)
        cause = (f"its clock is behind the exporter's, or each of its last {samples} worker "
                 "events reached the exporter late (a backlog that lasted as long: then every "
                 "worker seems behind and celery_jobmon_event_lag_seconds shows it)"
                 if offset > 0 else "its clock is ahead of the exporter's")
        log.warning(
            "worker clock offset hostname=%s offset=%.3fs threshold=%.3fs: %s; queue wait and "
            "ages that mix its clock with others are off by as much (state order is not "
            "affected); if it lasts, synchronise the hosts' clocks (NTP)", hostname,
            offset, self.offset_warning, cause)
