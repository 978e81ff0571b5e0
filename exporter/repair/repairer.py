"""The repairer thread: tasks whose events may have been lost, checked against the sources of
truth off the event path, and what they say applied through the model.

Each round (every ``interval`` seconds, and at once when an event gap closes):

1. **Suspects.** A gap that closed since the last round (:meth:`Health.gap_windows
   <exporter.state.health.Health.gap_windows>`) makes every task the model holds in progress a
   suspect; a worker whose heartbeats confirmed missed ``task-started`` events
   (:meth:`Model.take_missed_workers <exporter.state.model.Model.take_missed_workers>`) makes
   its tasks in progress and those no worker was seen with suspects; the tasks warmed from the
   history at start were handed over with :meth:`Repairer.suspect`. Each is due one
   ``interval`` later (:mod:`exporter.repair.suspects`).
2. **Check** at most ``batch`` due suspects the model still holds in progress: the result
   backend first (one read each), then the workers for those it did not settle (one
   ``inspect query_task`` broadcast for all of them). A REVOKED result that may only record a
   worker's acknowledgement of a revoke (:func:`~exporter.repair.findings.needs_workers`)
   is asked of the workers too: when one is running the task, the revoke did not stop it and
   the repair is STARTED from the workers; otherwise REVOKED stands (every worker that
   acknowledged discards the task when it comes). While the workers cannot be asked, it waits.
3. **Apply** each finding with :meth:`Model.apply_repair
   <exporter.state.model.Model.apply_repair>` — counters, running gauge and history move as
   the lost events would have moved them, once — and count it in the health
   (``celery_jobmon_repairs_total{state,source}``). A task no source knows is checked again
   later and counted as unresolved when the model's state cannot be confirmed
   (``celery_jobmon_repair_unresolved_tasks``).

A source that fails (:class:`~exporter.repair.sources.SourceUnavailable`) is counted
(``celery_jobmon_repair_source_errors_total{source}``) and left alone for ``interval``
seconds, doubling up to :data:`SOURCE_RETRY_MAX`; the suspects it should have answered wait
without losing an attempt. Nothing here runs on the event path: the model's lock is held only
by the model's own methods (a scan of the tasks in progress per gap, lookups in chunks of
:data:`STATE_CHUNK`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from exporter.config import DEFAULT_REPAIR_BATCH, DEFAULT_REPAIR_INTERVAL
from exporter.events.table import TERMINAL_STATES
from exporter.repair.findings import BACKEND_OUTCOMES, HELD_STATE, Finding, needs_workers
from exporter.repair.sources import BackendSource, HeldSource, SourceUnavailable
from exporter.repair.suspects import SuspectTable
from exporter.state.health import Health
from exporter.state.model import Model

log = logging.getLogger(__name__)
#: Longest wait (seconds) before a failing source is asked again.
SOURCE_RETRY_MAX = 300.0
#: Checks that found nothing before a suspect is given up.
MAX_ATTEMPTS = 5
#: Longest wait (seconds) between two checks of one suspect.
RETRY_MAX = 600.0
#: Task ids looked up in the model per lock acquisition.
STATE_CHUNK = 1000
#: States in which the model says a worker holds the task: no worker holding it contradicts it.
_HELD_BY_A_WORKER = frozenset({"RECEIVED", "STARTED"})


@dataclass(frozen=True)
class RoundReport:
    """What one round did: suspects ``checked``, findings ``applied`` to the model, checks
    that found nothing (``inconclusive``), suspects ``deferred`` because a source was down.
    """

    checked: int = 0
    applied: int = 0
    inconclusive: int = 0
    deferred: int = 0


@dataclass
class _SourceState:
    failures: int = 0
    retry_at: float = 0.0


class Repairer(threading.Thread):
    """Daemon thread repairing what lost events left behind (see the module docs).

    Args:
        model: the exporter's model (suspects, states, :meth:`~Model.apply_repair`).
        health: gap windows in, repair counters out.
        backend: the result backend (``None``: no ``--result-backend``).
        workers: the workers (``inspect query_task``); ``None``: not asked.
        interval: seconds between rounds (``--repair-interval``); also the delay before a
            suspect's first check and the first backoff step of a failing source.
        batch: suspects checked per round at most (``--repair-batch``).
        capacity: suspects held at most (``--max-tasks-in-memory``).
        clock: seconds, monotonic enough for due times (injected for tests).
        close: called once the thread stopped (releases the sources' connections).

    """

    def __init__(self, model: Model, health: Health, *, backend: BackendSource | None,
                 workers: HeldSource | None, interval: float = DEFAULT_REPAIR_INTERVAL,
                 batch: int = DEFAULT_REPAIR_BATCH, capacity: int = 100_000,
                 clock: Callable[[], float] = time.monotonic,
                 close: Callable[[], None] | None = None) -> None:
        super().__init__(name="repairer", daemon=True)
        self.model = model
        self.health = health
        self.backend = backend
        self.workers = workers
        self.interval = interval
        self.batch = batch
        self.clock = clock
        self.table = SuspectTable(capacity, retry_base=interval * 2, retry_max=RETRY_MAX,
                                  max_attempts=MAX_ATTEMPTS)
        self._lock = threading.Lock()
        self._handed: list[tuple[list[str], str]] = []
        self._gaps_seen = 0
        self._sources: dict[str, _SourceState] = {}
        self._stopping = threading.Event()
        self._close = close
        pairs = []
        if backend is not None:
            pairs += [(state, backend.name) for state in sorted(BACKEND_OUTCOMES)]
        if workers is not None:
            pairs += [(state, workers.name) for state in sorted(set(HELD_STATE.values()))]
        health.declare_repair_sources(pairs)
        health.set_repair_backlog(0, 0)

    # -- any thread ----------------------------------------------------------------------

    def suspect(self, task_ids: Iterable[str], reason: str) -> None:
        """Hand over tasks to check (e.g. ``restart``: those warmed from the history); they
        join the table at the next round.
        """
        ids = list(task_ids)
        if ids:
            with self._lock:
                self._handed.append((ids, reason))

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds (a broadcast in flight
        finishes first).
        """
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
        if self._close is not None:
            close, self._close = self._close, None
            close()

    # -- the thread ----------------------------------------------------------------------

    def run(self) -> None:
        """A round every ``interval`` seconds, or as soon as a gap closes; errors are logged,
        never fatal.
        """
        log.info("repairer started interval=%.1fs batch=%d result_backend=%s",
                 self.interval, self.batch, "yes" if self.backend is not None else "no")
        while not self._stopping.is_set():
            try:
                self.run_round()
            except Exception:  # a bug must not end the repairs
                log.exception("repair round failed")
            deadline = time.monotonic() + self.interval
            while not self._stopping.is_set() and not self.health.gap_closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._stopping.wait(min(remaining, 0.25))

    def run_round(self) -> RoundReport:
        """One round (see the module docs); public so that tests and benchmarks drive it."""
        self.health.gap_closed.clear()
        now = self.clock()
        self._collect(now)
        self._forget_finished()
        due = self.table.due(now, self.batch)
        report = self._check(due, now) if due else RoundReport()
        self.health.set_repair_backlog(self.table.pending(), self.table.unresolved())
        if report.applied or report.inconclusive:
            log.info("repair round checked=%d repaired=%d inconclusive=%d deferred=%d "
                     "pending=%d unresolved=%d", report.checked, report.applied,
                     report.inconclusive, report.deferred, self.table.pending(),
                     self.table.unresolved())
        return report

    def _collect(self, now: float) -> None:
        """New suspects: handed over, after a gap, on workers with missed events."""
        due = now + self.interval
        with self._lock:
            handed, self._handed = self._handed, []
        for ids, reason in handed:
            taken = self.table.add(ids, reason, due)
            log.info("tasks to check reason=%s tasks=%d", reason, taken)
        gaps = [gap for gap in self.health.gap_windows() if gap.number > self._gaps_seen]
        if gaps:
            self._gaps_seen = gaps[-1].number
            taken = self.table.add(self.model.in_progress(), "gap", due)
            for gap in gaps:
                log.info("event gap number=%d start=%.3f end=%.3f seconds=%.1f", gap.number,
                         gap.start, gap.end, gap.end - gap.start)
            log.info("tasks to check reason=gap tasks=%d", taken)
        missed = self.model.take_missed_workers()
        if missed:
            taken = self.table.add(self.model.in_progress([*missed, None]), "missed_events",
                                   due)
            log.info("tasks to check reason=missed_events workers=%s tasks=%d",
                     ",".join(sorted(missed)), taken)

    def _forget_finished(self) -> None:
        """Suspects that ended meanwhile (a real event) or left the index leave the table."""
        ids = self.table.ids()
        for start in range(0, len(ids), STATE_CHUNK):
            chunk = ids[start:start + STATE_CHUNK]
            states = self.model.task_states(chunk)
            self.table.forget(task_id for task_id in chunk
                              if states.get(task_id, "SUCCESS") in TERMINAL_STATES)

    def _available(self, name: str, now: float) -> bool:
        state = self._sources.get(name)
        return state is None or now >= state.retry_at

    def _failed(self, name: str, exc: SourceUnavailable, now: float) -> None:
        state = self._sources.setdefault(name, _SourceState())
        state.failures += 1
        delay = min(SOURCE_RETRY_MAX, self.interval * 2.0 ** min(state.failures - 1, 30))
        state.retry_at = now + delay
        self.health.count_repair_error(name)
        log.warning("repair source unavailable source=%s error=%s attempt=%d retry_in=%.0fs",
                    name, exc, state.failures, delay)

    def _answered(self, name: str) -> None:
        state = self._sources.pop(name, None)
        if state is not None and state.failures:
            log.info("repair source answers again source=%s after_failures=%d", name,
                     state.failures)

    def _check(self, due: list[str], now: float) -> RoundReport:
        states = self.model.task_states(due)
        ids = [task_id for task_id in due if states.get(task_id, "SUCCESS") not in
               TERMINAL_STATES]
        self.table.forget(task_id for task_id in due if task_id not in states
                          or states[task_id] in TERMINAL_STATES)
        findings: dict[str, Finding] = {}
        backend_answered = self._ask_backend(ids, findings, now)
        # A REVOKED that may be a mere acknowledgement (findings.needs_workers) goes to the
        # workers too: one running the task overrules it.
        contested = {task_id for task_id, finding in findings.items() if needs_workers(finding)}
        rest = [task_id for task_id in ids if task_id not in findings or task_id in contested]
        held: dict[str, Finding] = {}
        workers_answered = self._ask_workers(rest, held, now)
        for task_id in contested:
            running = held.pop(task_id, None)
            if not workers_answered:
                del findings[task_id]  # deferred below, like a task no source answered
            elif running is not None and running.state == "STARTED":
                findings[task_id] = running
        findings.update(held)
        applied = inconclusive = deferred = 0
        for task_id in ids:
            finding = findings.get(task_id)
            if finding is not None:
                if self.model.apply_repair(finding):
                    self.health.count_repair(finding.state, finding.source)
                    applied += 1
                self.table.resolve(task_id)
            elif backend_answered and workers_answered:
                unresolved = self.backend is None or states[task_id] in _HELD_BY_A_WORKER
                self.table.inconclusive(task_id, now, unresolved)
                inconclusive += 1
            else:
                self.table.defer(task_id, now + self.interval)
                deferred += 1
        return RoundReport(len(ids), applied, inconclusive, deferred)

    def _ask_backend(self, ids: list[str], findings: dict[str, Finding], now: float) -> bool:
        """Ask the result backend about ``ids`` into ``findings``; whether it answered (or
        there is none to ask).
        """
        backend = self.backend
        if backend is None or not ids:
            return True
        if not self._available(backend.name, now):
            return False
        try:
            for task_id in ids:
                finding = backend.outcome(task_id)
                if finding is not None:
                    findings[task_id] = finding
        except SourceUnavailable as exc:
            self._failed(backend.name, exc, now)
            return False
        self._answered(backend.name)
        return True

    def _ask_workers(self, ids: list[str], findings: dict[str, Finding], now: float) -> bool:
        """Ask the workers which of ``ids`` they hold, into ``findings``; whether they
        answered (or there is nothing to ask).
        """
        workers = self.workers
        if workers is None or not ids:
            return True
        if not self._available(workers.name, now):
            return False
        up = sum(1 for worker in self.model.worker_states() if worker.up)
        try:
            findings.update(workers.held(ids, up))
        except SourceUnavailable as exc:
            self._failed(workers.name, exc, now)
            return False
        self._answered(workers.name)
        return True
