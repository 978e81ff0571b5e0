"""Worker liveness from ``worker-*`` events: up, timed out, gone.

A worker is up while its last ``worker-online``/``worker-heartbeat`` arrived (exporter clock,
``local_received``) less than ``timeout`` seconds ago and it did not send ``worker-offline``.
After that it is reported down (``up`` 0) until ``retention`` seconds after it was last seen,
then forgotten, so a "worker down" alert has a long time to fire and see the 0.

A worker is *down since* its ``worker-offline`` arrived, or since ``timeout`` seconds after its
last event. :meth:`WorkerTable.gone` reports each worker once when it has been down for longer
than a grace period (the model then marks the tasks it was running as lost); a worker that
sends an event again is up and may be reported again later.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _WorkerRecord:
    last_seen: float
    last_timestamp: float
    offline: bool = False
    active: int | None = None
    processed: int | None = None
    gone_reported: bool = False


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One worker as rendered: ``hostname`` (``worker@host``), ``up`` (bool), ``active`` and
    ``processed`` from its last heartbeat (``None`` before the first heartbeat), and
    ``last_heartbeat`` (worker clock ``timestamp`` of its last event, seconds since the epoch).
    """

    hostname: str
    up: bool
    active: int | None
    processed: int | None
    last_heartbeat: float


class WorkerTable:
    """Workers by hostname. Not thread-safe: the model holds its lock while it uses the table."""

    def __init__(self, timeout: float, retention: float) -> None:
        self.timeout = timeout
        self.retention = retention
        self._workers: dict[str, _WorkerRecord] = {}

    def update(self, event_type: str, event: dict, now: float) -> None:
        """Apply a checked ``worker-*`` event received at ``now`` (exporter clock, seconds)."""
        hostname = event["hostname"]
        record = self._workers.get(hostname)
        if record is None:
            record = self._workers[hostname] = _WorkerRecord(now, event["timestamp"])
        record.last_seen = now
        record.last_timestamp = event["timestamp"]
        record.offline = event_type == "worker-offline"
        record.gone_reported = False
        if event.get("active") is not None:
            record.active = event["active"]
        if event.get("processed") is not None:
            record.processed = event["processed"]

    def gone(self, now: float, grace: float) -> list[tuple[str, float]]:
        """Workers down for more than ``grace`` seconds at ``now`` and not reported yet, as
        ``(hostname, timestamp of its last event)`` (worker clock); each is reported once per
        disappearance.
        """
        found = []
        for hostname, record in self._workers.items():
            if record.gone_reported:
                continue
            down_since = record.last_seen if record.offline else record.last_seen + self.timeout
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
            up = not record.offline and now - record.last_seen <= self.timeout
            states.append(WorkerState(
                hostname=hostname,
                up=up,
                # A worker that is gone runs nothing, whatever its last heartbeat said.
                active=record.active if up else 0,
                processed=record.processed,
                last_heartbeat=record.last_timestamp,
            ))
        return states
